"""Start-up recovery and the ``check`` command (docs/design/storage.md).

Recovery, per volume, before any writer starts:
* a segment left ``writing`` by a crash: its file is scanned from the end of the last
  indexed fragment; every complete fragment found is indexed (its wall time derived from
  the previous one's plus media time), the torn tail is cut, the file fsynced, the segment
  closed (or dropped when it holds no complete fragment);
* a segment left ``deleting``: its file is removed and its rows dropped;
* a file with no row (a create interrupted before its row was committed... or after the
  row was dropped): deleted;
* a closed segment whose file is gone: its rows dropped.

``check`` verifies every closed segment against its file without changing anything, or
repairs what it can (truncating torn tails, re-indexing, dropping lost files).
Everything here is synchronous file work called through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

from onvif_nvr.mp4.reader import scan_fragments
from onvif_nvr.recording.index import FragmentRow, SegmentIndex, SegmentRow
from onvif_nvr.recording.retention import unlink_durably

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    recovered_fragments: int = 0
    truncated_bytes: int = 0
    closed_segments: int = 0
    dropped_segments: int = 0
    orphan_files: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


def _path(volume_path: Path, segment: SegmentRow) -> Path:
    return volume_path / str(segment.camera_id) / f"{segment.id}.mp4"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _truncate_and_sync(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_rows(
    segment: SegmentRow, known: list[FragmentRow], data: bytes, start: int
) -> tuple[list[FragmentRow], int]:
    """Rows for the complete fragments after offset ``start``; and where they end."""
    scan = scan_fragments(data, start)
    rows: list[FragmentRow] = []
    last = known[-1] if known else None
    seq = last.seq if last else 0
    for fragment in scan.fragments:
        run = next((t for t in fragment.tracks if t.track_id == 1), None)
        if run is None or run.sample_count == 0:
            continue
        start_90k = segment.start_90k + run.base_decode_time
        if last is None:
            wall_ns = segment.start_wall_ns + (start_90k - segment.start_90k) * 100_000 // 9
        else:
            wall_ns = last.start_wall_ns + (start_90k - last.start_90k) * 100_000 // 9
        seq += 1
        row = FragmentRow(
            segment.id,
            seq,
            wall_ns,
            start_90k,
            run.duration_total,
            fragment.offset,
            fragment.size,
            run.first_sample_is_sync,
            run.sample_count,
        )
        rows.append(row)
        last = row
    return rows, scan.complete_until


async def recover_volume(index: SegmentIndex, volume_id: int, volume_path: Path) -> Report:
    report = Report()
    segments = [s for s in await index.segments() if s.volume_id == volume_id]
    known_files: set[Path] = set()
    for segment in segments:
        path = _path(volume_path, segment)
        known_files.add(path)
        if segment.state == "deleting":
            await asyncio.to_thread(unlink_durably, path)
            await index.drop_segment(segment.id)
            report.dropped_segments += 1
            continue
        data = await asyncio.to_thread(_read, path)
        if data is None:
            if segment.state == "closed" or segment.fragment_count:
                report.problems.append(f"segment {segment.id}: file missing, rows dropped")
            await index.drop_segment(segment.id)
            report.dropped_segments += 1
            continue
        if segment.state != "writing":
            continue
        known = await index.fragments(segment.id)
        start = (known[-1].offset + known[-1].size) if known else 0
        rows, complete_until = _new_rows(segment, known, data, start)
        if rows:
            init_size = segment.init_size or (rows[0].offset if not known else segment.init_size)
            await index.add_fragments(segment.id, rows, init_size)
            report.recovered_fragments += len(rows)
        if complete_until < len(data):
            await asyncio.to_thread(_truncate_and_sync, path, complete_until)
            report.truncated_bytes += len(data) - complete_until
        if known or rows:
            await index.close_segment(segment.id)
            report.closed_segments += 1
        else:
            await asyncio.to_thread(unlink_durably, path)
            await index.drop_segment(segment.id)
            report.dropped_segments += 1
    for path in await asyncio.to_thread(_segment_files, volume_path):
        if path not in known_files:
            await asyncio.to_thread(unlink_durably, path)
            report.orphan_files += 1
    return report


def _segment_files(volume_path: Path) -> list[Path]:
    if not volume_path.is_dir():
        return []
    return [p for p in volume_path.glob("*/*.mp4") if p.stem.isdigit()]


async def check_volume(
    index: SegmentIndex, volume_id: int, volume_path: Path, *, repair: bool = False
) -> Report:
    """Verify closed segments against their files; with ``repair``, fix what can be fixed."""
    report = Report()
    for segment in [
        s for s in await index.segments() if s.volume_id == volume_id and s.state == "closed"
    ]:
        path = _path(volume_path, segment)
        data = await asyncio.to_thread(_read, path)
        if data is None:
            report.problems.append(f"segment {segment.id}: file {path} is missing")
            if repair:
                await index.drop_segment(segment.id)
                report.dropped_segments += 1
            continue
        rows = await index.fragments(segment.id)
        scan = scan_fragments(data)
        on_disk = [(f.offset, f.size) for f in scan.fragments]
        indexed = [(r.offset, r.size) for r in rows]
        if indexed != on_disk[: len(indexed)]:
            report.problems.append(f"segment {segment.id}: fragment rows do not match the file")
        if len(data) != segment.size:
            report.problems.append(
                f"segment {segment.id}: file is {len(data)} bytes, index says {segment.size}"
            )
            if repair and len(data) > segment.size and indexed == on_disk[: len(indexed)]:
                await asyncio.to_thread(_truncate_and_sync, path, segment.size)
                report.truncated_bytes += len(data) - segment.size
        if scan.stop_reason is not None and scan.complete_until < segment.size:
            report.problems.append(
                f"segment {segment.id}: damaged at byte {scan.complete_until}: {scan.stop_reason}"
            )
    indexed_files = {
        _path(volume_path, s) for s in await index.segments() if s.volume_id == volume_id
    }
    for path in await asyncio.to_thread(_segment_files, volume_path):
        if path not in indexed_files:
            report.problems.append(f"{path}: no index row")
            if repair:
                await asyncio.to_thread(unlink_durably, path)
                report.orphan_files += 1
    return report
