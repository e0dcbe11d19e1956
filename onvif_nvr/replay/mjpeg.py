"""JPEG pictures from a recorded stream: the MJPEG live feed and the snapshot encoder.

Profile S asks for JPEG streaming, but the cameras send H.264/H.265 and the recording path
never transcodes. :class:`MjpegFeed` is a :class:`~onvif_nvr.replay.live.Feed` that exists
only while someone watches ``/live/<token>/jpeg``: the fan-out opens it for its first viewer
and closes it after its last, so the decoder runs only then and idle cost is nothing.

While open it reads the stream's own feed (the recorder's hub, from the last keyframe),
decodes every video unit in a worker thread (inter pictures need their references; measured:
decoding a 1080p picture costs ~2.7 ms, encoding it as JPEG ~9 ms, so encoding only the
pictures due at the low output rate is what keeps the cost down; when keyframes come at
least as often as the output rate, only they are decoded) and encodes one picture per
output interval (default 5 per second) as a baseline 4:2:0 JPEG with the standard Huffman
tables, which RFC 2435 can carry (``onvif_nvr.rtsp.jpeg``). A reader that falls behind by
more than a second skips to the newest keyframe it has.

PyAV runs only in worker threads (one at a time per feed): the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import av

from onvif_nvr.media.units import AccessUnit, AudioParameters, TimedUnit, VideoParameters
from onvif_nvr.replay.live import Feed
from onvif_nvr.rtsp.jpeg import MAX_DIMENSION

log = logging.getLogger(__name__)

DEFAULT_FPS = 5.0
#: mjpeg encoder quantizer scale (2 best .. 31 worst): a sharp picture at ~1/10 of raw size.
DEFAULT_QSCALE = 5
#: A reader more than this far behind the newest unit skips to the newest keyframe.
MAX_LAG_90K = 90_000
_DECODERS = {"H264": "h264", "H265": "hevc"}
_START_CODE = b"\x00\x00\x00\x01"
_TIME_BASE = fractions.Fraction(1, 90_000)


def jpeg_size(width: int, height: int) -> tuple[int, int]:
    """The size of the JPEG pictures made from a ``width`` x ``height`` stream: the same,
    scaled down to fit RFC 2435's 2040x2040 and cut to multiples of 8 (its size unit)."""
    scale = min(1.0, MAX_DIMENSION / max(width, height, 1))
    w, h = int(width * scale) // 8 * 8, int(height * scale) // 8 * 8
    return max(w, 8), max(h, 8)


def annex_b(unit: AccessUnit, parameter_sets: tuple[bytes, ...] = ()) -> bytes:
    """A unit as an Annex B byte stream (start codes), parameter sets first."""
    return b"".join(_START_CODE + nal for nal in (*parameter_sets, *unit.payloads))


class JpegEncoder:
    """Baseline JPEG (4:2:0, standard Huffman tables) of decoded pictures, at one size.
    Not thread-safe: use it from one thread at a time."""

    def __init__(self, width: int, height: int, qscale: int = DEFAULT_QSCALE) -> None:
        self.width, self.height = width, height
        context: Any = av.CodecContext.create("mjpeg", "w")
        context.width, context.height = width, height
        context.pix_fmt = "yuvj420p"
        context.time_base = fractions.Fraction(1, 90_000)
        # Standard Huffman tables: RFC 2435 does not send them (the default is "optimal").
        context.options = {"huffman": "default", "qmin": str(qscale), "qmax": str(qscale)}
        context.open()
        self._context = context
        self._pts = 0

    def encode(self, frame: av.VideoFrame) -> bytes:
        picture = frame.reformat(width=self.width, height=self.height, format="yuvj420p")
        self._pts += 1
        picture.pts = self._pts  # the encoder wants increasing timestamps
        return b"".join(bytes(p) for p in self._context.encode(picture))


class PictureDecoder:
    """H.264/H.265 units in, pictures out. Not thread-safe: use it from one thread at a time."""

    def __init__(self, codec: str) -> None:
        name = _DECODERS.get(codec)
        if name is None:
            raise ValueError(f"cannot decode {codec!r} video")
        self.codec = codec
        self._context: Any = av.CodecContext.create(name, "r")

    def decode(
        self, unit: AccessUnit, pts_90k: int, parameter_sets: tuple[bytes, ...] = ()
    ) -> list[av.VideoFrame]:
        packet = av.Packet(annex_b(unit, parameter_sets if unit.keyframe else ()))
        packet.pts = packet.dts = pts_90k
        packet.time_base = _TIME_BASE
        try:
            return list(self._context.decode(packet))
        except av.FFmpegError as exc:  # a damaged unit: the next keyframe recovers
            log.debug("decoder dropped a unit: %s", exc)
            return []

    def flush(self) -> list[av.VideoFrame]:
        try:
            return list(self._context.decode(None))
        except av.FFmpegError:
            return []


def snapshot_jpeg(
    params: VideoParameters, keyframe: AccessUnit, qscale: int = DEFAULT_QSCALE
) -> bytes:
    """The JPEG of one keyframe at the stream's size (blocking: call it in a thread)."""
    decoder = PictureDecoder(params.codec)
    frames = decoder.decode(keyframe, 0, params.parameter_sets) + decoder.flush()
    if not frames:
        raise ValueError("the keyframe did not decode")
    frame = frames[-1]
    try:
        return JpegEncoder(frame.width, frame.height, qscale).encode(frame)
    except av.FFmpegError as exc:
        raise ValueError(f"JPEG encoding failed: {exc}") from None


class _Transcoder:
    """The worker-thread half of :class:`MjpegFeed`: decode every unit, encode the due ones."""

    def __init__(self, params: VideoParameters, size: tuple[int, int], fps: float, qscale: int):
        self.params = params
        self.decoder = PictureDecoder(params.codec)
        self.encoder = JpegEncoder(size[0], size[1], qscale)
        self.interval_90k = max(1, round(90_000 / fps))
        self.next_due_90k: int | None = None
        #: Media time between the last two keyframes (None until two were seen).
        self.key_interval_90k: int | None = None
        self._last_key_90k: int | None = None
        self.started = False
        self.decoded = 0
        self.encoded = 0

    @property
    def keyframes_suffice(self) -> bool:
        """Keyframes come at least as often as pictures are due: decode only them."""
        interval = self.key_interval_90k
        return interval is not None and interval <= self.interval_90k

    def run(self, units: list[TimedUnit]) -> list[TimedUnit]:
        if units and units[-1].dts_90k - units[0].dts_90k > MAX_LAG_90K:
            # Behind by more than the lag allowed: start again at the newest keyframe.
            last_key = max((i for i, u in enumerate(units) if u.unit.keyframe), default=None)
            if last_key is not None:
                units = units[last_key:]
        wall_by_pts = {u.dts_90k: u.wall_ns for u in units}
        out: list[TimedUnit] = []
        for timed in units:
            if timed.unit.keyframe:
                if self._last_key_90k is not None and timed.dts_90k > self._last_key_90k:
                    self.key_interval_90k = timed.dts_90k - self._last_key_90k
                self._last_key_90k = timed.dts_90k
            elif not self.started or self.keyframes_suffice:
                continue  # nothing decodes before the first keyframe
            self.started = True
            frames = self.decoder.decode(timed.unit, timed.dts_90k, self.params.parameter_sets)
            self.decoded += 1
            for frame in frames:
                pts = frame.pts if frame.pts is not None else timed.dts_90k
                due = self.next_due_90k
                if due is not None and pts < due:
                    continue
                # Keep the cadence; after a gap (or at the start) count from this picture.
                if due is None or pts - due >= self.interval_90k:
                    self.next_due_90k = pts + self.interval_90k
                else:
                    self.next_due_90k = due + self.interval_90k
                picture = self.encoder.encode(frame)
                self.encoded += 1
                unit = AccessUnit("JPEG", (picture,), 0, True)
                out.append(TimedUnit(unit, 0, pts, wall_by_pts.get(pts, timed.wall_ns)))
        return out


class MjpegFeed:
    """A stream's video as JPEG pictures at ``fps``, transcoded only while it is open."""

    def __init__(
        self,
        source: Feed,
        *,
        fps: float = DEFAULT_FPS,
        qscale: int = DEFAULT_QSCALE,
        to_thread: Callable[..., Any] = asyncio.to_thread,
    ) -> None:
        self._source = source
        self.fps = fps
        self.qscale = qscale
        self._to_thread = to_thread
        #: Transcoders running now (0 when nobody watches) and pictures made so far.
        self.active = 0
        self.decoded = 0
        self.encoded = 0

    def parameters(self) -> tuple[VideoParameters | None, AudioParameters | None]:
        video, _ = self._source.parameters()
        if video is None or video.codec not in _DECODERS:
            return None, None
        width, height = jpeg_size(video.width, video.height)
        return VideoParameters("JPEG", width, height, (), "jpeg", self.fps), None

    async def open(self) -> AsyncIterator[list[TimedUnit]]:
        video, _ = self._source.parameters()
        if video is None or video.codec not in _DECODERS:
            return
        size = jpeg_size(video.width, video.height)
        transcoder = await self._to_thread(_Transcoder, video, size, self.fps, self.qscale)
        batches = self._source.open()
        self.active += 1
        try:
            async for batch in batches:
                units = [u for u in batch if u.track == 0]
                if not units:
                    continue
                latest, _ = self._source.parameters()
                if latest is not None and latest != transcoder.params:
                    transcoder.params = latest  # new parameter sets come with keyframes
                before = transcoder.decoded, transcoder.encoded
                pictures = await self._to_thread(transcoder.run, units)
                self.decoded += transcoder.decoded - before[0]
                self.encoded += transcoder.encoded - before[1]
                if pictures:
                    yield pictures
        finally:
            self.active -= 1
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]
