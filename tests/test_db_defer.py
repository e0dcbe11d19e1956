"""Deferred database writes: batched, applied before any later job, retried, never lost at
close; and the segment index's fragment rows that use them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.db import engine
from onvif_nvr.db.engine import Database
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import FragmentRow, SegmentIndex
from onvif_nvr.system.secrets import Sealer


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await database.migrate()
    yield database
    database.close()


async def test_deferred_items_are_batched_and_precede_later_jobs(db: Database) -> None:
    calls: list[tuple[str, list[int]]] = []

    def a(items: list[int]) -> None:
        calls.append(("a", items))

    def b(items: list[int]) -> None:
        calls.append(("b", items))

    for i in range(3):
        db.defer(a, i)
    db.defer(b, 10)
    db.defer(a, 4)
    seen = await db.run(lambda: list(calls))
    assert seen == [("a", [0, 1, 2]), ("b", [10]), ("a", [4])]
    db.defer(a, 5)  # nobody runs a job: the timer applies it
    await asyncio.sleep(engine.DEFER_S + 0.3)
    assert calls[-1] == ("a", [5])


async def test_failed_batches_are_retried_then_dropped(db: Database, caplog) -> None:
    attempts: list[list[int]] = []
    fail = {"left": 1}

    def flaky(items: list[int]) -> None:
        attempts.append(items)
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("database is locked")

    db.defer(flaky, 1)
    await db.flush()
    await db.flush()
    assert attempts == [[1], [1]]

    def broken(items: list[int]) -> None:
        attempts.append(items)
        raise RuntimeError("constraint")

    db.defer(broken, 2)
    with caplog.at_level(logging.ERROR, logger="onvif_nvr.db.engine"):
        for _ in range(engine.DEFER_ATTEMPTS + 1):
            await db.flush()
    assert attempts[2:] == [[2]] * engine.DEFER_ATTEMPTS
    assert "dropped" in caplog.text


async def test_close_applies_what_is_pending(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    await database.migrate()
    got: list[int] = []
    database.defer(got.extend, 7)
    database.close()
    assert got == [7]


async def test_fragment_rows_are_committed_in_one_batch(db: Database) -> None:
    index = SegmentIndex(db)
    volume = await index.ensure_volume("/v")
    cameras = CameraStore(db, Sealer(b"k" * 32), ManualClock())
    ids = [(await cameras.add(f"cam{i}", f"rtsp://192.0.2.1/{i}")).id for i in (1, 2)]
    segments = [await index.create_segment(cam, volume, 10**18, 0) for cam in ids]
    for seq in (1, 2, 3):
        for segment in segments:
            await index.add_fragments(
                segment,
                [
                    FragmentRow(
                        segment,
                        seq,
                        10**18 + seq * 10**9,
                        seq * 90_000,
                        90_000,
                        100 * seq,
                        100,
                        True,
                        25,
                    )
                ],
                50,
            )
    rows = await index.segments()  # a query first applies the deferred rows
    assert [(r.fragment_count, r.size, r.duration_90k, r.init_size) for r in rows] == [
        (3, 400, 360_000, 50)
    ] * 2
    assert rows[0].end_wall_ns == 10**18 + 4 * 10**9
    assert [f.seq for f in await index.fragments(segments[1])] == [1, 2, 3]


async def test_a_bound_method_batches_like_a_function(db: Database) -> None:
    """``obj.method`` is a new object at each access: items deferred through it still go
    in one call (one transaction), not one each."""

    class Sink:
        def __init__(self) -> None:
            self.calls: list[list[int]] = []

        def take(self, items: list[int]) -> None:
            self.calls.append(items)

    sink = Sink()
    for i in range(5):
        db.defer(sink.take, i)
    await db.flush()
    assert sink.calls == [[0, 1, 2, 3, 4]]


def test_deferred_writes_survive_a_cancelled_caller(tmp_path: Path) -> None:
    """A task cancelled while its job waits behind another (the box's shutdown cancels its
    tasks) loses its own job, never the deferred writes it carried."""
    import threading

    db = Database(f"sqlite:///{tmp_path / 'defer.sqlite3'}")
    written: list[int] = []
    gate = threading.Event()

    async def main() -> None:
        blocker = asyncio.ensure_future(db.run(gate.wait))
        await asyncio.sleep(0.05)
        db.defer(written.extend, 1)
        db.defer(written.extend, 2)
        caller = asyncio.ensure_future(db.run(lambda: "never"))
        await asyncio.sleep(0.05)
        caller.cancel()  # its job is still queued behind the blocker
        gate.set()
        await blocker
        await db.flush()
        assert written == [1, 2]

    asyncio.run(main())
    db.close()
