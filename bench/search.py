"""Search service queries on a big index: p50/p99 latency, with and without its indexes.

    python -m bench.search            # 256 recordings x 7 days, 1 M events (~1 min)
    python -m bench.search --full     # 256 recordings x 90 days, 5 M events (issue 6's size)

``--full`` writes bench/results/search.json, the default run search_default.json.

An SQLite index is seeded directly (executemany, secondary indexes built after the load):
one-minute segments for every recording, and RecordingHistory events spread over the same
time. Then, through the domain API the SOAP handlers call (``RecordingSearch``,
``RecordingScan``, ``EventScan`` on the database worker thread): GetRecordingSummary,
FindRecordings' first page (100 RecordingInformation), FindEvents' first page of 100 over
every recording, over a narrow (10 minute) window, with a topic filter, and for one
recording. The peer is the same queries on the schema before migration 0008 (no
``ix_events_utc``, ``ix_events_property``, ``ix_segments_recording_end``), with the data
ranges probed from segments and events at every request instead of read from migration
0009's ``recording_data`` / ``track_data`` (``ProbingSearch``) — what a straightforward
schema gives — measured in the same run. The load is what a box that ran for 90 days holds:
the secondary indexes are built after it (faster than row by row; the same b-trees), then
the data ranges as migration 0009 fills them from existing rows. Targets (issue 6): first page
p99 < 50 ms, GetRecordingSummary < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import RESULTS, git_commit, machine_info
from onvif_nvr.db.engine import Database, migrate
from onvif_nvr.events.filters import CONCRETE_SET, EventFilter, parse_topic_expression
from onvif_nvr.events.topics import onvif_catalog
from onvif_nvr.recording import data_ranges
from onvif_nvr.recording.event_search import EventScan
from onvif_nvr.recording.search import RecordingSearch, RecordingSummary, Scope
from onvif_nvr.recording.search_sessions import RecordingScan

NS = 10**9
MINUTE = 60 * NS
DAY = 86_400 * NS
T0 = 1_780_000_000 * NS
#: The indexes migration 0008 added for the Search service.
SEARCH_INDEXES = {
    "ix_events_utc": "events (utc_ns)",
    "ix_events_property": "events (recording_id, topic, track_token, utc_ns)",
    "ix_segments_recording_end": "segments (recording_id, end_wall_ns)",
}
TOPICS = (
    ("tns1:RecordingHistory/Recording/State", "", "IsRecording"),
    ("tns1:RecordingHistory/Track/State", "VIDEO001", "IsDataPresent"),
    ("tns1:RecordingHistory/Track/State", "AUDIO001", "IsDataPresent"),
    ("tns1:RecordingHistory/Track/VideoParameters", "VIDEO001", ""),
)


def seed(path: Path, recordings: int, days: int, events: int) -> dict[str, float]:
    """Fill a fresh index; returns the seconds each part took."""
    db = Database(f"sqlite:///{path}")
    migrate(db.engine)
    db.close()
    conn = sqlite3.connect(path)
    # For the load only (the box runs WAL, synchronous=NORMAL): no journal, no fsync, a big
    # page cache and in-memory sorts for the index builds.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA temp_store=MEMORY")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
        "AND tbl_name IN ('segments', 'events', 'fragments')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    took = {}
    started = time.perf_counter()
    with conn:
        conn.execute(
            "INSERT INTO volumes (id, path, min_free_bytes, status, status_reason) VALUES (1, '/v', 0, 'ok', '')"
        )
        conn.executemany(
            "INSERT INTO cameras (id, name, url, transport, backend, enabled, retention_s, origin, "
            "created_wall_ns, token, mode, auto_created, media_uri, stream_type, protocol) "
            "VALUES (?, ?, '', 'tcp', 'native', 1, 0, 'cli', 0, ?, 'AlwaysConnect', 0, '', "
            "'RTP-Unicast', 'RTSP')",
            [(i, f"cam{i}", f"RECEIVER_{i}") for i in range(1, recordings + 1)],
        )
        conn.executemany(
            "INSERT INTO recordings (id, token, source_id, source_name, location, description, "
            "address, content, max_retention_s, origin, camera_id, created_wall_ns) "
            "VALUES (?, ?, '', ?, ?, '', '', '', 0, 'cli', ?, 0)",
            [
                (i, f"RECORDING_{i}", f"cam{i}", "Basement" if i % 2 else "Yard", i)
                for i in range(1, recordings + 1)
            ],
        )
        conn.executemany(
            "INSERT INTO tracks (recording_id, token, track_type, description) VALUES (?, ?, ?, '')",
            [
                (i, token, kind)
                for i in range(1, recordings + 1)
                for token, kind in (
                    ("VIDEO001", "Video"),
                    ("AUDIO001", "Audio"),
                    ("META001", "Metadata"),
                )
            ],
        )
    tracks = json.dumps(
        [{"codec": "H264", "width": 1920, "height": 1080, "codec_string": "avc1.640028"}]
    )

    def segments() -> Iterator[tuple[Any, ...]]:
        for minute in range(days * 1440):
            start = T0 + minute * MINUTE
            for r in range(1, recordings + 1):
                yield (
                    r,
                    r,
                    start,
                    start + MINUTE - NS // 25,
                    minute * 5_400_000,
                    5_400_000,
                    tracks,
                )

    with conn:
        conn.executemany(
            "INSERT INTO segments (camera_id, recording_id, volume_id, state, start_wall_ns, "
            "end_wall_ns, start_90k, duration_90k, size, init_size, fragment_count, tracks) "
            "VALUES (?, ?, 1, 'closed', ?, ?, ?, ?, 30000000, 800, 60, ?)",
            segments(),
        )
    took["segments_s"] = time.perf_counter() - started
    started = time.perf_counter()
    span = days * DAY
    rng = random.Random(6)

    def rows() -> Iterator[tuple[Any, ...]]:
        step = span // max(1, events)
        for n in range(events):
            r = rng.randrange(1, recordings + 1)
            topic, track, item = TOPICS[n % len(TOPICS)]
            source = [["RecordingToken", f"RECORDING_{r}"]] + ([["Track", track]] if track else [])
            data = (
                [[item, "true" if (n // 4) % 2 else "false"]]
                if item
                else [["VideoEncoding", "H264"], ["VideoWidth", "1920"], ["VideoHeight", "1080"]]
            )
            yield (
                r,
                f"RECORDING_{r}",
                track,
                topic,
                T0 + n * step + rng.randrange(step or 1),
                "Changed",
                json.dumps(source),
                json.dumps(data),
            )

    with conn:
        conn.executemany(
            "INSERT INTO events (recording_id, recording_token, track_token, topic, utc_ns, "
            "operation, source, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
    took["events_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for _, sql in indexes:
        conn.execute(sql)
    conn.commit()
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    took["indexes_s"] = time.perf_counter() - started
    started = time.perf_counter()
    # The per recording / per track data ranges, as migration 0009 fills them from rows
    # already there (a box keeps them with every write).
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as connection:
        data_ranges.rebuild(connection)
        connection.exec_driver_sql("ANALYZE")
    db.close()
    took["data_ranges_s"] = time.perf_counter() - started
    return took


class ProbingSearch(RecordingSearch):
    """The peer of GetRecordingSummary and FindRecordings: the data ranges probed from
    ``segments`` and ``events`` at every request (the queries before migration 0009), not
    read from ``recording_data`` / ``track_data``."""

    _FIRST = (
        "(SELECT start_wall_ns FROM segments s WHERE s.recording_id = r.id "
        "AND s.state IN ('writing', 'closed') ORDER BY start_wall_ns LIMIT 1)"
    )
    _LAST = (
        "(SELECT end_wall_ns FROM segments s WHERE s.recording_id = r.id "
        "AND s.state IN ('writing', 'closed') ORDER BY end_wall_ns DESC LIMIT 1)"
    )
    _TRACK = (
        "(SELECT {column} FROM events e WHERE e.recording_id = t.recording_id "
        "AND e.topic = 'tns1:RecordingHistory/Track/State' AND e.track_token = t.token "
        "ORDER BY e.utc_ns {order}, e.id {order} LIMIT 1)"
    )

    def _summary(self, conn: Any) -> Any:
        lo, hi, count = conn.exec_driver_sql(
            f"SELECT MIN(first), MAX(last), COUNT(*) FROM (SELECT {self._FIRST} AS first, "
            f"{self._LAST} AS last FROM recordings r)"
        ).one()
        return RecordingSummary(lo, hi, int(count))

    def _information(self, conn: Any, ids: list[int], live: Any) -> Any:
        marks = ", ".join(str(int(i)) for i in ids)
        rows = conn.exec_driver_sql(
            "SELECT r.id, r.token, r.source_id, r.source_name, r.location, r.description, "
            f"r.address, r.content, {self._FIRST} AS first, {self._LAST} AS last "
            f"FROM recordings r WHERE r.id IN ({marks}) ORDER BY r.id"
        ).all()
        tracks: dict[int, list[Any]] = {}
        for t in conn.exec_driver_sql(
            "SELECT t.recording_id, t.token, t.track_type, t.description, "
            + self._TRACK.format(column="utc_ns", order="ASC")
            + " AS first, "
            + self._TRACK.format(column="utc_ns", order="DESC")
            + " AS last, "
            + self._TRACK.format(column="data", order="DESC")
            + f" AS data FROM tracks t WHERE t.recording_id IN ({marks}) "
            "ORDER BY t.recording_id, t.id"
        ):
            data = json.loads(t.data) if t.data is not None else None
            tracks.setdefault(t.recording_id, []).append(
                SimpleNamespace(**{**t._mapping, "data": data})
            )
        return [self._one(row, tracks.get(row.id, []), live.get(row.token)) for row in rows]


def drop_search_indexes(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        for name in SEARCH_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.execute("ANALYZE")


async def measure(fn: Callable[[], Awaitable[object]], repeat: int) -> dict[str, float]:
    await fn()  # warm the statement cache and the page cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        "n": repeat,
    }


async def queries(
    path: Path, recordings: int, days: int, repeat: int, seed_: int, *, peer: bool = False
) -> dict[str, Any]:
    db = Database(f"sqlite:///{path}")
    catalog = onvif_catalog()
    search = (ProbingSearch if peer else RecordingSearch)(db)
    everyone = await search.scope(Scope(), strict=False)
    rng = random.Random(seed_)
    span = days * DAY
    recording_state = parse_topic_expression(
        "tns1:RecordingHistory/Recording/State",
        CONCRETE_SET,
        {"tns1": "http://www.onvif.org/ver10/topics"},
    )

    def events(
        scope: list[tuple[int, str]], window_ns: int | None, flt: EventFilter, everything: bool
    ) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            start = T0 + rng.randrange(span - (window_ns or 0))
            scan = EventScan(
                db,
                catalog,
                scope,
                all_recordings=everything,
                start_ns=start,
                end_ns=None if window_ns is None else start + window_ns,
                event_filter=flt,
                include_start_state=False,
            )
            found = await scan.fetch(100)
            assert found or window_ns is not None
            return found

        return run

    async def first_recordings() -> object:
        ids = [rid for rid, _ in await search.scope(Scope(), strict=False)]
        return await RecordingScan(search, ids).fetch(100)

    def one() -> list[tuple[int, str]]:
        return [everyone[rng.randrange(len(everyone))]]

    async def one_recording() -> object:
        return await events(one(), None, EventFilter(), False)()

    out = {
        "GetRecordingSummary": await measure(search.summary, repeat),
        "FindRecordings first page (100)": await measure(first_recordings, repeat),
        "FindEvents first page of 100": await measure(
            events(everyone, None, EventFilter(), True), repeat
        ),
        "FindEvents narrow window (10 min)": await measure(
            events(everyone, 10 * MINUTE, EventFilter(), True), repeat
        ),
        "FindEvents topic filter": await measure(
            events(everyone, None, EventFilter((recording_state,)), True), repeat
        ),
        "FindEvents one recording": await measure(one_recording, repeat),
    }
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recordings", type=int, default=256)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--full", action="store_true", help="90 days and 5 million events")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--naive-repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the index is built")
    args = parser.parse_args()
    if args.full:
        args.days, args.events = 90, 5_000_000
        if args.naive_repeat == parser.get_default("naive_repeat"):
            args.naive_repeat = 1  # the peer's summary alone takes about a minute
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "index.sqlite3"
        print(
            f"seeding {args.recordings} recordings x {args.days} days of 1-minute segments "
            f"({args.recordings * args.days * 1440:,} rows) and {args.events:,} events ...",
            flush=True,
        )
        took = seed(path, args.recordings, args.days, args.events)
        print("  " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()), flush=True)
        ours = asyncio.run(queries(path, args.recordings, args.days, args.repeat, 1))
        drop_search_indexes(path)
        naive = asyncio.run(
            queries(path, args.recordings, args.days, args.naive_repeat, 1, peer=True)
        )
    print(
        f"\n{'query':36} {'p50 ms':>9} {'p99 ms':>9} | {'naive p50':>10} {'naive p99':>10} {'ratio p99':>9}"
    )
    figures = {}
    for name, mine in ours.items():
        peer = naive[name]
        ratio = round(peer["p99_ms"] / mine["p99_ms"], 1) if mine["p99_ms"] else None
        figures[name] = {**mine, "naive": peer, "naive_over_ours_p99": ratio}
        print(
            f"{name:36} {mine['p50_ms']:9.2f} {mine['p99_ms']:9.2f} | {peer['p50_ms']:10.2f} {peer['p99_ms']:10.2f} {ratio:>9}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "search",
        "parameters": {
            "recordings": args.recordings,
            "days": args.days,
            "segments": args.recordings * args.days * 1440,
            "events": args.events,
            "repeat": args.repeat,
            "naive_repeat": args.naive_repeat,
        },
        "peer": "the same queries without migration 0008's indexes ("
        + ", ".join(SEARCH_INDEXES)
        + "); GetRecordingSummary and FindRecordings probing segments and events for the "
        "data ranges (the queries before migration 0009's recording_data / track_data)",
        "seed_s": {k: round(v, 1) for k, v in took.items()},
        "figures": figures,
        "targets": {"first page p99 ms": 50, "GetRecordingSummary ms": 10},
        "machine": machine_info(),
        "commit": git_commit(),
    }
    name = "search.json" if args.full else "search_default.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to bench/results/{name}")


if __name__ == "__main__":
    main()
