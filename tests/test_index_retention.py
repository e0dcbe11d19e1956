"""The segment index (writes in the crash-safe order, lookups by time) and the retention plan."""

from __future__ import annotations

import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.db.engine import Database
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import FragmentRow, SegmentIndex, SegmentRow
from onvif_nvr.recording.retention import StreamPolicy, VolumeState, plan
from onvif_nvr.system.secrets import Sealer

S = 10**9
T0 = 1_800_000_000 * S


@pytest.fixture
async def env(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    cameras = CameraStore(db, Sealer(b"k" * 32), ManualClock())
    cam = await cameras.add("cam", "rtsp://192.0.2.1/x")
    index = SegmentIndex(db)
    volume = await index.ensure_volume(str(tmp_path / "vol"))
    yield index, cam.id, volume
    db.close()


def fragments(
    segment_id: int, start_wall_ns: int, start_90k: int, count: int, gop: int = 2
) -> list[FragmentRow]:
    out, offset = [], 1000
    for i in range(count):
        out.append(
            FragmentRow(
                segment_id,
                i + 1,
                start_wall_ns + i * S,
                start_90k + i * 90_000,
                90_000,
                offset,
                500,
                i % gop == 0,
                25,
            )
        )
        offset += 500
    return out


async def test_fragments_move_the_segment_end_and_seek_finds_the_clean_point(env):
    index, cam, volume = env
    seg = await index.create_segment(cam, volume, T0, 0)
    await index.add_fragments(seg, fragments(seg, T0, 0, 6), init_size=1000)
    row = (await index.segments(cam))[0]
    assert (row.state, row.fragment_count, row.size, row.end_wall_ns) == (
        "writing",
        6,
        4000,
        T0 + 6 * S,
    )
    found = await index.find_at(cam, T0 + 3 * S + 500_000_000)  # inside fragment 4 (not sync)
    assert found is not None and found[1].seq == 3  # fragment 3 starts with a sync sample
    assert await index.find_at(cam, T0 - 1) is None
    await index.close_segment(seg)
    seg2 = await index.create_segment(cam, volume, T0 + 10 * S, 900_000)
    await index.add_fragments(seg2, fragments(seg2, T0 + 10 * S, 900_000, 2), init_size=1000)
    assert await index.recorded_ranges(cam, T0, T0 + 60 * S) == [
        (T0, T0 + 6 * S),
        (T0 + 10 * S, T0 + 12 * S),
    ]
    await index.mark_deleting(seg)
    assert (await index.find_at(cam, T0 + 3 * S)) is None  # being deleted: not served
    await index.drop_segment(seg)
    assert [s.id for s in await index.segments(cam)] == [seg2]
    assert await index.fragments(seg) == []


async def test_gaps_are_explicit(env):
    index, cam, _ = env
    await index.open_gap(cam, T0, "offline")
    await index.close_gaps(cam, T0 + 5 * S)
    from sqlalchemy import select

    from onvif_nvr.db import models

    def read():
        with index._db.session() as session:
            return [
                (g.start_wall_ns, g.end_wall_ns, g.reason)
                for g in session.scalars(select(models.Gap))
            ]

    assert await index._db.run(read) == [(T0, T0 + 5 * S, "offline")]


def seg(
    id_: int,
    cam: int,
    start_s: int,
    end_s: int,
    size: int = 100,
    volume: int = 1,
    state: str = "closed",
) -> SegmentRow:
    return SegmentRow(id_, cam, volume, state, T0 + start_s * S, T0 + end_s * S, 0, 0, size, 10, 1)


def test_retention_by_age_respects_locks_and_open_segments():
    segments = [
        seg(1, 1, 0, 60),
        seg(2, 1, 60, 120),
        seg(3, 1, 120, 180),
        seg(4, 1, 180, 240, state="writing"),
        seg(5, 2, 0, 60),
    ]
    policies = {1: StreamPolicy(1, retention_s=100), 2: StreamPolicy(2, retention_s=0)}
    now = T0 + 250 * S
    assert [s.id for s in plan(now, segments, policies, [])] == [1, 2]
    # A lock on 1:30-1:40 keeps segment 2.
    assert [
        s.id for s in plan(now, segments, policies, [], {1: [(T0 + 90 * S, T0 + 100 * S)]})
    ] == [1]


def test_retention_by_free_space_takes_the_oldest_of_the_lowest_priority():
    segments = [
        seg(1, 1, 0, 60, 300),
        seg(2, 2, 10, 70, 300),
        seg(3, 2, 70, 130, 300),
        seg(4, 1, 60, 120, 300),
        seg(9, 3, 0, 60, 300, volume=2),
    ]
    policies = {1: StreamPolicy(1, priority=5), 2: StreamPolicy(2, priority=1), 3: StreamPolicy(3)}
    volumes = [
        VolumeState(1, free_bytes=100, min_free_bytes=600),
        VolumeState(2, free_bytes=10_000, min_free_bytes=0),
    ]
    # 500 bytes short on volume 1: camera 2 (priority 1) goes first, oldest first.
    assert [s.id for s in plan(T0, segments, policies, volumes)] == [2, 3]
    locked = plan(T0, segments, policies, volumes, {2: [(T0, T0 + 200 * S)]})
    assert [s.id for s in locked] == [1, 4]
