"""The timeline API's query: every recording's recorded intervals over a day, 256 cameras.

    python -m bench.timeline                 # 256 recordings x 2 days, the day in between
    python -m bench.timeline --outages 0     # no gaps at all: one span per recording

The index is seeded by bench/search.py's builder (one-minute segments for every recording),
then every recording loses ``--outages`` runs of 1-5 segments per day at random (a camera
offline, a restart: each one a gap the timeline shows), and ``recording_spans`` is built
from what is left as migration 0011 does (a box keeps it with every segment write).
Measured (p50/p99, on the database worker thread as the API runs it, plus the answer's
JSON): ``GET /api/v1/timeline`` for a day of all 256 recordings at 1000 pixels' resolution
(86.4 s) and at 1 s (``api/queries.recorded_ranges``: one range over ``recording_spans``'
primary key for the recordings' ids and one probe per recording for the span reaching into
the window, merged in Python); and its own CPU time (thread time of the query on the
worker and of the JSON on the loop), which other load on a shared machine does not inflate
as it does the wall-clock figures; and, as a diagnosis, the same with the heap frozen out
of the cyclic garbage collector (``gc.freeze()``: what the p99 owes to a full collection
landing in the request). In the same run: "before", the same query over the segment
rows (what the API ran before migration 0011: one range over
``ix_segments_recording_start`` and one probe per recording), and "naive", a
straightforward client-side timeline, one segment query per recording (256 round trips to
the worker thread), merged the same way. Target (issue 9): < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, bindparam, text

from bench.common import RESULTS, git_commit, machine_info
from bench.search import DAY, T0, measure, seed
from onvif_nvr.api.endpoints import Timeline, TimelineRecording
from onvif_nvr.api.queries import merge, recorded_ranges
from onvif_nvr.db.engine import Database
from onvif_nvr.recording import data_ranges, spans

_ONE = text(
    "SELECT start_wall_ns, end_wall_ns FROM segments WHERE recording_id = :rid "
    "AND end_wall_ns > :start AND start_wall_ns < :end AND state IN ('writing', 'closed') "
    "ORDER BY start_wall_ns"
)


#: The timeline's reads before migration 0011: the segment rows themselves.
_BEFORE_INSIDE = text(
    "SELECT recording_id, start_wall_ns, end_wall_ns FROM segments "
    "WHERE recording_id IN :ids AND start_wall_ns >= :start AND start_wall_ns < :end "
    "AND state IN ('writing', 'closed') ORDER BY recording_id, start_wall_ns"
).bindparams(bindparam("ids", expanding=True))
_BEFORE_REACHING = text(
    "SELECT s.recording_id, s.start_wall_ns, s.end_wall_ns FROM segments s WHERE s.id IN ("
    "SELECT (SELECT p.id FROM segments p WHERE p.recording_id = r.id "
    "AND p.start_wall_ns < :start ORDER BY p.start_wall_ns DESC LIMIT 1) "
    "FROM recordings r WHERE r.id IN :ids) AND s.end_wall_ns > :start "
    "AND s.state IN ('writing', 'closed')"
).bindparams(bindparam("ids", expanding=True))


def _from_segments(
    conn: Connection, ids: list[int], start: int, end: int, resolution_ns: int
) -> dict[int, list[tuple[int, int]]]:
    """``recorded_ranges`` as it was before ``recording_spans``."""
    found: dict[int, list[tuple[int, int]]] = {rid: [] for rid in ids}
    params = {"ids": ids, "start": start, "end": end}
    for rid, _s, e in conn.execute(_BEFORE_REACHING, params):
        found[rid].append((start, min(e, end)))
    for rid, s, e in conn.execute(_BEFORE_INSIDE, params):
        found[rid].append((s, min(max(e, s), end)))
    return {rid: merge(sorted(items), resolution_ns) for rid, items in found.items()}


def punch_outages(path: Path, recordings: int, days: int, outages: int) -> int:
    """Delete ``outages`` runs of 1-5 one-minute segments per recording per day; then build
    the spans and data ranges from what is left. Returns the spans built."""
    rng = random.Random(9)
    minutes = days * 1440
    conn = sqlite3.connect(path)
    with conn:
        for rid in range(1, recordings + 1):
            for _ in range(outages * days):
                first = T0 + rng.randrange(minutes) * 60 * 10**9
                conn.execute(
                    "DELETE FROM segments WHERE recording_id = ? AND start_wall_ns >= ? "
                    "AND start_wall_ns < ?",
                    (rid, first, first + rng.randint(1, 5) * 60 * 10**9),
                )
    conn.close()
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as connection:
        data_ranges.rebuild(connection)
        spans.rebuild(connection)
        connection.exec_driver_sql("ANALYZE")
        count = int(connection.execute(text("SELECT count(*) FROM recording_spans")).scalar_one())
    db.close()
    return count


def _answer(
    tokens: dict[int, str], found: dict[int, list[tuple[int, int]]], start: int, end: int, res: int
) -> bytes:
    """The API's answer as the handler serialises it."""
    return (
        Timeline(
            start_ms=start // 10**6,
            end_ms=end // 10**6,
            resolution_ms=res // 10**6,
            recordings=[
                TimelineRecording(
                    recording=token,
                    ranges=[(s // 10**6, e // 10**6) for s, e in found[rid]],
                )
                for rid, token in tokens.items()
            ],
        )
        .model_dump_json()
        .encode()
    )


async def run(path: Path, recordings: int, repeat: int, naive_repeat: int) -> dict[str, object]:
    db = Database(f"sqlite:///{path}")
    tokens = {i: f"RECORDING_{i}" for i in range(1, recordings + 1)}
    ids = list(tokens)
    # A day that starts mid-segment (the probe for the segment reaching in has work to do).
    start = T0 + DAY // 2 + 17 * 10**9
    end = start + DAY
    sizes: dict[str, int] = {}

    cpu: dict[str, list[float]] = {}

    def ours(resolution_ns: int, label: str):  # type: ignore[no-untyped-def]
        async def call() -> object:
            def read() -> tuple[dict[int, list[tuple[int, int]]], float]:
                started = time.thread_time()
                with db.engine.connect() as conn:
                    found = recorded_ranges(conn, ids, start, end, resolution_ns)
                return found, time.thread_time() - started

            found, read_cpu_s = await db.run(read)
            started = time.thread_time()
            body = _answer(tokens, found, start, end, resolution_ns)
            sizes[label] = len(body)
            # CPU of this request alone (the query on the worker, the JSON on the loop): what
            # it costs whatever else the shared machine is running.
            cpu.setdefault(label, []).append((read_cpu_s + time.thread_time() - started) * 1000)
            return body

        return call

    def before(resolution_ns: int):  # type: ignore[no-untyped-def]
        async def call() -> object:
            def read() -> dict[int, list[tuple[int, int]]]:
                with db.engine.connect() as conn:
                    return _from_segments(conn, ids, start, end, resolution_ns)

            found = await db.run(read)
            return _answer(tokens, found, start, end, resolution_ns)

        return call

    # The same answer both ways (the seed's gaps are whole minutes, over JOIN_NS).
    for res in (DAY // 1000, 10**9):
        assert await ours(res, "check")() == await before(res)(), "spans differ from segments"

    def naive(resolution_ns: int):  # type: ignore[no-untyped-def]
        async def call() -> object:
            found = {}
            for rid in ids:

                def one(rid: int = rid) -> list[tuple[int, int]]:
                    with db.engine.connect() as conn:
                        rows = conn.execute(_ONE, {"rid": rid, "start": start, "end": end})
                        return [(max(s, start), min(e, end)) for s, e in rows]

                found[rid] = merge(await db.run(one), resolution_ns)
            return _answer(tokens, found, start, end, resolution_ns)

        return call

    pixel, second = DAY // 1000, 10**9
    load_before = os.getloadavg()[0]
    out = {
        "day, 1000 px (86.4 s)": {
            **await measure(ours(pixel, "px"), repeat),
            "before": await measure(before(pixel), naive_repeat),
            "naive": await measure(naive(pixel), naive_repeat),
        },
        "day, 1 s": {
            **await measure(ours(second, "s"), repeat),
            "before": await measure(before(second), naive_repeat),
            "naive": await measure(naive(second), naive_repeat),
        },
    }
    # The API as the box runs it: the box freezes its start-up heap out of the cyclic GC
    # (app.py, gc.freeze), as here the heap built so far. Unfrozen, the p99 above is mostly
    # a full collection walking that heap in a request (~6,000 rows make ~30,000 objects).
    gc.collect()
    gc.freeze()
    for label, name, res in (("px", "day, 1000 px (86.4 s)", pixel), ("s", "day, 1 s", second)):
        out[name]["gc_frozen"] = await measure(ours(res, label + "_frozen"), repeat)
    gc.unfreeze()
    db.close()
    for label in ("check", "px_frozen", "s_frozen"):
        sizes.pop(label, None)
    for label, name in (("px", "day, 1000 px (86.4 s)"), ("s", "day, 1 s")):
        times = sorted(cpu[label][1:])  # the first is measure()'s warm-up
        out[name]["cpu_ms"] = {
            "p50": round(statistics.median(times), 3),
            "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        }
    # The machine is shared: how busy it was says how far the wall-clock figures are noise.
    load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    return {"figures": out, "answer_bytes": sizes, "load_average_1m": load}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recordings", type=int, default=256)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--naive-repeat", type=int, default=5)
    parser.add_argument(
        "--outages", type=int, default=24, help="gaps per recording per day (1-5 minutes each)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the index is built")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "index.sqlite3"
        print(
            f"seeding {args.recordings} recordings x {args.days} days of 1-minute segments ...",
            flush=True,
        )
        took = seed(path, args.recordings, args.days, args.events)
        started = time.perf_counter()
        span_rows = punch_outages(path, args.recordings, args.days, args.outages)
        took["outages_and_spans_s"] = time.perf_counter() - started
        measured = asyncio.run(run(path, args.recordings, args.repeat, args.naive_repeat))
    figures = measured["figures"]
    assert isinstance(figures, dict)
    print(
        f"\n{span_rows} spans over {args.days} days; load average "
        f"{measured['load_average_1m']} on {os.cpu_count()} cores"
    )
    print(
        f"{'timeline query':24} {'p50 ms':>8} {'p99 ms':>8} | {'cpu p50':>7} {'cpu p99':>7} | "
        f"{'frz p50':>7} {'frz p99':>7} | "
        f"{'before p50':>10} "
        f"{'before p99':>10} | {'naive p50':>9} {'naive p99':>9}"
    )
    for name, f in figures.items():
        f["before_over_ours_p99"] = round(f["before"]["p99_ms"] / f["p99_ms"], 1)
        f["naive_over_ours_p99"] = round(f["naive"]["p99_ms"] / f["p99_ms"], 1)
        print(
            f"{name:24} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} | "
            f"{f['cpu_ms']['p50']:7.2f} {f['cpu_ms']['p99']:7.2f} | "
            f"{f['gc_frozen']['p50_ms']:7.2f} {f['gc_frozen']['p99_ms']:7.2f} | "
            f"{f['before']['p50_ms']:10.2f} {f['before']['p99_ms']:10.2f} | "
            f"{f['naive']['p50_ms']:9.2f} {f['naive']['p99_ms']:9.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "timeline",
        "parameters": {
            "recordings": args.recordings,
            "days_seeded": args.days,
            "window": "one day",
            "repeat": args.repeat,
            "naive_repeat": args.naive_repeat,
            "outages_per_recording_per_day": args.outages,
            "spans": span_rows,
        },
        "before": "the same query over the segment rows (the API before recording_spans)",
        "peer": "naive: one segment query per recording (the same index), merged the same way",
        "seed_s": {k: round(v, 1) for k, v in took.items()},
        "figures": figures,
        "answer_bytes": measured["answer_bytes"],
        "load_average_1m_before_after": measured["load_average_1m"],
        "target": {"p99 ms": 100},
        "machine": machine_info(),
        "commit": git_commit(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (RESULTS / "timeline.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\nwritten to bench/results/timeline.json")


if __name__ == "__main__":
    main()
