"""Live video as fragmented MP4 for a browser's Media Source Extensions (the fallback when
WebRTC cannot connect): an init segment, then one ``moof`` + ``mdat`` per picture.

The muxer reads the same :class:`~onvif_nvr.replay.live.Feed` the RTSP server fans out
(one lossy hub subscription from the hub's GOP cache), so a viewer starts at the last
keyframe at once and never slows the recorder. One fragment per picture keeps the latency
at one frame interval: a sample's duration is not known until the next picture comes, so
each fragment carries the previous interval as its estimate and the next fragment's
``tfdt`` (the real decode time) corrects it — MSE places frames by their decode times.

Video only: the audio track of the camera is not muxed (an AAC track would need its own
fragments interleaved by time; the WebRTC path carries audio).

:class:`LiveMp4` is sans-IO apart from the feed it reads: bytes go to a ``write``
coroutine through a queue bounded in bytes; a viewer whose unsent bytes pass the bound is
dropped rather than buffered without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from onvif_nvr.media.units import TimedUnit, VideoParameters
from onvif_nvr.mp4.boxes import Sample, TrackSpec, avcc_sample, init_segment, media_fragment
from onvif_nvr.replay.live import Feed
from onvif_nvr.rtsp import h264, h265

log = logging.getLogger(__name__)

#: Unsent bytes a viewer may lag by before it is dropped (~8 s of a 4 Mbit/s stream).
MAX_PENDING_BYTES = 4 << 20
#: A decode-time step outside (0, this] is a discontinuity (camera reconnect, new media
#: clock): the picture is placed one estimated interval after the previous one instead.
MAX_STEP_90K = 5 * 90_000
DEFAULT_INTERVAL_90K = 3000
#: A single write that waits this long for the viewer's socket: the viewer is gone or stuck.
WRITE_STALL_S = 15.0
#: :meth:`LiveMp4.run` results after which the connection must be dropped, not ended.
SLOW = "slow viewer dropped"
STALLED = "viewer stalled"
VIDEO_TRACK_ID = 1


class NoPicture(Exception):
    """The stream delivered no keyframe in time (camera connecting, or no video)."""


def content_type(params: VideoParameters) -> str:
    """``video/mp4; codecs="avc1.PPCCLL"`` (RFC 6381) for a stream's parameters."""
    return f'video/mp4; codecs="{params.codec_string}"'


def video_track(params: VideoParameters) -> TrackSpec:
    """The MP4 track of a live stream's parameter sets (what the segment writer builds)."""
    sets = params.parameter_sets
    if params.codec == "H264":
        sps = [n for n in sets if n and h264.nal_type(n) == 7]
        pps = [n for n in sets if n and h264.nal_type(n) == 8]
        record = h264.avcc_record(sps, pps)
    elif params.codec == "H265":
        vps, sps, pps = ([n for n in sets if n and h265.nal_type(n) == t] for t in (32, 33, 34))
        record = h265.hvcc_record(vps, sps, pps)
    else:
        raise ValueError(f"{params.codec!r} cannot be muxed into MP4 here")
    return TrackSpec(
        VIDEO_TRACK_ID, "video", 90_000, params.codec, params.width, params.height, record
    )


def in_band_parameters(codec: str, nals: Sequence[bytes]) -> VideoParameters | None:
    """Parameters from the parameter sets a keyframe carries in band (None: it carries none,
    or none that parses — the stream goes on with the parameters it has)."""
    try:
        if codec == "H264":
            sps = [n for n in nals if n and h264.nal_type(n) == 7]
            pps = [n for n in nals if n and h264.nal_type(n) == 8]
            return h264.video_parameters(sps[0], pps) if sps and pps else None
        if codec == "H265":
            vps, sps, pps = ([n for n in nals if n and h265.nal_type(n) == t] for t in (32, 33, 34))
            return h265.video_parameters(vps, sps, pps) if vps and sps and pps else None
    except ValueError as exc:
        log.debug("live mp4: in-band parameter sets unreadable: %s", exc)
    return None


@dataclasses.dataclass
class Muxer:
    """Access units in, fMP4 bytes out (video track only)."""

    params: VideoParameters
    sequence: int = 0
    #: Decode time of the next fragment in the output's timeline (starts at 0).
    decode_time_90k: int = 0
    _last_dts: int | None = None
    _interval: int = DEFAULT_INTERVAL_90K
    _started: bool = False

    def __post_init__(self) -> None:
        if self.params.frame_rate:
            self._interval = max(1, round(90_000 / self.params.frame_rate))

    def add(self, timed: TimedUnit) -> bytes:
        """The bytes this unit adds to the output (b"" until the first keyframe)."""
        unit = timed.unit
        if timed.track != 0 or unit.codec != self.params.codec:
            return b""
        out = []
        if unit.keyframe:
            changed = in_band_parameters(unit.codec, unit.payloads)
            if changed is not None and changed.parameter_sets != self.params.parameter_sets:
                self.params = changed
                if self._started:  # a codec or size change: a new init segment first
                    out.append(init_segment([video_track(changed)]))
            if not self._started:
                self._started = True
                out.append(init_segment([video_track(self.params)]))
        elif not self._started:
            return b""
        if self._last_dts is not None:
            step = timed.dts_90k - self._last_dts
            if 0 < step <= MAX_STEP_90K:
                self._interval = step
            self.decode_time_90k += self._interval
        self._last_dts = timed.dts_90k
        self.sequence += 1
        sample = Sample(avcc_sample(unit.payloads), self._interval, unit.keyframe)
        out.append(
            media_fragment(
                self.sequence & 0xFFFF_FFFF, [(VIDEO_TRACK_ID, self.decode_time_90k, [sample])]
            )
        )
        return b"".join(out)


class LiveMp4:
    """One viewer's live fMP4 stream from a feed."""

    def __init__(
        self,
        feed: Feed,
        *,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        max_duration_90k: int | None = None,
        write_stall_s: float = WRITE_STALL_S,
    ) -> None:
        self._feed = feed
        self._write_stall_s = write_stall_s
        self._max_pending = max_pending_bytes
        self._max_duration_90k = max_duration_90k
        self._units: AsyncIterator[list[TimedUnit]] | None = None
        self._first: list[TimedUnit] = []
        self.muxer: Muxer | None = None
        self.end_reason = ""

    async def start(self, timeout_s: float) -> VideoParameters:
        """Subscribe and wait for the first keyframe (the hub's cached GOP gives it at once
        when the camera is streaming); :class:`NoPicture` if none comes in time."""
        video, _ = self._feed.parameters()
        self._units = self._feed.open()
        try:
            async with asyncio.timeout(timeout_s):
                async for batch in self._units:
                    for i, timed in enumerate(batch):
                        if timed.track == 0 and timed.unit.keyframe:
                            self._first = batch[i:]
                            break
                    if self._first:
                        break
        except TimeoutError:
            pass
        if not self._first:
            await self.close()
            raise NoPicture("no picture from the camera yet")
        if video is None or video.codec not in ("H264", "H265"):
            video = self._feed.parameters()[0]
        first = self._first[0].unit
        params = in_band_parameters(first.codec, first.payloads) or video
        if params is None or params.codec not in ("H264", "H265"):
            await self.close()
            raise NoPicture("the stream has no H.264 or H.265 video")
        self.muxer = Muxer(params)
        return params

    async def close(self) -> None:
        units, self._units = self._units, None
        if units is not None:
            with contextlib.suppress(Exception):
                await units.aclose()  # type: ignore[attr-defined]

    async def run(self, write: Callable[[bytes], Awaitable[None]], gone: Callable[[], bool]) -> str:
        """Write the stream until it ends; why it ended (:data:`SLOW` and :data:`STALLED`:
        the caller drops the connection rather than ending the body, which would wait on the
        same socket). ``gone`` says whether the viewer has disconnected (checked while the
        camera sends nothing)."""
        assert self.muxer is not None and self._units is not None
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        pending = 0

        async def writer() -> str:
            nonlocal pending
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), 2.0)
                except TimeoutError:
                    if gone():
                        return "viewer left"
                    continue
                if data is None:
                    return self.end_reason
                try:
                    await asyncio.wait_for(write(data), self._write_stall_s)
                except TimeoutError:
                    return STALLED
                except (ConnectionError, RuntimeError) as exc:
                    return f"viewer left ({exc.__class__.__name__})"
                pending -= len(data)

        def put(units: list[TimedUnit]) -> bool:
            nonlocal pending
            assert self.muxer is not None
            for timed in units:
                data = self.muxer.add(timed)
                if not data:
                    continue
                limit = self._max_duration_90k
                if limit is not None and self.muxer.decode_time_90k >= limit:
                    self.end_reason = "max_s reached"
                    return False
                pending += len(data)
                if pending > self._max_pending:
                    self.end_reason = SLOW
                    return False
                queue.put_nowait(data)
            return True

        async def producer() -> None:
            assert self._units is not None
            self.end_reason = "stream ended"
            try:
                if put(self._first):
                    async for batch in self._units:
                        if not put(batch):
                            break
            except Exception as exc:  # the feed failed: this viewer's stream ends
                log.warning("live mp4: feed failed: %s", exc)
                self.end_reason = f"stream failed: {exc}"
            if self.end_reason != SLOW:  # else the response ends short
                queue.put_nowait(None)

        write_task = asyncio.create_task(writer())
        produce_task = asyncio.create_task(producer())
        try:
            done, _ = await asyncio.wait(
                {write_task, produce_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if produce_task in done and self.end_reason != SLOW:
                reason = await write_task  # drain what is queued, then end
            elif write_task in done:
                reason = write_task.result()
            else:
                reason = self.end_reason
        finally:
            for task in (write_task, produce_task):
                task.cancel()
            for task in (write_task, produce_task):
                with contextlib.suppress(BaseException):
                    await task
            await self.close()
        log.debug("live mp4 ended: %s", reason)
        return reason
