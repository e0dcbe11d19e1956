"""RTSP over HTTP (Apple's tunnelling; ONVIF Streaming §5.1.1.5 RTP/RTSP/HTTP/TCP).

A client opens two HTTP connections with the same ``x-sessioncookie``: a GET
(``Accept: application/x-rtsp-tunnelled``) whose ``200`` is followed by everything the server
sends — RTSP answers and ``$``-interleaved media — and a POST whose body carries the client's
RTSP requests and RTCP, base64-encoded (line breaks allowed, RTSS-1-1-45). The POST's
Content-Length (32767 by custom) is not a limit: the body goes on for the whole session, and
a client may close a POST and open another one for the same tunnel.

The pair is one ordinary RTSP connection of the server (the same ``_Connection`` as on the
RTSP port): the decoded POST bytes feed its reader, the GET's socket is its writer. The HTTP
front-end validates the request, then hands the socket over (:meth:`Tunnels.serve_get`,
:meth:`Tunnels.serve_post`), which replaces its asyncio protocol; nothing here knows the HTTP
server. Errors before the hand-over are plain HTTP answers from the front-end
(:meth:`Tunnels.refuse_get`/:meth:`Tunnels.refuse_post`); a POST whose body stops being
base64 later gets ``400`` on its own connection and is closed, the GET side stays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-rtsp-tunnelled"
READ_CHUNK = 64 * 1024
#: Largest HTTP request head of a tunnel on the RTSP port.
MAX_HTTP_HEAD = 16 * 1024
#: Tunnels open at once (each holds two sockets and an RTSP connection), and from one
#: address (a GET needs no credentials: the RTSP Digest comes inside the tunnel).
MAX_TUNNELS = 256
MAX_TUNNELS_PER_ADDRESS = 16
_COOKIE_RE = re.compile(r"[!-~]{1,128}")
_WHITESPACE = b" \t\r\n"
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_GET_ANSWER = (
    "HTTP/1.0 200 OK\r\n"
    "Server: onvif-nvr\r\n"
    "Connection: close\r\n"
    "Cache-Control: no-store\r\n"
    "Pragma: no-cache\r\n"
    f"Content-Type: {CONTENT_TYPE}\r\n"
    "\r\n"
).encode()
_POST_REFUSED = b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class Base64Stream:
    """Decodes base64 arriving in arbitrary pieces: whitespace is skipped, each padded
    group ends one encoded message (clients encode every request on its own)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        """The bytes decoded so far; ValueError when the text is not base64."""
        data = data.translate(None, _WHITESPACE)
        if data.translate(None, _ALPHABET):
            raise ValueError("tunnel POST body is not base64")
        text = self._rest + data
        out = []
        while len(text) >= 4:
            pad = text.find(b"=")
            if pad < 0:
                end = len(text) - len(text) % 4
            else:
                end = (pad // 4 + 1) * 4
                if end > len(text):  # the padded group is not complete yet
                    end = pad // 4 * 4
                    if not end:
                        break
            try:
                out.append(base64.b64decode(text[:end], validate=True))
            except binascii.Error:
                raise ValueError("tunnel POST body is not base64") from None
            text = text[end:]
        if len(text) > 3:
            raise ValueError("tunnel POST body is not base64")
        self._rest = text
        return b"".join(out)


class TunnelWriter:
    """The GET side as the writer of an RTSP connection."""

    def __init__(self, transport: asyncio.WriteTransport, closed: asyncio.Future[None]) -> None:
        self._transport = transport
        self._closed = closed

    @property
    def transport(self) -> asyncio.WriteTransport:
        return self._transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


class _GetProtocol(asyncio.Protocol):
    """The GET socket once handed over: nothing more is read from it; its end ends the
    tunnel's reader."""

    def __init__(self, reader: asyncio.StreamReader, closed: asyncio.Future[None]) -> None:
        self._reader = reader
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        pass  # the client says nothing more on the GET connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._reader.feed_eof()
        if not self._closed.done():
            self._closed.set_result(None)


class _PostProtocol(asyncio.Protocol):
    def __init__(self, tunnel: _Tunnel, transport: asyncio.Transport) -> None:
        self._tunnel = tunnel
        self._transport = transport
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        try:
            self._tunnel.feed(data)
        except ValueError as exc:
            log.info("RTSP tunnel from %s: %s", self._tunnel.peer, exc)
            self._transport.write(_POST_REFUSED)
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Tunnel:
    def __init__(self, host: str, peer: str) -> None:
        self.host = host
        self.peer = peer
        self.reader = asyncio.StreamReader()
        self.post: asyncio.Transport | None = None
        self._decoder = Base64Stream()

    def new_post(self, transport: asyncio.Transport) -> None:
        if self.post is not None and self.post is not transport:
            self.post.close()  # a client opens a new POST: the old one is done
        self.post = transport
        self._decoder = Base64Stream()

    def feed(self, data: bytes) -> None:
        decoded = self._decoder.feed(data)
        if decoded and not self.reader.at_eof():
            self.reader.feed_data(decoded)

    def close(self) -> None:
        if self.post is not None:
            self.post.close()
            self.post = None


Runner = Callable[[asyncio.StreamReader, TunnelWriter], Awaitable[None]]


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


def parse_http_head(head: bytes) -> tuple[str, dict[str, str]]:
    """(method, headers with lower-case names) of an HTTP request head; ValueError."""
    try:
        lines = head.decode("latin-1").split("\r\n")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise ValueError("HTTP request head is not text") from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("bad HTTP request line")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError("bad HTTP header line")
        headers[name.strip().lower()] = value.strip()
    return parts[0], headers


def http_error(status: int, reason: str) -> bytes:
    """A whole HTTP/1.0 error answer that closes the connection."""
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_REASONS = {400: "Bad Request", 409: "Conflict", 431: "Request Header Fields Too Large"}
_REASONS[503] = "Service Unavailable"


class Tunnels:
    """Open tunnels by cookie; ``run`` serves one RTSP connection over a reader/writer."""

    def __init__(
        self,
        run: Runner,
        max_tunnels: int = MAX_TUNNELS,
        max_per_address: int = MAX_TUNNELS_PER_ADDRESS,
    ) -> None:
        self._run = run
        self._max = max_tunnels
        self._max_per_address = max_per_address
        self._open: dict[str, _Tunnel] = {}

    def __len__(self) -> int:
        return len(self._open)

    def refuse_get(self, cookie: str | None, host: str = "") -> tuple[int, str] | None:
        """(HTTP status, reason) when a GET from ``host`` cannot open a tunnel."""
        if cookie is None or not _COOKIE_RE.fullmatch(cookie):
            return 400, "x-sessioncookie missing or invalid"
        if cookie in self._open:
            return 409, "x-sessioncookie already in use"
        if len(self._open) >= self._max:
            return 503, "too many RTSP tunnels"
        if sum(t.host == host for t in self._open.values()) >= self._max_per_address:
            return 503, "too many RTSP tunnels from this address"
        return None

    def refuse_post(self, cookie: str | None) -> tuple[int, str] | None:
        """(HTTP status, reason) when a POST has no tunnel to feed."""
        if cookie is None or not _COOKIE_RE.fullmatch(cookie):
            return 400, "x-sessioncookie missing or invalid"
        if cookie not in self._open:
            return 400, "no tunnel GET for this x-sessioncookie"
        return None

    async def serve_get(self, cookie: str, transport: asyncio.Transport) -> None:
        """Answer the GET and run the tunnel's RTSP connection on it until it ends."""
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        if self.refuse_get(cookie, host) is not None:
            raise ValueError("tunnel GET refused")
        tunnel = self._open[cookie] = _Tunnel(host, f"{host}:{peer[1]}" if peer else "?")
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            transport.write(_GET_ANSWER)
            transport.set_protocol(_GetProtocol(tunnel.reader, closed))
            if not transport.is_reading():
                transport.resume_reading()
            await self._run(tunnel.reader, TunnelWriter(transport, closed))
        finally:
            if self._open.get(cookie) is tunnel:
                del self._open[cookie]
            tunnel.close()
            transport.close()

    async def serve_http(
        self,
        first: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout_s: float,
    ) -> None:
        """A tunnel's GET or POST on a socket read with a stream reader (the RTSP port's):
        ``first`` is what was read, the rest of the head must come within ``timeout_s``."""
        data, answer = first, b""
        try:
            while b"\r\n\r\n" not in data and len(data) <= MAX_HTTP_HEAD:
                more = await asyncio.wait_for(reader.read(READ_CHUNK), timeout_s)
                if not more:
                    return
                data += more
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep or len(head) > MAX_HTTP_HEAD:
                answer = http_error(431, "request head too large")
                return
            try:
                method, fields = parse_http_head(head)
            except ValueError as exc:
                answer = http_error(400, str(exc))
                return
            cookie = fields.get("x-sessioncookie")
            peer = writer.get_extra_info("peername")
            host = str(peer[0]) if peer else ""
            post = method == "POST"
            refused = self.refuse_post(cookie) if post else self.refuse_get(cookie, host)
            if refused is not None:
                answer = http_error(*refused)
                return
            assert cookie is not None
            transport = cast(asyncio.Transport, writer.transport)
            if not post:
                await self.serve_get(cookie, transport)
            else:
                try:
                    await self.serve_post_stream(cookie, reader, transport, body)
                except ValueError as exc:
                    answer = http_error(400, str(exc))
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("RTSP tunnel on the RTSP port: %s", exc)
        finally:
            if answer and not writer.transport.is_closing():
                writer.write(answer)
            writer.close()

    async def serve_post_stream(
        self, cookie: str, reader: _Reader, transport: asyncio.Transport, body: bytes
    ) -> None:
        """:meth:`serve_post` for a POST whose socket is read with a stream reader (the RTSP
        port's): the body is read from ``reader`` until it ends or stops being base64."""
        tunnel = self._open.get(cookie)
        if tunnel is None:
            raise ValueError("no tunnel for this x-sessioncookie")
        tunnel.new_post(transport)
        data = body  # empty when the head came alone: the body follows
        while True:
            tunnel.feed(data)
            if tunnel.post is not transport:
                return  # the tunnel ended or a newer POST took over
            data = await reader.read(READ_CHUNK)
            if not data:
                return  # the client closed the POST

    async def serve_post(self, cookie: str, transport: asyncio.Transport, body: bytes) -> None:
        """Feed the POST's body (``body``: what was read with its headers) to the tunnel
        until the POST connection or the tunnel ends. ValueError: ``body`` is not base64
        (nothing was taken over: answer 400)."""
        tunnel = self._open.get(cookie)
        if tunnel is None:
            raise ValueError("no tunnel for this x-sessioncookie")
        tunnel.new_post(transport)
        tunnel.feed(body)  # before the hand-over: an error is still an ordinary answer
        protocol = _PostProtocol(tunnel, transport)
        transport.set_protocol(protocol)
        if not transport.is_reading():
            transport.resume_reading()
        await protocol.done
