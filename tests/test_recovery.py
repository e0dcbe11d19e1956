"""Crash recovery and `check`: a segment left open by a crash is indexed up to its last
complete fragment and its torn tail cut; orphans are swept; `check` finds what is wrong."""

from __future__ import annotations

import asyncio
import os

import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.db.engine import Database
from onvif_nvr.media.units import AccessUnit, TimedUnit
from onvif_nvr.mp4.boxes import Sample, avcc_sample, media_fragment
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.recovery import check_volume, recover_volume
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.rtsp.bits import split_annexb
from onvif_nvr.system.secrets import Sealer
from tests.mediagen import access_units, h264_annexb

T0 = 1_800_000_000 * 10**9


def units(count: int = 60) -> list[TimedUnit]:
    clip = access_units(h264_annexb(frames=count, fps=25, gop=10), "h264")
    return [
        TimedUnit(
            AccessUnit("H264", tuple(split_annexb(data)), i * 3600, key),
            0,
            i * 3600,
            T0 + i * 40_000_000,
        )
        for i, (data, key) in enumerate(clip)
    ]


def append(path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


@pytest.fixture
async def env(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("cam", "rtsp://192.0.2.1/x")
    index = SegmentIndex(db)
    volume = tmp_path / "vol"
    volume_id = await index.ensure_volume(str(volume))
    yield index, cam.id, volume_id, volume
    db.close()


async def crashed_segment(index, cam, volume_id, volume):
    """Write 40 units (4 fragments) through the writer, then leave it as a crash would:
    one more complete fragment on disk without its row, and a torn fragment after it."""
    writer = SegmentWriter(cam, volume_id, volume, index)
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    clip = units(60)
    for unit in clip[:41]:
        await writer.add(unit)
    segment = writer._segment
    assert segment is not None and segment.fragments == 4
    extra = media_fragment(
        99,
        [
            (
                1,
                clip[50].dts_90k,
                [Sample(avcc_sample(u.unit.payloads), 3600, u.unit.keyframe) for u in clip[50:60]],
            )
        ],
    )
    append(segment.path, extra + extra[: len(extra) // 2])
    writer._io.shutdown(wait=True)
    os.close(segment.fd)
    return segment, len(extra)


async def test_recover_indexes_complete_fragments_and_cuts_the_torn_tail(env):
    index, cam, volume_id, volume = env
    segment, extra = await crashed_segment(index, cam, volume_id, volume)
    durable = segment.size
    report = await recover_volume(index, volume_id, volume)
    assert report.recovered_fragments == 1
    assert report.truncated_bytes == extra // 2
    assert report.closed_segments == 1
    row = (await index.segments(cam))[0]
    assert row.state == "closed" and row.fragment_count == 5 and row.size == durable + extra
    assert segment.path.stat().st_size == row.size
    fragments = await index.fragments(row.id)
    assert fragments[-1].start_90k == 50 * 3600
    assert fragments[-1].start_wall_ns == T0 + 50 * 40_000_000
    assert (await check_volume(index, volume_id, volume)).problems == []


async def test_orphans_missing_files_and_check_repair(env):
    index, cam, volume_id, volume = env
    segment, _ = await crashed_segment(index, cam, volume_id, volume)
    await recover_volume(index, volume_id, volume)
    orphan = volume / str(cam) / "424242.mp4"
    orphan.write_bytes(b"junk")
    append(segment.path, b"\x00" * 100)  # bytes after the durable end
    report = await check_volume(index, volume_id, volume)
    assert any("no index row" in p for p in report.problems)
    assert any("index says" in p for p in report.problems)
    repaired = await check_volume(index, volume_id, volume, repair=True)
    assert repaired.orphan_files == 1 and repaired.truncated_bytes == 100
    assert (await check_volume(index, volume_id, volume)).problems == []
    segment.path.unlink()
    report = await check_volume(index, volume_id, volume, repair=True)
    assert any("missing" in p for p in report.problems) and report.dropped_segments == 1
    assert await index.segments(cam) == []


async def recorded_segments(index, cam, volume_id, volume, count=3):
    """`count` closed one-second segments written by the real writer."""
    writer = SegmentWriter(cam, volume_id, volume, index, segment_s=1.0, fragment_s=1.0)
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    for unit in units(25 * count + 1)[: 25 * count + 1]:
        await writer.add(unit)
    await writer.finish()
    writer._io.shutdown(wait=True)
    return await index.segments(cam)


async def test_retention_deletes_old_and_spares_locked_segments(env):
    from onvif_nvr.recording.retention import StreamPolicy, enforce

    index, cam, volume_id, volume = env
    segments = await recorded_segments(index, cam, volume_id, volume)
    assert len(segments) >= 3 and all(s.state == "closed" for s in segments)
    files = {s.id: volume / str(cam) / f"{s.id}.mp4" for s in segments}
    assert all(p.exists() for p in files.values())
    await index.add_lock(cam, segments[1].start_wall_ns, segments[1].start_wall_ns + 1)
    deleted_ids = []
    now = segments[-1].end_wall_ns + 10 * 10**9
    deleted = await enforce(
        index,
        [(volume_id, volume, 0)],
        {cam: StreamPolicy(cam, retention_s=5)},
        now,
        free_bytes=lambda path: 10**12,
        locks=await index.locks(),
        on_deleted=lambda s: deleted_ids.append(s.id),
    )
    kept = {s.id for s in await index.segments(cam)}
    assert deleted_ids == [s.id for s in deleted] and segments[1].id in kept
    assert {s.id for s in deleted} == {s.id for s in segments} - {segments[1].id}
    assert all(not files[i].exists() for i in deleted_ids) and files[segments[1].id].exists()


async def test_retention_frees_space_oldest_first(env):
    from onvif_nvr.recording.retention import StreamPolicy, enforce

    index, cam, volume_id, volume = env
    segments = await recorded_segments(index, cam, volume_id, volume)
    need = segments[0].size + 1  # one segment's worth is not enough, two are
    deleted = await enforce(
        index,
        [(volume_id, volume, need)],
        {cam: StreamPolicy(cam)},
        segments[-1].end_wall_ns,
        free_bytes=lambda path: 0,
    )
    assert [s.id for s in deleted] == [segments[0].id, segments[1].id]


@pytest.fixture
def small_volume(tmp_path):
    """A real 300 KiB file system (tmpfs), so writes fail with ENOSPC as on a full disk."""
    import subprocess

    path = tmp_path / "small"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def test_disk_full_pauses_loudly_keeps_earlier_data_and_resumes(env, small_volume):
    import subprocess

    from onvif_nvr.clock import ManualClock as Clock

    index, cam, _, _ = env
    volume_id = await index.ensure_volume(str(small_volume))
    clock = Clock()
    writer = SegmentWriter(
        cam, volume_id, small_volume, index, segment_s=2.0, fragment_s=1.0, clock=clock, retry_s=1.0
    )
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    stream = units(250)  # 10 s at 25 fps, far more than 300 KiB holds
    for unit in stream:
        await writer.add(unit)
        clock.advance(0.04)
        if writer.storage_errors:
            break
    assert writer.storage_errors == 1 and "No space" in writer.last_storage_error
    # Earlier data is intact: every row matches its file, nothing torn is left.
    assert (await check_volume(index, volume_id, small_volume)).problems == []
    from sqlalchemy import select

    from onvif_nvr.db import models

    def state():
        with index._db.session() as session:
            volume = session.get(models.Volume, volume_id)
            gaps = [(g.reason, g.end_wall_ns) for g in session.scalars(select(models.Gap))]
            return volume.status, gaps

    status, gaps = await index._db.run(state)
    assert status == "full" and gaps == [("disk-full", None)]
    # Space comes back: the next keyframe after the retry time starts a new segment.
    await asyncio.to_thread(
        subprocess.run, ["mount", "-o", "remount,size=20m", str(small_volume)], check=True
    )
    clock.advance(2.0)
    before = writer.units_written
    for unit in units(250)[:60]:
        shifted = type(unit)(unit.unit, 0, unit.dts_90k + 400 * 3600, unit.wall_ns + 16 * 10**9)
        await writer.add(shifted)
        clock.advance(0.04)
    await writer.finish()
    writer._io.shutdown(wait=True)
    assert writer.units_written > before
    status, gaps = await index._db.run(state)
    assert status == "ok" and gaps[0][0] == "disk-full" and gaps[0][1] is not None
    assert (await check_volume(index, volume_id, small_volume)).problems == []
