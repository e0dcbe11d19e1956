"""RTSP messages (RFC 2326 RTSP/1.0, some RFC 7826 leniency) and their header values, sans-IO.

The NVR's RTSP client (ingest from cameras) and its RTSP server (live and ONVIF replay) both
feed the bytes of a TCP connection to a :class:`MessageParser` and write ``bytes(message)``.
Header values that carry structure have a ``parse_x(str)`` / ``format_x(obj) -> str`` pair.
Every malformed input raises ``ValueError`` with a fixed message (hostile text is never echoed
beyond a short, ``repr``-quoted excerpt).

Time units: ``NptRange`` offsets are integer nanoseconds (``start_ns``), ``ClockRange``
instants are ``wall_ns`` (nanoseconds since the Unix epoch, UTC); never floats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, overload

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_LINES = 100
VERSIONS = ("RTSP/1.0", "RTSP/2.0")

#: Reason phrases of RFC 2326 §7.1.1 for the codes the NVR sends or meets.
REASONS: dict[int, str] = {
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Time-out",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    458: "Parameter Is Read-Only",
    459: "Aggregate operation not allowed",
    460: "Only aggregate operation allowed",
    461: "Unsupported transport",
    462: "Destination unreachable",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Time-out",
    505: "RTSP Version not supported",
    551: "Option not supported",
}

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # HT is allowed in values
_URI_BAD_RE = re.compile(r"[\x00-\x20\x7f]")
_VERSION_LIKE_RE = re.compile(r"[A-Za-z]+/\d+\.\d+")
_END_OF_HEAD_RE = re.compile(rb"\n\r?\n")  # bare LF tolerated
_CSEQ_SNIFF_RE = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*(\d{1,9})[ \t]*\r?$")
_ABSOLUTE_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def _check_field(name: str, value: str) -> None:
    # Guards serialization against header injection as much as parsing against junk.
    if not _TOKEN_RE.fullmatch(name):
        raise ValueError("RTSP header has invalid name")
    if _CTL_RE.search(value):
        raise ValueError("RTSP header has control character")


class Headers:
    """Header fields: names compare case-insensitively, order and repeated fields are kept."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        self._fields: list[tuple[str, str]] = []
        if fields is not None:
            for name, value in fields.items() if isinstance(fields, Mapping) else fields:
                self.add(name, value)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``."""
        key = name.lower()
        for n, v in self._fields:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self._fields if n.lower() == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._fields)

    def add(self, name: str, value: str) -> None:
        _check_field(name, value)
        self._fields.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace all ``name`` fields by one, at the place of the first (or at the end)."""
        _check_field(name, value)
        key, placed = name.lower(), False
        out: list[tuple[str, str]] = []
        for n, v in self._fields:
            if n.lower() != key:
                out.append((n, v))
            elif not placed:
                out.append((name, value))
                placed = True
        if not placed:
            out.append((name, value))
        self._fields = out

    def remove(self, name: str) -> None:
        """Drop every ``name`` field (no error when there is none)."""
        key = name.lower()
        self._fields = [(n, v) for n, v in self._fields if n.lower() != key]

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def copy(self) -> Headers:
        new = Headers()
        new._fields = list(self._fields)
        return new

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._fields] == [
            (n.lower(), v) for n, v in other._fields
        ]

    def __repr__(self) -> str:
        # Basic credentials are a base64 password: keep them out of logs and tracebacks.
        shown = [
            (n, "<redacted>" if n.lower() in ("authorization", "proxy-authorization") else v)
            for n, v in self._fields
        ]
        return f"Headers({shown!r})"


def _cseq(headers: Headers) -> int:
    value = headers.get("CSeq")
    if value is None:
        raise ValueError("RTSP message has no CSeq")
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise ValueError("RTSP message has invalid CSeq")
    return int(value)


def _serialize(start: str, version: str, headers: Headers, body: bytes) -> bytes:
    if version not in VERSIONS:
        raise ValueError(f"unsupported RTSP version {version[:16]!r}")
    # Content-Length always follows the body, so a stale header cannot desync the peer.
    lines = [start]
    lines.extend(f"{n}: {v}" for n, v in headers.items() if n.lower() != "content-length")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(repr=False)
class Request:
    """An RTSP request; ``bytes(request)`` is its wire form."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "RTSP/1.0"

    @property
    def cseq(self) -> int:
        return _cseq(self.headers)

    def __bytes__(self) -> bytes:
        if not _TOKEN_RE.fullmatch(self.method):
            raise ValueError("RTSP method is not a token")
        if not self.uri or _URI_BAD_RE.search(self.uri):
            raise ValueError("RTSP request URI is empty or has whitespace")
        start = f"{self.method} {self.uri} {self.version}"
        return _serialize(start, self.version, self.headers, self.body)

    def __repr__(self) -> str:
        return (
            f"Request({self.method!r}, {redact_url(self.uri)!r}, {self.headers!r}, "
            f"body=<{len(self.body)} bytes>, version={self.version!r})"
        )


@dataclass
class Response:
    """An RTSP response; an empty ``reason`` is sent as the :data:`REASONS` phrase."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "RTSP/1.0"

    @property
    def cseq(self) -> int:
        return _cseq(self.headers)

    def __bytes__(self) -> bytes:
        if not 100 <= self.status <= 999:
            raise ValueError("RTSP status code out of range")
        reason = self.reason or REASONS.get(self.status, "")
        if _CTL_RE.search(reason):
            raise ValueError("RTSP reason phrase has control character")
        start = f"{self.version} {self.status} {reason}"
        return _serialize(start, self.version, self.headers, self.body)


@dataclass(frozen=True)
class Interleaved:
    """One ``$``-framed binary frame (RFC 2326 §10.12): RTP or RTCP on an interleaved channel."""

    channel: int
    payload: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.channel <= 255:
            raise ValueError("interleaved channel out of range")
        if len(self.payload) > 0xFFFF:
            raise ValueError("interleaved payload exceeds 65535 bytes")

    def __bytes__(self) -> bytes:
        return b"$" + bytes((self.channel,)) + len(self.payload).to_bytes(2, "big") + self.payload


Message: TypeAlias = Request | Response | Interleaved


class RtspParseError(ValueError):
    """A message the parser rejected.

    ``status`` is the response a server should answer with (400, 413 or 505), ``cseq`` the
    bad message's CSeq when it could be read (echo it in that response), ``messages`` the
    complete messages that preceded the bad one in the same :meth:`MessageParser.feed` call:
    handle them first, nothing else carries them.
    """

    def __init__(self, message: str, *, status: int = 400, discard_body: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.cseq: int | None = None
        self.messages: list[Message] = []
        self._discard_body = discard_body


class MessageParser:
    """Incremental parser for one RTSP connection's byte stream.

    ``role="server"`` reads requests and interleaved frames (RTCP receiver reports, back
    channel audio); a response is an error, as this server sends no requests of its own.
    ``role="client"`` reads responses, the requests a server may send (ANNOUNCE,
    GET_PARAMETER, SET_PARAMETER, REDIRECT, ...; any method, the client answers unknown
    ones with 501 itself) and interleaved frames.

    Input may be split at any byte. CR/LF between messages is skipped, bare LF line ends are
    accepted, obsolete header folding is joined with one space, a body is read by
    Content-Length (absent means none, RFC 2326 §4.3).

    Errors: :meth:`feed` raises :class:`RtspParseError`. The parser then refuses more input
    until the caller picks one of:

    * :meth:`skip_to_next_message` drops the bad message and parses what follows, so a
      server can answer 400 (with the error's ``cseq`` and ``status``) and keep the
      connection. What is dropped: a complete but bad header block, plus its body when its
      Content-Length was readable (a body over the limit is discarded as it arrives, never
      buffered); when the header block never ended (too long, or binary junk instead of a
      start line), everything up to and including the next empty line.
    * :meth:`reset` forgets all buffered input, e.g. before closing or reusing.

    A peer that keeps producing errors is out of sync: close the connection (the ingest
    reconnects rather than guessing where the next frame starts).

    ``frame_sink`` is the fast lane for interleaved frames (the bulk of a streaming
    connection): instead of a :class:`Interleaved` object per frame, the parser calls
    ``frame_sink(buffer, start, limit)`` when a ``$`` frame begins at ``start``; the sink
    consumes every complete consecutive frame it can from ``buffer[start:limit]`` and returns
    the offset of the first byte it did not consume (an incomplete frame or the start of a
    text message). It must consume at least the first frame when that frame is complete,
    must not keep references into ``buffer`` (release any memoryview before returning) and
    must not modify it. Frames then never appear in :meth:`feed`'s result; they reach the
    sink during :meth:`feed`, before the text messages that call returns (the order within
    each kind is kept).
    """

    def __init__(
        self,
        role: Literal["client", "server"],
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_header_lines: int = MAX_HEADER_LINES,
        frame_sink: Callable[[bytearray, int, int], int] | None = None,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError("RTSP parser role must be 'client' or 'server'")
        self.role = role
        self._frame_sink = frame_sink
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._max_header_lines = max_header_lines
        self.reset()

    def reset(self) -> None:
        """Forget all buffered input and any pending error."""
        self._buf = bytearray()
        self._scanned = 0  # bytes of the pending header block already searched for its end
        self._head: Request | Response | None = None  # parsed head waiting for its body
        self._body_length = 0
        self._discard_bytes = 0
        self._discard_head = False
        # After an error: (header bytes to drop or None if the head never ended, body bytes)
        self._failed: tuple[int | None, int] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete message held (a server times out requests that never end)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes from the connection; return the messages they complete, in order."""
        if self._failed is not None:
            raise ValueError("RTSP parser needs reset() or skip_to_next_message() after an error")
        self._buf += data
        return self._run()

    def skip_to_next_message(self) -> list[Message]:
        """Drop the message that caused the last error; return the messages after it."""
        if self._failed is None:
            raise ValueError("RTSP parser has no error to skip")
        head_bytes, body_bytes = self._failed
        self._failed = None
        self._scanned = 0
        if head_bytes is None:
            self._discard_head = True
        else:
            self._discard_bytes = head_bytes + body_bytes
        return self._run()

    def _run(self) -> list[Message]:
        out: list[Message] = []
        buf = self._buf
        pos = 0
        head_end: int | None = None
        try:
            while True:
                if self._discard_bytes:
                    n = min(self._discard_bytes, len(buf) - pos)
                    pos += n
                    self._discard_bytes -= n
                    if self._discard_bytes:
                        break
                if self._discard_head:
                    m = _END_OF_HEAD_RE.search(buf, pos)
                    if m is None:
                        pos = max(pos, len(buf) - 2)  # may hold the start of the empty line
                        break
                    pos = m.end()
                    self._discard_head = False
                if self._head is not None:
                    if len(buf) - pos < self._body_length:
                        break
                    self._head.body = bytes(buf[pos : pos + self._body_length])
                    pos += self._body_length
                    out.append(self._head)
                    self._head = None
                while pos < len(buf) and buf[pos] in b"\r\n":
                    pos += 1
                if pos == len(buf):
                    break
                first = buf[pos]
                if first == 0x24:  # '$'
                    if self._frame_sink is not None:
                        consumed = self._frame_sink(buf, pos, len(buf))
                        if consumed == pos:
                            break  # the frame is incomplete
                        pos = consumed
                        continue
                    if len(buf) - pos < 4:
                        break
                    end = pos + 4 + int.from_bytes(buf[pos + 2 : pos + 4], "big")
                    if end > len(buf):
                        break
                    out.append(Interleaved(buf[pos + 1], bytes(buf[pos + 4 : end])))
                    pos = end
                    continue
                if not (0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A):
                    # Methods and "RTSP/" start with a letter; anything else is a desync.
                    raise RtspParseError(f"RTSP message starts with invalid byte 0x{first:02x}")
                m = _END_OF_HEAD_RE.search(buf, pos + max(0, self._scanned - 2))
                if m is None:
                    self._scanned = len(buf) - pos
                    if self._scanned > self._max_header_bytes:
                        raise RtspParseError(f"RTSP headers exceed {self._max_header_bytes} bytes")
                    break
                self._scanned = 0
                head_end = m.end()
                if head_end - pos > self._max_header_bytes:
                    raise RtspParseError(f"RTSP headers exceed {self._max_header_bytes} bytes")
                head, length = self._parse_head(bytes(buf[pos : m.start()]))
                pos, head_end = m.end(), None
                if length:
                    self._head, self._body_length = head, length
                else:
                    out.append(head)
        except RtspParseError as exc:
            exc.messages = out
            limit = head_end if head_end is not None else pos + self._max_header_bytes
            sniffed = _CSEQ_SNIFF_RE.search(buf, pos, limit)
            exc.cseq = int(sniffed.group(1)) if sniffed else None
            self._scanned = 0
            self._failed = (None if head_end is None else head_end - pos, exc._discard_body)
            raise
        finally:
            del buf[:pos]
        return out

    def _parse_head(self, raw: bytes) -> tuple[Request | Response, int]:
        lines = raw.split(b"\n")
        if len(lines) - 1 > self._max_header_lines:
            raise RtspParseError(
                f"RTSP message has more than {self._max_header_lines} header lines"
            )
        fields: list[tuple[str, str]] = []
        for raw_line in lines[1:]:
            line = _decode(raw_line.removesuffix(b"\r"))
            if line[:1] in (" ", "\t"):  # obsolete folding (RFC 2326 allows LWS continuation)
                if not fields:
                    raise RtspParseError("RTSP header continuation without header")
                name, value = fields[-1]
                fields[-1] = (name, (value + " " + line.strip(" \t")).strip(" "))
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise RtspParseError("RTSP header line has no colon")
            name = name.strip(" \t")  # lenient: "CSeq : 1" is seen from old firmware
            if not _TOKEN_RE.fullmatch(name):
                raise RtspParseError("RTSP header has invalid name")
            fields.append((name, value.strip(" \t")))
        headers = Headers()
        for name, value in fields:
            if _CTL_RE.search(value):
                raise RtspParseError("RTSP header has control character")
            headers._fields.append((name, value))

        start = _decode(lines[0].removesuffix(b"\r"))
        head: Request | Response
        if start.startswith("RTSP/"):
            if self.role == "server":
                raise RtspParseError("RTSP response where a request was expected")
            version, _, rest = start.partition(" ")
            if version not in VERSIONS:
                raise RtspParseError(f"unsupported RTSP version {version[:16]!r}", status=505)
            code, _, reason = rest.strip(" ").partition(" ")
            if not (len(code) == 3 and code.isascii() and code.isdigit()) or code[0] == "0":
                raise RtspParseError("RTSP response has invalid status code")
            head = Response(int(code), reason.strip(" "), headers, version=version)
        else:
            parts = start.split(" ")
            if len(parts) != 3 or not _TOKEN_RE.fullmatch(parts[0]):
                raise RtspParseError("RTSP request line is malformed")
            method, uri, version = parts
            if version not in VERSIONS:
                if _VERSION_LIKE_RE.fullmatch(version):
                    raise RtspParseError(f"unsupported RTSP version {version[:16]!r}", status=505)
                raise RtspParseError("RTSP request line is malformed")
            if not uri or _URI_BAD_RE.search(uri):
                raise RtspParseError("RTSP request line is malformed")
            head = Request(method, uri, headers, version=version)

        lengths = headers.get_all("Content-Length")
        if not lengths:
            return head, 0
        if any(v != lengths[0] for v in lengths):
            raise RtspParseError("RTSP message has conflicting Content-Length")
        value = lengths[0]
        if not (value.isascii() and value.isdigit()) or len(value) > 15:
            raise RtspParseError("RTSP message has invalid Content-Length")
        length = int(value)
        if length > self._max_body_bytes:
            raise RtspParseError(
                f"RTSP body exceeds {self._max_body_bytes} bytes", status=413, discard_body=length
            )
        return head, length


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:  # camera firmware names in Latin-1 are common
        return line.decode("latin-1")


_SECRET_QUERY_RE = re.compile(r"([?&](?:password|passwd|pwd|pass)=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` fit for logs: user info removed, password-like query values masked."""
    scheme, sep, rest = url.partition("://")
    if sep:
        end = len(rest)
        for ch in "/?#":
            i = rest.find(ch)
            if i != -1:
                end = min(end, i)
        at = rest.rfind("@", 0, end)
        if at != -1:
            rest = rest[at + 1 :]
        elif ":" in rest[:end] and "@" in rest[end:]:
            # "user:pa/ss@host" (an unescaped '/', '?' or '#' in the password) cannot be told
            # from "host:554/a@b" (a path with '@'): mask rather than risk logging a password.
            rest = "***@" + rest[rest.find("@", end) + 1 :]
        url = f"{scheme}{sep}{rest}"
    return _SECRET_QUERY_RE.sub(r"\1***", url)
