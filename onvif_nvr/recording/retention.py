"""Which segments retention deletes, decided without I/O (docs/design/storage.md).

1. per stream, segments that end before ``now - retention`` (0 = unlimited);
2. per volume, while free space is under the floor, the oldest segment of the
   lowest-priority stream on that volume;
3. never a segment that overlaps a locked range of its stream.
Whole segments are the unit; the caller deletes them in the order returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from onvif_nvr.recording.index import SegmentRow


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


def plan(
    now_wall_ns: int,
    segments: Iterable[SegmentRow],
    policies: Mapping[int, StreamPolicy],
    volumes: Iterable[VolumeState],
    locks: Mapping[int, Sequence[tuple[int, int]]] = {},  # noqa: B006 - read-only default
) -> list[SegmentRow]:
    closed = sorted((s for s in segments if s.state == "closed"), key=lambda s: s.start_wall_ns)
    doomed: list[SegmentRow] = []
    chosen: set[int] = set()
    for segment in closed:
        policy = policies.get(segment.camera_id)
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
                policies.get(s.camera_id, StreamPolicy(s.camera_id)).priority,
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
