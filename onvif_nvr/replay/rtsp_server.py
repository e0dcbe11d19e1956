"""The NVR's RTSP/1.0 server (RFC 2326; ONVIF Streaming §5): live streams to any RTSP client.

Methods: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER, with
aggregate control (``control:*``; the mount URL) and per-track control (``trackID=N``).
Transports: RTP/AVP/TCP interleaved, RTP/AVP unicast UDP (one server RTP/RTCP port pair
for every session), UDP multicast (:mod:`.multicast`: one group per stream shared by its
multicast sessions and the Media service's StartMulticastStreaming) and RTSP-over-HTTP
tunnels (:mod:`.http_tunnel`, a connection whose requests come base64-encoded on a POST and
whose answers and media go out on a GET). The media path is :mod:`.live`: each stream is
packetized once and written to every viewer. The protocol work is sans-IO
(``onvif_nvr.rtsp``); this module only connects it to asyncio.

Per connection: its first bytes tell RTSP from an HTTP tunnel's GET or POST (the same
tunnels as on the HTTP port); they must come within ``request_timeout_s``. A
:class:`MessageParser` reads requests; a bad request is answered with the
parser's status (its CSeq echoed) and the connection goes on, unless the peer keeps sending
junk or its headers never end (cut). A request must arrive whole within
``request_timeout_s`` of its first byte (slow-loris). The session (one per connection) times
out after ``session_timeout_s`` without a request, an interleaved RTCP packet or, over UDP,
an RTCP receiver report from the client's address. Writes never wait: a TCP viewer whose
unsent data grows beyond ``max_write_buffer_bytes`` is disconnected.

Authentication: with a :class:`Gate`, every request but OPTIONS needs RTSP Digest
credentials (401 with the challenges otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, Protocol, cast

from onvif_nvr.clock import Clock
from onvif_nvr.replay.datagrams import DatagramWriter
from onvif_nvr.replay.http_tunnel import Tunnels, TunnelWriter
from onvif_nvr.replay.live import Fanout, Feed, Track, UnitSource, UnitSourceFeed
from onvif_nvr.replay.multicast import (
    MulticastGroup,
    MulticastGroups,
    MulticastLookup,
    MulticastPolicy,
    MulticastTarget,
)
from onvif_nvr.replay.playback import METHODS as REPLAY_METHODS
from onvif_nvr.replay.playback import Replays, ReplaySession
from onvif_nvr.rtsp import sdp
from onvif_nvr.rtsp.headers import (
    NptRange,
    RtpInfo,
    SessionHeader,
    TransportSpec,
    format_range,
    format_rtp_info,
    format_session,
    format_transport,
    parse_session,
    parse_transport,
)
from onvif_nvr.rtsp.message import (
    Headers,
    Interleaved,
    MessageParser,
    Request,
    Response,
    RtspParseError,
)

log = logging.getLogger(__name__)

SESSION_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 10
MAX_WRITE_BUFFER_BYTES = 4 * 1024 * 1024
READ_CHUNK = 64 * 1024
#: Parse errors tolerated in a row before the peer is taken to be out of sync.
MAX_PARSE_ERRORS = 5
#: How long DESCRIBE waits for a stream whose camera has not delivered its parameters yet.
DESCRIBE_WAIT_S = 5.0
#: How long the first PLAY of an idle stream waits for its first packets (RTP-Info rtptime).
PLAY_WAIT_S = 2.0
SERVER_NAME = "onvif-nvr"
PUBLIC_METHODS = (
    "OPTIONS",
    "DESCRIBE",
    "SETUP",
    "PLAY",
    "PAUSE",
    "TEARDOWN",
    "GET_PARAMETER",
    "SET_PARAMETER",
)
#: Methods that need no session (the rest answer 454 without the right one).
_SESSIONLESS = ("OPTIONS", "DESCRIBE", "SETUP", "GET_PARAMETER", "SET_PARAMETER")
#: Path prefix of RTSP-over-HTTP tunnel URLs on the HTTP port (``/rtsp-tunnel/live/<token>``);
#: requests inside a tunnel name the same path with the rtsp scheme, so it is stripped.
TUNNEL_PREFIX = "/rtsp-tunnel"


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Prefixed:
    """A reader that gives ``first`` (already read) before the rest of ``reader``."""

    def __init__(self, first: bytes, reader: asyncio.StreamReader) -> None:
        self._first: bytes | None = first
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._reader.read(n)


class _Writer(Protocol):
    """What a connection needs of its output (an ``asyncio.StreamWriter`` or a tunnel's)."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class Gate(Protocol):
    """RTSP authentication (see ``onvif_nvr.replay.rtsp_auth.DigestGate``)."""

    def challenges(self, *, stale: bool = False) -> list[str]: ...

    def check(
        self, method: str, uri: str, authorization: str | None, remote: str
    ) -> Literal["ok", "stale", "denied"]: ...


Resolver = Callable[[str], Feed | None]


class RtspServer:
    """RTSP server for ``rtsp://host:port/<mount>`` URLs: fixed mounts (:meth:`add_mount`)
    and paths a ``resolver`` maps to feeds (the recorders' live streams)."""

    def __init__(
        self,
        bind: str,
        port: int,
        clock: Clock,
        *,
        session_timeout_s: int = SESSION_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_write_buffer_bytes: int = MAX_WRITE_BUFFER_BYTES,
        send_buffer_bytes: int | None = None,
        gate: Gate | None = None,
        resolver: Resolver | None = None,
        multicast: MulticastPolicy | None = None,
    ) -> None:
        """``max_write_buffer_bytes``: unsent data (in the process) after which a viewer is
        dropped. ``send_buffer_bytes``: SO_SNDBUF of client sockets; None keeps the kernel's
        autotuning (up to several MB on Linux, which delays the detection of a stuck viewer
        by that much)."""
        self._bind = bind
        self._port = port
        self.clock = clock
        self.session_timeout_s = session_timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_write_buffer_bytes = max_write_buffer_bytes
        self.send_buffer_bytes = send_buffer_bytes
        self.gate = gate
        self._resolver = resolver
        self._mounts: dict[str, Feed] = {}
        self._public: set[str] = set()
        self._fanouts: dict[int, Fanout] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        #: Tasks of the accepted TCP connections (RTSP, or a tunnel on the RTSP port).
        self._accepted: set[asyncio.Task[None]] = set()
        self._udp: _UdpPorts | None = None
        self.multicast = multicast or MulticastPolicy()
        #: Viewers disconnected because they did not keep up (since start).
        self.slow_viewers_dropped = 0
        #: Media bytes written to unicast sessions, live and replay (since start).
        self.unicast_bytes_sent = 0
        self._multicast = MulticastGroups(self.multicast, bind, clock, self)
        #: RTSP-over-HTTP tunnels, handed over by the HTTP front-end (``/rtsp-tunnel/...``).
        self.tunnels = Tunnels(self._serve)
        #: Replay sessions (``/replay/<recording token>``, replay/playback.py), set by the
        #: composition root; None: replay URLs are 404.
        self.replays: Replays | None = None

    def add_mount(self, path: str, source: Feed | UnitSource, *, public: bool = False) -> None:
        """Serve ``source`` at ``path`` (``"/sim"`` or ``"sim"``: ``rtsp://host:port/sim``);
        ``public`` mounts need no credentials (the demo's simulated cameras)."""
        key = "/" + path.strip("/")
        if key == "/" or key.rpartition("/")[2].startswith("trackID="):
            raise ValueError(f"invalid mount path {path!r}")
        # Simulated cameras (UnitSource) are wrapped; feeds (HubFeed...) have ``open``.
        feed = cast(Feed, source) if hasattr(source, "open") else UnitSourceFeed(source, self.clock)
        self._mounts[key] = feed
        if public:
            self._public.add(key)

    @property
    def bound_port(self) -> int:
        """The listening port (useful after binding port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("RTSP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def server_ports(self) -> tuple[int, int]:
        """The UDP (RTP, RTCP) ports media are sent from."""
        if self._udp is None:
            raise RuntimeError("RTSP server is not started")
        return self._udp.ports

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._connections)

    @property
    def viewers(self) -> int:
        """Viewers playing, over all streams."""
        return sum(len(f.viewers) for f in self._fanouts.values())

    async def start(self) -> None:
        self._udp = await _UdpPorts.open(self._bind, self._rtcp_received)
        self._server = await asyncio.start_server(
            self._on_connection, self._bind, self._port, limit=READ_CHUNK
        )

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = [c.task for c in self._connections if c.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in self._accepted:  # still reading their first bytes, or a tunnel's POST
            task.cancel()
        await asyncio.gather(*self._accepted, return_exceptions=True)
        self._multicast.close()
        for fanout in list(self._fanouts.values()):
            fanout.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def feed_for(self, uri: str) -> tuple[str, Feed, str] | None:
        """(stream path, feed, rest) for a request URL; rest is "" or the track control."""
        try:
            path = urllib.parse.unquote(urllib.parse.urlsplit(uri).path).rstrip("/")
        except ValueError:
            return None
        if path.startswith(TUNNEL_PREFIX + "/"):
            path = path[len(TUNNEL_PREFIX) :]
        for key in (path, path.rpartition("/")[0]):
            if not key:
                continue
            feed = self._mounts.get(key)
            if feed is None and self._resolver is not None:
                feed = self._resolver(key)
            if feed is not None:
                return key, feed, path[len(key) :].lstrip("/")
        return None

    def is_public(self, uri: str) -> bool:
        found = self.feed_for(uri)
        return found is not None and found[0] in self._public

    def fanout(self, feed: Feed) -> Fanout:
        """The fan-out of ``feed``, made on first use."""
        fanout = self._fanouts.get(id(feed))
        if fanout is None or fanout.feed is not feed:
            fanout = self._fanouts[id(feed)] = Fanout(feed, self.clock, self._fanout_idle)
        return fanout

    def _fanout_idle(self, fanout: Fanout) -> None:
        if self._fanouts.get(id(fanout.feed)) is fanout and not fanout.viewers:
            del self._fanouts[id(fanout.feed)]

    # -- multicast (replay/multicast.py) -------------------------------------------------------

    @property
    def multicast_lookup(self) -> MulticastLookup | None:
        """Set by the composition root: the group a multicast SETUP without a destination
        joins (ONVIF: the profile's encoder configuration), before the server's default."""
        return self._multicast.lookup

    @multicast_lookup.setter
    def multicast_lookup(self, lookup: MulticastLookup | None) -> None:
        self._multicast.lookup = lookup

    def viewer_stats(self) -> list[ViewerStats]:
        """Every unicast live session that is playing, and what it was sent (for /metrics;
        multicast sessions share their group's figures, :meth:`multicast_stats`)."""
        out = []
        for c in self._connections:
            if c.fanout is None or not c.playing or c.session_id is None or c.group is not None:
                continue
            tunnelled = isinstance(c.writer, TunnelWriter)
            kind = "udp" if c.udp_ports else "http" if tunnelled else "tcp"
            out.append(
                ViewerStats(c.session_id, c.peer, c.stream_path, kind, c.bytes_sent, c.packets_sent)
            )
        return out

    @property
    def bytes_sent(self) -> int:
        """Media bytes sent since start: unicast sessions (live, replay) and multicast groups."""
        return self.unicast_bytes_sent + self._multicast.bytes_sent

    def multicast_stats(self) -> list[tuple[str, str, int, int]]:
        """(stream path, group, datagrams sent, bytes sent) of every multicast group."""
        return [(g.path, g.address, g.sent, g.bytes_sent) for g in self._multicast.groups]

    @property
    def multicast_groups(self) -> list[tuple[str, str, bool]]:
        """(stream path, group, sending) of every multicast group held now."""
        return self._multicast.listing

    async def multicast_target(self, path: str) -> MulticastTarget:
        """Where multicast viewers of ``path`` that ask for no destination go."""
        return await self._multicast.target(path)

    def start_multicast(
        self, path: str, group: str, port: int, ttl: int, *, audio_port: int | None = None
    ) -> None:
        """Send the stream at ``path`` (``/live/<token>``) to ``group`` from now on, without
        any RTSP session (StartMulticastStreaming, AutoStart): video to ``port``, audio to
        ``audio_port`` (default port + 2), RTCP on the odd port above each. Raises
        LookupError for an unknown stream, ValueError for an unusable group or port."""
        self._multicast.start(path, group, port, ttl, audio_port=audio_port)

    def stop_multicast(self, path: str) -> None:
        """Stop what :meth:`start_multicast` started (RTSP multicast sessions go on)."""
        self._multicast.stop(path)

    def synchronization_point(self, path: str) -> int:
        """SetSynchronizationPoint for the stream at ``path``; the number of its viewers
        (a multicast group counts once). See docs/design/adr/0006-synchronization-point.md:
        a sender report per track goes out at once; the picture resynchronizes at the
        camera's next keyframe, which always carries its parameter sets."""
        found = self.feed_for(path)
        if found is None:
            return 0
        fanout = self._fanouts.get(id(found[1]))
        if fanout is None or fanout.feed is not found[1]:
            return 0
        return fanout.synchronize()

    def _rtcp_received(self, addr: tuple[str, int]) -> None:
        for connection in self._connections:
            if connection.receives_rtcp_from(addr):
                connection.touch()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.send_buffer_bytes is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        task = asyncio.current_task()
        if task is not None:
            self._accepted.add(task)
        try:
            # The first bytes tell RTSP from an HTTP tunnel; a client says something at once.
            first_wait_s = min(self.request_timeout_s, self.session_timeout_s)
            try:
                first = await asyncio.wait_for(reader.read(READ_CHUNK), first_wait_s)
            except (TimeoutError, ConnectionError, OSError):
                writer.transport.abort()
                return
            if first.startswith((b"GET ", b"POST ")):
                # RTSP over HTTP on the RTSP port (an rtsph:// URL, FFmpeg's
                # rtsp_transport=http): the same tunnels as on the HTTP port.
                await self.tunnels.serve_http(first, reader, writer, self.request_timeout_s)
            elif first:
                await self._serve(_Prefixed(first, reader), writer)
            else:
                writer.close()
        finally:
            if task is not None:
                self._accepted.discard(task)

    async def _serve(self, reader: _Reader, writer: _Writer) -> None:
        """One RTSP connection: a TCP client, or a tunnel's POST and GET."""
        connection = _Connection(self, reader, writer)
        connection.task = asyncio.current_task()
        self._connections.add(connection)
        try:
            await connection.run()
        except Exception:  # one broken connection must not take the server down
            log.exception("RTSP connection from %s failed", connection.peer)
        finally:
            self._connections.discard(connection)


class ViewerStats(NamedTuple):
    session: str
    client: str
    stream: str
    transport: str  # tcp, udp, http (tunnel)
    bytes_sent: int
    packets_sent: int  # datagrams (UDP); 0 over TCP, where packets share writes


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[tuple[str, int]], None]) -> None:
        self._on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) >= 8 and data[0] >> 6 == 2:  # RTCP (RR, SDES, BYE...) only counts as life
            self._on_packet((addr[0], addr[1]))


class _UdpPorts:
    """The server's RTP (even) and RTCP (odd) sockets, shared by every UDP session."""

    def __init__(self, rtp: socket.socket, transports: list[asyncio.BaseTransport]) -> None:
        self.rtp = rtp
        #: Every UDP session's RTP/RTCP goes out through this (GSO runs where possible).
        self.writer = DatagramWriter(rtp)
        self._transports = transports
        self.ports = (rtp.getsockname()[1], rtp.getsockname()[1] + 1)

    @classmethod
    async def open(cls, bind: str, on_rtcp: Callable[[tuple[str, int]], None]) -> _UdpPorts:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        for _ in range(50):
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((bind, 0))
                port = rtp.getsockname()[1]
                if port % 2:
                    raise OSError("odd port")
                rtcp.bind((bind, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            # A keyframe leaves as a burst of hundreds of datagrams per viewer.
            with contextlib.suppress(OSError):
                rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            rtp.setblocking(False)
            rtp_transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, sock=rtp
            )
            rtcp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpProtocol(on_rtcp), sock=rtcp
            )
            return cls(rtp, [rtp_transport, rtcp_transport])
        raise OSError("no free even/odd UDP port pair for RTP/RTCP")

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


class _Connection:
    """One client connection and its (at most one) session; a :class:`live.Viewer`."""

    def __init__(self, server: RtspServer, reader: _Reader, writer: _Writer) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.task: asyncio.Task[None] | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.parser = MessageParser("server")
        self.session_id: str | None = None
        self.fanout: Fanout | None = None
        self.stream_path = ""
        #: Track number -> interleaved RTP channel (TCP) or client (RTP, RTCP) port pair (UDP).
        self.channels: dict[int, int] = {}
        self.udp_ports: dict[int, tuple[int, int]] = {}
        #: The multicast group the session's tracks were set up on.
        self.group: MulticastGroup | None = None
        self.playing = False
        self._layout: tuple[int, ...] | None = None
        self._udp_dest: dict[tuple[int, bool], tuple[str, int]] = {}
        self._closing = False
        self._aborted = False
        self._last_activity_ns = server.clock.monotonic_ns()
        #: Live media written to this viewer (bytes; datagrams over UDP), for /metrics.
        self.bytes_sent = 0
        self.packets_sent = 0
        #: A replay session's timeout is the Replay service's (set at its SETUP).
        self.session_timeout_s = server.session_timeout_s
        self.replay: ReplaySession | None = None

    # -- live.Viewer ------------------------------------------------------------------------

    @property
    def layout(self) -> tuple[int, ...] | None:
        return self._layout

    def send_tcp(self, buffer: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(buffer)
        self.bytes_sent += len(buffer)
        self.server.unicast_bytes_sent += len(buffer)
        if transport.get_write_buffer_size() > self.server.max_write_buffer_bytes:
            log.warning("RTSP client %s does not keep up: disconnecting", self.peer)
            self.server.slow_viewers_dropped += 1
            self.abort()

    def send_udp(self, packets: Sequence[tuple[int, bool, bytes]]) -> None:
        assert self.server._udp is not None
        dest = self._udp_dest
        out = [
            (packet, address)
            for number, rtcp, packet in packets
            if (address := dest.get((number, rtcp))) is not None
        ]
        size = sum(len(packet) for packet, _ in out)
        self.packets_sent += len(out)
        self.bytes_sent += size
        self.server.unicast_bytes_sent += size
        # A full socket buffer loses datagrams for this viewer only: UDP is lossy.
        self.server._udp.writer.send(out)

    def ended(self, reason: str) -> None:
        log.info("RTSP client %s: %s", self.peer, reason)
        self.playing = False
        self._closing = True
        self.transport.close()

    def receives_rtcp_from(self, addr: tuple[str, int]) -> bool:
        return addr[0] == self.remote and any(p[1] == addr[1] for p in self.udp_ports.values())

    def touch(self) -> None:
        self._last_activity_ns = self.server.clock.monotonic_ns()

    def abort(self) -> None:
        self._closing = self._aborted = True
        self._stop_playing()
        self.transport.abort()

    # -- replay.playback.Connection ----------------------------------------------------------

    def replay_transport(self, specs: list[TransportSpec], track: Track) -> TransportSpec | None:
        return self._choose_transport(specs, track, "", None)

    def replay_output(self) -> Callable[[list[tuple[int, bool, bytes]]], None]:
        if self.channels:
            channels = self.channels
            write = self.transport.write
            server = self.server

            def interleaved(packets: list[tuple[int, bool, bytes]]) -> None:
                out = bytearray()
                for number, rtcp, packet in packets:
                    channel = channels.get(number)
                    if channel is not None:
                        out += b"$" + bytes((channel + rtcp,)) + len(packet).to_bytes(2, "big")
                        out += packet
                write(bytes(out))
                server.unicast_bytes_sent += len(out)

            return interleaved
        self._udp_dest = {}
        for number, (rtp_port, rtcp_port) in self.udp_ports.items():
            self._udp_dest[(number, False)] = (self.remote, rtp_port)
            self._udp_dest[(number, True)] = (self.remote, rtcp_port)
        return self.send_udp

    def send(self, response: Response) -> None:
        self._send(response)

    # -- reading ----------------------------------------------------------------------------

    def _read_timeout_s(self) -> float:
        """Until the session expires, or the pending request's deadline (slow-loris)."""
        clock = self.server.clock
        now_ns = clock.monotonic_ns()
        idle_s = self.session_timeout_s - (now_ns - self._last_activity_ns) / 1e9
        if self.parser.pending_bytes:
            return min(idle_s, self.server.request_timeout_s - (now_ns - self._partial_ns) / 1e9)
        return idle_s

    async def run(self) -> None:
        errors = 0
        self._partial_ns = 0
        try:
            while not self._closing:
                timeout_s = self._read_timeout_s()
                if timeout_s <= 0:
                    if self.parser.pending_bytes:
                        log.info("RTSP client %s: request not completed in time: cut", self.peer)
                        self._aborted = True
                    else:
                        log.info("RTSP client %s idle: closing", self.peer)
                    break
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout_s)
                except TimeoutError:
                    continue
                if not data:
                    break
                had_partial = self.parser.pending_bytes > 0
                try:
                    messages = self.parser.feed(data)
                    errors = 0
                except RtspParseError as exc:
                    messages, errors = [], errors + 1
                    while True:
                        await self._handle_all(exc.messages)
                        log.debug("RTSP client %s sent a bad message: %s", self.peer, exc)
                        self._send(self._bad_request(exc))
                        if errors >= MAX_PARSE_ERRORS or str(exc).startswith("RTSP headers exceed"):
                            # Out of sync, or headers that never end: nothing good follows.
                            self._closing = True
                            break
                        try:
                            messages = self.parser.skip_to_next_message()
                            break
                        except RtspParseError as again:
                            exc, errors = again, errors + 1
                if self.parser.pending_bytes and not had_partial:
                    self._partial_ns = self.server.clock.monotonic_ns()
                await self._handle_all(messages)
        except (ConnectionError, OSError) as exc:
            log.debug("RTSP client %s: %s", self.peer, exc)
        finally:
            self._stop_playing()
            if self.group is not None:
                self.server._multicast.release(self.group, self)
                self.group = None
            if self._aborted:
                self.transport.abort()
            else:
                self.writer.close()  # flushes what is buffered (a last answer)
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()

    async def _handle_all(self, messages: Sequence[Request | Response | Interleaved]) -> None:
        for message in messages:
            if self._closing:
                return
            if isinstance(message, Request):
                self.touch()
                response = await self._handle(message)
                if response is not None:
                    self._send(response)
            elif isinstance(message, Interleaved):
                self.touch()  # RTCP receiver reports keep the session alive

    def _bad_request(self, exc: RtspParseError) -> Response:
        headers = Headers()
        if exc.cseq is not None:
            headers.add("CSeq", str(exc.cseq))
        headers.add("Server", SERVER_NAME)
        return Response(exc.status, "", headers)

    def _send(self, response: Response) -> None:
        if not self.transport.is_closing():
            self.writer.write(bytes(response))

    # -- requests ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response | None:
        try:
            cseq: int | None = request.cseq
        except ValueError:
            cseq = None
        headers = Headers()
        if cseq is not None:
            headers.add("CSeq", str(cseq))
        headers.add("Server", SERVER_NAME)
        if cseq is None:
            return Response(400, "", headers)
        method = request.method.upper()
        if method not in PUBLIC_METHODS:
            return Response(501, "", headers)
        gate = self.server.gate
        if gate is not None and method != "OPTIONS" and not self.server.is_public(request.uri):
            verdict = gate.check(
                request.method, request.uri, request.headers.get("Authorization"), self.remote
            )
            if verdict != "ok":
                for challenge in gate.challenges(stale=verdict == "stale"):
                    headers.add("WWW-Authenticate", challenge)
                return Response(401, "", headers)
        if method not in _SESSIONLESS or (
            method in ("GET_PARAMETER", "SET_PARAMETER") and "Session" in request.headers
        ):
            status = self._check_session(request)
            if status:
                return Response(status, "", headers)
        replays = self.server.replays
        if (
            replays is not None
            and method in REPLAY_METHODS
            and self.fanout is None
            and replays.owns(self, request.uri)
        ):
            response: Response | None = await replays.handle(self, method, request, headers)
        else:
            handler = getattr(self, "_do_" + method)
            response = await handler(request, headers)
        if (
            response is not None
            and self.session_id is not None
            and response.status == 200
            and "Session" not in response.headers
        ):
            response.headers.add("Session", self._session_value())
        return response

    def _check_session(self, request: Request) -> int:
        value = request.headers.get("Session")
        if value is None or self.session_id is None:
            return 454
        try:
            session = parse_session(value)
        except ValueError:
            return 454
        return 0 if session.id == self.session_id else 454

    def _session_value(self) -> str:
        assert self.session_id is not None
        return format_session(SessionHeader(self.session_id, self.session_timeout_s))

    async def _do_OPTIONS(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        headers.add("Public", ", ".join(PUBLIC_METHODS))
        return Response(200, "", headers)

    async def _do_DESCRIBE(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        found = self.server.feed_for(request.uri)
        if found is None or found[2]:
            return Response(404, "", headers)
        feed = found[1]
        deadline_ns = self.server.clock.monotonic_ns() + int(DESCRIBE_WAIT_S * 1e9)
        # A stream whose camera is (re)connecting has no parameters yet: wait a little.
        while feed.parameters() == (None, None):
            if self.server.clock.monotonic_ns() >= deadline_ns:
                headers.add("Retry-After", "5")
                return Response(503, "", headers)
            await self.server.clock.sleep(0.1)
        fanout = self.server.fanout(feed)
        description = sdp.SessionDescription(session_name="onvif-nvr live")
        description.attributes.append(("control", "*"))
        description.attributes.append(("range", "npt=now-"))
        url = urllib.parse.urlsplit(request.uri)
        if "multicast" in url.query.lower():
            # A multicast URI: the group in c= (ONVIF Streaming: a valid multicast address)
            # and each track's port in its m= line.
            target = await self.server.multicast_target(found[0])
            description.connection = sdp.Connection(address=f"{target.address}/{target.ttl}")
            for track, media in zip(fanout.tracks, fanout.describe(), strict=True):
                port = target.ports.get(track.number, self.server.multicast.port + 2 * track.number)
                description.media.append(dataclasses.replace(media, port=port))
            request_uri = urllib.parse.urlunsplit(url._replace(query=""))
        else:
            description.media.extend(fanout.describe())
            request_uri = request.uri
        base = request_uri if request_uri.endswith("/") else request_uri + "/"
        headers.add("Content-Base", base)
        headers.add("Content-Type", "application/sdp")
        return Response(200, "", headers, bytes(description))

    async def _do_SETUP(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        found = self.server.feed_for(request.uri)
        if found is None:
            return Response(404, "", headers)
        path, feed, control = found
        if self.session_id is not None and "Session" in request.headers:
            if self._check_session(request):
                return Response(454, "", headers)
        elif self.session_id is not None and self.fanout is not None:
            return Response(459, "", headers)  # one session per connection
        if self.fanout is not None and (path != self.stream_path or self.playing):
            return Response(455, "", headers)  # aggregate: same stream, set up before PLAY
        fanout = self.fanout or self.server.fanout(feed)
        track: Track | None = (
            fanout.track(control) if control else fanout.tracks[0] if fanout.tracks else None
        )
        if track is None:
            return Response(404, "", headers)
        try:
            specs = parse_transport(request.headers.get("Transport", ""))
        except ValueError:
            return Response(461, "", headers)
        target = None
        if any(spec.delivery == "multicast" for spec in specs):
            target = await self.server.multicast_target(path)
        reply = self._choose_transport(specs, track, path, target)
        if reply is None:
            return Response(461, "", headers)
        self.fanout, self.stream_path = fanout, path
        reply.ssrc = track.ssrc
        if self.session_id is None:
            self.session_id = secrets.token_hex(8)
        headers.add("Transport", format_transport([reply]))
        headers.add("Session", self._session_value())
        return Response(200, "", headers)

    def _choose_transport(
        self,
        specs: list[TransportSpec],
        track: Track,
        path: str,
        target: MulticastTarget | None,
    ) -> TransportSpec | None:
        for spec in specs:
            if not spec.protocol.upper().startswith("RTP/AVP"):
                continue
            if spec.delivery == "multicast":
                if spec.lower_transport.upper() != "UDP" or self.channels or self.udp_ports:
                    continue
                if target is None:
                    continue
                if self.group is not None and not spec.destination:
                    # The session's other tracks went to a group: this one goes there too.
                    ports = {**target.ports, **self.group.ports}
                    target = MulticastTarget(self.group.address, ports, self.group.ttl)
                group = self.server._multicast.group_for(path, track.number, spec, target)
                if group is None:
                    continue
                if self.group is not None and group is not self.group:
                    self.server._multicast.release(group, self)  # one group a session
                    continue
                self.group = group
                self.server._multicast.hold(group, self)
                port = group.ports[track.number]
                return TransportSpec(
                    "RTP/AVP",
                    "multicast",
                    destination=group.address,
                    port=(port, port + 1),
                    ttl=group.ttl,
                )
            if self.group is not None:
                continue  # one lower transport per session
            if spec.lower_transport.upper() == "TCP":
                if self.udp_ports:
                    continue  # one lower transport per session
                used = set(self.channels.values())
                channel = spec.interleaved[0] if spec.interleaved else 2 * len(self.channels)
                if channel > 254 or channel in used or channel - 1 in used or channel + 1 in used:
                    continue
                self.channels[track.number] = channel
                return TransportSpec(
                    "RTP/AVP/TCP", "unicast", interleaved=(channel, channel + 1), mode=None
                )
            if spec.client_port and not self.channels:
                rtp_port = spec.client_port[0]
                rtcp_port = spec.client_port[1] if len(spec.client_port) > 1 else rtp_port + 1
                if not (0 < rtp_port < 65536 and 0 < rtcp_port < 65536):
                    continue
                self.udp_ports[track.number] = (rtp_port, rtcp_port)
                return TransportSpec(
                    "RTP/AVP",
                    "unicast",
                    client_port=(rtp_port, rtcp_port),
                    server_port=self.server.server_ports,
                )
        return None

    async def _do_PLAY(self, request: Request, headers: Headers) -> Response | None:  # noqa: N802
        fanout = self.fanout
        if fanout is None or not (self.channels or self.udp_ports or self.group):
            return Response(455, "", headers)
        if not self.playing and not await fanout.wait_ready(PLAY_WAIT_S):
            log.debug("RTSP client %s: no packets yet, RTP-Info without rtptime", self.peer)
        if self._closing or self.fanout is not fanout:
            fanout.close_if_idle()  # gone while waiting
            return None
        base = self.server.feed_for(request.uri)
        url = request.uri.rstrip("/")
        if base is not None and base[2]:
            url = url.rpartition("/")[0]
        infos = []
        group = self.group
        for track in fanout.tracks:
            if group is not None and track.number in group.ports:
                # A running group goes on live (no cached GOP for the newcomer).
                seq, rtptime = (track.next_seq, None) if group.sending else fanout.start_info(track)
                infos.append(RtpInfo(f"{url}/{track.control}", seq, rtptime))
            elif track.number in self.channels or track.number in self.udp_ports:
                seq, rtptime = fanout.start_info(track)
                infos.append(RtpInfo(f"{url}/{track.control}", seq, rtptime))
        headers.add("Range", format_range(NptRange(0)))
        if infos and not self.playing:
            headers.add("RTP-Info", format_rtp_info(infos))
        headers.add("Session", self._session_value())
        # The answer goes before the first media packet (the join sends the cached GOP).
        self._send(Response(200, "", headers))
        if not self.playing:
            self._start_playing(fanout)
        return None

    def _start_playing(self, fanout: Fanout) -> None:
        if self.group is not None:
            self.playing = True
            self.server._multicast.play(self.group, self, fanout)
            return
        if self.channels:
            size = max(t.number for t in fanout.tracks) + 1
            self._layout = tuple(self.channels.get(n, -1) for n in range(size))
        else:
            self._layout = None
            self._udp_dest = {}
            for number, (rtp_port, rtcp_port) in self.udp_ports.items():
                self._udp_dest[(number, False)] = (self.remote, rtp_port)
                self._udp_dest[(number, True)] = (self.remote, rtcp_port)
        self.playing = True
        fanout.join(self)

    def _stop_playing(self) -> None:
        if self.replay is not None:
            self.replay.stop()
            self.replay = None
        if self.playing and self.group is not None:
            self.playing = False
            self.server._multicast.pause(self.group, self)
        elif self.playing and self.fanout is not None:
            self.playing = False
            self.fanout.leave(self)

    async def _do_PAUSE(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        if self.fanout is None:
            return Response(455, "", headers)
        self._stop_playing()
        return Response(200, "", headers)

    async def _do_TEARDOWN(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        self._stop_playing()
        self.fanout = None
        self.session_id = None
        self.channels.clear()
        self.udp_ports.clear()
        if self.group is not None:
            self.server._multicast.release(self.group, self)
            self.group = None
        return Response(200, "", headers)

    async def _do_GET_PARAMETER(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        return Response(200, "", headers)

    async def _do_SET_PARAMETER(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        # No parameter can be set; an empty body is a keep-alive (RFC 2326 §10.9).
        return Response(451 if request.body.strip() else 200, "", headers)
