"""Which segments retention deletes, decided without I/O (docs/design/storage.md).

1. per recording (or, for a segment without one, per stream), segments that end before
   ``now - retention`` (0 = unlimited);
2. per volume, while free space is under the floor, the oldest segment of the
   lowest-priority stream on that volume;
3. never a segment that overlaps a locked range of its stream.
Whole segments are the unit; the caller deletes them in the order returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from onvif_nvr.recording.index import DETACHED, SegmentIndex, SegmentRow


@dataclasses.dataclass(frozen=True)
class StreamPolicy:
    camera_id: int
    retention_s: int = 0  # 0 = unlimited
    priority: int = 0  # lower goes first when space is needed


@dataclasses.dataclass(frozen=True)
class VolumeState:
    volume_id: int
    free_bytes: int
    min_free_bytes: int


def _locked(segment: SegmentRow, locks: Mapping[int, Sequence[tuple[int, int]]]) -> bool:
    return any(
        start < segment.end_wall_ns and segment.start_wall_ns < end
        for start, end in locks.get(segment.camera_id, ())
    )


def _policy(
    segment: SegmentRow,
    policies: Mapping[int, StreamPolicy],
    recording_policies: Mapping[int, StreamPolicy],
) -> StreamPolicy | None:
    if segment.recording_id is not None:
        return recording_policies.get(segment.recording_id)
    return policies.get(segment.camera_id)


def plan(
    now_wall_ns: int,
    segments: Iterable[SegmentRow],
    policies: Mapping[int, StreamPolicy],
    volumes: Iterable[VolumeState],
    locks: Mapping[int, Sequence[tuple[int, int]]] = {},  # noqa: B006 - read-only default
    recording_policies: Mapping[int, StreamPolicy] = {},  # noqa: B006 - read-only default
) -> list[SegmentRow]:
    """``policies`` by stream (camera id) for segments without a recording,
    ``recording_policies`` by recording id for the others; ``locks`` by stream."""
    closed = sorted((s for s in segments if s.state == "closed"), key=lambda s: s.start_wall_ns)
    doomed: list[SegmentRow] = []
    chosen: set[int] = set()
    for segment in closed:
        policy = _policy(segment, policies, recording_policies)
        if policy is None or policy.retention_s <= 0 or _locked(segment, locks):
            continue
        if segment.end_wall_ns < now_wall_ns - policy.retention_s * 10**9:
            doomed.append(segment)
            chosen.add(segment.id)
    for volume in volumes:
        deficit = (
            volume.min_free_bytes
            - volume.free_bytes
            - sum(s.size for s in doomed if s.volume_id == volume.volume_id)
        )
        if deficit <= 0:
            continue
        candidates = [
            s
            for s in closed
            if s.volume_id == volume.volume_id and s.id not in chosen and not _locked(s, locks)
        ]
        candidates.sort(
            key=lambda s: (
                (_policy(s, policies, recording_policies) or StreamPolicy(s.camera_id)).priority,
                s.start_wall_ns,
            )
        )
        for segment in candidates:
            if deficit <= 0:
                break
            doomed.append(segment)
            chosen.add(segment.id)
            deficit -= segment.size
    return doomed


async def enforce(
    index: SegmentIndex,
    volumes: Sequence[tuple[int, Path, int]],
    policies: Mapping[int, StreamPolicy],
    now_wall_ns: int,
    *,
    free_bytes: Callable[[Path], int],
    locks: Mapping[int, Sequence[tuple[int, int]]] | None = None,
    on_deleted: Callable[[SegmentRow], None] | None = None,
    recording_policies: Mapping[int, StreamPolicy] | None = None,
) -> list[SegmentRow]:
    """Plan and carry out one retention pass over ``volumes`` (id, directory, floor).
    Deletion order: mark the segment ``deleting`` (committed) → unlink → fsync the
    directory → drop the rows. Segments on volumes not listed (offline, foreign) are left
    alone, even when they are past their retention time."""
    states = [
        VolumeState(volume_id, await asyncio.to_thread(free_bytes, path), min_free)
        for volume_id, path, min_free in volumes
    ]
    paths = {volume_id: path for volume_id, path, _ in volumes}
    segments = [s for s in await index.segments(states=("closed",)) if s.volume_id in paths]
    doomed = plan(now_wall_ns, segments, policies, states, locks or {}, recording_policies or {})
    await delete_segments(index, doomed, paths, on_deleted)
    return doomed


async def delete_segments(
    index: SegmentIndex,
    segments: Iterable[SegmentRow],
    paths: Mapping[int, Path],
    on_deleted: Callable[[SegmentRow], None] | None = None,
) -> None:
    """Delete in storage.md's order: mark ``deleting`` (committed) → unlink → fsync the
    directory → drop the rows. A segment whose volume is not in ``paths`` (offline,
    foreign) is only marked: recovery finishes it when the volume is back."""
    for segment in segments:
        await index.mark_deleting(segment.id)
        volume = paths.get(segment.volume_id)
        if volume is None:
            continue
        path = volume / str(segment.camera_id) / f"{segment.id}.mp4"
        await asyncio.to_thread(unlink_durably, path)
        await index.drop_segment(segment.id)
        if on_deleted is not None:
            on_deleted(segment)


async def delete_recording(
    index: SegmentIndex,
    recording_id: int,
    on_deleted: Callable[[SegmentRow], None] | None = None,
) -> None:
    """Delete every segment of a recording (DeleteRecording), on the volumes that are
    ours and mounted; the others' are marked ``deleting`` for recovery to finish."""
    paths = {v.id: Path(v.path) for v in await index.volumes() if v.status not in DETACHED}
    await delete_segments(index, await index.segments(recording_id=recording_id), paths, on_deleted)


def unlink_durably(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
