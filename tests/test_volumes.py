"""Several storage volumes: the nvr-volume.json marker, offline and foreign volumes left
alone (no writes, no sweeping of their rows), placement of segments over the usable ones,
retention per volume with its own floor, and `check` over all of them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import av
import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.config import Settings, StorageSettings
from onvif_nvr.db.engine import Database
from onvif_nvr.media.units import AccessUnit, TimedUnit
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.manager import RecordingManager
from onvif_nvr.recording.recovery import check_volume
from onvif_nvr.recording.retention import StreamPolicy, enforce
from onvif_nvr.recording.volumes import (
    MARKER_NAME,
    Marker,
    VolumeSet,
    read_marker,
    write_marker,
)
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.rtsp.bits import split_annexb
from onvif_nvr.system.secrets import Sealer
from tests.mediagen import access_units, h264_annexb

T0 = 1_800_000_000 * 10**9
_CLIP: list[tuple[bytes, bool]] = []


def units(count: int, offset_s: float = 0.0) -> list[TimedUnit]:
    """``count`` H.264 units at 25 fps (a keyframe every 10), starting ``offset_s`` in."""
    if len(_CLIP) < count:
        _CLIP[:] = access_units(h264_annexb(frames=max(count, 250), fps=25, gop=10), "h264")
    base = int(offset_s * 25)
    return [
        TimedUnit(
            AccessUnit("H264", tuple(split_annexb(data)), (base + i) * 3600, key),
            0,
            (base + i) * 3600,
            T0 + (base + i) * 40_000_000,
        )
        for i, (data, key) in enumerate(_CLIP[:count])
    ]


class IdleClock(ManualClock):
    """Time stands still and sleeps never end: the manager's retention loop runs once."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


@pytest.fixture
async def env(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    cameras = CameraStore(db, Sealer(b"k" * 32), ManualClock())
    yield SegmentIndex(db), cameras, tmp_path
    db.close()


async def record(
    index: SegmentIndex,
    camera_id: int,
    volumes: VolumeSet,
    stream: list[TimedUnit],
    clock: ManualClock | None = None,
    **kwargs: float,
) -> SegmentWriter:
    writer = SegmentWriter(
        camera_id,
        0,
        Path("/nonexistent"),
        index,
        segment_s=1.0,
        fragment_s=1.0,
        clock=clock or ManualClock(),
        placement=volumes.choose,
        **kwargs,
    )
    for unit in stream:
        await writer.add(unit)
        if clock is not None:
            clock.advance(0.04)
    await writer.finish()
    writer._io.shutdown(wait=True)
    return writer


def segment_file(volumes: VolumeSet, segment) -> Path:
    volume = volumes.by_id(segment.volume_id)
    assert volume is not None
    return volume.path / str(segment.camera_id) / f"{segment.id}.mp4"


def plays(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def status_of(index: SegmentIndex, volume_id: int) -> str:
    return next(v.status for v in await index.volumes() if v.id == volume_id)


async def test_new_volumes_get_a_marker_and_keep_it(env):
    index, _, tmp = env
    a, b = tmp / "a", tmp / "b" / "deeper"
    volumes = VolumeSet(index, box_id="box-1", clock=ManualClock(T0))
    attached = await volumes.attach([a, b, a])  # a directory listed twice is one volume
    assert [v.status for v in attached] == ["ok", "ok"]
    rows = await index.volumes()
    for volume, row in zip(attached, rows, strict=True):
        marker = read_marker(volume.path)
        assert marker is not None and marker.volume_uuid == row.uuid == volume.uuid
        assert marker.box == "box-1" and marker.created.startswith("2027-01-15T08:00:00")
        doc = json.loads((volume.path / MARKER_NAME).read_text())
        assert doc["format"] == 1
        assert not (volume.path / f".{MARKER_NAME}.tmp").exists()
    # Next start: the same volumes, the same rows, the markers untouched.
    again = await VolumeSet(index, box_id="box-1").attach([a, b])
    assert [(v.id, v.uuid, v.status) for v in again] == [(v.id, v.uuid, "ok") for v in attached]


async def test_segments_spread_over_two_volumes_are_indexed_there_and_play(env):
    index, cameras, tmp = env
    cams = [(await cameras.add(f"cam{i}", f"rtsp://192.0.2.{i}/x")).id for i in range(1, 4)]
    volumes = VolumeSet(index, policy="round-robin")
    a, b = await volumes.attach([tmp / "a", tmp / "b"])
    await asyncio.gather(*(record(index, cam, volumes, units(75)) for cam in cams))
    placed: dict[int, set[int]] = {}
    for segment in await index.segments():
        placed.setdefault(segment.camera_id, set()).add(segment.volume_id)
        path = segment_file(volumes, segment)
        assert path.stat().st_size == segment.size and segment.state == "closed"
        assert plays(path) == sum(r.sample_count for r in await index.fragments(segment.id))
    # Each camera stays on one volume; the cameras are spread over both.
    assert all(len(v) == 1 for v in placed.values()) and len(placed) == 3
    assert {next(iter(v)) for v in placed.values()} == {a.id, b.id}
    for volume in (a, b):
        assert volume.id is not None
        assert (await check_volume(index, volume.id, volume.path)).problems == []

    # most-free: each new segment goes where the most room above the floor is.
    free = {a.path: 10**12, b.path: 5 * 10**11}
    most_free = VolumeSet(index, free_bytes=lambda p: free[p])
    await most_free.attach([tmp / "a", tmp / "b"])
    cam = cams[0]
    await record(index, cam, most_free, units(50, offset_s=100))
    free[a.path], free[b.path] = 10**11, 10**12
    await record(index, cam, most_free, units(50, offset_s=200))
    later = [s for s in await index.segments(cam) if s.start_wall_ns >= T0 + 100 * 10**9]
    first = {s.volume_id for s in later if s.start_wall_ns < T0 + 200 * 10**9}
    second = {s.volume_id for s in later if s.start_wall_ns >= T0 + 200 * 10**9}
    assert first == {a.id} and second == {b.id}


@pytest.fixture
def small_volume(tmp_path):
    """A real 300 KiB file system (tmpfs), so writes fail with ENOSPC as on a full disk."""
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


async def test_a_full_volume_sends_new_segments_to_the_other(env, small_volume):
    index, cameras, tmp = env
    cam = (await cameras.add("cam", "rtsp://192.0.2.1/x")).id
    volumes = VolumeSet(index, policy="round-robin")
    small, big = await volumes.attach([small_volume, tmp / "big"])
    assert small.id is not None and big.id is not None
    clock = ManualClock()
    writer = await record(index, cam, volumes, units(250), clock=clock, retry_s=1.0)
    assert writer.storage_errors == 1 and "No space" in writer.last_storage_error
    assert await status_of(index, small.id) == "full"
    segments = await index.segments(cam)
    on = [s.volume_id for s in segments]
    assert on[0] == small.id and on[-1] == big.id
    assert on == sorted(on, key=lambda v: v != small.id)  # never back to the full one
    # The recording went on: the disk-full gap is closed, both volumes are consistent.
    assert writer.units_written > 150
    for volume in (small, big):
        assert (await check_volume(index, volume.id, volume.path)).problems == []
    for segment in segments:
        assert plays(segment_file(volumes, segment)) > 0
    # Room again (retention, a bigger disk): the periodic refresh finds it writable.
    await volumes.refresh()
    assert await status_of(index, small.id) == "full"
    await asyncio.to_thread(
        subprocess.run, ["mount", "-o", "remount,size=20m", str(small_volume)], check=True
    )
    await volumes.refresh()
    assert await status_of(index, small.id) == "ok"


def unmount(path: Path) -> Path:
    """Simulate an unmounted disk: its contents go away, the empty mount point stays."""
    disk = path.with_name(path.name + ".disk")
    path.rename(disk)
    path.mkdir()
    return disk


def remount(path: Path, disk: Path) -> None:
    path.rmdir()
    disk.rename(path)


async def test_a_volume_that_loses_its_marker_is_left_alone(env):
    index, cameras, tmp = env
    cam = (await cameras.add("cam", "rtsp://192.0.2.1/x", retention_s=1)).id
    a_path, b_path = tmp / "a", tmp / "b"
    volumes = VolumeSet(index, policy="round-robin")
    a, b = await volumes.attach([a_path, b_path])
    await record(index, cam, volumes, units(75))
    on_a = await index.segments(cam)
    assert on_a and {s.volume_id for s in on_a} == {a.id}

    disk = unmount(a_path)  # while recording
    await record(index, cam, volumes, units(75, offset_s=100))
    assert await status_of(index, a.id) == "offline"
    assert list(a_path.iterdir()) == []  # nothing was created in the empty mount point
    after = [s for s in await index.segments(cam) if s.id not in {x.id for x in on_a}]
    assert after and {s.volume_id for s in after} == {b.id}

    # A restart with the disk still missing: no recovery sweep, no retention, no writes.
    settings = Settings(
        data_dir=tmp,
        storage=StorageSettings(record=False, volumes=(str(a_path), str(b_path))),
    )
    manager = RecordingManager(settings, index._db, cameras, IdleClock(T0 + 3600 * 10**9))
    await manager.start()
    try:
        assert [v.status for v in manager.volumes.volumes] == ["offline", "ok"]
        assert "missing" in manager.volumes.volumes[0].reason
        # retention_s=1: everything is old (the manager's own first pass may run too)
        deleted = await manager.enforce_retention()
        assert {s.volume_id for s in deleted} <= {b.id}
        assert not any(p.suffix == ".mp4" for p in b_path.rglob("*"))
        assert {s.id for s in await index.segments(cam)} == {s.id for s in on_a}
        assert list(a_path.iterdir()) == []
        assert await manager.volumes.choose(cam) == (b.id, b.path)

        # The disk comes back: recovered, used again (and only now swept by retention).
        remount(a_path, disk)
        await manager.volumes.refresh()
        assert manager.volumes.volumes[0].status == "ok"
        assert await status_of(index, a.id) == "ok"
        for segment in on_a:
            assert plays(segment_file(manager.volumes, segment)) > 0
        assert (await check_volume(index, a.id, a_path)).problems == []
    finally:
        await manager.stop()


async def test_a_foreign_marker_is_refused(env, caplog):
    index, cameras, tmp = env
    cam = (await cameras.add("cam", "rtsp://192.0.2.1/x")).id
    # Another NVR's disk: a marker, and no row of ours.
    other = tmp / "other"
    other.mkdir()
    theirs = Marker(str(uuid.uuid4()), "box-2", "2027-01-01T00:00:00+00:00")
    write_marker(other, theirs)
    # Ours, marked by this box; then a disk swapped in with another volume's marker.
    ours, swapped = tmp / "ours", tmp / "swapped"
    await VolumeSet(index, box_id="box-1").attach([ours, swapped])
    write_marker(swapped, Marker(str(uuid.uuid4()), "box-1", "2027-01-01T00:00:00+00:00"))

    volumes = VolumeSet(index, box_id="box-1")
    got = await volumes.attach([other, ours, swapped])
    assert [v.status for v in got] == ["foreign", "ok", "foreign"]
    assert got[0].id is None and str(other) not in {r.path for r in await index.volumes()}
    assert "box-2" in got[0].reason and "foreign" in caplog.text
    assert got[2].id is not None and await status_of(index, got[2].id) == "foreign"
    assert read_marker(other) == theirs and sorted(p.name for p in other.iterdir()) == [MARKER_NAME]
    assert [v.path for v in volumes.online()] == [ours]
    assert await volumes.choose(cam) == (got[1].id, ours)
    # A writer's report cannot turn a foreign volume back on.
    await index.set_volume_status(got[2].id, "ok")
    assert await status_of(index, got[2].id) == "foreign"

    # Our own volume seen by another box (its database copied elsewhere) is foreign too.
    elsewhere = VolumeSet(index, box_id="box-3")
    assert [v.status for v in await elsewhere.attach([ours])] == ["foreign"]
    assert await elsewhere.choose(cam) is None


async def test_retention_two_volumes_each_with_its_own_floor(env):
    index, cameras, tmp = env
    cam1 = (await cameras.add("cam1", "rtsp://192.0.2.1/x")).id
    cam2 = (await cameras.add("cam2", "rtsp://192.0.2.2/x")).id
    volumes = VolumeSet(index, policy="round-robin")
    a, b = await volumes.attach([tmp / "a", tmp / "b"])
    await record(index, cam1, volumes, units(100))
    await record(index, cam2, volumes, units(100))
    on_a = [s for s in await index.segments() if s.volume_id == a.id]
    on_b = [s for s in await index.segments() if s.volume_id == b.id]
    assert len(on_a) >= 3 and len(on_b) >= 3
    free = {a.path: 1000, b.path: 1000}
    deleted = await enforce(
        index,
        [
            (a.id, a.path, 1000 + on_a[0].size + 1),  # two segments short
            (b.id, b.path, 1000),  # at its floor
        ],
        {cam1: StreamPolicy(cam1), cam2: StreamPolicy(cam2)},
        T0 + 3600 * 10**9,
        free_bytes=lambda p: free[p],
    )
    assert [s.id for s in deleted] == [on_a[0].id, on_a[1].id]
    assert not segment_file(volumes, on_a[0]).exists()
    assert all(segment_file(volumes, s).exists() for s in on_b)
    # The floor can follow each volume's size.
    sized = VolumeSet(index, min_free_bytes=1, min_free_percent=10)
    (volume,) = await sized.attach([tmp / "a"])
    st = os.statvfs(tmp / "a")
    assert volume.min_free_bytes == st.f_blocks * st.f_frsize // 10
    assert next(r for r in await index.volumes() if r.id == a.id).min_free_bytes == (
        volume.min_free_bytes
    )


async def test_check_reports_offline_and_foreign_volumes(env, capsys):
    from onvif_nvr.cli import _check

    index, cameras, tmp = env
    cam = (await cameras.add("cam", "rtsp://192.0.2.1/x")).id
    a_path, b_path, c_path = tmp / "a", tmp / "b", tmp / "c"
    volumes = VolumeSet(index, policy="round-robin")
    a, _ = await volumes.attach([a_path, b_path])
    await record(index, cam, volumes, units(50))
    c_path.mkdir()
    write_marker(c_path, Marker(str(uuid.uuid4()), "", ""))
    settings = Settings(
        data_dir=tmp, storage=StorageSettings(volumes=(str(a_path), str(b_path), str(c_path)))
    )
    assert await _check(settings, repair=False) == 1  # the foreign one is a problem
    out = capsys.readouterr().out
    assert "c: foreign" in out and f"{a_path}: " in out and "0 problems" in out

    rows = len(await index.segments(cam))
    disk = unmount(a_path)
    assert await _check(settings, repair=True) == 0
    out = capsys.readouterr().out
    assert f"{a_path}: offline" in out and f"{rows} segments not checked" in out
    assert len(await index.segments(cam)) == rows  # --repair did not drop the rows
    assert await _check(settings, repair=False) == 1
    remount(a_path, disk)
