"""``recording_spans`` (recording/spans.py) kept with the segment rows: after any sequence of
segment writes, extensions, closes, deletions, drops, retention, recovery and recording
deletions, the table holds what the segment rows say (recomputed in Python and by the
migration's SQL), and the timeline reads it by index."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.recording import spans
from onvif_nvr.recording.index import FragmentRow, SegmentIndex
from onvif_nvr.recording.recovery import recover_volume
from onvif_nvr.recording.retention import StreamPolicy, enforce

NS = 10**9
T0 = 1_780_000_000 * NS
HALF = NS // 2


def _kept(conn: Any) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    rows = conn.execute(
        text("SELECT recording_id, start_ns, end_ns FROM recording_spans ORDER BY 1, 2")
    )
    for rid, s, e in rows:
        out.setdefault(rid, []).append((s, e))
    return out


def _from_segments(conn: Any) -> dict[int, list[tuple[int, int]]]:
    """What the spans must be, straight from the segment rows."""
    pieces: dict[int, list[tuple[int, int]]] = {}
    rows = conn.execute(
        text(
            "SELECT recording_id, start_wall_ns, end_wall_ns FROM segments "
            "WHERE recording_id IS NOT NULL AND state IN ('writing', 'closed') "
            "ORDER BY recording_id, start_wall_ns"
        )
    )
    for rid, s, e in rows:
        pieces.setdefault(rid, []).append((s, e))
    return {rid: spans.join(p) for rid, p in pieces.items()}


def _check(db: Database) -> None:
    with db.engine.connect() as conn:
        kept = _kept(conn)
        assert kept == _from_segments(conn)
        spans.rebuild(conn)
        assert _kept(conn) == kept
        conn.rollback()


def _setup(db: Database, recordings: tuple[int, ...] = (1, 2)) -> None:
    with db.session() as session, session.begin():
        session.add(models.Volume(id=1, path="/v", min_free_bytes=0, status="ok"))
        for rid in recordings:
            session.add(
                models.Camera(
                    id=rid, name=f"cam{rid}", url="", token=f"RECEIVER_{rid}", created_wall_ns=0
                )
            )
            _add_recording(session, rid)


def _add_recording(session: Any, rid: int) -> None:
    session.add(models.Recording(id=rid, token=f"RECORDING_{rid}", created_wall_ns=0, origin="cli"))


def _fragment(sid: int, seq: int, start: int, duration_ns: int) -> FragmentRow:
    return FragmentRow(sid, seq, start, 0, duration_ns * 9 // 100_000, seq * 1000, 1000, True, 1)


# One step: (operation, recording or segment pick, time in half seconds, length in half s).
_STEP = st.tuples(
    st.sampled_from(["create", "create", "extend", "extend", "close", "delete", "drop", "forget"]),
    st.integers(0, 7),
    st.integers(0, 40),
    st.integers(0, 20),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=30))
def test_spans_equal_the_segments_after_any_writes(steps: list[tuple[str, int, int, int]]) -> None:
    """Segments of two recordings at random times (overlapping, abutting, sub-second and
    longer gaps), extended by fragments, closed, marked deleting, dropped, and a recording
    deleted (its segments keep no recording): after every step the kept spans are the
    segments' recomputed ones."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'index.sqlite3'}")

        async def run() -> None:
            await db.migrate()
            await db.run(_setup, db)
            index = SegmentIndex(db)
            made: list[int] = []
            seq: dict[int, int] = {}
            for op, pick, at, length in steps:
                if op == "create":
                    rid = 1 + pick % 2
                    made.append(
                        await index.create_segment(rid, 1, T0 + at * HALF, 0, recording_id=rid)
                    )
                    continue
                if op == "forget":
                    rid = 1 + pick % 2

                    def forget(rid: int = rid) -> None:
                        # Recording deleted (its segments stay, with no recording), then a
                        # new one under the same id.
                        with db.session() as session, session.begin():
                            session.execute(
                                text("DELETE FROM recordings WHERE id = :r"), {"r": rid}
                            )
                            _add_recording(session, rid)

                    await db.run(forget)
                    await db.run(_check, db)
                    continue
                if not made:
                    continue
                sid = made[pick % len(made)]
                rows = {s.id: s for s in await index.segments()}
                if sid not in rows:
                    continue
                if op == "extend":
                    seq[sid] = seq.get(sid, 0) + 1
                    await index.add_fragments(
                        sid, [_fragment(sid, seq[sid], rows[sid].end_wall_ns, length * HALF)], 800
                    )
                    await index.flush()
                elif op == "close":
                    await index.close_segment(sid)
                elif op == "delete":
                    await index.mark_deleting(sid)
                else:
                    await index.drop_segment(sid)
                await db.run(_check, db)
            await db.run(_check, db)

        try:
            asyncio.run(run())
        finally:
            db.close()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 16)), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_spans_equal_the_segments_as_segments_leave_in_any_order(
    laid: list[tuple[int, int]], rng: Any
) -> None:
    """One recording's segments (in half seconds: start, length) laid down, then removed
    one at a time in a random order, by ``deleting`` or by a drop: every removal path
    (latest start, earliest end, the middle of a span) against the recomputation."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'index.sqlite3'}")

        async def run() -> None:
            await db.migrate()
            await db.run(_setup, db)
            index = SegmentIndex(db)
            made = []
            for at, length in laid:
                sid = await index.create_segment(1, 1, T0 + at * HALF, 0, recording_id=1)
                frag = _fragment(sid, 1, T0 + at * HALF, length * HALF)
                await index.add_fragments(sid, [frag], 800)
                made.append(sid)
            await index.flush()
            await db.run(_check, db)
            rng.shuffle(made)
            for n, sid in enumerate(made):
                if n % 2:
                    await index.mark_deleting(sid)
                else:
                    await index.drop_segment(sid)
                await db.run(_check, db)

        try:
            asyncio.run(run())
        finally:
            db.close()


def test_a_segment_cut_from_the_middle_splits_its_span(tmp_path: Path) -> None:
    """Three abutting segments; the middle one dropped: two spans."""
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")

    async def run() -> None:
        await db.migrate()
        await db.run(_setup, db)
        index = SegmentIndex(db)
        made = []
        for n in range(3):
            sid = await index.create_segment(1, 1, T0 + n * 10 * NS, 0, recording_id=1)
            await index.add_fragments(sid, [_fragment(sid, 1, T0 + n * 10 * NS, 10 * NS)], 800)
            made.append(sid)
        await index.flush()
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [(T0, T0 + 30 * NS)]
        await index.mark_deleting(made[1])
        await db.run(_check, db)
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [(T0, T0 + 10 * NS), (T0 + 20 * NS, T0 + 30 * NS)]
        await index.drop_segment(made[1])
        await db.run(_check, db)

    try:
        asyncio.run(run())
    finally:
        db.close()


def test_one_flush_extending_segments_into_a_later_span(tmp_path: Path) -> None:
    """One deferred batch extends two segments of one recording in different spans, the
    first far enough to reach the second's span and past it: the spans join."""
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")

    async def run() -> None:
        await db.migrate()
        await db.run(_setup, db)
        index = SegmentIndex(db)
        a = await index.create_segment(1, 1, T0, 0, recording_id=1)
        b = await index.create_segment(1, 1, T0 + 10 * NS, 0, recording_id=1)
        c = await index.create_segment(1, 1, T0 + 30 * NS, 0, recording_id=1)
        await db.run(_check, db)
        await index.add_fragments(a, [_fragment(a, 1, T0, 25 * NS)], 800)
        await index.add_fragments(b, [_fragment(b, 1, T0 + 10 * NS, 3 * NS)], 800)
        await index.flush()
        await db.run(_check, db)
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [(T0, T0 + 25 * NS), (T0 + 30 * NS, T0 + 30 * NS)]
        await index.add_fragments(c, [_fragment(c, 1, T0 + 30 * NS, 5 * NS)], 800)
        await index.add_fragments(a, [_fragment(a, 2, T0 + 25 * NS, 4_500_000_000)], 800)
        await index.flush()
        await db.run(_check, db)
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [(T0, T0 + 35 * NS)]

    try:
        asyncio.run(run())
    finally:
        db.close()


def test_retention_and_recovery_keep_the_spans(tmp_path: Path) -> None:
    """Retention deletes the oldest segments (the span's start moves); start-up recovery drops a closed segment whose file is lost (the span splits), a
    ``writing`` one with no fragment and a ``deleting`` one."""
    volume = tmp_path / "volume"
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")

    async def run() -> None:
        await db.migrate()
        await db.run(_setup, db)
        index = SegmentIndex(db)
        made: list[int] = []
        # Recording 1: minutes 0-4, a gap, minutes 6-9.
        for minute in (0, 1, 2, 3, 4, 6, 7, 8, 9):
            start = T0 + minute * 60 * NS
            sid = await index.create_segment(1, 1, start, 0, recording_id=1)
            await index.add_fragments(sid, [_fragment(sid, 1, start, 60 * NS)], 800)
            await index.flush()
            await index.close_segment(sid)
            made.append(sid)
            path = volume / "1" / f"{sid}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"kept")
        await db.run(_check, db)
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [(T0, T0 + 300 * NS), (T0 + 360 * NS, T0 + 600 * NS)]
        # Keep 7 minutes back from just after minute 10: minutes 0-2 go, oldest first.
        policy = {1: StreamPolicy(1, retention_s=7 * 60)}
        await enforce(
            index,
            [(1, volume, 0)],
            policy,
            T0 + 601 * NS,
            free_bytes=lambda _: 10**12,
            recording_policies=policy,
        )
        await db.run(_check, db)
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [
                (T0 + 180 * NS, T0 + 300 * NS),
                (T0 + 360 * NS, T0 + 600 * NS),
            ]
        # A crash: minute 7's file is lost, a new segment was left writing with nothing in
        # it, minute 9 was being deleted.
        (volume / "1" / f"{made[6]}.mp4").unlink()
        left = await index.create_segment(1, 1, T0 + 600 * NS, 0, recording_id=1)
        await index.mark_deleting(made[8])
        (volume / "1" / f"{left}.mp4").write_bytes(b"")
        await db.run(_check, db)
        report = await recover_volume(index, 1, volume)
        assert report.dropped_segments == 3
        await db.run(_check, db)
        with db.engine.connect() as conn:
            assert _kept(conn)[1] == [
                (T0 + 180 * NS, T0 + 300 * NS),
                (T0 + 360 * NS, T0 + 420 * NS),
                (T0 + 480 * NS, T0 + 540 * NS),
            ]

    try:
        asyncio.run(run())
    finally:
        db.close()


def test_migration_fills_the_spans_from_the_segments(tmp_path: Path) -> None:
    """A database at 0010 with segments (joined, split by gaps, overlapping, unreadable,
    without recording) upgraded to 0011: the spans are the segments' recomputed ones."""
    from importlib import resources

    import alembic.command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("onvif_nvr.db") / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "0010")
    rows = [
        (1, "closed", 0, 60),
        (1, "closed", 60, 120),
        (1, "closed", 120.5, 180),
        (1, "closed", 181, 240),  # a one-second gap: a new span
        (1, "closed", 200, 230),  # inside the one before
        (1, "deleting", 240, 300),
        (1, "writing", 300, 300),
        (2, "closed", 10, 20),
        (None, "closed", 20, 30),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO volumes (id, path, min_free_bytes, status, status_reason) "
                "VALUES (1, '/v', 0, 'ok', '')"
            )
        )
        for rid in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO cameras (id, name, url, transport, backend, enabled, "
                    "retention_s, origin, created_wall_ns, token, mode, auto_created, "
                    "media_uri, stream_type, protocol) VALUES (:r, :n, '', 'tcp', 'native', 1, "
                    "0, 'cli', 0, :t, 'AlwaysConnect', 0, '', 'RTP-Unicast', 'RTSP')"
                ),
                {"r": rid, "n": f"cam{rid}", "t": f"RECEIVER_{rid}"},
            )
            conn.execute(
                text(
                    "INSERT INTO recordings (id, token, source_id, source_name, location, "
                    "description, address, content, max_retention_s, origin, camera_id, "
                    "created_wall_ns) VALUES (:r, :t, '', '', '', '', '', '', 0, 'cli', :r, 0)"
                ),
                {"r": rid, "t": f"RECORDING_{rid}"},
            )
        for rid, state, s, e in rows:
            conn.execute(
                text(
                    "INSERT INTO segments (camera_id, recording_id, volume_id, state, "
                    "start_wall_ns, end_wall_ns, start_90k, duration_90k, size, init_size, "
                    "fragment_count) VALUES (1, :r, 1, :st, :s, :e, 0, 0, 0, 0, 0)"
                ),
                {"r": rid, "st": state, "s": T0 + int(s * NS), "e": T0 + int(e * NS)},
            )
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "0011")
    with engine.connect() as conn:
        kept = _kept(conn)
        assert kept == _from_segments(conn)
        assert kept == {
            1: [
                (T0, T0 + 180 * NS),
                (T0 + 181 * NS, T0 + 240 * NS),
                (T0 + 300 * NS, T0 + 300 * NS),
            ],
            2: [(T0 + 10 * NS, T0 + 20 * NS)],
        }
    engine.dispose()


def test_span_upkeep_reads_by_an_index(tmp_path: Path) -> None:
    """Every statement the segment writes run, span upkeep included (not the rebuild),
    finds its rows by an index: they run with each segment write, every half second per
    stream."""
    from sqlalchemy import event

    db = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    statements: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not statement.startswith("INSERT"):
            statements.append((statement, parameters[0] if many else parameters))

    async def run() -> None:
        await db.migrate()
        await db.run(_setup, db)
        index = SegmentIndex(db)
        event.listen(db.engine, "before_cursor_execute", capture)
        made = []
        for at, length in ((0, 10), (10, 10), (20, 10), (5, 2), (40, 1)):
            sid = await index.create_segment(1, 1, T0 + at * NS, 0, recording_id=1)
            await index.add_fragments(sid, [_fragment(sid, 1, T0 + at * NS, length * NS)], 800)
            made.append(sid)
        await index.flush()
        for sid in (made[1], made[0], made[4], made[2]):
            await index.mark_deleting(sid)
        event.remove(db.engine, "before_cursor_execute", capture)

    try:
        asyncio.run(run())
        with db.engine.connect() as conn:
            for statement, parameters in statements:
                plan = [
                    row[3]
                    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                ]
                assert not any(step.startswith("SCAN") for step in plan), (statement, plan)
    finally:
        db.close()
    assert sum("recording_spans" in s for s in {s for s, _ in statements}) >= 5
