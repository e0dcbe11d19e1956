"""Live fan-out: one stream's access units packetized once and written to every viewer.

A :class:`Fanout` exists per served stream while someone watches it. It reads the stream's
:class:`Feed` (the recorder's hub, or a simulated camera) in batches, packetizes each unit
once — one SSRC, one sequence space and one RTP clock per track, shared by all viewers, as
GStreamer's "shared media" does — and hands the packets to every viewer:

* TCP interleaved viewers get **one buffer per batch**, built once per distinct channel
  layout (nearly always one: channels 0-1 for video, 2-3 for audio) and written with one
  ``transport.write`` per viewer. A viewer whose unsent data exceeds its limit is dropped.
* UDP viewers get each packet by ``sendto`` from the server's RTP socket (datagrams cannot be
  joined); a full socket buffer loses packets for that viewer only.

A late joiner starts at a keyframe at once: the fan-out keeps the packets of the current GOP
(from its last video keyframe, parameter sets in band) and sends them to a new viewer before
the live packets, so its sequence numbers are contiguous from the RTP-Info it was given.

RTCP: a sender report per track every :data:`SR_INTERVAL_NS` and to each new viewer, mapping
the unit's wall-clock capture time (``TimedUnit.wall_ns``, NTP format) to its RTP time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import AccessUnit, AudioParameters, TimedUnit, VideoParameters
from onvif_nvr.rtsp import sdp
from onvif_nvr.rtsp.audio import AudioPacketizer
from onvif_nvr.rtsp.h264 import H264Packetizer
from onvif_nvr.rtsp.h265 import H265Packetizer
from onvif_nvr.rtsp.jpeg import PAYLOAD_TYPE as JPEG_PT
from onvif_nvr.rtsp.jpeg import JpegPacketizer
from onvif_nvr.rtsp.rtp import SenderReport, build_compound, wall_ns_to_ntp

log = logging.getLogger(__name__)

VIDEO_PT = 96
AUDIO_PT = 97
#: RTP payload size; UDP packets stay under a 1500-byte Ethernet MTU with headers.
RTP_MTU = 1400
SR_INTERVAL_NS = 5_000_000_000
#: Packets kept for late joiners (a 4 Mbit/s GOP of 2 s is ~700 packets).
GOP_CACHE_PACKETS = 8000
_RTP = struct.Struct("!BBHII")
_INTERLEAVED = struct.Struct("!BBH")


class Feed(Protocol):
    """A live stream the server can fan out."""

    def parameters(self) -> tuple[VideoParameters | None, AudioParameters | None]:
        """The stream's current video and audio parameters (None: not known yet / none)."""
        ...

    def open(self) -> AsyncIterator[list[TimedUnit]]:
        """Units in batches, starting at the last keyframe, until the stream ends. Closing
        the iterator (``aclose``) unsubscribes."""
        ...


class Viewer(Protocol):
    """Where a fan-out writes; implemented per transport by the RTSP server."""

    def send_tcp(self, buffer: bytes) -> None: ...

    @property
    def layout(self) -> tuple[int, ...] | None:
        """Interleaved channel of each track (RTP; RTCP is +1), or None for UDP."""
        ...

    def send_udp(self, packets: Sequence[tuple[int, bool, bytes]]) -> None: ...

    def ended(self, reason: str) -> None:
        """The stream is gone (camera removed, recorder restarted)."""
        ...


Packetizer = H264Packetizer | H265Packetizer | AudioPacketizer | JpegPacketizer


@dataclasses.dataclass
class Track:
    """One served track: SDP, RTP state, packetizer."""

    number: int  # TimedUnit.track
    control: str
    payload_type: int
    clock_rate: int
    media: sdp.MediaDescription
    packetizer: Packetizer
    ssrc: int = dataclasses.field(default_factory=lambda: secrets.randbits(32))
    next_seq: int = dataclasses.field(default_factory=lambda: secrets.randbits(16))
    base_rtptime: int = dataclasses.field(default_factory=lambda: secrets.randbits(32))
    packets: int = 0
    octets: int = 0
    #: (wall_ns, rtptime) of the last unit sent: what sender reports map.
    last: tuple[int, int] | None = None
    next_sr_ns: int = 0

    def rtptime(self, dts_90k: int) -> int:
        return (dts_90k * self.clock_rate // 90_000 + self.base_rtptime) & 0xFFFFFFFF

    def sender_report(self) -> bytes | None:
        if self.last is None:
            return None
        wall_ns, rtptime = self.last
        report = SenderReport(
            self.ssrc,
            wall_ns_to_ntp(wall_ns),
            rtptime,
            self.packets & 0xFFFFFFFF,
            self.octets & 0xFFFFFFFF,
        )
        return build_compound(report)


def make_tracks(video: VideoParameters | None, audio: AudioParameters | None) -> list[Track]:
    """The tracks served for a stream, with their SDP media sections (``trackID=N``)."""
    tracks = []
    if video is not None:
        control = "trackID=0"
        video_pt = VIDEO_PT
        if video.codec == "H264":
            media = sdp.video_media_h264(VIDEO_PT, control, video.parameter_sets)
            packetizer: Packetizer = H264Packetizer(
                VIDEO_PT,
                0,
                RTP_MTU,
                insert_parameter_sets=True,
                parameter_sets=video.parameter_sets,
            )
        elif video.codec == "H265":
            media = sdp.video_media_h265(VIDEO_PT, control, video.parameter_sets)
            packetizer = H265Packetizer(
                VIDEO_PT,
                0,
                RTP_MTU,
                insert_parameter_sets=True,
                parameter_sets=video.parameter_sets,
            )
        elif video.codec == "JPEG":  # the MJPEG transcoder's pictures (replay/mjpeg.py)
            video_pt = JPEG_PT
            media = sdp.video_media_jpeg(control, video.width, video.height)
            packetizer = JpegPacketizer(RTP_MTU)
        else:
            raise ValueError(f"unsupported video codec {video.codec!r}")
        if video.frame_rate:
            media.attributes.append(("framerate", f"{video.frame_rate:g}"))
        tracks.append(Track(0, control, video_pt, 90_000, media, packetizer))
    if audio is not None:
        control = "trackID=1"
        if audio.codec == "AAC":
            pt, rate = AUDIO_PT, audio.sample_rate
            media = sdp.audio_media_aac(pt, control, rate, audio.channels, audio.config)
        elif audio.codec in ("PCMU", "PCMA"):
            pt = 0 if audio.codec == "PCMU" else 8
            rate = audio.sample_rate
            media = sdp.audio_media_pcm(pt, control, audio.codec, rate, audio.channels)
        elif audio.codec == "OPUS":
            pt, rate = AUDIO_PT, 48_000
            media = sdp.audio_media_opus(pt, control, audio.channels)
        else:
            raise ValueError(f"unsupported audio codec {audio.codec!r}")
        tracks.append(Track(1, control, pt, rate, media, AudioPacketizer(audio.codec, RTP_MTU)))
    return tracks


#: (track number, is RTCP, packet bytes)
Packet = tuple[int, bool, bytes]


class Fanout:
    """The shared packetization of one stream and the viewers it writes to."""

    def __init__(self, feed: Feed, clock: Clock, on_idle: Callable[[Fanout], None]) -> None:
        video, audio = feed.parameters()
        self.feed = feed
        self.tracks = make_tracks(video, audio)
        self._by_number = {t.number: t for t in self.tracks}
        self._clock = clock
        self._on_idle = on_idle
        self.viewers: list[Viewer] = []
        #: Packets since the last video keyframe (for late joiners).
        self._gop: list[Packet] = []
        self._has_video = video is not None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.batches = 0

    def describe(self) -> list[sdp.MediaDescription]:
        return [t.media for t in self.tracks]

    def track(self, control: str) -> Track | None:
        return next((t for t in self.tracks if t.control == control), None)

    def start_info(self, track: Track) -> tuple[int, int | None]:
        """(seq, rtptime) of the first packet a viewer joining now gets on ``track``."""
        header = next((p for n, rtcp, p in self._gop if n == track.number and not rtcp), None)
        if header is None:
            return track.next_seq, None
        _, _, seq, rtptime, _ = _RTP.unpack_from(header)
        return seq, rtptime

    def join(self, viewer: Viewer) -> None:
        """Add a viewer: it gets the cached GOP (and a sender report per track) at once."""
        if self._gop:
            burst = list(self._gop)
            for track in self.tracks:
                report = track.sender_report()
                if report is not None:
                    burst.append((track.number, True, report))
            self._deliver(burst, [viewer])
        self.viewers.append(viewer)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def wait_ready(self, timeout_s: float) -> bool:
        """Start reading the feed if nobody watches yet and wait (at most ``timeout_s``) for
        its first packets, so that the first viewer's RTP-Info has an rtptime (ONVIF
        Streaming asks for one). The feed starts at a keyframe (the hub's GOP cache), so
        this is one batch. Call :meth:`close_if_idle` if no viewer joins after all."""
        if self._gop:
            return True
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return bool(self._gop)

    def close_if_idle(self) -> None:
        if not self.viewers:
            self.close()

    def synchronize(self) -> int:
        """A synchronization point was asked for (Media SetSynchronizationPoint): a sender
        report per track goes with the next batch; the number of viewers. The picture itself
        resynchronizes at the camera's next keyframe (ADR 0006)."""
        for track in self.tracks:
            track.next_sr_ns = 0
        return len(self.viewers)

    def leave(self, viewer: Viewer) -> None:
        with contextlib.suppress(ValueError):
            self.viewers.remove(viewer)
        if not self.viewers:
            self.close()

    def close(self) -> None:
        """Stop reading the feed (the last viewer left); the server forgets this fan-out."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._on_idle(self)

    async def _run(self) -> None:
        batches = self.feed.open()
        reason = "stream ended"
        try:
            async for batch in batches:
                packets = self._packetize(batch)
                if self._gop:
                    self._ready.set()
                if packets and self.viewers:
                    self._deliver(packets, list(self.viewers))
                self.batches += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the feed failed: its viewers end, the server goes on
            log.exception("live stream failed")
            reason = f"stream failed: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]
        self._ready.set()
        for viewer in list(self.viewers):
            viewer.ended(reason)
        self.viewers.clear()
        self._task = None
        self._on_idle(self)

    def _packetize(self, batch: list[TimedUnit]) -> list[Packet]:
        out: list[Packet] = []
        now_ns = self._clock.monotonic_ns()
        gop = self._gop
        for timed in batch:
            track = self._by_number.get(timed.track)
            if track is None:
                continue
            unit = timed.unit
            rtptime = track.rtptime(timed.dts_90k)
            try:
                payloads = track.packetizer.packetize(unit, rtptime)
            except ValueError as exc:  # a bad unit is dropped, the stream goes on
                log.debug("live: dropped a unit: %s", exc)
                continue
            if track.number == 0 and unit.keyframe:
                gop.clear()
            first = len(out)
            pt, seq, ssrc = track.payload_type, track.next_seq, track.ssrc
            for payload, marker in payloads:
                header = _RTP.pack(0x80, pt | 0x80 if marker else pt, seq, rtptime, ssrc)
                out.append((track.number, False, header + payload))
                seq = (seq + 1) & 0xFFFF
                track.octets += len(payload)
            track.packets += len(payloads)
            track.next_seq = seq
            track.last = (timed.wall_ns, rtptime)
            caching = gop or not self._has_video or (track.number == 0 and unit.keyframe)
            if caching and len(gop) + len(out) - first <= GOP_CACHE_PACKETS:
                gop.extend(out[first:])
            if now_ns >= track.next_sr_ns:
                track.next_sr_ns = now_ns + SR_INTERVAL_NS
                report = track.sender_report()
                if report is not None:
                    out.append((track.number, True, report))
        if not self._has_video and len(gop) > 50:
            del gop[:-50]  # audio only: a short cache is enough to start at once
        return out

    def _deliver(self, packets: list[Packet], viewers: list[Viewer]) -> None:
        buffers: dict[tuple[int, ...], bytes] = {}
        for viewer in viewers:
            layout = viewer.layout
            if layout is None:
                viewer.send_udp(packets)
                continue
            buffer = buffers.get(layout)
            if buffer is None:
                buffer = buffers[layout] = _interleave(packets, layout)
            viewer.send_tcp(buffer)


def _interleave(packets: list[Packet], layout: tuple[int, ...]) -> bytes:
    """One buffer of ``$``-framed packets (RFC 2326 §10.12) for a channel layout."""
    pack = _INTERLEAVED.pack
    parts = []
    for number, rtcp, packet in packets:
        if number >= len(layout) or layout[number] < 0:
            continue
        parts.append(pack(0x24, layout[number] + rtcp, len(packet)))
        parts.append(packet)
    return b"".join(parts)


class Subscription(Protocol):
    """What a hub subscription gives (``onvif_nvr.recording.hub.Subscription``)."""

    def batches(self, limit: int = 1024) -> AsyncIterator[list[TimedUnit]]: ...

    def close(self) -> None: ...


class HubFeed:
    """A recorder's hub as a feed: one lossy subscription per fan-out, from the GOP cache.

    Lossy so that the fan-out never ends the camera's subscription; it only falls behind if
    the whole event loop does, and then loses the oldest units like the recorder would.
    """

    def __init__(
        self,
        subscribe: Callable[[], Subscription],
        parameters: Callable[[], tuple[VideoParameters | None, AudioParameters | None]],
    ) -> None:
        self._subscribe = subscribe
        self._parameters = parameters

    def parameters(self) -> tuple[VideoParameters | None, AudioParameters | None]:
        return self._parameters()

    async def open(self) -> AsyncIterator[list[TimedUnit]]:
        subscription = self._subscribe()
        try:
            async for batch in subscription.batches():
                yield batch
        finally:
            subscription.close()


class UnitSource(Protocol):
    """A simulated camera (``recording.simulator.LoopingClip``): units with ``dts_90k``,
    each when due, from the last keyframe."""

    @property
    def params(self) -> VideoParameters: ...

    def subscribe(self) -> AsyncIterator[tuple[AccessUnit, int]]: ...


class UnitSourceFeed:
    """A :class:`UnitSource` as a feed (video only, wall time = arrival)."""

    def __init__(self, source: UnitSource, clock: Clock) -> None:
        self._source = source
        self._clock = clock

    def parameters(self) -> tuple[VideoParameters | None, AudioParameters | None]:
        return self._source.params, None

    async def open(self) -> AsyncIterator[list[TimedUnit]]:
        units = self._source.subscribe()
        try:
            async for unit, dts_90k in units:
                yield [TimedUnit(unit, 0, dts_90k, self._clock.wall_ns())]
        finally:
            aclose = getattr(units, "aclose", None)
            if aclose is not None:
                await aclose()
