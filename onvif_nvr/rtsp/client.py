"""The NVR's own RTSP client for ingest: one camera session, RTP over the RTSP connection
(TCP interleaved, the default), over UDP, or over an RTSP-over-HTTP tunnel.

Interchangeable with ``recording.pyav_source.PyAVSource`` (same ``run()``/``stop()``/``info``
and ``on_units(list[TimedUnit])`` callback) but it runs on the event loop: a protocol object
gets the socket's data in large chunks straight from the loop's reader callback (no task
wake-up, no stream buffer), and every chunk's messages are parsed, depacketized and handed
over in one batch, with no per-packet thread hand-off. Interleaved frames take the parser's
fast lane: RTP headers are read in place in the receive buffer and the fragments of large
NAL units are appended from it directly, without an object or a copy per packet. The
protocol work is done by the sans-IO modules (``message``, ``auth``, ``sdp``, ``rtp``,
``h264``, ``h265``); this module only drives them.

Time (docs/design/time.md): RTP timestamps are unwrapped per stream to 90 kHz ``dts_90k``;
``wall_ns`` comes from the stream's latest RTCP sender report, before the first one from the
arrival clock, and never goes backwards within a stream.

Transports (``transport=``): "tcp" reads RTP and RTCP interleaved on the RTSP connection;
"udp" sets up RTP/AVP unicast on an even/odd socket pair (``rtsp.udp``), puts the packets back
in order (``rtp.ReorderBuffer``, a bounded wait), sends receiver reports to the camera's RTCP
port, and when no RTP arrives at all (or the camera refuses UDP) falls back to TCP
interleaved in the same ``run()``, as VLC and FFmpeg do; "http" tunnels RTSP through an HTTP
GET (camera to us, parsed exactly as the TCP connection) and POST (us to camera, base64) pair
(``rtsp.tunnel``), with HTTP-level Basic/Digest when the camera challenges the GET.

Failures raise :class:`RtspClientError` subclasses with a message fit for logs (credentials
are never in it); the supervisor reconnects. Bad RTP packets only count in ``dropped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import struct
import urllib.parse
from collections.abc import Callable
from typing import Any

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import (
    AccessUnit,
    SourceInfo,
    TimedUnit,
)
from onvif_nvr.media.wallclock import WallClockMapper
from onvif_nvr.rtsp import h264, h265, sdp, tunnel, udp
from onvif_nvr.rtsp.auth import ClientAuthenticator
from onvif_nvr.rtsp.bits import BaseDepacketizer
from onvif_nvr.rtsp.headers import (
    TransportSpec,
    control_base,
    format_transport,
    parse_session,
    parse_tokens,
    parse_transport,
    resolve_control,
)
from onvif_nvr.rtsp.message import (
    Headers,
    Interleaved,
    Message,
    MessageParser,
    Request,
    Response,
    RtspParseError,
    redact_url,
)
from onvif_nvr.rtsp.rtp import (
    SDES_CNAME,
    InterarrivalJitter,
    ReceiverReport,
    ReorderBuffer,
    RtpPacket,
    SenderReport,
    SequenceTracker,
    SourceDescription,
    build_compound,
    ntp_short,
    ntp_to_wall_ns,
    parse_rtcp,
)

log = logging.getLogger(__name__)

#: Kernel receive buffer asked for: a second of a 4 Mbit/s stream, so a busy loop never
#: makes the camera's TCP window close.
RECEIVE_BUFFER = 1 << 20
#: Default of ``read_latency_s``: how long data may wait in the kernel so that it is read in
#: bigger chunks (fewer wake-ups) while nobody watches live.
READ_LATENCY_S = 0.1
#: Largest SO_RCVLOWAT asked for.
MAX_READ_BATCH = 262_144
#: RTP fixed header after the first byte: M/PT, sequence number, timestamp, SSRC.
_RTP_REST = struct.Struct(">BHII")
RECEIVER_REPORT_S = 5.0
DEFAULT_SESSION_TIMEOUT_S = 60
TEARDOWN_TIMEOUT_S = 1.0
USER_AGENT = "onvif-nvr"
_AUDIO_CODECS = ("AAC", "PCMU", "PCMA", "OPUS")
TRANSPORTS = ("tcp", "udp", "http")
#: UDP: how long a missing packet is waited for (at most) before the gap is skipped, in
#: packets and in time (whichever comes first; the time bound matters for audio).
REORDER_PACKETS = 64
REORDER_WAIT_S = 0.08
#: UDP: how long after PLAY the first RTP packet may take before UDP is deemed blocked
#: (bounded by ``stall_timeout_s``).
UDP_FIRST_PACKET_S = 5.0
AAC_FRAME_SAMPLES = 1024  # AAC-LC; each further AU of a packet is one frame later


class RtspClientError(Exception):
    """The session failed; the message names the camera by its redacted URL."""


class RtspConnectionError(RtspClientError, ConnectionError):
    """The TCP connection could not be made, or the camera closed it."""


class RtspStatusError(RtspClientError):
    """The camera answered a request with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RtspAuthError(RtspStatusError):
    """The camera wants credentials we do not have, or refused the ones we sent."""


class RtspProtocolError(RtspClientError):
    """The camera sent something we cannot follow (bad RTSP message, unusable SDP)."""


class RtspStallError(RtspClientError):
    """No RTP arrived for ``stall_timeout_s``."""


class RtspUdpError(RtspClientError):
    """RTP over UDP does not work with this camera (it refused it, or nothing arrived: a
    firewall or NAT in the way); raised when the fallback to TCP is off."""


class _UdpUnavailable(Exception):
    pass


class _Stopped(Exception):
    pass


class _Connection(asyncio.Protocol):
    """The socket side of a session: hands the loop's reads to the source."""

    def __init__(self, source: RtspSource) -> None:
        self._source = source
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._source._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._source._on_lost(self._transport, exc)


class _TunnelGet(asyncio.Protocol):
    """The GET half of an HTTP tunnel: its HTTP answer, then the RTSP byte stream."""

    def __init__(self, source: RtspSource) -> None:
        self._source = source
        self._buf = bytearray()
        self.head: asyncio.Future[tuple[int, str, Headers]] = (
            asyncio.get_running_loop().create_future()
        )
        self.live = False
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self.live:
            self._source._on_data(data)
            return
        if self.head.done():
            return
        self._buf += data
        try:
            parsed = tunnel.parse_response_head(self._buf)
        except tunnel.TunnelError as exc:
            self.head.set_exception(exc)
            return
        if parsed is None:
            return
        status, reason, headers, used = parsed
        self.head.set_result((status, reason, headers))
        if status == 200:
            self.live = True
            rest, self._buf = bytes(self._buf[used:]), bytearray()
            if rest:
                self._source._on_data(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.live:
            self._source._on_lost(self._transport, exc)
        elif not self.head.done():
            self.head.set_exception(ConnectionResetError("closed without an answer"))


class _TunnelPost(asyncio.Protocol):
    """The POST half: only written to (nothing is expected back)."""


class AacDeframer:
    """RFC 3640 mpeg4-generic payloads to AAC access units (several per packet, or one
    fragmented over packets up to the marker). Sans-IO; ``feed`` raises ``ValueError``."""

    def __init__(self, size_length: int = 13, index_length: int = 3, delta_length: int = 3):
        self.size_length, self.index_length, self.delta_length = (
            size_length,
            index_length,
            delta_length,
        )
        self._fragment: bytearray | None = None
        self._fragment_size = 0

    def feed(self, payload: bytes, marker: bool) -> list[bytes]:
        if len(payload) < 2:
            raise ValueError("AAC payload has no AU-headers-length")
        header_bits = int.from_bytes(payload[:2], "big")
        start = 2 + (header_bits + 7) // 8
        if start > len(payload):
            raise ValueError("AAC AU headers are truncated")
        headers = int.from_bytes(payload[2:start], "big")
        total = (start - 2) * 8
        sizes: list[int] = []
        pos = 0
        while self.size_length:
            width = self.size_length + (self.delta_length if sizes else self.index_length)
            if pos + width > header_bits:
                break
            sizes.append(
                (headers >> (total - pos - self.size_length)) & ((1 << self.size_length) - 1)
            )
            pos += width
        data = payload[start:]
        if self._fragment is not None:
            self._fragment += data
            if not marker:
                return []
            unit, self._fragment = bytes(self._fragment), None
            if len(unit) != self._fragment_size:
                raise ValueError("AAC fragmented AU has the wrong size")
            return [unit]
        if not sizes:
            return [data] if data else []
        if len(sizes) == 1 and sizes[0] > len(data):
            if marker:
                raise ValueError("AAC AU data is truncated")
            self._fragment, self._fragment_size = bytearray(data), sizes[0]
            return []
        if sum(sizes) > len(data):
            raise ValueError("AAC AU data is truncated")
        units, offset = [], 0
        for size in sizes:
            units.append(data[offset : offset + size])
            offset += size
        return units

    def reset(self) -> None:
        self._fragment = None


@dataclasses.dataclass(eq=False)
class _Track:
    """One SETUP stream and its time mapping."""

    index: int  # TimedUnit.track: 0 video, 1 audio
    codec: str
    payload_type: int
    clock_rate: int
    control_url: str
    channel: int = 0
    depacketizer: BaseDepacketizer | None = None
    aac: AacDeframer | None = None
    sequence: SequenceTracker = dataclasses.field(
        default_factory=lambda: SequenceTracker(probation=0)
    )
    ssrc: int | None = None
    last_ts: int | None = None
    last_ext: int = 0
    sr: tuple[int, int] | None = None  # (wall_ns, unwrapped rtp) of the latest SR
    sr_ntp: int = 0
    sr_mono_ns: int = 0
    arrival: tuple[int, int] | None = None  # (wall_ns, unwrapped rtp) of the first unit
    last_wall_ns: int = 0
    mapper: WallClockMapper | None = None
    # UDP only: the socket pair, the camera's address and ports, reordering, jitter.
    rtp_endpoint: asyncio.DatagramTransport | None = None
    rtcp_endpoint: asyncio.DatagramTransport | None = None
    peer_host: str = ""
    server_rtp: tuple[str, int] | None = None
    server_rtcp: tuple[str, int] | None = None
    reorder: ReorderBuffer | None = None
    reorder_timer: asyncio.TimerHandle | None = None
    jitter: InterarrivalJitter | None = None

    def close_udp(self) -> None:
        if self.reorder_timer is not None:
            self.reorder_timer.cancel()
            self.reorder_timer = None
        for endpoint in (self.rtp_endpoint, self.rtcp_endpoint):
            if endpoint is not None:
                endpoint.close()

    def peek(self, rtp_timestamp: int) -> int:
        if self.last_ts is None:
            return rtp_timestamp
        delta = ((rtp_timestamp - self.last_ts + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        return self.last_ext + delta

    def unwrap(self, rtp_timestamp: int) -> int:
        ext = self.peek(rtp_timestamp & 0xFFFFFFFF)
        self.last_ts, self.last_ext = rtp_timestamp & 0xFFFFFFFF, ext
        return ext

    def wall_ns(self, ext: int, arrival_ns: int) -> int:
        # docs/design/time.md: arrival clock until the first sender report, then the
        # camera's clock with a bounded slew; never backwards.
        if self.mapper is None:
            self.mapper = WallClockMapper(self.clock_rate)
        self.mapper.arrival(arrival_ns, ext)
        self.last_wall_ns = self.mapper.wall_ns(ext)
        return self.last_wall_ns


def _split_userinfo(
    url: str, transport: str = "tcp"
) -> tuple[str, str | None, str | None, str, int]:
    """(URL without user info, user, password, host, port) of an rtsp:// URL (or, for the
    HTTP tunnel, an http:// one: the tunnel's port, 80 by default; the RTSP requests then
    name the same host and port with the rtsp scheme)."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    allowed = ("rtsp", "http") if transport == "http" else ("rtsp",)
    if scheme not in allowed or not parts.hostname:
        raise ValueError(
            "the URL must be rtsp://host[:port]/path"
            + (" or http://host[:port]/path" if transport == "http" else "")
        )
    port = parts.port or (80 if scheme == "http" else 554)
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    host = parts.hostname
    explicit = parts.port or (port if scheme == "http" else None)
    netloc = (f"[{host}]" if ":" in host else host) + (f":{explicit}" if explicit else "")
    clean = urllib.parse.urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
    return clean, user, password, host, port


class RtspSource:
    """Ingest of one camera stream (video H.264/H.265 required, first audio optional)."""

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        clock: Clock,
        on_units: Callable[[list[TimedUnit]], None],
        open_timeout_s: float = 10.0,
        stall_timeout_s: float = 10.0,
        keepalive_s: float | None = None,
        udp_fallback: bool = True,
    ) -> None:
        if transport not in TRANSPORTS:
            raise NotImplementedError(
                f"transport {transport} is not supported by the native client; use backend=pyav"
            )
        self._url, user, password, self._host, self._port = _split_userinfo(url, transport)
        self._display = redact_url(self._url)
        self._auth = ClientAuthenticator(user, password or "") if user is not None else None
        # HTTP-level challenges of the tunnel's GET/POST are answered apart from RTSP's.
        self._http_auth = ClientAuthenticator(user, password or "") if user is not None else None
        #: The transport in use: the one asked for, "tcp" after a fallback from "udp".
        self.transport = transport
        self._udp_fallback = udp_fallback
        self._post: asyncio.Transport | None = None
        self._peer_ip = ""
        self._local: tuple[Any, ...] = ()
        self._play_ns = 0
        self._play_packets = 0
        self._clock = clock
        self._on_units = on_units
        self._open_timeout_s = open_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._keepalive_s = keepalive_s
        self._read_latency_s = READ_LATENCY_S
        self._socket: socket.socket | None = None
        self._lowat = 1
        self._stopping = asyncio.Event()
        self._parser = MessageParser("client", frame_sink=self._frames)
        self._transport: asyncio.Transport | None = None
        #: Done (with the failure as its exception) once the connection is gone.
        self._closed: asyncio.Future[None] | None = None
        self._cseq = 0
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._session_id: str | None = None
        self._aggregate_url = self._url
        self._keepalive_method = "OPTIONS"
        self._keepalive_interval_s = DEFAULT_SESSION_TIMEOUT_S / 2
        self._last_rtp_ns = 0
        self._tracks: list[_Track] = []
        self._by_channel: dict[int, tuple[_Track, bool]] = {}
        self._batch: list[TimedUnit] = []
        self._arrival_ns = 0
        self._bad_packets = 0
        self.info = SourceInfo()
        #: RTP packets received, bytes read from the connection, units delivered.
        self.packets = 0
        self.bytes = 0
        self.units = 0
        #: UDP datagrams from other hosts than the camera (dropped).
        self.foreign_datagrams = 0

    @property
    def dropped(self) -> int:
        """Packets not used: unparseable RTP/RTCP, foreign payload types, depacketizer drops."""
        return (
            self._bad_packets
            + sum(t.depacketizer.dropped for t in self._tracks if t.depacketizer is not None)
            + sum(
                t.reorder.late + t.reorder.duplicates for t in self._tracks if t.reorder is not None
            )
        )

    @property
    def lost(self) -> int:
        """Packets missing from the sequence numbers, all streams."""
        return sum(max(t.sequence.lost, 0) for t in self._tracks)

    def set_read_latency(self, seconds: float) -> None:
        """How long received data may wait to be read in one batch (0: read at once, for
        live viewers). Applied at the next streaming tick; see :meth:`_batch_reads`."""
        self._read_latency_s = max(0.0, seconds)
        if seconds <= 0:
            self._set_lowat(1)

    def stop(self) -> None:
        """End ``run()`` (with a TEARDOWN); call from the event loop's thread."""
        self._stopping.set()

    async def run(self) -> SourceInfo:
        """Stream until stopped (returns ``info``) or the session fails (raises)."""
        try:
            await self._session(self.transport)
        except _UdpUnavailable as exc:
            if not self._udp_fallback:
                raise RtspUdpError(f"{self._display}: {exc}") from None
            log.warning("%s: %s; falling back to RTP over TCP (interleaved)", self._display, exc)
            self.transport = "tcp"
            self._reset()
            await self._session("tcp")
        return self.info

    def _reset(self) -> None:
        """Forget one session's state before the next (the counters go on)."""
        self._parser = MessageParser("client", frame_sink=self._frames)
        self._transport = self._post = self._socket = None
        self._lowat = 1
        self._pending = {}
        self._session_id = None
        self._aggregate_url = self._url
        self._keepalive_method = "OPTIONS"
        self._keepalive_interval_s = DEFAULT_SESSION_TIMEOUT_S / 2
        self._tracks = []
        self._by_channel = {}
        self._batch = []
        self.info = SourceInfo()

    async def _session(self, mode: str) -> None:
        loop = asyncio.get_running_loop()
        self._closed = closed = loop.create_future()
        stop_task = asyncio.create_task(self._stopping.wait())
        teardown = False
        try:
            if mode == "http":
                await self._open_tunnel(stop_task)
            else:
                self._attach(await self._connect(lambda: _Connection(self)), batch=mode == "tcp")
            mode = await self._handshake(mode, stop_task)
            await self._stream(mode, stop_task)
            teardown = True
        except _Stopped:
            teardown = True
        except _UdpUnavailable:
            teardown = True
            raise
        finally:
            self._set_lowat(1)  # the TEARDOWN reply must not wait for a batch
            if teardown and self._session_id is not None and not closed.done():
                with contextlib.suppress(Exception):
                    await self._request("TEARDOWN", self._aggregate_url, None, TEARDOWN_TIMEOUT_S)
            stop_task.cancel()
            await asyncio.gather(stop_task, return_exceptions=True)
            for future in self._pending.values():
                future.cancel()
            for track in self._tracks:
                track.close_udp()
            if self._post is not None:
                self._post.close()
            if self._transport is not None:
                self._transport.close()
            if not closed.done():
                closed.set_result(None)
            closed.exception()  # retrieved: the failure, if any, was raised already

    async def _connect(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(factory, self._host, self._port), self._open_timeout_s
            )
        except TimeoutError:
            raise RtspConnectionError(f"{self._display}: connection timed out") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise RtspConnectionError(f"{self._display}: cannot connect: {reason}") from exc
        return transport

    def _attach(self, transport: asyncio.Transport, *, batch: bool) -> None:
        """``transport`` is the connection the camera's RTSP stream arrives on; ``batch``:
        media arrive on it too, so its reads may be batched (not for UDP)."""
        self._transport = transport
        self._local = tuple(transport.get_extra_info("sockname") or ())
        peer = transport.get_extra_info("peername")
        self._peer_ip = str(peer[0]) if peer else self._host
        sock = transport.get_extra_info("socket")
        if sock is not None:
            if batch:
                self._socket = sock
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    async def _open_tunnel(self, stop_task: asyncio.Task[bool]) -> None:
        """The GET and POST connections of RTSP over HTTP; answers one HTTP 401."""
        parts = urllib.parse.urlsplit(self._url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc
        cookie = tunnel.new_cookie()
        authorization: str | None = None
        for attempt in range(2):
            get = _TunnelGet(self)
            transport = await self._connect(lambda: get)  # noqa: B023 (used at once)
            transport.write(tunnel.get_request(target, host, cookie, USER_AGENT, authorization))
            try:
                waiters: set[asyncio.Future[Any]] = {get.head, stop_task}
                await asyncio.wait(
                    waiters,
                    timeout=self._open_timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop_task.done():
                    raise _Stopped
                if not get.head.done():
                    raise RtspConnectionError(f"{self._display}: no answer to the HTTP tunnel GET")
                try:
                    status, reason, headers = get.head.result()
                except (OSError, tunnel.TunnelError) as exc:
                    raise RtspProtocolError(f"{self._display}: HTTP tunnel GET: {exc}") from None
            except BaseException:
                transport.close()
                raise
            if status == 200:
                self._attach(transport, batch=True)
                break
            transport.close()
            if status != 401:
                raise RtspStatusError(
                    f"{self._display}: HTTP tunnel GET failed: {status} {reason}", status
                )
            if self._http_auth is None:
                raise RtspAuthError(
                    f"{self._display}: HTTP tunnel: camera requires credentials", 401
                )
            if attempt or not self._http_auth.challenge(headers.get_all("WWW-Authenticate")):
                raise RtspAuthError(
                    f"{self._display}: HTTP tunnel: camera refused the credentials", 401
                )
            authorization = self._http_auth.authorization("GET", target)
        post = await self._connect(_TunnelPost)
        self._post = post
        post_authorization = None
        if authorization is not None and self._http_auth is not None:
            post_authorization = self._http_auth.authorization("POST", target)
        post.write(tunnel.post_request(target, host, cookie, USER_AGENT, post_authorization))

    # -- requests ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Send to the camera: on the RTSP connection, or base64 on the tunnel's POST."""
        if self._post is not None:
            if self._post.is_closing():
                raise RtspConnectionError(f"{self._display}: camera closed the tunnel's POST")
            self._post.write(tunnel.encode(data))
            return
        assert self._transport is not None
        self._transport.write(data)

    def _send(self, method: str, uri: str, extra: dict[str, str] | None = None) -> int:
        self._cseq += 1
        headers = Headers({"CSeq": str(self._cseq), "User-Agent": USER_AGENT, **(extra or {})})
        if self._session_id is not None:
            headers.set("Session", self._session_id)
        if self._auth is not None:
            authorization = self._auth.authorization(method, uri)
            if authorization is not None:
                headers.set("Authorization", authorization)
        self._write(bytes(Request(method, uri, headers)))
        return self._cseq

    async def _request(
        self,
        method: str,
        uri: str,
        stop_task: asyncio.Task[bool] | None,
        timeout_s: float | None = None,
        extra: dict[str, str] | None = None,
    ) -> Response:
        """Send a request and wait for its response; answers one 401 with credentials."""
        for attempt in range(2):
            cseq = self._send(method, uri, extra)
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._pending[cseq] = future
            assert self._closed is not None
            waiters: set[asyncio.Future[Any]] = {future, self._closed}
            if stop_task is not None:
                waiters.add(stop_task)
            try:
                await asyncio.wait(
                    waiters,
                    timeout=timeout_s or self._open_timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                self._pending.pop(cseq, None)
            if not future.done():
                future.cancel()
                if self._closed.done():
                    self._closed.result()  # raises the connection's failure
                    raise RtspConnectionError(f"{self._display}: connection closed")
                if stop_task is not None and stop_task.done():
                    raise _Stopped
                raise RtspConnectionError(f"{self._display}: no response to {method}")
            response = future.result()
            if response.status != 401:
                break
            if self._auth is None:
                raise RtspAuthError(f"{self._display}: {method}: camera requires credentials", 401)
            if attempt or not self._auth.challenge(response.headers.get_all("WWW-Authenticate")):
                raise RtspAuthError(
                    f"{self._display}: {method}: camera refused the credentials", 401
                )
        if not 200 <= response.status < 300:
            raise RtspStatusError(
                f"{self._display}: {method} failed: "
                f"{response.version} {response.status} {response.reason}",
                response.status,
            )
        return response

    async def _handshake(self, mode: str, stop_task: asyncio.Task[bool]) -> str:
        """OPTIONS, DESCRIBE, SETUP, PLAY; returns the transport used (a camera that
        refuses the first UDP SETUP gets a TCP one on the same connection)."""
        options = await self._request("OPTIONS", self._url, stop_task)
        public = {m.upper() for m in parse_tokens(options.headers.get("Public", ""))}
        self._keepalive_method = "GET_PARAMETER" if "GET_PARAMETER" in public else "OPTIONS"
        describe = await self._request(
            "DESCRIBE", self._url, stop_task, extra={"Accept": "application/sdp"}
        )
        try:
            description = sdp.SessionDescription.parse(describe.body)
        except ValueError as exc:
            raise RtspProtocolError(f"{self._display}: bad SDP: {exc}") from exc
        base = control_base(self._url, describe.headers)
        self._aggregate_url = resolve_control(base, description.control or "*")
        self._choose_tracks(description, base)
        timeout_s = DEFAULT_SESSION_TIMEOUT_S
        for n, track in enumerate(self._tracks):
            if mode == "udp":
                spec = await self._open_udp(track)
            else:
                spec = TransportSpec("RTP/AVP/TCP", "unicast", interleaved=(2 * n, 2 * n + 1))
            try:
                reply = await self._request(
                    "SETUP",
                    track.control_url,
                    stop_task,
                    extra={"Transport": format_transport([spec])},
                )
            except RtspStatusError as exc:
                if mode != "udp" or exc.status not in (400, 461):
                    raise
                reason = f"camera refused RTP over UDP ({exc.status})"
                if n or not self._udp_fallback:
                    raise _UdpUnavailable(reason) from None
                log.warning("%s: %s; using RTP over TCP (interleaved)", self._display, reason)
                track.close_udp()
                track.rtp_endpoint = track.rtcp_endpoint = None
                track.reorder = track.jitter = None
                mode = self.transport = "tcp"
                if self._transport is not None:
                    self._attach(self._transport, batch=True)
                spec = TransportSpec("RTP/AVP/TCP", "unicast", interleaved=(0, 1))
                reply = await self._request(
                    "SETUP",
                    track.control_url,
                    stop_task,
                    extra={"Transport": format_transport([spec])},
                )
            try:
                if self._session_id is None:
                    session = parse_session(reply.headers.get("Session", ""))
                    self._session_id, timeout_s = session.id, session.timeout_s or timeout_s
                chosen = parse_transport(reply.headers.get("Transport", ""))[0]
            except ValueError as exc:
                raise RtspProtocolError(f"{self._display}: SETUP reply: {exc}") from exc
            if mode == "udp":
                if chosen.lower_transport != "UDP" or chosen.delivery == "multicast":
                    raise _UdpUnavailable(f"camera answered the UDP SETUP with {chosen.protocol}")
                self._udp_peer(track, chosen)
                continue
            if chosen.lower_transport != "TCP":
                raise RtspProtocolError(f"{self._display}: camera refused RTP over TCP")
            track.channel = chosen.interleaved[0] if chosen.interleaved else 2 * n
            self._by_channel[track.channel] = (track, False)
            self._by_channel[track.channel + 1] = (track, True)
        self._keepalive_interval_s = self._keepalive_s or max(timeout_s / 2, 1.0)
        self._last_rtp_ns = self._clock.monotonic_ns()
        await self._request("PLAY", self._aggregate_url, stop_task, extra={"Range": "npt=0.000-"})
        self._last_rtp_ns = self._play_ns = self._clock.monotonic_ns()
        self._play_packets = self.packets
        if mode == "udp":
            self._punch()
        log.info(
            "%s: playing %s over %s",
            self._display,
            ", ".join(t.codec for t in self._tracks),
            {"tcp": "TCP", "udp": "UDP", "http": "HTTP"}[mode],
        )
        return mode

    async def _open_udp(self, track: _Track) -> TransportSpec:
        """The track's RTP/RTCP socket pair on the RTSP connection's local address."""
        loop = asyncio.get_running_loop()
        try:
            rtp, rtcp = udp.bind_pair(self._local)
        except OSError as exc:
            raise RtspConnectionError(f"{self._display}: UDP ports: {exc}") from exc
        try:
            track.rtp_endpoint, _ = await loop.create_datagram_endpoint(
                lambda: udp.Datagrams(lambda data, addr: self._on_datagram(track, data, addr)),
                sock=rtp,
            )
        except BaseException:
            rtp.close()
            rtcp.close()
            raise
        try:
            track.rtcp_endpoint, _ = await loop.create_datagram_endpoint(
                lambda: udp.Datagrams(lambda data, addr: self._on_rtcp_datagram(track, data, addr)),
                sock=rtcp,
            )
        except BaseException:
            rtcp.close()
            raise
        track.reorder = ReorderBuffer(REORDER_PACKETS)
        track.jitter = InterarrivalJitter()
        port = rtp.getsockname()[1]
        return TransportSpec("RTP/AVP", "unicast", client_port=(port, port + 1))

    def _udp_peer(self, track: _Track, chosen: TransportSpec) -> None:
        """Where the track's packets come from (the reply's source, else the RTSP peer)
        and where our RTCP goes (its server_port pair)."""
        host = self._peer_ip
        if chosen.source:
            with contextlib.suppress(ValueError):
                host = str(ipaddress.ip_address(chosen.source))
        track.peer_host = host
        if chosen.server_port:
            rtp_port = chosen.server_port[0]
            rtcp_port = chosen.server_port[1] if len(chosen.server_port) > 1 else rtp_port + 1
            track.server_rtp, track.server_rtcp = (host, rtp_port), (host, rtcp_port)

    def _punch(self) -> None:
        """A packet to each of the camera's ports: opens a NAT/firewall path for its media
        (and tells cameras that wait for one where to send); harmless for the others."""
        for track in self._tracks:
            own_ssrc = 0x4E565200 | track.index
            if track.rtp_endpoint is not None and track.server_rtp is not None:
                track.rtp_endpoint.sendto(
                    udp.punch_rtp(track.payload_type, own_ssrc), track.server_rtp
                )
            if track.rtcp_endpoint is not None and track.server_rtcp is not None:
                track.rtcp_endpoint.sendto(
                    udp.punch_rtcp(own_ssrc, USER_AGENT.encode()), track.server_rtcp
                )

    def _choose_tracks(self, description: sdp.SessionDescription, base: str) -> None:
        video = audio = None
        for media in description.media:
            for fmt in media.formats:
                if not isinstance(fmt, int):
                    continue
                rtpmap = media.rtpmap(fmt)
                encoding = rtpmap.encoding.upper() if rtpmap else ""
                if video is None and media.media == "video" and encoding in ("H264", "H265"):
                    video = (media, fmt, encoding)
                    break
                if audio is None and media.media == "audio":
                    try:
                        params = sdp.audio_parameters(media, fmt)
                    except ValueError:
                        params = None
                    if params is not None and params.codec in _AUDIO_CODECS:
                        audio = (media, fmt, params)
                        break
        if video is None:
            raise RtspProtocolError(f"{self._display}: no H.264/H.265 video track in the SDP")
        media, pt, codec = video
        track = _Track(0, codec, pt, 90_000, resolve_control(base, media.control or "*"))
        fmtp = media.fmtp(pt)
        if codec == "H264":
            track.depacketizer = h264.H264Depacketizer()
            sets = sdp.h264_parameter_sets(fmtp)
        else:
            track.depacketizer = h265.H265Depacketizer()
            sets = sdp.h265_parameter_sets(fmtp)
        self._tracks.append(track)
        self._video_from(codec, sets)
        if audio is not None:
            media, pt, params = audio
            track = _Track(
                1, params.codec, pt, params.sample_rate, resolve_control(base, media.control or "*")
            )
            if params.codec == "AAC":
                try:
                    lengths = sdp.aac_au_header_lengths(media.fmtp(pt))
                except ValueError as exc:
                    raise RtspProtocolError(f"{self._display}: audio fmtp: {exc}") from exc
                if not lengths.size_length:
                    lengths = sdp.AuHeaderLengths(13, 3, 3)
                track.aac = AacDeframer(*lengths)
            self._tracks.append(track)
            self.info.audio = params

    def _video_from(self, codec: str, sets: tuple[bytes, ...] | list[bytes]) -> None:
        """Set ``info.video`` from parameter sets (SDP or in-band) once they are complete."""
        if codec == "H264":
            sps = [s for s in sets if s and s[0] & 0x1F == h264.NAL_SPS]
            pps = [s for s in sets if s and s[0] & 0x1F == h264.NAL_PPS]
            if sps and pps:
                with contextlib.suppress(ValueError, IndexError):
                    self.info.video = h264.video_parameters(sps[0], pps)
            return
        kinds: dict[int, list[bytes]] = {}
        for s in sets:
            if s:
                kinds.setdefault((s[0] >> 1) & 0x3F, []).append(s)
        vps, sps, pps = (kinds.get(t, []) for t in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS))
        if vps and sps and pps:
            with contextlib.suppress(ValueError, IndexError):
                self.info.video = h265.video_parameters(vps, sps, pps)

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(self, mode: str, stop_task: asyncio.Task[bool]) -> None:
        tick_s = max(min(0.5, self._stall_timeout_s / 4), 0.05)
        tick_bytes, tick_ns = self.bytes, self._clock.monotonic_ns()
        now = self._clock.monotonic_ns()
        next_keepalive, next_report = now, now + int(RECEIVER_REPORT_S * 1e9)
        next_keepalive += int(self._keepalive_interval_s * 1e9)
        closed = self._closed
        assert closed is not None
        waiters: set[asyncio.Future[Any]] = {closed, stop_task}
        while True:
            done, _ = await asyncio.wait(
                waiters, timeout=tick_s, return_when=asyncio.FIRST_COMPLETED
            )
            if stop_task in done:
                return
            if closed in done:
                closed.result()
                raise RtspConnectionError(f"{self._display}: connection closed")
            now = self._clock.monotonic_ns()
            if (
                mode == "udp"
                and self.packets == self._play_packets
                and now - self._play_ns > min(UDP_FIRST_PACKET_S, self._stall_timeout_s) * 1e9
            ):
                waited = min(UDP_FIRST_PACKET_S, self._stall_timeout_s)
                raise _UdpUnavailable(
                    f"no RTP over UDP in {waited:g} s after PLAY (a firewall or NAT in the way?)"
                )
            if now - self._last_rtp_ns > self._stall_timeout_s * 1e9:
                raise RtspStallError(
                    f"{self._display}: no RTP for {self._stall_timeout_s:g} s (stalled)"
                )
            if now >= next_keepalive:
                next_keepalive = now + int(self._keepalive_interval_s * 1e9)
                self._send(self._keepalive_method, self._aggregate_url)
            self._batch_reads(self.bytes - tick_bytes, now - tick_ns)
            tick_bytes, tick_ns = self.bytes, now
            if now >= next_report:
                next_report = now + int(RECEIVER_REPORT_S * 1e9)
                self._send_receiver_reports(now)

    def _batch_reads(self, received: int, elapsed_ns: int) -> None:
        """Let the kernel gather ``read_latency_s`` worth of the stream before waking us:
        SO_RCVLOWAT from the rate of the last tick. A stream that slows down gets a smaller
        mark at the next tick (data never waits longer than a tick plus the latency);
        RTSP replies and RTCP ride along with the media."""
        if elapsed_ns <= 0:
            return
        rate = received * 1e9 / elapsed_ns
        self._set_lowat(max(1, min(int(rate * self._read_latency_s), MAX_READ_BATCH)))

    def _set_lowat(self, lowat: int) -> None:
        if self._socket is None or lowat == self._lowat:
            return
        self._lowat = lowat
        with contextlib.suppress(OSError):
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)

    def _send_receiver_reports(self, now_ns: int) -> None:
        for track in self._tracks:
            if track.ssrc is None:
                continue
            own_ssrc = 0x4E565200 | track.index  # "NVR" + track
            lsr = dlsr = 0
            if track.sr is not None:
                lsr = ntp_short(track.sr_ntp)
                dlsr = (now_ns - track.sr_mono_ns) * 65536 // 1_000_000_000
            jitter = track.jitter.jitter if track.jitter is not None else 0
            block = track.sequence.reception_report(track.ssrc, jitter=jitter, lsr=lsr, dlsr=dlsr)
            compound = build_compound(
                ReceiverReport(own_ssrc, [block]),
                SourceDescription([(own_ssrc, [(SDES_CNAME, USER_AGENT.encode())])]),
            )
            if track.rtcp_endpoint is None:
                self._write(bytes(Interleaved(track.channel + 1, compound)))
            elif track.server_rtcp is not None:
                track.rtcp_endpoint.sendto(compound, track.server_rtcp)

    def _on_data(self, data: bytes) -> None:
        if self._closed is None or self._closed.done():
            return
        self.bytes += len(data)
        self._arrival_ns = self._clock.wall_ns()
        packets = self.packets
        try:
            try:
                messages = self._parser.feed(data)
            except RtspParseError as exc:
                for message in exc.messages:
                    self._dispatch(message)
                self._flush()
                raise RtspProtocolError(f"{self._display}: bad RTSP message: {exc}") from exc
            for message in messages:
                self._dispatch(message)
            if self.packets != packets:
                self._last_rtp_ns = self._clock.monotonic_ns()
            self._flush()
        except Exception as exc:  # the session is over; run() raises it
            self._fail(exc)

    def _on_lost(self, transport: asyncio.BaseTransport | None, exc: Exception | None) -> None:
        if transport is not self._transport:
            return  # a connection of an earlier session (before a fallback to TCP)
        reason = f": {exc.strerror or exc}" if isinstance(exc, OSError) else ""
        self._fail(RtspConnectionError(f"{self._display}: camera closed the connection{reason}"))

    def _fail(self, exc: Exception) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def _frames(self, buf: bytearray, pos: int, limit: int) -> int:
        """The parser's fast lane: every complete interleaved frame from ``pos``."""
        view = memoryview(buf)
        by_channel = self._by_channel
        try:
            while limit - pos >= 4 and buf[pos] == 0x24:
                end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
                if end > limit:
                    break
                entry = by_channel.get(buf[pos + 1])
                if entry is None:
                    self._bad_packets += 1
                elif entry[1]:
                    self._on_rtcp(entry[0], view[pos + 4 : end].tobytes())
                elif end - pos >= 16 and buf[pos + 4] == 0x80:
                    track = entry[0]
                    depacketizer = track.depacketizer
                    if depacketizer is not None and depacketizer.fu_open:
                        run_end, count, ssrc = depacketizer.feed_interleaved_run(
                            view, pos, limit, buf[pos + 1], track.payload_type
                        )
                        if count:  # a run of fragments of one NAL unit, in one call
                            self.packets += count
                            track.ssrc = ssrc
                            track.sequence.advance(count, depacketizer.last_sequence_number or 0)
                            pos = run_end
                            continue
                    self._on_plain_rtp(track, view, pos + 4, end)
                else:  # CSRC, extension, padding or junk: the full parser
                    self._on_rtp(entry[0], view[pos + 4 : end].tobytes())
                pos = end
        finally:
            view.release()
        return pos

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.units += len(batch)
            self._on_units(batch)

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Interleaved):  # not produced: the frame sink takes them
            return
        if isinstance(message, Response):
            try:
                future = self._pending.get(message.cseq)
            except ValueError:
                future = None
            if future is not None and not future.done():
                future.set_result(message)
            elif message.status == 401 and self._auth is not None:
                # A keep-alive met an expired nonce: answer the next one with the new one.
                self._auth.challenge(message.headers.get_all("WWW-Authenticate"))
        else:
            self._answer(message)

    def _answer(self, request: Request) -> None:
        known = request.method in ("GET_PARAMETER", "SET_PARAMETER", "OPTIONS")
        headers = Headers()
        with contextlib.suppress(ValueError):
            headers.set("CSeq", str(request.cseq))
        if self._session_id is not None:
            headers.set("Session", self._session_id)
        if request.method == "OPTIONS":
            headers.set("Public", "OPTIONS, GET_PARAMETER, SET_PARAMETER")
        reply = Response(200 if known else 501, "OK" if known else "Not Implemented", headers)
        self._write(bytes(reply))

    def _on_plain_rtp(self, track: _Track, view: memoryview, start: int, end: int) -> None:
        """An RTP packet without CSRC, extension or padding, read in place."""
        second, seq, timestamp, ssrc = _RTP_REST.unpack_from(view, start + 1)
        self.packets += 1
        if second & 0x7F != track.payload_type:
            self._bad_packets += 1
            return
        track.ssrc = ssrc
        track.sequence.update(seq)
        if track.depacketizer is not None:
            units = track.depacketizer.feed_view(
                view, start + 12, end, timestamp, second > 0x7F, seq
            )
            if units:
                self._video_units(track, units)
        else:
            self._audio(track, view[start + 12 : end].tobytes(), timestamp, second > 0x7F)

    def _on_rtp(self, track: _Track, payload: bytes) -> None:
        try:
            packet = RtpPacket.parse(payload)
        except ValueError as exc:
            self._bad_packets += 1
            log.debug("%s: dropped RTP packet: %s", self._display, exc)
            return
        self.packets += 1
        if packet.payload_type != track.payload_type:
            self._bad_packets += 1
            return
        self._rtp_packet(track, packet)

    def _rtp_packet(self, track: _Track, packet: RtpPacket) -> None:
        """A parsed RTP packet of the track's payload type, in order."""
        track.ssrc = packet.ssrc
        track.sequence.update(packet.sequence_number)
        if track.depacketizer is not None:
            units = track.depacketizer.feed(
                packet.payload, packet.timestamp, packet.marker, packet.sequence_number
            )
            if units:
                self._video_units(track, units)
        else:
            self._audio(track, packet.payload, packet.timestamp, packet.marker)

    # -- UDP ---------------------------------------------------------------------------------

    def _on_datagram(self, track: _Track, data: bytes, addr: udp.Address) -> None:
        """An RTP datagram: parsed, put in order (a bounded wait for a missing one)."""
        closed = self._closed
        if closed is None or closed.done():
            return
        if addr[0] != track.peer_host:
            self._foreign(addr)
            return
        self.bytes += len(data)
        try:
            packet = RtpPacket.parse(data)
        except ValueError as exc:
            self._bad_packets += 1
            log.debug("%s: dropped RTP packet: %s", self._display, exc)
            return
        self.packets += 1
        now = self._clock.monotonic_ns()
        self._last_rtp_ns = now
        if packet.payload_type != track.payload_type:
            self._bad_packets += 1
            return
        self._arrival_ns = self._clock.wall_ns()
        reorder, jitter = track.reorder, track.jitter
        assert reorder is not None and jitter is not None
        jitter.update(packet.timestamp, now * track.clock_rate // 1_000_000_000)
        try:
            for released in reorder.push(packet):
                self._rtp_packet(track, released)
            if len(reorder):
                if track.reorder_timer is None:
                    track.reorder_timer = asyncio.get_running_loop().call_later(
                        REORDER_WAIT_S, self._reorder_expired, track
                    )
            elif track.reorder_timer is not None:
                track.reorder_timer.cancel()
                track.reorder_timer = None
            self._flush()
        except Exception as exc:  # the session is over; run() raises it
            self._fail(exc)

    def _reorder_expired(self, track: _Track) -> None:
        """A missing packet was waited for long enough: skip the gap(s)."""
        track.reorder_timer = None
        if track.reorder is None or self._closed is None or self._closed.done():
            return
        try:
            for released in track.reorder.flush():
                self._rtp_packet(track, released)
            self._flush()
        except Exception as exc:
            self._fail(exc)

    def _on_rtcp_datagram(self, track: _Track, data: bytes, addr: udp.Address) -> None:
        closed = self._closed
        if closed is None or closed.done():
            return
        if addr[0] != track.peer_host:
            self._foreign(addr)
            return
        self.bytes += len(data)
        self._on_rtcp(track, data)

    def _foreign(self, addr: udp.Address) -> None:
        """A datagram from another host than the camera: dropped (and counted)."""
        self._bad_packets += 1
        self.foreign_datagrams += 1
        if self.foreign_datagrams == 1:
            log.debug("%s: dropped a datagram from %s", self._display, addr[0])

    def _video_units(self, track: _Track, units: list[AccessUnit]) -> None:
        for unit in units:
            self._emit(track, unit, unit.rtp_timestamp)
        if self.info.video is None and track.depacketizer is not None:
            ps = track.depacketizer.parameter_sets
            self._video_from(track.codec, [*ps.vps.values(), *ps.sps.values(), *ps.pps.values()])

    def _audio(self, track: _Track, payload: bytes, timestamp: int, marker: bool) -> None:
        if track.aac is None:
            frames = [payload]
        else:
            try:
                frames = track.aac.feed(payload, marker)
            except ValueError as exc:
                track.aac.reset()
                self._bad_packets += 1
                log.debug("%s: dropped AAC packet: %s", self._display, exc)
                return
        for i, frame in enumerate(frames):
            ts = (timestamp + i * AAC_FRAME_SAMPLES) & 0xFFFFFFFF
            self._emit(track, AccessUnit(track.codec, (frame,), ts, True), ts)

    def _emit(self, track: _Track, unit: AccessUnit, rtp_timestamp: int) -> None:
        ext = track.unwrap(rtp_timestamp)
        dts_90k = ext if track.clock_rate == 90_000 else ext * 90_000 // track.clock_rate
        wall_ns = track.wall_ns(ext, self._arrival_ns)
        self._batch.append(TimedUnit(unit, track.index, dts_90k, wall_ns))

    def _on_rtcp(self, track: _Track, payload: bytes) -> None:
        try:
            packets = parse_rtcp(payload)
        except ValueError as exc:
            self._bad_packets += 1
            log.debug("%s: dropped RTCP packet: %s", self._display, exc)
            return
        for packet in packets:
            if isinstance(packet, SenderReport):
                try:
                    wall_ns = ntp_to_wall_ns(packet.ntp_timestamp)
                except ValueError:
                    continue
                track.sr = (wall_ns, track.peek(packet.rtp_timestamp))
                if track.mapper is None:
                    track.mapper = WallClockMapper(track.clock_rate)
                track.mapper.report(wall_ns, track.sr[1])
                track.sr_ntp = packet.ntp_timestamp
                track.sr_mono_ns = self._clock.monotonic_ns()
