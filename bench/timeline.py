"""The timeline API's query: every recording's recorded intervals over a day, 256 cameras.

    python -m bench.timeline                 # 256 recordings x 2 days, the day in between

The index is seeded by bench/search.py's builder (one-minute segments for every recording).
Measured (p50/p99, on the database worker thread as the API runs it, plus the answer's
JSON): ``GET /api/v1/timeline`` for a day of all 256 recordings at 1000 pixels' resolution
(86.4 s) and at 1 s (``api/queries.recorded_ranges``: one index range over
``ix_segments_recording_start`` for the recordings' ids and one probe per recording for the
segment reaching into the window, merged in Python). The peer, in the same run: a
straightforward client-side timeline, one segment query per recording (256 round trips to
the worker thread, the same index), merged the same way. Target (issue 9): < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from bench.common import RESULTS, git_commit, machine_info
from bench.search import DAY, T0, measure, seed
from onvif_nvr.api.endpoints import Timeline, TimelineRecording
from onvif_nvr.api.queries import merge, recorded_ranges
from onvif_nvr.db.engine import Database

_ONE = text(
    "SELECT start_wall_ns, end_wall_ns FROM segments WHERE recording_id = :rid "
    "AND end_wall_ns > :start AND start_wall_ns < :end AND state IN ('writing', 'closed') "
    "ORDER BY start_wall_ns"
)


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

    def ours(resolution_ns: int, label: str):  # type: ignore[no-untyped-def]
        async def call() -> object:
            def read() -> dict[int, list[tuple[int, int]]]:
                with db.engine.connect() as conn:
                    return recorded_ranges(conn, ids, start, end, resolution_ns)

            found = await db.run(read)
            body = _answer(tokens, found, start, end, resolution_ns)
            sizes[label] = len(body)
            return body

        return call

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
    out = {
        "day, 1000 px (86.4 s)": {
            **await measure(ours(pixel, "px"), repeat),
            "naive": await measure(naive(pixel), naive_repeat),
        },
        "day, 1 s": {
            **await measure(ours(second, "s"), repeat),
            "naive": await measure(naive(second), naive_repeat),
        },
    }
    db.close()
    return {"figures": out, "answer_bytes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recordings", type=int, default=256)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--naive-repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the index is built")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "index.sqlite3"
        print(
            f"seeding {args.recordings} recordings x {args.days} days of 1-minute segments ...",
            flush=True,
        )
        took = seed(path, args.recordings, args.days, args.events)
        measured = asyncio.run(run(path, args.recordings, args.repeat, args.naive_repeat))
    figures = measured["figures"]
    assert isinstance(figures, dict)
    print(
        f"\n{'timeline query':24} {'p50 ms':>8} {'p99 ms':>8} | {'naive p50':>9} {'naive p99':>9}"
    )
    for name, f in figures.items():
        f["naive_over_ours_p99"] = round(f["naive"]["p99_ms"] / f["p99_ms"], 1)
        print(
            f"{name:24} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} | "
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
        },
        "peer": "one segment query per recording (the same index), merged the same way",
        "seed_s": {k: round(v, 1) for k, v in took.items()},
        "figures": figures,
        "answer_bytes": measured["answer_bytes"],
        "target": {"p99 ms": 100},
        "machine": machine_info(),
        "commit": git_commit(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (RESULTS / "timeline.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\nwritten to bench/results/timeline.json")


if __name__ == "__main__":
    main()
