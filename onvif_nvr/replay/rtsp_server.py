"""The NVR's RTSP/1.0 server (RFC 2326): mounts of live H.264 sources, RTP over TCP.

First, minimal form of the live/replay server: one H.264 video track per mount, RTP/AVP/TCP
interleaved only (SETUP for UDP gets 461), no authentication yet. The protocol work is
sans-IO (``onvif_nvr.rtsp``); this module only connects it to asyncio streams.

Per connection: a :class:`MessageParser` reads requests; a bad request is answered with the
parser's status (400/413/505, its CSeq echoed) and the connection goes on, unless the peer
keeps sending junk. Once PLAY arrives, a task reads the mount's units and writes interleaved
RTP, plus an RTCP sender report every :data:`SR_INTERVAL_S`. Writes never wait: a viewer
whose unsent data grows beyond ``max_write_buffer_bytes`` is disconnected rather than
buffered without bound (it cannot slow the source or other viewers). A connection that sends
nothing (no request, no RTCP) for the session timeout is closed.

Time: ``dts_90k`` of the source becomes the RTP timestamp plus a random per-session offset;
sender reports map the wall clock (NTP) to the RTP time of the unit being sent, which the
source paces in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import urllib.parse
from collections.abc import AsyncIterator
from typing import Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import AccessUnit, VideoParameters
from onvif_nvr.rtsp import sdp
from onvif_nvr.rtsp.h264 import H264Packetizer
from onvif_nvr.rtsp.headers import (
    NptRange,
    RtpInfo,
    SessionHeader,
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
from onvif_nvr.rtsp.rtp import RtpPacket, SenderReport, build_compound, wall_ns_to_ntp

log = logging.getLogger(__name__)

PAYLOAD_TYPE = 96
TRACK_CONTROL = "trackID=0"
SESSION_TIMEOUT_S = 60
SR_INTERVAL_S = 5
MAX_WRITE_BUFFER_BYTES = 4 * 1024 * 1024
#: RTP payload size; interleaved frames have no path MTU, this just keeps packets familiar.
RTP_MTU = 1400
READ_CHUNK = 64 * 1024
#: Parse errors tolerated in a row before the peer is taken to be out of sync.
MAX_PARSE_ERRORS = 5
SERVER_NAME = "onvif-nvr"
PUBLIC_METHODS = (
    "OPTIONS",
    "DESCRIBE",
    "SETUP",
    "PLAY",
    "TEARDOWN",
    "GET_PARAMETER",
    "SET_PARAMETER",
)


class MountSource(Protocol):
    """What a mount streams: one H.264 video stream."""

    @property
    def params(self) -> VideoParameters: ...

    def subscribe(self) -> AsyncIterator[tuple[AccessUnit, int]]:
        """Units with their ``dts_90k``, in decoding order, each when it is due (real time).

        Each call is an independent viewer; the iterator is closed when the viewer leaves.
        """
        ...


class RtspServer:
    """RTSP server for ``rtsp://host:port/<mount>`` URLs."""

    def __init__(
        self,
        bind: str,
        port: int,
        clock: Clock,
        *,
        session_timeout_s: int = SESSION_TIMEOUT_S,
        max_write_buffer_bytes: int = MAX_WRITE_BUFFER_BYTES,
        send_buffer_bytes: int | None = None,
    ) -> None:
        """``max_write_buffer_bytes``: unsent data (in the process) after which a viewer is
        dropped. ``send_buffer_bytes``: SO_SNDBUF of client sockets; None keeps the kernel's
        autotuning (up to several MB on Linux, which delays the detection of a stuck viewer
        by that much)."""
        self._bind = bind
        self._port = port
        self._clock = clock
        self.session_timeout_s = session_timeout_s
        self.max_write_buffer_bytes = max_write_buffer_bytes
        self.send_buffer_bytes = send_buffer_bytes
        self._mounts: dict[str, MountSource] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    def add_mount(self, path: str, source: MountSource) -> None:
        """Serve ``source`` at ``path`` (``"/sim"`` or ``"sim"``: ``rtsp://host:port/sim``)."""
        key = "/" + path.strip("/")
        if key == "/" or TRACK_CONTROL in key.split("/"):
            raise ValueError(f"invalid mount path {path!r}")
        if source.params.codec != "H264":
            raise ValueError("only H.264 mounts are supported")
        self._mounts[key] = source

    @property
    def bound_port(self) -> int:
        """The listening port (useful after binding port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("RTSP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._connections)

    async def start(self) -> None:
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
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def mount_for(self, uri: str) -> tuple[str, MountSource, str] | None:
        """(mount path, source, rest) for a request URL; rest is "" or the track control."""
        path = urllib.parse.urlsplit(uri).path.rstrip("/")
        for key in (path, path.rpartition("/")[0]):
            source = self._mounts.get(key)
            if source is not None:
                return key, source, path[len(key) :].lstrip("/")
        return None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if self.send_buffer_bytes is not None and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        connection = _Connection(self, reader, writer)
        connection.task = asyncio.current_task()
        self._connections.add(connection)
        try:
            await connection.run()
        except Exception:  # one broken connection must not take the server down
            log.exception("RTSP connection from %s failed", connection.peer)
        finally:
            self._connections.discard(connection)


class _Stream:
    """The RTP state of a set-up session: SSRC, sequence numbers, time offset, counters."""

    def __init__(self, source: MountSource, channel: int) -> None:
        self.source = source
        self.rtp_channel = channel
        self.rtcp_channel = channel + 1
        self.ssrc = secrets.randbits(32)
        self.next_seq = secrets.randbits(16)
        #: RTP time of the first unit sent; the offset to ``dts_90k`` is fixed at PLAY.
        self.first_rtptime = secrets.randbits(32)
        self.offset_90k: int | None = None
        self.packetizer = H264Packetizer(
            PAYLOAD_TYPE,
            self.ssrc,
            RTP_MTU,
            insert_parameter_sets=True,
            parameter_sets=source.params.parameter_sets,
        )
        self.packet_count = 0
        self.octet_count = 0


class _Connection:
    def __init__(
        self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task[None] | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.parser = MessageParser("server")
        self.session_id: str | None = None
        self.stream: _Stream | None = None
        self.streamer: asyncio.Task[None] | None = None
        #: Stop reading (TEARDOWN, junk); ``_aborted``: also drop unsent data (slow viewer).
        self._closing = False
        self._aborted = False

    def abort(self) -> None:
        self._closing = self._aborted = True
        self.writer.transport.abort()

    # -- reading ----------------------------------------------------------------------------

    async def run(self) -> None:
        errors = 0
        try:
            while not self._closing:
                try:
                    data = await asyncio.wait_for(
                        self.reader.read(READ_CHUNK), self.server.session_timeout_s
                    )
                except TimeoutError:
                    log.info("RTSP client %s idle: closing", self.peer)
                    break
                if not data:
                    break
                try:
                    messages = self.parser.feed(data)
                    errors = 0
                except RtspParseError as exc:
                    messages, errors = [], errors + 1
                    while True:
                        self._handle_all(exc.messages)
                        log.debug("RTSP client %s sent a bad message: %s", self.peer, exc)
                        self._send(self._bad_request(exc))
                        if errors >= MAX_PARSE_ERRORS:
                            self._closing = True
                            break
                        try:
                            messages = self.parser.skip_to_next_message()
                            break
                        except RtspParseError as again:
                            exc, errors = again, errors + 1
                self._handle_all(messages)
        except (ConnectionError, OSError) as exc:
            log.debug("RTSP client %s: %s", self.peer, exc)
        finally:
            await self._stop_streaming()
            if self._aborted:
                self.writer.transport.abort()
            else:
                self.writer.close()  # flushes what is buffered (a TEARDOWN answer)
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()

    def _handle_all(self, messages: list[Request | Response | Interleaved]) -> None:
        for message in messages:
            if self._closing:
                return
            if isinstance(message, Request):
                self._send(self._handle(message))
            # Interleaved frames (RTCP receiver reports) only count as activity for now.

    def _bad_request(self, exc: RtspParseError) -> Response:
        headers = Headers()
        if exc.cseq is not None:
            headers.add("CSeq", str(exc.cseq))
        headers.add("Server", SERVER_NAME)
        return Response(exc.status, "", headers)

    def _send(self, response: Response) -> None:
        if not self.writer.transport.is_closing():
            self.writer.write(bytes(response))

    # -- requests ---------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
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
        handler = getattr(self, "_do_" + request.method.upper(), None)
        if handler is None or request.method.upper() not in PUBLIC_METHODS:
            return Response(501, "", headers)
        if request.method.upper() not in ("OPTIONS", "DESCRIBE", "SETUP"):
            status = self._check_session(request)
            if status:
                return Response(status, "", headers)
        response: Response = handler(request, headers)
        if (
            self.session_id is not None
            and request.method.upper() != "TEARDOWN"
            and response.status == 200
            and "Session" not in response.headers
        ):
            response.headers.add("Session", self._session_value())
        return response

    def _check_session(self, request: Request) -> int:
        value = request.headers.get("Session")
        if value is None:
            # GET_PARAMETER / SET_PARAMETER without a session are plain keep-alives.
            if request.method.upper() in ("GET_PARAMETER", "SET_PARAMETER"):
                return 0
            return 454
        try:
            session = parse_session(value)
        except ValueError:
            return 454
        return 0 if session.id == self.session_id else 454

    def _session_value(self) -> str:
        assert self.session_id is not None
        return format_session(SessionHeader(self.session_id, self.server.session_timeout_s))

    def _do_OPTIONS(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        headers.add("Public", ", ".join(PUBLIC_METHODS))
        return Response(200, "", headers)

    def _do_DESCRIBE(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        found = self.server.mount_for(request.uri)
        if found is None or found[2]:
            return Response(404, "", headers)
        _, source, _ = found
        params = source.params
        description = sdp.SessionDescription(session_name="onvif-nvr live")
        description.attributes.append(("control", "*"))
        description.attributes.append(("range", "npt=0-"))
        description.media.append(
            sdp.video_media_h264(PAYLOAD_TYPE, TRACK_CONTROL, params.parameter_sets)
        )
        base = request.uri if request.uri.endswith("/") else request.uri + "/"
        headers.add("Content-Base", base)
        headers.add("Content-Type", "application/sdp")
        return Response(200, "", headers, bytes(description))

    def _do_SETUP(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        found = self.server.mount_for(request.uri)
        if found is None or found[2] not in ("", TRACK_CONTROL):
            return Response(404, "", headers)
        if self.streamer is not None:
            return Response(455, "", headers)
        value = request.headers.get("Session")
        if value is not None and self.session_id is not None:
            try:
                if parse_session(value).id != self.session_id:
                    return Response(454, "", headers)
            except ValueError:
                return Response(454, "", headers)
        try:
            specs = parse_transport(request.headers.get("Transport", ""))
        except ValueError:
            return Response(461, "", headers)
        spec = next(
            (
                s
                for s in specs
                if s.protocol.startswith("RTP/AVP")
                and s.lower_transport == "TCP"
                and s.delivery != "multicast"
            ),
            None,
        )
        if spec is None:
            return Response(461, "", headers)
        channel = spec.interleaved[0] if spec.interleaved else 0
        if channel > 254:
            return Response(461, "", headers)
        spec.interleaved = (channel, channel + 1)
        spec.delivery = "unicast"
        self.stream = _Stream(found[1], channel)
        spec.ssrc = self.stream.ssrc
        if self.session_id is None:
            self.session_id = secrets.token_hex(8)
        headers.add("Transport", format_transport([spec]))
        headers.add("Session", self._session_value())
        return Response(200, "", headers)

    def _do_PLAY(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        stream = self.stream
        if stream is None:
            return Response(455, "", headers)
        if self.streamer is None:
            self.streamer = asyncio.create_task(self._stream(stream))
        found = self.server.mount_for(request.uri)
        base = request.uri.rstrip("/") if found is None or found[2] else request.uri
        track_url = base.rstrip("/") + "/" + TRACK_CONTROL
        info = RtpInfo(track_url, stream.next_seq, stream.first_rtptime)
        headers.add("Range", format_range(NptRange(0)))
        headers.add("RTP-Info", format_rtp_info([info]))
        return Response(200, "", headers)

    def _do_TEARDOWN(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        # Answer, then close: clients expect no more data on this session.
        self._closing = True
        return Response(200, "", headers)

    def _do_GET_PARAMETER(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        return Response(200, "", headers)

    def _do_SET_PARAMETER(self, request: Request, headers: Headers) -> Response:  # noqa: N802
        return Response(200, "", headers)

    # -- streaming --------------------------------------------------------------------------

    async def _stop_streaming(self) -> None:
        if self.streamer is not None:
            self.streamer.cancel()
            try:
                await self.streamer
            except asyncio.CancelledError:
                pass
            except Exception:  # the source failed: this viewer ends, the server goes on
                log.exception("RTSP client %s: streaming failed", self.peer)
            self.streamer = None

    async def _stream(self, stream: _Stream) -> None:
        clock = self.server._clock
        transport = self.writer.transport
        units = stream.source.subscribe()
        next_sr_ns = clock.monotonic_ns()
        try:
            async for unit, dts_90k in units:
                if transport.is_closing():
                    return
                if stream.offset_90k is None:
                    stream.offset_90k = stream.first_rtptime - dts_90k
                rtptime = (dts_90k + stream.offset_90k) & 0xFFFFFFFF
                try:
                    payloads = stream.packetizer.packetize(unit, rtptime)
                except ValueError as exc:  # a bad unit is dropped, the stream goes on
                    log.debug("RTSP client %s: dropped unit: %s", self.peer, exc)
                    continue
                frames = []
                for payload, marker in payloads:
                    packet = RtpPacket(
                        PAYLOAD_TYPE, stream.next_seq, rtptime, stream.ssrc, payload, marker
                    )
                    stream.next_seq = (stream.next_seq + 1) & 0xFFFF
                    stream.packet_count += 1
                    stream.octet_count += len(payload)
                    frames.append(bytes(Interleaved(stream.rtp_channel, bytes(packet))))
                now_ns = clock.monotonic_ns()
                if now_ns >= next_sr_ns:
                    next_sr_ns = now_ns + SR_INTERVAL_S * 1_000_000_000
                    report = SenderReport(
                        stream.ssrc,
                        wall_ns_to_ntp(clock.wall_ns()),
                        rtptime,
                        stream.packet_count & 0xFFFFFFFF,
                        stream.octet_count & 0xFFFFFFFF,
                    )
                    frames.append(bytes(Interleaved(stream.rtcp_channel, build_compound(report))))
                transport.write(b"".join(frames))
                if transport.get_write_buffer_size() > self.server.max_write_buffer_bytes:
                    log.warning("RTSP client %s does not keep up: disconnecting", self.peer)
                    self.abort()
                    return
        finally:
            aclose = getattr(units, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
