"""Synthesized test clips: encoded with PyAV (libx264 / libx265) at test time, never committed.

Frames are a moving gradient with a moving noise band (built from bytes; numpy is not
installed), so that pictures are big enough to need fragmentation at small MTUs. Results are
cached for the session with ``functools.lru_cache``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import random
import struct
from fractions import Fraction

import av

_NOISE = random.Random(20240611).randbytes(1 << 16)
_RAMP = bytes(range(256)) * 80


def _frame(width: int, height: int, index: int, pix_fmt: str) -> av.VideoFrame:
    # 8-bit planar layouts are filled directly; deeper ones are converted from 8 bits.
    frame = av.VideoFrame(width, height, pix_fmt.removesuffix("10le"))
    for plane_no, plane in enumerate(frame.planes):
        line = plane.line_size
        rows = []
        for y in range(plane.height):
            if plane_no == 0 and (y // 16) % 4 == index % 4:
                start = (y * 131 + index * 977) % (len(_NOISE) - line)
                rows.append(_NOISE[start : start + line])
            else:
                start = (y + 3 * index + 40 * plane_no) % 256
                rows.append(_RAMP[start : start + line])
        plane.update(b"".join(rows))
    if pix_fmt.endswith("10le"):
        frame = frame.reformat(format=pix_fmt)
    frame.pts = index
    return frame


def _encode(
    codec: str,
    muxer: str,
    width: int,
    height: int,
    frames: int,
    fps: Fraction,
    options: dict[str, object],
    profile: str | None,
    pix_fmt: str,
) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        stream.bit_rate = 600_000
        if profile:
            stream.profile = profile
        stream.options = options
        for index in range(frames):
            for packet in stream.encode(_frame(width, height, index, pix_fmt)):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@functools.cache
def h264_annexb(
    width: int = 320,
    height: int = 240,
    frames: int = 30,
    fps: Fraction | int = 30,
    gop: int = 10,
    profile: str = "high",
    pix_fmt: str = "yuv420p",
    x264_params: str = "",
) -> bytes:
    """An H.264 Annex B stream with an IDR every ``gop`` frames (SPS/PPS before each IDR).

    ``profile`` "high" follows ``pix_fmt`` (High 4:2:2, High 4:4:4 Predictive...)."""
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error" + x264_params
    options: dict[str, object] = {"preset": "ultrafast" if profile == "baseline" else "veryfast",
               "x264-params": params}  # fmt: skip
    names = {"baseline": "Baseline", "main": "Main", "high": None}
    return _encode(
        "libx264", "h264", width, height, frames, Fraction(fps), options, names[profile], pix_fmt
    )


@functools.cache
def h265_annexb(
    width: int = 320,
    height: int = 240,
    frames: int = 30,
    fps: Fraction | int = 30,
    gop: int = 10,
    pix_fmt: str = "yuv420p",
    x265_params: str = "",
) -> bytes:
    """An H.265 Annex B stream (profile after ``pix_fmt``: Main, Main 10, RExt) with an IRAP
    (IDR, then CRA) every ``gop`` frames, VPS/SPS/PPS before each."""
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error" + x265_params
    options: dict[str, object] = {"preset": "ultrafast", "x265-params": params}
    return _encode("libx265", "hevc", width, height, frames, Fraction(fps), options, None, pix_fmt)


def access_units(data: bytes, fmt: str) -> list[tuple[bytes, bool]]:
    """Split a raw stream into access units with FFmpeg's demuxer: (Annex B bytes, keyframe)."""
    with av.open(io.BytesIO(data), "r", format=fmt) as container:
        return [
            (bytes(packet), packet.is_keyframe)
            for packet in container.demux(video=0)
            if packet.size
        ]


@dataclasses.dataclass
class Decoded:
    """What FFmpeg's decoder made of a stream (test-only; the product never decodes)."""

    sizes: list[tuple[int, int]]
    frame_rate: Fraction | None
    profile: str | None


def decode(data: bytes, codec: str) -> Decoded:
    """Decode an Annex B stream with FFmpeg: every frame's size, the VUI frame rate, profile."""
    ctx = av.CodecContext.create(codec, "r")
    assert isinstance(ctx, av.VideoCodecContext)
    sizes = []
    for packet in [*ctx.parse(data), *ctx.parse(None), None]:
        for frame in ctx.decode(packet):
            sizes.append((frame.width, frame.height))
    rate = ctx.framerate
    return Decoded(sizes, Fraction(rate) if rate else None, ctx.profile)


@functools.cache
def aac_frames(seconds: float, sample_rate: int = 48000) -> tuple[bytes, tuple[bytes, ...]]:
    """A mono 440 Hz tone in AAC-LC: (AudioSpecificConfig, raw access units of 1024 samples)."""
    ctx = av.CodecContext.create("aac", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = sample_rate, "mono", "fltp"
    ctx.time_base = Fraction(1, sample_rate)
    ctx.open()
    chunk = ctx.frame_size
    packets: list[bytes] = []
    for start in range(0, int(sample_rate * seconds), chunk):
        frame = av.AudioFrame(format="fltp", layout="mono", samples=chunk)
        tone = [math.sin(2 * math.pi * 440 * (start + i) / sample_rate) * 0.3 for i in range(chunk)]
        frame.planes[0].update(struct.pack(f"<{chunk}f", *tone))
        frame.sample_rate, frame.pts = sample_rate, start
        packets.extend(bytes(p) for p in ctx.encode(frame))
    packets.extend(bytes(p) for p in ctx.encode(None))
    return bytes(ctx.extradata or b""), tuple(packets)
