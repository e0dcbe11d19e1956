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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    """

    def __init__(
        self,
        role: Literal["client", "server"],
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_header_lines: int = MAX_HEADER_LINES,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError("RTSP parser role must be 'client' or 'server'")
        self.role = role
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


# ---- header values -------------------------------------------------------------------------


def _split(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double-quoted strings (backslash escapes honoured)."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _unquote(value: str) -> str:
    value = value.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


_PAIR_RE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
_PROTOCOL_RE = re.compile(r"[A-Z0-9.+\-]+/[A-Z0-9.+\-]+(?:/[A-Z0-9.+\-]+)?")


@dataclass
class TransportSpec:
    """One transport-spec of a Transport header (RFC 2326 §12.39).

    Port and channel pairs are 1- or 2-tuples (``interleaved=0`` vs ``interleaved=0-1``);
    ``delivery`` is None when neither unicast nor multicast was given; a flag-only
    ``destination`` is "". Parameters not modelled here stay in ``extra``, in order.
    """

    protocol: str = "RTP/AVP"
    delivery: Literal["unicast", "multicast"] | None = "unicast"
    destination: str | None = None
    source: str | None = None
    interleaved: tuple[int, ...] | None = None
    client_port: tuple[int, ...] | None = None
    server_port: tuple[int, ...] | None = None
    port: tuple[int, ...] | None = None
    ttl: int | None = None
    ssrc: int | None = None
    mode: str | None = None
    extra: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def lower_transport(self) -> str:
        """The lower transport: "TCP", or "UDP" (the RFC 2326 default) when none is named."""
        parts = self.protocol.split("/")
        return parts[2] if len(parts) == 3 else "UDP"


def parse_transport(value: str) -> list[TransportSpec]:
    specs = []
    for item in _split(value, ","):
        params = [p.strip(" \t") for p in _split(item, ";")]
        if not params[0]:
            if any(params):
                raise ValueError("Transport has invalid protocol")
            continue
        protocol = params[0].upper()
        if not _PROTOCOL_RE.fullmatch(protocol):
            raise ValueError("Transport has invalid protocol")
        spec = TransportSpec(protocol=protocol, delivery=None)
        for param in params[1:]:
            raw_name, eq, raw = param.partition("=")
            name, raw = raw_name.strip(" \t").lower(), raw.strip(" \t")
            if name == "unicast":
                spec.delivery = "unicast"
            elif name == "multicast":
                spec.delivery = "multicast"
            elif name in ("interleaved", "client_port", "server_port", "port"):
                m = _PAIR_RE.fullmatch(_unquote(raw))
                limit = 255 if name == "interleaved" else 65535
                pair = tuple(int(g) for g in m.groups() if g is not None) if m else ()
                if not pair or max(pair) > limit:
                    raise ValueError(f"Transport has invalid {name}")
                setattr(spec, name, pair)
            elif name == "ttl":
                if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and int(raw) <= 255):
                    raise ValueError("Transport has invalid ttl")
                spec.ttl = int(raw)
            elif name == "ssrc":
                ssrc = _unquote(raw)
                if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", ssrc):
                    raise ValueError("Transport has invalid ssrc")
                spec.ssrc = int(ssrc, 16)
            elif name in ("destination", "source", "mode"):
                setattr(spec, name, _unquote(raw))
            elif param:
                spec.extra.append((raw_name.strip(" \t"), raw if eq else None))
        specs.append(spec)
    if not specs:
        raise ValueError("Transport header is empty")
    return specs


def format_transport(specs: Iterable[TransportSpec]) -> str:
    out = []
    for s in specs:
        parts = [s.protocol]
        if s.delivery:
            parts.append(s.delivery)
        for name in ("destination", "source"):
            text = getattr(s, name)
            if text is not None:
                parts.append(f"{name}={text}" if text else name)
        for name in ("interleaved", "client_port", "server_port", "port"):
            pair = getattr(s, name)
            if pair is not None:
                parts.append(f"{name}=" + "-".join(str(p) for p in pair))
        if s.ttl is not None:
            parts.append(f"ttl={s.ttl}")
        if s.ssrc is not None:
            parts.append(f"ssrc={s.ssrc:08X}")
        if s.mode is not None:
            parts.append(f'mode="{s.mode}"')
        parts.extend(n if v is None else f"{n}={v}" for n, v in s.extra)
        out.append(";".join(parts))
    text = ",".join(out)
    if not text or _CTL_RE.search(text):
        raise ValueError("Transport cannot be formatted")
    return text


_SESSION_ID_RE = re.compile(r"[!#-+\--:<-~]+")  # visible ASCII except '"', ',' and ';'


@dataclass(frozen=True)
class SessionHeader:
    """A Session header: the id and the timeout the server announced (RFC 2326 §12.37)."""

    id: str
    timeout_s: int | None = None


def parse_session(value: str) -> SessionHeader:
    session_id, *params = value.split(";")
    session_id = session_id.strip(" \t")
    if not _SESSION_ID_RE.fullmatch(session_id):
        raise ValueError("Session header has invalid id")
    timeout_s = None
    for param in params:
        name, _, raw = param.partition("=")
        if name.strip(" \t").lower() == "timeout":
            raw = raw.strip(" \t")
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
                raise ValueError("Session header has invalid timeout")
            timeout_s = int(raw)
    return SessionHeader(session_id, timeout_s)


def format_session(session: SessionHeader) -> str:
    if not _SESSION_ID_RE.fullmatch(session.id):
        raise ValueError("Session header has invalid id")
    return session.id if session.timeout_s is None else f"{session.id};timeout={session.timeout_s}"


@dataclass(frozen=True)
class NptRange:
    """``npt=`` range; offsets in nanoseconds. ``now=True`` is the "now" start (live)."""

    start_ns: int | None = 0
    end_ns: int | None = None
    now: bool = False


@dataclass(frozen=True)
class ClockRange:
    """``clock=`` range (absolute UTC, the ONVIF replay form). Both None: bare ``clock``.

    A start after the end is valid: ONVIF reverse replay (Scale < 0) uses decreasing ranges.
    """

    start_wall_ns: int | None = None
    end_wall_ns: int | None = None


_NPT_RE = re.compile(r"(?:(\d{1,9}):([0-5]?\d):|)(\d{1,12})(?:\.(\d*))?")
_CLOCK_RE = re.compile(r"(\d{4})(\d{2})(\d{2})[Tt](\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?[Zz]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _fraction_ns(digits: str | None) -> int:
    # Digits past nanoseconds are truncated: there is no finer unit to keep them in.
    return int((digits or "")[:9].ljust(9, "0"))


def _parse_npt(text: str) -> int:
    m = _NPT_RE.fullmatch(text)
    if m is None or (m.group(1) is not None and int(m.group(3)) >= 60):
        raise ValueError("Range npt time is invalid")
    hours, minutes, seconds, frac = m.groups()
    total_s = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds)
    return total_s * 1_000_000_000 + _fraction_ns(frac)


def _parse_clock(text: str) -> int:
    m = _CLOCK_RE.fullmatch(text)
    if m is None:
        raise ValueError("Range clock time is invalid")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        instant = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # month 13, 25 o'clock, leap seconds
        raise ValueError("Range clock time is invalid") from None
    delta = instant - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + _fraction_ns(m.group(7))


def _format_seconds_fraction(frac_ns: int) -> str:
    # At least milliseconds (what cameras and the ONVIF examples use), more only if needed.
    return "." + f"{frac_ns:09d}".rstrip("0").ljust(3, "0")


def _format_npt(offset_ns: int) -> str:
    if offset_ns < 0:
        raise ValueError("Range npt time is negative")
    seconds, frac = divmod(offset_ns, 1_000_000_000)
    return f"{seconds}{_format_seconds_fraction(frac)}"


def _format_clock(wall_ns: int) -> str:
    seconds, frac = divmod(wall_ns, 1_000_000_000)
    t = _EPOCH + timedelta(seconds=seconds)
    return (
        f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}"
        f"{_format_seconds_fraction(frac)}Z"
    )


def parse_range(value: str) -> NptRange | ClockRange:
    """Parse a Range header (npt or clock; ``;time=`` and other parameters are ignored)."""
    spec = value.split(";", 1)[0].strip(" \t")
    unit, eq, times = spec.partition("=")
    unit = unit.strip(" \t").lower()
    if unit not in ("npt", "clock"):
        raise ValueError(f"unsupported Range unit {unit[:16]!r}")
    if unit == "clock" and not eq:
        return ClockRange()
    start, dash, end = times.strip(" \t").partition("-")
    if not dash or not (start or end):
        raise ValueError("Range is malformed")
    if unit == "clock":
        return ClockRange(
            _parse_clock(start) if start else None, _parse_clock(end) if end else None
        )
    if start == "now":
        return NptRange(None, _parse_npt(end) if end else None, now=True)
    return NptRange(_parse_npt(start) if start else None, _parse_npt(end) if end else None)


def format_range(value: NptRange | ClockRange) -> str:
    if isinstance(value, ClockRange):
        start_ns, end_ns = value.start_wall_ns, value.end_wall_ns
        if start_ns is None and end_ns is None:
            return "clock"
        start = "" if start_ns is None else _format_clock(start_ns)
        return f"clock={start}-{'' if end_ns is None else _format_clock(end_ns)}"
    if value.now:
        start = "now"
    elif value.start_ns is None:
        if value.end_ns is None:
            raise ValueError("Range is malformed")
        start = ""
    else:
        start = _format_npt(value.start_ns)
    return f"npt={start}-{'' if value.end_ns is None else _format_npt(value.end_ns)}"


@dataclass(frozen=True)
class RtpInfo:
    """One stream of an RTP-Info header (RFC 2326 §12.33): its first packet after PLAY."""

    url: str
    seq: int | None = None
    rtptime: int | None = None


_RTP_INFO_SPLIT_RE = re.compile(r",[ \t]*(?=url[ \t]*=)", re.IGNORECASE)
_RTP_INFO_URL_RE = re.compile(r"[ \t]*url[ \t]*=[ \t]*", re.IGNORECASE)
_RTP_INFO_PARAM_RE = re.compile(r";[ \t]*(?:seq|rtptime|ssrc)[ \t]*=", re.IGNORECASE)


def parse_rtp_info(value: str) -> list[RtpInfo]:
    """Parse RTP-Info; URLs may be relative (``url=trackID=1``): resolve them as controls."""
    infos = []
    # Split only before "url=": unquoted URLs may themselves contain commas.
    for entry in _RTP_INFO_SPLIT_RE.split(value):
        if not entry.strip(" \t,"):
            continue
        m = _RTP_INFO_URL_RE.match(entry)
        if m is None:
            raise ValueError("RTP-Info entry has no url")
        rest = entry[m.end() :]
        if rest.startswith('"'):  # RFC 7826 quotes the URL
            close = rest.find('"', 1)
            url, params = (rest[1:close], rest[close + 1 :]) if close > 0 else ("", "")
        else:
            p = _RTP_INFO_PARAM_RE.search(rest)
            url, params = (rest[: p.start()], rest[p.start() :]) if p else (rest, "")
        url = url.strip(" \t")
        if not url:
            raise ValueError("RTP-Info entry has no url")
        seq = rtptime = None
        for param in params.split(";"):
            name, _, raw = param.partition("=")
            name, raw = name.strip(" \t").lower(), raw.strip(" \t,")
            ok = raw.isascii() and raw.isdigit() and len(raw) <= 10
            if name == "seq":
                if not ok or int(raw) > 0xFFFF:
                    raise ValueError("RTP-Info seq is invalid")
                seq = int(raw)
            elif name == "rtptime":
                if not ok or int(raw) > 0xFFFFFFFF:
                    raise ValueError("RTP-Info rtptime is invalid")
                rtptime = int(raw)
        infos.append(RtpInfo(url, seq, rtptime))
    if not infos:
        raise ValueError("RTP-Info header is empty")
    return infos


def format_rtp_info(infos: Iterable[RtpInfo]) -> str:
    out = []
    for info in infos:
        if not info.url or _URI_BAD_RE.search(info.url):
            raise ValueError("RTP-Info url is empty or has whitespace")
        text = f"url={info.url}"
        if info.seq is not None:
            text += f";seq={info.seq}"
        if info.rtptime is not None:
            text += f";rtptime={info.rtptime}"
        out.append(text)
    return ",".join(out)


def parse_tokens(value: str) -> list[str]:
    """A comma-separated token list (Require, Proxy-Require, Unsupported, Public, Allow)."""
    tokens = []
    for part in value.split(","):
        token = part.strip(" \t")
        if not token:
            continue
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"invalid token {token[:40]!r} in list")
        tokens.append(token)
    return tokens


def format_tokens(tokens: Iterable[str]) -> str:
    tokens = list(tokens)
    for token in tokens:
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"invalid token {token[:40]!r} in list")
    return ", ".join(tokens)


_DECIMAL_RE = re.compile(r"[+-]?(?:\d{1,9}(?:\.\d{0,9})?|\.\d{1,9})")


def parse_scale(value: str) -> float:
    """Scale (RFC 2326 §12.34): playback rate and direction, e.g. -1.0 for ONVIF reverse."""
    text = value.strip(" \t")
    if not _DECIMAL_RE.fullmatch(text) or float(text) == 0:
        raise ValueError("Scale is invalid")
    return float(text)


def parse_speed(value: str) -> float:
    """Speed (RFC 2326 §12.35): delivery rate, positive."""
    text = value.strip(" \t")
    if not _DECIMAL_RE.fullmatch(text) or float(text) <= 0:
        raise ValueError("Speed is invalid")
    return float(text)


def _format_decimal(number: float, name: str) -> str:
    if not 0 < abs(number) < 1e9:
        raise ValueError(f"{name} is invalid")
    text = f"{number:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def format_scale(scale: float) -> str:
    return _format_decimal(scale, "Scale")


def format_speed(speed: float) -> str:
    if speed <= 0:
        raise ValueError("Speed is invalid")
    return _format_decimal(speed, "Speed")


def parse_content_base(value: str) -> str:
    url = value.strip(" \t")
    if not _ABSOLUTE_URL_RE.match(url) or _URI_BAD_RE.search(url):
        raise ValueError("Content-Base is not an absolute URL")
    return url


def control_base(request_uri: str, headers: Headers) -> str:
    """The base for an SDP's relative controls (RFC 2326 C.1.1): Content-Base, else
    Content-Location, else the DESCRIBE request URL."""
    for name in ("Content-Base", "Content-Location"):
        value = headers.get(name)
        if value and value.strip(" \t"):
            return resolve_control(request_uri, value.strip(" \t"))
    return request_uri


def resolve_control(base_uri: str, control: str) -> str:
    """The URL an SDP ``a=control:`` value names.

    * ``*`` (or empty): the base itself, the aggregate control URL.
    * an absolute URL (``rtsp://host/stream/track1``): used as is.
    * ``/path``: replaces the base's path, as RFC 3986 would.
    * anything else (``trackID=1``): appended to the base with exactly one ``/`` between them.
      RFC 3986 would drop the base's last segment when it has no trailing slash, but
      cameras (and live555, FFmpeg, GStreamer) append, and Dahua-style bases such as
      ``rtsp://h/cam/realmonitor?channel=1&subtype=0/`` only work as plain strings.
    """
    control = control.strip(" \t")
    if control in ("", "*"):
        return base_uri
    if _ABSOLUTE_URL_RE.match(control):
        return control
    if control.startswith("/"):
        m = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*", base_uri)
        return (m.group(0) if m else "") + control
    return base_uri + ("" if base_uri.endswith("/") else "/") + control


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
