"""The segment writer: one per recorded stream, the only code that touches its files.

Consumes time-stamped access units from the stream's hub subscription and writes
fragmented MP4 segments in the order of docs/design/storage.md: the segment row first
(its id names the file), the file with its init segment, then per fragment: append,
fsync (per policy), the directory fsync after the first fragment, and only then the
fragment row. All file work runs on the writer's own I/O thread; the event loop only
assembles bytes.

A segment ends after ``segment_s`` at the next keyframe, and at once when the video
parameters change, the media clock jumps, or the stream ends. It also ends at the next
keyframe when the audio parameters change or a unit's wall time departs by more than
``MAX_WALL_DEPARTURE_NS`` from the segment's line (start wall time + media time elapsed),
so that wall time stays linear in media time within a segment (docs/design/time.md).
Fragments end at each keyframe and are capped at ``fragment_s`` of media.

Video is track 1 (90 kHz). Audio, when the source has it and its parameters are known, is
track 2 with the sample rate as timescale, in the same fragments as the video: each
fragment carries the audio units gathered while its video was, except the last one, held
back until its successor gives its duration. Fragment rows describe the video track.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from onvif_nvr.clock import Clock, SystemClock
from onvif_nvr.media.units import AudioParameters, TimedUnit, VideoParameters
from onvif_nvr.mp4.boxes import Sample, TrackSpec, avcc_sample, init_segment, media_fragment
from onvif_nvr.recording.hub import Subscription
from onvif_nvr.recording.index import FragmentRow, SegmentIndex
from onvif_nvr.rtsp import h264, h265

log = logging.getLogger(__name__)
T = TypeVar("T")
#: camera id → (volume id, volume directory) for its next segment, or None (none usable).
Placement = Callable[[int], Awaitable[tuple[int, Path] | None]]
#: Told (writing, recording time, video, audio) when durable data starts (and when a new
#: segment's media differ) and when it stops: see recording/history.py.
HistorySink = Callable[[bool, int, VideoParameters | None, AudioParameters | None], None]

#: A media-clock step larger than this (or backwards) starts a new segment.
MAX_DTS_STEP_90K = 10 * 90_000
#: A video unit whose wall time departs further than this from its segment's line starts a
#: new segment (at the next keyframe).
MAX_WALL_DEPARTURE_NS = 10**9
#: Audio kept while no segment is open (media time), for the segment the next keyframe opens.
HELD_AUDIO_90K = 2 * 90_000
#: Samples per frame assumed for the last audio frame of a segment (G.711: its byte count).
_AUDIO_FRAME_SAMPLES = {"AAC": 1024, "OPUS": 960}
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
    #: Monotonic time of the file's last fsync (``fsync = "interval"``).
    synced_ns: int = 0
    #: Rows of fragments written since then: added to the index after the next fsync.
    unsynced: list[FragmentRow] = dataclasses.field(default_factory=list)
    #: The audio parameters known when the segment opened (None: no audio known).
    audio_params: AudioParameters | None = None
    #: Whether the file has the audio track (False also when ``audio_params`` are unusable).
    audio: bool = False
    #: Media time (the audio's own) of the last audio unit taken into the segment.
    audio_last_90k: int | None = None
    #: Audio media time + this = video media time. Each stream has its own media clock
    #: (RTP timestamps start at random values), so the two are related once per segment
    #: through their wall times.
    audio_offset_90k: int | None = None
    #: Why the segment ends at the next keyframe (audio parameters, wall clock), if it does.
    rotate: str | None = None

    def relate_audio(self, unit: TimedUnit) -> None:
        """Place the audio clock on the video's by an audio unit's wall time."""
        video_90k = self.start_90k + ((unit.wall_ns - self.start_wall_ns) * 9 + 50_000) // 100_000
        self.audio_offset_90k = video_90k - unit.dts_90k

    def audio_dts(self, unit: TimedUnit) -> int:
        """An audio unit's media time on the video's clock."""
        assert self.audio_offset_90k is not None
        return unit.dts_90k + self.audio_offset_90k

    def audio_ticks(self, unit: TimedUnit) -> int:
        """An audio unit's decode time in this segment (sample-rate timescale)."""
        assert self.audio_params is not None
        rate = self.audio_params.sample_rate
        return ((self.audio_dts(unit) - self.start_90k) * rate + 45_000) // 90_000

    def line_wall_ns(self, dts_90k: int) -> int:
        """Wall time of a media time on the segment's line."""
        return self.start_wall_ns + (dts_90k - self.start_90k) * 100_000 // 9


#: ``storage.fsync``: every fragment; every ``fsync_interval_s`` (and at segment end); never
#: (left to the OS).
FSYNC_POLICIES = ("fragment", "interval", "none")


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
        fsync_interval_s: float = 5.0,
        clock: Clock | None = None,
        retry_s: float = 5.0,
        audio_parameters: Callable[[], AudioParameters | None] | None = None,
        placement: Placement | None = None,
        recording_id: int | None = None,
        history: HistorySink | None = None,
    ) -> None:
        """``audio_parameters`` tells what the source knows of its audio now (e.g.
        ``lambda: source.info.audio``); without it, or while it gives None, audio units
        are not written. New segments belong to ``recording_id``. ``history`` hears when
        durable data starts and stops."""
        self.camera_id = camera_id
        self._history = history
        #: Reported to ``history``: the media of the stretch being written (None: none).
        self._history_media: tuple[VideoParameters, AudioParameters | None] | None = None
        self._data_end_ns = 0
        #: Held while units are written, so that :meth:`interrupt` comes between batches.
        self._lock = asyncio.Lock()
        self.recording_id = recording_id
        self.volume_id = volume_id
        self.directory = volume_path / str(camera_id)
        #: Given: each new segment asks it for its volume (``volume_id``/``volume_path``
        #: are then only the initial values); None when no volume can take it.
        self.placement = placement
        self.index = index
        self.segment_90k = int(segment_s * 90_000)
        self.fragment_90k = int(fragment_s * 90_000)
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}")
        self.fsync = fsync
        self.fsync_interval_ns = int(fsync_interval_s * 1e9)
        self.clock = clock or SystemClock()
        self.retry_ns = int(retry_s * 1e9)
        self._audio_parameters = audio_parameters
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
        self._pending_audio: list[TimedUnit] = []  # audio units for the next fragment
        #: Audio parameters of the segment the held-back audio units were taken for.
        self._carried_params: AudioParameters | None = None
        self._unusable_audio: AudioParameters | None = None  # warned about once
        self._fragment_seq = 0
        self._record: tuple[bytes, VideoParameters] | None = None
        #: Video units (``audio_units_*``: audio units).
        self.units_written = 0
        self.units_skipped = 0
        self.audio_units_written = 0
        self.audio_units_skipped = 0
        self.segments_closed = 0

    async def _in_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _place(self) -> None:
        """Ask the placement for the next segment's volume; none usable is a full disk."""
        if self.placement is None:
            return
        chosen = await self.placement(self.camera_id)
        if chosen is None:
            raise OSError(errno.ENOSPC, "no storage volume can take a new segment")
        self.volume_id, volume_path = chosen
        self.directory = volume_path / str(self.camera_id)
        await self._in_io(os.makedirs, self.directory, 0o755, True)

    async def run(self, subscription: Subscription) -> None:
        """Write until the subscription ends; then close the open segment cleanly."""
        if self.placement is None:  # else made when a segment is placed
            await self._in_io(os.makedirs, self.directory, 0o755, True)
        try:
            async for batch in subscription.batches():
                async with self._lock:
                    for unit in batch:
                        await self.add(unit)
        finally:
            async with self._lock:
                await self.finish()
            self._io.shutdown(wait=True)

    async def interrupt(self, reason: str) -> None:
        """The source is lost: write what is pending and close the segment now (its data
        ends here), rather than when the stream comes back."""
        async with self._lock:
            await self.finish(reason)

    async def add(self, unit: TimedUnit) -> None:
        if self._failed_until_ns is not None and self.clock.monotonic_ns() < self._failed_until_ns:
            self._skipped(unit)
            return
        try:
            if unit.track == 0:
                await self._add(unit)
            else:
                self._add_audio(unit)
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
        self._pending_audio = []
        if segment is not None:
            # Cut a torn fragment, and the fragments not yet fsynced (their rows wait).
            durable = segment.unsynced[0].offset if segment.unsynced else segment.size
            with contextlib.suppress(OSError):
                await self._in_io(_truncate, segment.fd, durable)
            with contextlib.suppress(OSError):
                await self._in_io(_close, segment.fd)
            if segment.fragments:
                await self.index.close_segment(segment.id)
            else:
                with contextlib.suppress(OSError):
                    await self._in_io(_unlink, segment.path)
                await self.index.drop_segment(segment.id)
        self._data_stopped()
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
                    # This keyframe opens the next segment at once (audio from it goes there).
                    step = unit.dts_90k - self._pending[-1].dts_90k if self._pending else 0
                    await self._close_segment(
                        "parameters changed",
                        next_dts_90k=unit.dts_90k if 0 < step <= MAX_DTS_STEP_90K else None,
                    )
                self._record = (record, params)
        if self._pending:
            step = unit.dts_90k - self._pending[-1].dts_90k
            if step <= 0 or step > MAX_DTS_STEP_90K:
                await self._close_segment(f"media clock step of {step} ticks")
        segment = self._segment
        if segment is not None and segment.rotate is None:
            departure = unit.wall_ns - segment.line_wall_ns(unit.dts_90k)
            if abs(departure) > MAX_WALL_DEPARTURE_NS:
                segment.rotate = f"wall clock departed {departure / 1e9:+.3f} s from the segment"
            elif au.keyframe and self._audio_changed(segment):
                segment.rotate = "audio parameters changed"
        if segment is None:
            if not au.keyframe or self._record is None:
                self.units_skipped += 1  # a segment starts at a keyframe with parameters
                return
            await self._open_segment(unit)
        elif self._pending and (
            au.keyframe or unit.dts_90k - self._pending[0].dts_90k >= self.fragment_90k
        ):
            reason = None
            if au.keyframe:
                if segment.rotate is not None:
                    reason = segment.rotate
                elif unit.dts_90k - segment.start_90k >= self.segment_90k:
                    reason = "segment length reached"
            if reason is None:
                await self._flush_fragment(next_dts_90k=unit.dts_90k)
            else:
                await self._close_segment(reason, next_dts_90k=unit.dts_90k)
                await self._open_segment(unit)
        self._pending.append(unit)

    def _current_audio(self) -> AudioParameters | None:
        return self._audio_parameters() if self._audio_parameters is not None else None

    def _audio_changed(self, segment: _OpenSegment) -> bool:
        """The source now knows audio parameters other than those the segment opened with."""
        params = self._current_audio()
        return params is not None and params != segment.audio_params

    def _skipped(self, unit: TimedUnit) -> None:
        if unit.track == 0:
            self.units_skipped += 1
        else:
            self.audio_units_skipped += 1

    def _add_audio(self, unit: TimedUnit) -> None:
        """Take an audio unit into the fragment being gathered, if the segment has audio and
        the unit belongs there (after the segment start, after the previous audio unit)."""
        segment = self._segment
        if unit.track != 1:
            self.audio_units_skipped += 1
            return
        if segment is None:
            self._hold_audio(unit)
            return
        if self._audio_changed(segment):
            # Units of the new parameters wait for the next segment (from the next keyframe).
            segment.rotate = segment.rotate or "audio parameters changed"
            self.audio_units_skipped += 1
            return
        params = segment.audio_params
        last = segment.audio_last_90k
        if (
            not segment.audio
            or params is None
            or unit.unit.codec != params.codec
            or (last is not None and unit.dts_90k <= last)
        ):
            self.audio_units_skipped += 1
            return
        if last is not None and unit.dts_90k - last > MAX_DTS_STEP_90K:
            segment.rotate = segment.rotate or "audio clock step"
            self.audio_units_skipped += 1
            return
        if segment.audio_offset_90k is None:
            segment.relate_audio(unit)
        dts_90k = segment.audio_dts(unit)
        if dts_90k < segment.start_90k:
            self.audio_units_skipped += 1
            return
        if segment.rotate is None:
            departure = unit.wall_ns - segment.line_wall_ns(dts_90k)
            if abs(departure) > MAX_WALL_DEPARTURE_NS:
                segment.rotate = f"audio wall clock departed {departure / 1e9:+.3f} s"
        segment.audio_last_90k = unit.dts_90k
        self._pending_audio.append(unit)

    def _hold_audio(self, unit: TimedUnit) -> None:
        """Keep the last ``HELD_AUDIO_90K`` of audio while no segment is open: the ingest may
        deliver audio ahead of the keyframe that opens the next segment."""
        params = self._current_audio()
        held = self._pending_audio
        if params is None or unit.unit.codec != params.codec:
            self.audio_units_skipped += 1
            return
        if params != self._carried_params or (held and unit.dts_90k <= held[-1].dts_90k):
            self.audio_units_skipped += len(held)
            held.clear()
            self._carried_params = params
        held.append(unit)
        while held[0].dts_90k < unit.dts_90k - HELD_AUDIO_90K:
            del held[0]
            self.audio_units_skipped += 1

    async def finish(self, reason: str = "stream ended") -> None:
        try:
            await self._close_segment(reason)  # which writes what is pending
            self._data_stopped()
        except OSError as exc:
            wall_ns = self._pending[0].wall_ns if self._pending else self.clock.wall_ns()
            await self._storage_failure(exc, wall_ns)

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
        video = TrackSpec(1, "video", 90_000, params.codec, params.width, params.height, record)
        creation_time_s = first.wall_ns // 10**9
        audio_params = self._current_audio()
        init = None
        if audio_params is not None:
            try:
                init = init_segment(
                    [video, _audio_track(audio_params)], creation_time_s=creation_time_s
                )
            except ValueError as exc:
                if audio_params != self._unusable_audio:
                    self._unusable_audio = audio_params
                    log.warning("camera %s: audio not recorded: %s", self.camera_id, exc)
            else:
                tracks.append(
                    {
                        "codec": audio_params.codec,
                        "sample_rate": audio_params.sample_rate,
                        "channels": audio_params.channels,
                        "config": audio_params.config.hex(),
                    }
                )
        has_audio = init is not None
        if init is None:
            init = init_segment([video], creation_time_s=creation_time_s)
        await self._place()
        segment_id = await self.index.create_segment(
            self.camera_id,
            self.volume_id,
            first.wall_ns,
            first.dts_90k,
            tracks,
            recording_id=self.recording_id,
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
        segment = _OpenSegment(
            segment_id, path, fd, params, first.dts_90k, first.wall_ns, len(init), len(init)
        )
        segment.audio_params, segment.audio = audio_params, has_audio
        # Audio units gathered past the previous segment's end start this one's audio.
        carried = []
        if self._pending_audio and has_audio and audio_params == self._carried_params:
            segment.relate_audio(self._pending_audio[-1])
            carried = [u for u in self._pending_audio if segment.audio_dts(u) >= first.dts_90k]
        self.audio_units_skipped += len(self._pending_audio) - len(carried)
        self._pending_audio = carried
        if carried:
            segment.audio_last_90k = carried[-1].dts_90k
        self._segment = segment
        self._fragment_seq = 0

    async def _flush_fragment(self, next_dts_90k: int, final: bool = False) -> None:
        """Write the gathered video units (the last lasting until ``next_dts_90k``) and the
        audio units gathered with them: all but the last (which waits for its successor),
        or, when the segment ends (``final``), those before ``next_dts_90k``."""
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
        tracks = [(1, units[0].dts_90k - segment.start_90k, samples)]
        audio = self._pending_audio
        if final:
            audio_units = [u for u in audio if segment.audio_dts(u) < next_dts_90k]
            self._pending_audio = audio[len(audio_units) :]
        else:
            audio_units, self._pending_audio = audio[:-1], audio[-1:]
        if audio_units:
            tracks.append(self._audio_run(segment, audio_units))
        self._fragment_seq += 1
        data = media_fragment(self._fragment_seq, tracks)
        first_fragment = segment.fragments == 0
        now_ns = self.clock.monotonic_ns()
        sync = self.fsync == "fragment" or (
            self.fsync == "interval"
            and (first_fragment or now_ns - segment.synced_ns >= self.fsync_interval_ns)
        )
        await self._in_io(
            _append,
            segment.fd,
            data,
            sync,
            segment.path.parent if first_fragment else None,
        )
        if sync:
            segment.synced_ns = now_ns
        row = FragmentRow(
            segment_id=segment.id,
            seq=self._fragment_seq,
            start_wall_ns=_fragment_wall_ns(segment, units[0]),
            start_90k=units[0].dts_90k,
            duration_90k=sum(s.duration for s in samples),
            offset=segment.size,
            size=len(data),
            first_is_sync=units[0].unit.keyframe,
            sample_count=len(samples),
        )
        segment.size += len(data)
        segment.fragments += 1
        if self.fsync == "interval" and not sync:
            segment.unsynced.append(row)  # indexed once durable (docs/design/storage.md)
        else:
            rows, segment.unsynced = [*segment.unsynced, row], []
            await self.index.add_fragments(segment.id, rows, segment.init_size)
            self._durable(segment, rows)
        self.units_written += len(units)
        self.audio_units_written += len(audio_units)

    def _audio_run(
        self, segment: _OpenSegment, units: list[TimedUnit]
    ) -> tuple[int, int, list[Sample]]:
        """The audio track's part of a fragment: each unit lasts until the next one (the
        held-back one, if any), the last of a segment one nominal frame."""
        assert segment.audio_params is not None
        times = [segment.audio_ticks(u) for u in units]
        if self._pending_audio:
            end = segment.audio_ticks(self._pending_audio[0])
        else:
            end = times[-1] + _audio_frame_samples(segment.audio_params, units[-1])
        ends = [*times[1:], end]
        samples = [
            Sample(b"".join(u.unit.payloads), max(1, e - t), True)
            for u, t, e in zip(units, times, ends, strict=True)
        ]
        return 2, times[0], samples

    async def _close_segment(self, reason: str, next_dts_90k: int | None = None) -> None:
        """Write what is pending and close the segment. Given ``next_dts_90k`` (the start of
        the segment that follows at once), audio units from there on are kept for it."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if self._pending:
            self._segment = segment
            await self._flush_fragment(
                next_dts_90k
                if next_dts_90k is not None
                else self._pending[-1].dts_90k + self._typical_duration(),
                final=True,
            )
            self._segment = None
        self._carried_params = segment.audio_params
        if next_dts_90k is None:
            self.audio_units_skipped += len(self._pending_audio)
            self._pending_audio = []
        if segment.unsynced:
            await self._in_io(os.fsync, segment.fd)
            rows, segment.unsynced = segment.unsynced, []
            await self.index.add_fragments(segment.id, rows, segment.init_size)
            self._durable(segment, rows)
        await self._in_io(_close, segment.fd)
        if segment.fragments:
            await self.index.close_segment(segment.id)
        else:  # nothing durable: the file and row go
            await self._in_io(_unlink, segment.path)
            await self.index.drop_segment(segment.id)
        self.segments_closed += 1
        if next_dts_90k is None:  # no segment follows at once: the data stops here
            self._data_stopped()
        log.debug("camera %s: segment %s closed (%s)", self.camera_id, segment.id, reason)

    def _durable(self, segment: _OpenSegment, rows: list[FragmentRow]) -> None:
        """Rows indexed: the data runs until their end; history hears of a new stretch or
        of new media."""
        self._data_end_ns = max(self._data_end_ns, rows[-1].end_wall_ns)
        media = (segment.params, segment.audio_params if segment.audio else None)
        if self._history is not None and media != self._history_media:
            self._history_media = media
            self._history(True, segment.start_wall_ns, *media)

    def _data_stopped(self) -> None:
        if self._history is not None and self._history_media is not None:
            self._history_media = None
            self._history(False, self._data_end_ns, None, None)


def _audio_track(params: AudioParameters) -> TrackSpec:
    return TrackSpec(
        2,
        "audio",
        params.sample_rate,
        params.codec,
        # The dOps of Opus is built from the rate and channels (a source's extradata may be
        # an OpusHead, which is not a dOps body).
        sample_entry_config=params.config if params.codec == "AAC" else b"",
        sample_rate=params.sample_rate,
        channels=params.channels,
    )


def _audio_frame_samples(params: AudioParameters, unit: TimedUnit) -> int:
    """Samples in one audio frame: nominal for AAC/Opus, from the size for G.711."""
    if params.codec in ("PCMU", "PCMA"):
        return max(1, unit.unit.size // max(1, params.channels))
    return _AUDIO_FRAME_SAMPLES.get(params.codec, 1024)


def _fragment_wall_ns(segment: _OpenSegment, first: TimedUnit) -> int:
    """A fragment's wall time: its first unit's, unless that departs from the segment's line
    (the segment then ends at the next keyframe; until then the line holds)."""
    line = segment.line_wall_ns(first.dts_90k)
    if abs(first.wall_ns - line) > MAX_WALL_DEPARTURE_NS:
        return line
    return first.wall_ns


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
