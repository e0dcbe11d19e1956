"""Simulated cameras: an H.264 clip synthesized once with PyAV and looped in real time.

Used for demos and tests without hardware: the composition root (app/cli) makes a clip,
loads it and mounts a :class:`LoopingClip` on the RTSP server, which is then a camera the
NVR can record like any other.

:func:`make_clip` and :func:`load_clip` run FFmpeg (encoding, demuxing) and block: call them
in a worker thread (``await asyncio.to_thread(make_clip, path)``), never on the event loop.
:class:`LoopingClip` itself only paces with the injected :class:`Clock`.

The clip has no B-frames, so decoding order is presentation order and one 90 kHz time per
unit (``dts_90k``) is also its presentation time.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from fractions import Fraction
from pathlib import Path

import av

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import AccessUnit, VideoParameters
from onvif_nvr.rtsp.bits import split_annexb
from onvif_nvr.rtsp.h264 import video_parameters

_NOISE = random.Random(0x5EED).randbytes(1 << 16)
_RAMP = bytes(range(256)) * 16
_NAL_IDR, _NAL_SPS, _NAL_PPS = 5, 7, 8
_DEFAULT_FPS = 25


def _pattern(frame: av.VideoFrame, index: int) -> None:
    """Fill a yuv420p frame with a moving gradient and a moving noise band (no numpy)."""
    for plane_no, plane in enumerate(frame.planes):
        line = plane.line_size
        ramp = _RAMP * (line // 256 + 2)
        rows = []
        for y in range(plane.height):
            # The noise band keeps pictures large enough to need RTP fragmentation.
            if plane_no == 0 and (y // 16) % 6 == index % 6:
                start = (y * 131 + index * 977) % (len(_NOISE) - line)
                rows.append(_NOISE[start : start + line])
            else:
                start = (y + 3 * index + 40 * plane_no) % 256
                rows.append(ramp[start : start + line])
        plane.update(b"".join(rows))


def make_clip(
    path: Path,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    seconds: int = 10,
    gop: int = 25,
    bitrate_kbps: int = 1000,
) -> None:
    """Encode a test-pattern H.264 Annex B clip (IDR every ``gop`` frames, no B-frames).

    Blocking (libx264): run in a thread.
    """
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError("clip size must be positive and even")
    if fps <= 0 or seconds <= 0 or gop <= 0 or bitrate_kbps <= 0:
        raise ValueError("clip fps, seconds, gop and bitrate must be positive")
    params = (
        f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:log-level=error"
        f":vbv-maxrate={bitrate_kbps}:vbv-bufsize={bitrate_kbps}"
    )
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate_kbps * 1000
        stream.options = {"preset": "veryfast", "x264-params": params}
        for index in range(fps * seconds):
            frame = av.VideoFrame(width, height, "yuv420p")
            _pattern(frame, index)
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    # A clip is either complete or absent: a crash mid-encode leaves only the .part file.
    tmp.replace(path)


def load_clip(path: Path) -> tuple[VideoParameters, list[tuple[AccessUnit, int]]]:
    """Split an H.264 Annex B file into access units with their ``dts_90k`` (from 0).

    Frame rate from the SPS VUI timing (25 fps if it has none). Units before the first IDR
    are dropped, so the clip (and each loop of it) starts with a keyframe. Blocking (FFmpeg
    demuxer): run in a thread.
    """
    raw: list[list[bytes]] = []
    with av.open(str(path), "r", format="h264") as container:
        for packet in container.demux(video=0):
            if packet.size:
                raw.append(split_annexb(bytes(packet)))
    sps = next((n for nals in raw for n in nals if n[0] & 0x1F == _NAL_SPS), None)
    pps = [n for n in (raw[0] if raw else []) if n[0] & 0x1F == _NAL_PPS]
    if sps is None or not pps:
        raise ValueError("clip has no SPS/PPS in its first access unit")
    params = video_parameters(sps, pps)
    fps = Fraction(params.frame_rate or _DEFAULT_FPS).limit_denominator(1001)
    first = next((i for i, nals in enumerate(raw) if _is_idr(nals)), None)
    if first is None:
        raise ValueError("clip has no IDR picture")
    units = []
    for i, nals in enumerate(raw[first:]):
        dts_90k = int(i * 90_000 / fps)
        unit = AccessUnit("H264", tuple(nals), dts_90k & 0xFFFFFFFF, _is_idr(nals))
        units.append((unit, dts_90k))
    return params, units


def _is_idr(nals: Sequence[bytes]) -> bool:
    return any(n[0] & 0x1F == _NAL_IDR for n in nals)


class LoopingClip:
    """A mount source (see ``onvif_nvr.replay.rtsp_server.MountSource``) that plays a clip
    forever in real time.

    All subscribers share one timeline, fixed when the object is made: loop ``k`` of unit
    ``i`` is due at ``start + (k * loop_90k + dts_i)``, so viewers see the same frames at the
    same times, and ``dts_90k`` keeps increasing across loops. A new subscriber first gets,
    without waiting, the units from the last keyframe up to now (a decoder can start at
    once), then each unit when it is due.
    """

    def __init__(
        self, params: VideoParameters, units: Sequence[tuple[AccessUnit, int]], clock: Clock
    ) -> None:
        if not units or not units[0][0].keyframe:
            raise ValueError("looping clip must start with a keyframe")
        self.params = params
        self._units = list(units)
        self._dts = [dts for _, dts in self._units]
        step = self._dts[-1] - self._dts[-2] if len(self._dts) > 1 else 3600
        #: Length of one loop; the gap after the last unit is the last frame's duration.
        self.loop_90k = self._dts[-1] - self._dts[0] + max(step, 1)
        self._keyframes = [i for i, (unit, _) in enumerate(self._units) if unit.keyframe]
        self._clock = clock
        self._start_ns = clock.monotonic_ns()

    def _position(self, now_ns: int) -> int:
        """Global index (loop * len + i) of the last keyframe at or before ``now_ns``."""
        elapsed_90k = max(0, (now_ns - self._start_ns) * 9 // 100_000)
        loop, within = divmod(elapsed_90k, self.loop_90k)
        base = self._dts[0]
        index = max((i for i in self._keyframes if self._dts[i] - base <= within), default=0)
        return loop * len(self._units) + index

    def _dts_of(self, position: int) -> int:
        loop, i = divmod(position, len(self._units))
        return loop * self.loop_90k + self._dts[i] - self._dts[0]

    async def subscribe(self) -> AsyncIterator[tuple[AccessUnit, int]]:
        """Units with their ``dts_90k`` on the shared timeline, forever, each when due."""
        position = self._position(self._clock.monotonic_ns())
        while True:
            dts_90k = self._dts_of(position)
            due_ns = self._start_ns + dts_90k * 100_000 // 9
            wait_ns = due_ns - self._clock.monotonic_ns()
            if wait_ns > 0:
                await self._clock.sleep(wait_ns / 1e9)
            unit = self._units[position % len(self._units)][0]
            yield unit, dts_90k
            position += 1
