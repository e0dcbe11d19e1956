"""WebRTC live viewing: the camera's H.264 passed through aiortc without transcoding.

A session is one aiortc ``RTCPeerConnection`` answering a browser's offer (non-trickle: the
offer and the answer carry every ICE candidate). Its one video track subscribes to the
camera's live :class:`~onvif_nvr.replay.live.Feed` — the same hub feed the RTSP viewers'
fan-out reads, one lossy hub subscription per session starting at the cached GOP — and hands
aiortc an ``av.Packet`` (Annex-B) per access unit; aiortc's RTP sender then only packetizes
(``H264Encoder.pack``) and encrypts. See ADR 0008 and docs/design/webrtc.md.

* **Start at a keyframe, at once**: the first batch of a subscription is the hub's cached
  GOP. Its frames get timestamps one 90 kHz tick apart ending at the live timeline, so the
  receiver decodes the catch-up burst and renders its last picture now, instead of playing
  the burst at its original pace one GOP behind.
* **Parameter sets in band** before every keyframe that lacks them (browsers join on them;
  some cameras send them only in the SDP).
* **A slow peer loses pictures, not memory**: at most ``max_queued_frames`` wait per
  session (besides the catch-up burst, which the hub's GOP cache bounds); on overflow the
  queue is emptied and the session skips to the next keyframe.
* **Ends** when the peer's connection fails or closes, when it does not connect within
  ``connect_timeout_s``, when the camera's stream ends (camera removed), on ``DELETE`` and
  at shutdown.

H.265 is refused (aiortc offers no H.265; the UI falls back to MSE). Audio passes through
when the camera sends what browsers take (PCMU, PCMA at 8 kHz, Opus) and the offer has an
audio section taking it; AAC, the usual camera audio, would need transcoding: left out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fractions
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aioice.ice
import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from onvif_nvr.clock import Clock
from onvif_nvr.config import WebRtcSettings
from onvif_nvr.errors import ActionFailed, InvalidArgument, NotSupported
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.replay.live import Feed
from onvif_nvr.rtsp.bits import BitReader, ParameterSets, remove_emulation_prevention

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, 90_000)
_START_CODE = b"\x00\x00\x00\x01"
_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9
#: Largest offer read (a browser's offer with every candidate is a few kilobytes).
MAX_OFFER_BYTES = 64 * 1024


class NoLiveStream(ActionFailed):
    """The camera has no live stream yet (not connected, or its parameters unknown)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "NoLiveStream")


class TooManySessions(ActionFailed):
    def __init__(self, message: str) -> None:
        super().__init__(message, "MaxWebRtcSessions")


class CodecNotSupported(NotSupported):
    def __init__(self, message: str) -> None:
        super().__init__(message, "CodecNotSupported")


class BadOffer(InvalidArgument):
    """The SDP offer cannot be used (unparsable, no video section, no common codec)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "BadSdp")


@dataclasses.dataclass
class Counters:
    """Totals since start (Prometheus counters) and per session."""

    frames: int = 0
    bytes: int = 0
    dropped: int = 0


def _parameter_set_key(nal: bytes) -> tuple[str, int] | None:
    kind = nal[0] & 0x1F
    if kind not in (_NAL_SPS, _NAL_PPS):
        return None
    reader = BitReader(remove_emulation_prevention(nal[1:8]))
    if kind == _NAL_SPS:
        reader.skip(24, "profile_idc, constraint flags, level_idc")
        return "sps", reader.ue("seq_parameter_set_id")
    return "pps", reader.ue("pic_parameter_set_id")


class AnnexB:
    """Access units to Annex-B byte streams, with the parameter sets in front of every
    keyframe that lacks them (the last ones seen in band, else the stream's)."""

    def __init__(self, parameter_sets: tuple[bytes, ...]) -> None:
        self.sets = ParameterSets()
        for nal in parameter_sets:
            self._remember(nal)

    def _remember(self, nal: bytes) -> None:
        try:
            key = _parameter_set_key(nal)
        except ValueError as exc:  # an unreadable parameter set is passed on, not kept
            log.debug("webrtc: unreadable parameter set: %s", exc)
            return
        if key is not None:
            self.sets.store(key[0], key[1], nal)

    def convert(self, nals: tuple[bytes, ...], keyframe: bool) -> bytes:
        kinds = set()
        for nal in nals:
            if nal:
                kinds.add(nal[0] & 0x1F)
                self._remember(nal)
        out = [nal for nal in nals if nal]
        if keyframe and not {_NAL_SPS, _NAL_PPS} <= kinds:
            missing: list[bytes] = []
            if _NAL_SPS not in kinds:
                missing += self.sets.sps.values()
            if _NAL_PPS not in kinds:
                missing += self.sets.pps.values()
            at = 1 if out and out[0][0] & 0x1F == _NAL_AUD else 0
            out[at:at] = missing
        return b"".join(_START_CODE + nal for nal in out)


class PassthroughTrack(MediaStreamTrack):
    """A video track whose ``recv`` gives the camera's coded pictures as ``av.Packet``.

    The feed is opened on the first ``recv`` (when aiortc's sender starts, after DTLS), so
    the catch-up burst goes out when the peer can take it.
    """

    kind = "video"

    def __init__(
        self,
        feed: Feed,
        parameter_sets: tuple[bytes, ...],
        max_queued_frames: int,
        totals: Counters,
        on_end: Callable[[str], None],
    ) -> None:
        super().__init__()
        self._feed = feed
        self._annexb = AnnexB(parameter_sets)
        self._max = max_queued_frames
        self._queue: collections.deque[av.Packet[Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._skipping = False
        #: 90 kHz media time minus packet pts (set by the first batch).
        self._origin: int | None = None
        self._last_pts = -1
        self._ended: str | None = None
        self._on_end = on_end
        self.totals = totals
        self.counters = Counters()
        #: The session's audio track, fed by this track's subscription (one per session).
        self.audio: AudioPassthroughTrack | None = None
        self._batches = 0

    @property
    def ended(self) -> str | None:
        """Why the feed ended (None while it runs or before it starts)."""
        return self._ended

    def start(self) -> None:
        """Open the feed (once; the first ``recv`` of either track does)."""
        if self._pump is None and self._ended is None:
            self._pump = asyncio.create_task(self._run())

    async def recv(self) -> av.Packet[Any]:
        self.start()
        while not self._queue:
            if self._ended is not None or self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            await self._wake.wait()
        packet = self._queue.popleft()
        size = packet.size
        self.counters.frames += 1
        self.counters.bytes += size
        self.totals.frames += 1
        self.totals.bytes += size
        return packet

    def stop(self) -> None:
        super().stop()
        if self._pump is not None:
            self._pump.cancel()
        self._wake.set()

    async def _run(self) -> None:
        batches: AsyncIterator[list[TimedUnit]] = self._feed.open()
        reason = "stream ended"
        try:
            async for batch in batches:
                self._take(batch)
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except Exception as exc:  # the feed failed: this session ends, the box goes on
            log.exception("webrtc: live stream failed")
            reason = f"stream failed: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]
            self._ended = reason
            self._wake.set()
            if self.audio is not None:
                self.audio.wake()
            if reason != "closed":
                self._on_end(reason)

    def _take(self, batch: list[TimedUnit]) -> None:
        self._batches += 1
        if self.audio is not None and self._batches > 1:  # the cached GOP's audio is old
            for timed in batch:
                if timed.track == 1:
                    self.audio.put(timed)
        video = [t for t in batch if t.track == 0]
        if not video:
            return
        if self._origin is None:
            start = next((i for i, t in enumerate(video) if t.unit.keyframe), None)
            if start is None:
                return  # no keyframe cached: wait for the next one
            video = video[start:]
            # Catch-up burst: one tick apart, the last one on the live timeline. It may be
            # longer than the queue's limit (the hub caps its GOP cache): cutting it would
            # leave the session waiting for the camera's next keyframe.
            self._origin = video[-1].dts_90k - len(video)
            for n, timed in enumerate(video, 1):
                self._put(timed, n, catch_up=True)
            return
        for timed in video:
            self._put(timed, timed.dts_90k - self._origin)

    def _put(self, timed: TimedUnit, pts: int, catch_up: bool = False) -> None:
        unit = timed.unit
        if self._skipping and not unit.keyframe:
            self._drop()
            return
        if len(self._queue) >= self._max and not catch_up:
            for _ in range(len(self._queue)):
                self._drop()
            self._queue.clear()
            if not unit.keyframe:
                self._skipping = True
                self._drop()
                return
        self._skipping = False
        pts = max(pts, self._last_pts + 1)  # a camera clock step must not go backwards
        self._last_pts = pts
        packet = av.Packet(self._annexb.convert(unit.payloads, unit.keyframe))
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        self._queue.append(packet)
        self._wake.set()

    def _drop(self) -> None:
        self.counters.dropped += 1
        self.totals.dropped += 1


#: Audio codecs browsers take as they are (RFC 7874), with the sample rate WebRTC has them at.
AUDIO_PASSTHROUGH = {"PCMU": ("audio/pcmu", 8000), "PCMA": ("audio/pcma", 8000)}
AUDIO_PASSTHROUGH["OPUS"] = ("audio/opus", 48_000)


class AudioPassthroughTrack(MediaStreamTrack):
    """The camera's G.711 or Opus frames as ``av.Packet`` (aiortc's encoders ``pack`` them
    unchanged); fed by the session's video track, live only (no catch-up), at most
    ``max_queued`` frames (the oldest go)."""

    kind = "audio"

    def __init__(self, video: PassthroughTrack, clock_rate: int, max_queued: int) -> None:
        super().__init__()
        self._video = video
        self._rate = clock_rate
        self._time_base = fractions.Fraction(1, clock_rate)
        self._queue: collections.deque[av.Packet[Any]] = collections.deque()
        self._max = max_queued
        self._wake = asyncio.Event()
        self._origin: int | None = None
        self._last_pts = -1
        video.audio = self

    async def recv(self) -> av.Packet[Any]:
        self._video.start()
        while not self._queue:
            if self._video.ended is not None or self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            await self._wake.wait()
        packet = self._queue.popleft()
        self._video.totals.bytes += packet.size
        self._video.counters.bytes += packet.size
        return packet

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def put(self, timed: TimedUnit) -> None:
        if self._origin is None:
            self._origin = timed.dts_90k
        pts = (timed.dts_90k - self._origin) * self._rate // 90_000
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        packet = av.Packet(timed.unit.payloads[0] if timed.unit.payloads else b"")
        packet.pts = packet.dts = pts
        packet.time_base = self._time_base
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self._video.counters.dropped += 1
            self._video.totals.dropped += 1
        self._queue.append(packet)
        self._wake.set()


@dataclasses.dataclass
class Session:
    id: str
    stream: str
    pc: RTCPeerConnection
    track: PassthroughTrack
    watchdog: asyncio.Task[None] | None = None
    audio: AudioPassthroughTrack | None = None


class WebRtcSessions:
    """The box's WebRTC sessions, all cameras together."""

    def __init__(
        self, resolve: Callable[[str], Feed | None], config: WebRtcSettings, clock: Clock
    ) -> None:
        self._resolve = resolve
        self.config = config
        self._clock = clock
        self.sessions: dict[str, Session] = {}
        #: Offers being answered (they count against the limit already).
        self._pending = 0
        self.totals = Counters()
        self.opened = 0
        self._closing: set[asyncio.Task[bool]] = set()
        self._restore: Callable[[], None] | None = None
        if config.host_addresses:
            self._restore = pin_host_addresses(config.host_addresses)

    def _ice_servers(self) -> list[RTCIceServer]:
        # An empty list, not None: aiortc's default is a public STUN server.
        if self.config.stun_server:
            return [RTCIceServer(f"stun:{self.config.stun_server}")]
        return []

    async def open(self, stream: str, offer_sdp: str) -> tuple[str, str]:
        """Answer ``offer_sdp`` with a session watching ``stream``: (session id, answer SDP)."""
        limit = self.config.max_sessions
        if not limit:
            raise TooManySessions("WebRTC is off (webrtc.max_sessions = 0)")
        if len(self.sessions) + self._pending >= limit:
            raise TooManySessions(f"{limit} WebRTC sessions are open (webrtc.max_sessions)")
        feed = self._resolve(stream)
        video, audio = feed.parameters() if feed is not None else (None, None)
        if feed is None or video is None:
            raise NoLiveStream(f"{stream!r} has no live video stream (yet)")
        if video.codec != "H264":
            raise CodecNotSupported(
                f"{stream!r} sends {video.codec}; WebRTC here passes H.264 only (use MSE)"
            )
        if len(offer_sdp) > MAX_OFFER_BYTES:
            raise BadOffer(f"the offer is larger than {MAX_OFFER_BYTES} bytes")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers()))
        session_id = secrets.token_urlsafe(16)
        track = PassthroughTrack(
            feed,
            video.parameter_sets,
            self.config.max_queued_frames,
            self.totals,
            lambda reason: self._end_soon(session_id, reason),
        )
        passthrough = AUDIO_PASSTHROUGH.get(audio.codec) if audio is not None else None
        audio_track = None
        if passthrough is not None and audio is not None and audio.sample_rate == passthrough[1]:
            audio_track = AudioPassthroughTrack(
                track, passthrough[1], 4 * self.config.max_queued_frames
            )
        self._pending += 1
        try:
            answer = await _answer(
                pc,
                track,
                (audio_track, passthrough[0]) if audio_track and passthrough else None,
                offer_sdp,
            )
        except BaseException:
            track.stop()
            if audio_track is not None:
                audio_track.stop()
            await _close(pc)
            raise
        finally:
            self._pending -= 1
        session = Session(session_id, stream, pc, track, audio=audio_track)
        self.sessions[session_id] = session
        self.opened += 1

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._end_soon(session_id, f"connection {pc.connectionState}")

        session.watchdog = asyncio.create_task(self._watch(session))
        log.info("webrtc: session %s on %s opened", session_id[:8], stream)
        return session_id, answer

    async def _watch(self, session: Session) -> None:
        """End a session that does not connect in time (non-trickle ICE never reports
        failure when the offer lacks end-of-candidates)."""
        await self._clock.sleep(self.config.connect_timeout_s)
        if session.pc.connectionState != "connected":
            self._end_soon(session.id, "did not connect")

    def _end_soon(self, session_id: str, reason: str) -> None:
        if session_id not in self.sessions:
            return
        task = asyncio.create_task(self.close_session(session_id, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_session(self, session_id: str, reason: str = "closed by the client") -> bool:
        """End one session; False if there is none by that id."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        watchdog = session.watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        session.track.stop()
        if session.audio is not None:
            session.audio.stop()
        await _close(session.pc)
        log.info("webrtc: session %s on %s ended: %s", session_id[:8], session.stream, reason)
        return True

    async def close(self) -> None:
        """End every session (shutdown)."""
        for session_id in list(self.sessions):
            await self.close_session(session_id, "shutdown")
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._restore is not None:
            self._restore()
            self._restore = None

    def stats(self) -> dict[str, int]:
        """Sessions open now and totals since start (frames and bytes handed to aiortc,
        frames dropped for slow peers)."""
        return {
            "sessions": len(self.sessions),
            "opened": self.opened,
            "frames": self.totals.frames,
            "bytes": self.totals.bytes,
            "dropped": self.totals.dropped,
        }


async def _answer(
    pc: RTCPeerConnection,
    track: PassthroughTrack,
    audio: tuple[AudioPassthroughTrack, str] | None,
    offer_sdp: str,
) -> str:
    """Apply the offer, answer it (after gathering: every candidate in the answer)."""
    try:
        offer = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc raises whatever its parser meets: all bad input
        raise BadOffer(f"the offer cannot be used: {exc or type(exc).__name__}") from None
    # The transceivers and their codec preferences come before the offer: aiortc picks the
    # codecs while it applies the offer, and takes the browser's first match (often VP8).
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences(
        [
            codec
            for codec in RTCRtpSender.getCapabilities("video").codecs
            if codec.mimeType.lower() in ("video/h264", "video/rtx")
        ]
    )
    # Audio only where the offer takes the camera's codec: a missing common codec would
    # fail the whole offer, and the picture matters more.
    if audio is not None and _offers_audio(offer, audio[1]):
        pc.addTransceiver(audio[0], direction="sendonly").setCodecPreferences(
            [
                codec
                for codec in RTCRtpSender.getCapabilities("audio").codecs
                if codec.mimeType.lower() == audio[1]
            ]
        )
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        answer = await pc.createAnswer()
    except Exception as exc:
        raise BadOffer(f"the offer cannot be used: {exc or type(exc).__name__}") from None
    if transceiver.mid is None:
        raise BadOffer("the offer has no video section")
    start = answer.sdp.find("m=video")
    end = answer.sdp.find("\nm=", start)
    video = answer.sdp[start : end if end > 0 else None]
    if " H264/90000" not in video:
        raise BadOffer("the offer does not take H.264 with packetization-mode=1")
    if "a=sendonly" not in video:
        raise BadOffer("the offer's video section does not receive")
    try:
        await pc.setLocalDescription(answer)
    except ValueError as exc:  # aiortc checks its answer against the (odd) offer here
        raise BadOffer(f"the offer cannot be answered: {exc}") from None
    return str(pc.localDescription.sdp)


async def _close(pc: RTCPeerConnection) -> None:
    # A connection left half set up by a bad offer can fail to close; it is dropped anyway.
    try:
        await pc.close()
    except Exception as exc:
        log.debug("webrtc: closing a peer connection failed: %r", exc)


def _offers_audio(offer: aiortc_sdp.SessionDescription, mime: str) -> bool:
    return any(
        media.kind == "audio"
        and media.direction in (None, "recvonly", "sendrecv")
        and any(codec.mimeType.lower() == mime for codec in media.rtp.codecs)
        for media in offer.media
    )


def pin_host_addresses(addresses: tuple[str, ...]) -> Callable[[], None]:
    """Offer exactly ``addresses`` as ICE host candidates, process-wide; returns the undo.

    aioice gathers from every interface except loopback and has no option to choose, and
    aiortc creates its ``Connection`` itself; replacing aioice's address lookup is the one
    seam (ADR 0008). Checked here so that an aioice without it fails at start-up.
    """
    for address in addresses:
        ipaddress.ip_address(address)
    original: Any = getattr(aioice.ice, "get_host_addresses", None)
    if not callable(original):
        raise RuntimeError("aioice.ice.get_host_addresses is gone: webrtc.host_addresses")

    def pinned(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in addresses
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    setattr(aioice.ice, "get_host_addresses", pinned)  # noqa: B010 (see the docstring)

    def restore() -> None:
        setattr(aioice.ice, "get_host_addresses", original)  # noqa: B010

    return restore
