"""FFmpeg's RTSP client through PyAV: the per-camera fallback ingest path.

Used for sources the native client does not handle (chosen in config, or offered when the
native client fails on an unsupported feature). Demuxing blocks, so it runs in a worker
thread; units are handed to the event loop in small batches (one hand-off per ~20 ms, not
per packet). No decoding and no transcoding: packets pass through as they come.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import (
    AccessUnit,
    AudioParameters,
    SourceInfo,
    TimedUnit,
    VideoParameters,
)
from onvif_nvr.recording.cameras import display_url
from onvif_nvr.rtsp import h264, h265
from onvif_nvr.rtsp.bits import split_annexb

log = logging.getLogger(__name__)

_CODECS = {
    "h264": "H264",
    "hevc": "H265",
    "aac": "AAC",
    "pcm_mulaw": "PCMU",
    "pcm_alaw": "PCMA",
    "opus": "OPUS",
}
NAL_TYPE = {"H264": h264.nal_type, "H265": h265.nal_type}
_IDR = {"H264": {h264.NAL_IDR}, "H265": {16, 17, 18, 19, 20, 21}}  # H.265: the IRAP types
BATCH_S = 0.02
#: Picture duration assumed when the stream states no frame rate (25 fps).
DEFAULT_FRAME_90K = 3600


def has_slice(codec: str, nals: list[bytes]) -> bool:
    """True when ``nals`` hold a coded slice (VCL NAL unit)."""
    if codec == "H264":
        return any(n and 1 <= NAL_TYPE[codec](n) <= 5 for n in nals)
    return any(len(n) >= 2 and NAL_TYPE[codec](n) < 32 for n in nals)


def starts_picture(codec: str, nals: list[bytes]) -> bool:
    """True when ``nals`` begin a new picture: an access unit delimiter, or the first slice
    of a picture (H.264 first_mb_in_slice = 0; H.265 first_slice_segment_in_pic_flag) —
    FFmpeg may hand a picture over without timestamps, and only the bitstream tells it from
    the next slice of the picture before it. Parameter sets do not count: payloaders repeat
    them in front of every slice of a keyframe."""
    for nal in nals:
        if len(nal) < 3:
            continue
        kind = NAL_TYPE[codec](nal)
        if codec == "H264":
            if kind == h264.NAL_AUD:
                return True
            if kind in (1, 5):
                return bool(nal[1] & 0x80)  # ue(v) first_mb_in_slice == 0 is the bit '1'
        else:
            if kind == h265.NAL_AUD:
                return True
            if kind < 32:
                return bool(nal[2] & 0x80)
    return False


def codec_of_video(tracks: dict[int, tuple[int, str, Any]]) -> str:
    return next(codec for track, codec, _ in tracks.values() if track == 0)


class PyAVSource:
    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        clock: Clock,
        on_units: Callable[[list[TimedUnit]], None],
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self._url = url
        self._transport = transport
        self._clock = clock
        self._on_units = on_units
        self._timeouts = (open_timeout_s, read_timeout_s)
        self._stop = threading.Event()
        self.info = SourceInfo()
        self.packets = 0
        self.dropped = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> SourceInfo:
        """Read until stopped or the stream fails (the exception propagates)."""
        loop = asyncio.get_running_loop()
        # A thread of its own: demuxing blocks for the life of the stream, and the default
        # executor has only cores + 4 workers (a fallback camera each would exhaust it).
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pyav-source"
        )
        try:
            return await loop.run_in_executor(executor, self._read, loop)
        finally:
            executor.shutdown(wait=False)

    def _read(self, loop: asyncio.AbstractEventLoop) -> SourceInfo:
        options = {"rtsp_transport": {"udp": "udp", "http": "http"}.get(self._transport, "tcp")}
        container = av.open(self._url, options=options, timeout=self._timeouts)
        try:
            streams = [
                s
                for s in container.streams
                if s.type in ("video", "audio") and s.codec_context.name in _CODECS
            ]
            if not any(s.type == "video" for s in streams):
                raise ValueError(f"{display_url(self._url)}: no H.264/H.265 video stream")
            tracks = {}
            frame_90k = DEFAULT_FRAME_90K
            for stream in streams:
                codec = _CODECS[stream.codec_context.name]
                tracks[stream.index] = (0 if stream.type == "video" else 1, codec, stream.time_base)
                self._describe(stream, codec)
                rate = stream.guessed_rate if stream.type == "video" else None
                if rate:
                    frame_90k = max(1, int(90_000 / Fraction(rate)))
            batch: list[TimedUnit] = []
            last_flush = time.monotonic()
            base: tuple[int, int] | None = None  # (wall_ns, dts_90k) of the first unit
            # FFmpeg may hand one picture over in several packets (one per slice, the first
            # sometimes without timestamps): NAL units are gathered until the DTS changes.
            pending: tuple[int | None, list[bytes], bool, bool] | None = None

            def emit(dts_90k: int, unit: AccessUnit, track: int) -> None:
                nonlocal base, batch, last_flush
                if base is None:
                    base = (self._clock.wall_ns(), dts_90k)
                wall_ns = base[0] + (dts_90k - base[1]) * 100_000 // 9
                batch.append(TimedUnit(unit, track, dts_90k, wall_ns))
                self.packets += 1
                now = time.monotonic()
                if now - last_flush >= BATCH_S:
                    loop.call_soon_threadsafe(self._on_units, batch)
                    batch, last_flush = [], now

            for packet in container.demux(streams):
                if self._stop.is_set() and pending is None:
                    break
                if packet.size == 0:
                    continue
                track, codec, time_base = tracks[packet.stream.index]
                dts_90k = (
                    int(Fraction(packet.dts) * Fraction(time_base) * 90_000)
                    if packet.dts is not None and time_base
                    else None
                )
                data = bytes(packet)
                if track != 0:
                    if dts_90k is not None:
                        emit(
                            dts_90k,
                            AccessUnit(codec, (data,), dts_90k, True, packet.is_corrupt),
                            track,
                        )
                    continue
                nals = split_annexb(data)
                if pending is not None and (
                    (pending[0] is not None and dts_90k != pending[0])
                    or (starts_picture(codec, nals) and has_slice(codec, pending[1]))
                ):
                    p_dts, p_nals, p_key, p_bad = pending
                    if p_dts is None and dts_90k is not None:
                        p_dts = dts_90k - frame_90k  # an undated picture: one frame before
                    if p_dts is not None:
                        emit(p_dts, AccessUnit(codec, tuple(p_nals), p_dts, p_key, p_bad), 0)
                    pending = None
                    if self._stop.is_set():
                        break
                key = packet.is_keyframe or any(NAL_TYPE[codec](n) in _IDR[codec] for n in nals)
                if pending is None:
                    pending = (dts_90k, nals, key, packet.is_corrupt)
                else:
                    pending = (
                        dts_90k if dts_90k is not None else pending[0],
                        pending[1] + nals,
                        pending[2] or key,
                        pending[3] or packet.is_corrupt,
                    )
            if pending is not None and pending[0] is not None:
                emit(
                    pending[0],
                    AccessUnit(
                        codec_of_video(tracks),
                        tuple(pending[1]),
                        pending[0],
                        pending[2],
                        pending[3],
                    ),
                    0,
                )
            if batch:
                loop.call_soon_threadsafe(self._on_units, batch)
        finally:
            container.close()
        return self.info

    def _describe(self, stream: Any, codec: str) -> None:
        context = stream.codec_context
        if stream.type == "video":
            extradata = bytes(context.extradata or b"")
            parameter_sets = (
                tuple(split_annexb(extradata))
                if extradata[:3] in (b"\x00\x00\x01", b"\x00\x00\x00")
                else ()
            )
            self.info.video = VideoParameters(codec, context.width, context.height, parameter_sets)
        else:
            self.info.audio = AudioParameters(
                codec, context.sample_rate, context.channels, bytes(context.extradata or b"")
            )
