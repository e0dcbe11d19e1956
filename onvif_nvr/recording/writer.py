"""The segment writer: one per recorded stream, the only code that touches its files.

Consumes time-stamped access units from the stream's hub subscription and writes
fragmented MP4 segments in the order of docs/design/storage.md: the segment row first
(its id names the file), the file with its init segment, then per fragment: append,
fsync (per policy), the directory fsync after the first fragment, and only then the
fragment row. All file work runs on the writer's own I/O thread; the event loop only
assembles bytes.

A segment ends after ``segment_s`` at the next keyframe, and at once when the video
parameters change, the media clock jumps, or the stream ends. Fragments end at each
keyframe and are capped at ``fragment_s`` of media. Video only for now (audio tracks are
written by the next step of the recording milestone).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from onvif_nvr.clock import Clock, SystemClock
from onvif_nvr.media.units import TimedUnit, VideoParameters
from onvif_nvr.mp4.boxes import Sample, TrackSpec, avcc_sample, init_segment, media_fragment
from onvif_nvr.recording.hub import Subscription
from onvif_nvr.recording.index import FragmentRow, SegmentIndex
from onvif_nvr.rtsp import h264, h265

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A media-clock step larger than this (or backwards) starts a new segment.
MAX_DTS_STEP_90K = 10 * 90_000
_NAL_TYPE = {"H264": h264.nal_type, "H265": h265.nal_type}
_PS_TYPES = {"H264": {7: "sps", 8: "pps"}, "H265": {32: "vps", 33: "sps", 34: "pps"}}


def parameters_from_unit(
    codec: str, nals: tuple[bytes, ...]
) -> tuple[VideoParameters, bytes] | None:
    """(parameters, sample entry record) from the parameter sets carried in a keyframe."""
    found: dict[str, list[bytes]] = {"vps": [], "sps": [], "pps": []}
    for nal in nals:
        kind = _PS_TYPES[codec].get(_NAL_TYPE[codec](nal)) if nal else None
        if kind is not None and nal not in found[kind]:
            found[kind].append(nal)
    if not found["sps"] or not found["pps"] or (codec == "H265" and not found["vps"]):
        return None
    if codec == "H264":
        return h264.video_parameters(found["sps"][0], found["pps"]), h264.avcc_record(
            found["sps"], found["pps"]
        )
    return (
        h265.video_parameters(found["vps"], found["sps"], found["pps"]),
        h265.hvcc_record(found["vps"], found["sps"], found["pps"]),
    )


@dataclasses.dataclass
class _OpenSegment:
    id: int
    path: Path
    fd: int
    params: VideoParameters
    start_90k: int
    start_wall_ns: int
    size: int
    init_size: int
    fragments: int = 0


class SegmentWriter:
    def __init__(
        self,
        camera_id: int,
        volume_id: int,
        volume_path: Path,
        index: SegmentIndex,
        *,
        segment_s: float = 60.0,
        fragment_s: float = 1.0,
        fsync: str = "fragment",
        clock: Clock | None = None,
        retry_s: float = 5.0,
    ) -> None:
        self.camera_id = camera_id
        self.volume_id = volume_id
        self.directory = volume_path / str(camera_id)
        self.index = index
        self.segment_90k = int(segment_s * 90_000)
        self.fragment_90k = int(fragment_s * 90_000)
        self.fsync = fsync
        self.clock = clock or SystemClock()
        self.retry_ns = int(retry_s * 1e9)
        #: Set while the volume refuses writes: units are dropped until this monotonic time,
        #: then the next keyframe tries a new segment.
        self._failed_until_ns: int | None = None
        self._gap_open = False
        self.storage_errors = 0
        self.last_storage_error = ""
        self._io = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"writer-{camera_id}"
        )
        self._segment: _OpenSegment | None = None
        self._pending: list[TimedUnit] = []  # units of the fragment being gathered
        self._fragment_seq = 0
        self._record: tuple[bytes, VideoParameters] | None = None
        self.units_written = 0
        self.units_skipped = 0
        self.segments_closed = 0

    async def _in_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def run(self, subscription: Subscription) -> None:
        """Write until the subscription ends; then close the open segment cleanly."""
        await self._in_io(os.makedirs, self.directory, 0o755, True)
        try:
            async for batch in subscription.batches():
                for unit in batch:
                    if unit.track == 0:
                        await self.add(unit)
        finally:
            await self.finish()
            self._io.shutdown(wait=True)

    async def add(self, unit: TimedUnit) -> None:
        if self._failed_until_ns is not None and self.clock.monotonic_ns() < self._failed_until_ns:
            self.units_skipped += 1
            return
        try:
            await self._add(unit)
        except OSError as exc:
            await self._storage_failure(exc, unit.wall_ns)

    async def _storage_failure(self, exc: OSError, wall_ns: int) -> None:
        """A full or failing volume: close at the last durable fragment, open a gap, say so,
        and drop units until a retry succeeds. Earlier data is never touched."""
        self.storage_errors += 1
        self.last_storage_error = f"{exc.strerror or exc}"
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        log.error(
            "camera %s: storage %s: %s; recording paused",
            self.camera_id,
            "full" if full else "failed",
            self.last_storage_error,
        )
        segment, self._segment = self._segment, None
        self._pending = []
        if segment is not None:
            with contextlib.suppress(OSError):
                await self._in_io(_truncate, segment.fd, segment.size)  # cut a torn fragment
            with contextlib.suppress(OSError):
                await self._in_io(_close, segment.fd)
            if segment.fragments:
                await self.index.close_segment(segment.id)
            else:
                with contextlib.suppress(OSError):
                    await self._in_io(_unlink, segment.path)
                await self.index.drop_segment(segment.id)
        if not self._gap_open:
            self._gap_open = True
            await self.index.open_gap(
                self.camera_id, wall_ns, "disk-full" if full else "disk-error"
            )
        await self.index.set_volume_status(
            self.volume_id, "full" if full else "failed", self.last_storage_error
        )
        self._failed_until_ns = self.clock.monotonic_ns() + self.retry_ns

    async def _add(self, unit: TimedUnit) -> None:
        au = unit.unit
        if au.keyframe:
            found = parameters_from_unit(au.codec, au.payloads)
            if found is not None:
                params, record = found
                if (
                    self._record is not None
                    and self._record[0] != record
                    and self._segment is not None
                ):
                    await self._close_segment("parameters changed")
                self._record = (record, params)
        if self._pending:
            last = self._pending[-1]
            step = unit.dts_90k - last.dts_90k
            if step <= 0 or step > MAX_DTS_STEP_90K:
                await self._flush_fragment(next_dts_90k=last.dts_90k + self._typical_duration())
                await self._close_segment(f"media clock step of {step} ticks")
        if self._segment is None:
            if not au.keyframe or self._record is None:
                self.units_skipped += 1  # a segment starts at a keyframe with parameters
                return
            await self._open_segment(unit)
        elif self._pending and (
            au.keyframe or unit.dts_90k - self._pending[0].dts_90k >= self.fragment_90k
        ):
            await self._flush_fragment(next_dts_90k=unit.dts_90k)
            segment = self._segment
            if (
                au.keyframe
                and segment is not None
                and unit.dts_90k - segment.start_90k >= self.segment_90k
            ):
                await self._close_segment("segment length reached")
                await self._open_segment(unit)
        self._pending.append(unit)

    async def finish(self) -> None:
        try:
            await self._finish()
        except OSError as exc:
            wall_ns = self._pending[0].wall_ns if self._pending else self.clock.wall_ns()
            await self._storage_failure(exc, wall_ns)

    async def _finish(self) -> None:
        if self._pending:
            await self._flush_fragment(
                next_dts_90k=self._pending[-1].dts_90k + self._typical_duration()
            )
        await self._close_segment("stream ended")

    def _typical_duration(self) -> int:
        if len(self._pending) >= 2:
            return max(
                1,
                (self._pending[-1].dts_90k - self._pending[0].dts_90k) // (len(self._pending) - 1),
            )
        return 3000

    async def _open_segment(self, first: TimedUnit) -> None:
        assert self._record is not None
        record, params = self._record
        tracks = [
            {
                "codec": params.codec,
                "width": params.width,
                "height": params.height,
                "codec_string": params.codec_string,
            }
        ]
        segment_id = await self.index.create_segment(
            self.camera_id, self.volume_id, first.wall_ns, first.dts_90k, tracks
        )
        init = init_segment(
            [TrackSpec(1, "video", 90_000, params.codec, params.width, params.height, record)],
            creation_time_s=first.wall_ns // 10**9,
        )
        path = self.directory / f"{segment_id}.mp4"
        try:
            fd = await self._in_io(_create, path, init)
        except OSError:
            with contextlib.suppress(OSError):
                await self._in_io(_unlink, path)
            await self.index.drop_segment(segment_id)
            raise
        if self._failed_until_ns is not None or self._gap_open:
            self._failed_until_ns = None
            self._gap_open = False
            await self.index.close_gaps(self.camera_id, first.wall_ns)
            await self.index.set_volume_status(self.volume_id, "ok")
            log.warning("camera %s: storage writable again; recording resumed", self.camera_id)
        self._segment = _OpenSegment(
            segment_id, path, fd, params, first.dts_90k, first.wall_ns, len(init), len(init)
        )
        self._fragment_seq = 0

    async def _flush_fragment(self, next_dts_90k: int) -> None:
        segment, units = self._segment, self._pending
        self._pending = []
        if segment is None or not units:
            return
        samples = []
        for i, unit in enumerate(units):
            end = units[i + 1].dts_90k if i + 1 < len(units) else next_dts_90k
            samples.append(
                Sample(
                    avcc_sample(unit.unit.payloads), max(1, end - unit.dts_90k), unit.unit.keyframe
                )
            )
        self._fragment_seq += 1
        data = media_fragment(
            self._fragment_seq, [(1, units[0].dts_90k - segment.start_90k, samples)]
        )
        first_fragment = segment.fragments == 0
        await self._in_io(
            _append,
            segment.fd,
            data,
            self.fsync == "fragment",
            segment.path.parent if first_fragment else None,
        )
        row = FragmentRow(
            segment_id=segment.id,
            seq=self._fragment_seq,
            start_wall_ns=units[0].wall_ns,
            start_90k=units[0].dts_90k,
            duration_90k=sum(s.duration for s in samples),
            offset=segment.size,
            size=len(data),
            first_is_sync=units[0].unit.keyframe,
            sample_count=len(samples),
        )
        segment.size += len(data)
        segment.fragments += 1
        await self.index.add_fragments(segment.id, [row], segment.init_size)
        self.units_written += len(units)

    async def _close_segment(self, reason: str) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if self._pending:
            self._segment = segment
            await self._flush_fragment(
                next_dts_90k=self._pending[-1].dts_90k + self._typical_duration()
            )
            self._segment = None
        await self._in_io(_close, segment.fd)
        if segment.fragments:
            await self.index.close_segment(segment.id)
        else:  # nothing durable: the file and row go
            await self._in_io(_unlink, segment.path)
            await self.index.drop_segment(segment.id)
        self.segments_closed += 1
        log.debug("camera %s: segment %s closed (%s)", self.camera_id, segment.id, reason)


def _create(path: Path, init: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        os.write(fd, init)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _append(fd: int, data: bytes, sync: bool, directory: Path | None) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if sync:
        os.fsync(fd)
    if directory is not None:  # the file's name is durable from its first fragment on
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _truncate(fd: int, size: int) -> None:
    os.ftruncate(fd, size)


def _close(fd: int) -> None:
    os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
