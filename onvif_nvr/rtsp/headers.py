"""RTSP header values with structure, sans-IO: ``parse_x(str)`` / ``format_x(obj) -> str``.

Transport, Session, Range (npt and the ONVIF absolute ``clock=`` form), RTP-Info, token
lists, Scale/Speed, ONVIF replay's Frames / Rate-Control / Immediate, control URLs and URL
redaction. Malformed input raises ``ValueError``
with a fixed message. Time units: ``NptRange`` offsets are integer nanoseconds,
``ClockRange`` instants ``wall_ns``; never floats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from onvif_nvr.rtsp.message import (
    _ABSOLUTE_URL_RE,
    _CTL_RE,
    _TOKEN_RE,
    _URI_BAD_RE,
    Headers,
)


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


# -- ONVIF replay (Streaming §6.5) -------------------------------------------------------------
@dataclass(frozen=True)
class FramesSpec:
    """``Frames``: which frames a replay sends. ``intra`` may carry the minimum interval
    between intra frames on the recording's timeline (``intra/4000``)."""

    mode: Literal["all", "intra", "predicted"] = "all"
    interval_ms: int | None = None


_FRAMES_RE = re.compile(r"(all|predicted|intra)(?:/(\d{1,9}))?", re.IGNORECASE)


def parse_frames(value: str) -> FramesSpec:
    m = _FRAMES_RE.fullmatch(value.strip(" \t"))
    if m is None:
        raise ValueError("Frames is invalid")
    mode = m.group(1).lower()
    if m.group(2) is not None and mode != "intra":  # "shall NOT be present unless intra"
        raise ValueError("Frames is invalid")
    interval = int(m.group(2)) if m.group(2) is not None else None
    return FramesSpec(mode, interval)  # type: ignore[arg-type]


def format_frames(spec: FramesSpec) -> str:
    if spec.interval_ms is not None and spec.mode == "intra":
        return f"intra/{spec.interval_ms}"
    return spec.mode


def parse_yes_no(value: str, name: str) -> bool:
    """``Rate-Control`` and ``Immediate``: ``yes`` or ``no``."""
    text = value.strip(" \t").lower()
    if text not in ("yes", "no"):
        raise ValueError(f"{name} is invalid")
    return text == "yes"


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
