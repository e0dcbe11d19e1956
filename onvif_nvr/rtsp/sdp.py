"""Session descriptions (SDP, RFC 8866 / 4566) as DESCRIBE carries them, with the codec
parameters of RFC 6184 (H.264), RFC 7798 (H.265) and RFC 3640 (AAC), and builders for the
descriptions the RTSP server sends.

Sans-IO: ``SessionDescription.parse(text)`` / ``str(description)`` (CRLF line ends).

Parsing is lenient where cameras are known to be sloppy: LF-only or CR-only line ends,
trailing spaces and NULs, blank lines, a missing ``v=``/``o=``/``s=``/``t=`` line, an ``o=``
line with too few fields, a ``b=`` line without a number, unknown line types (kept). It raises
``ValueError`` with a fixed message where the structure is broken: a line that is not
``<letter>=<value>``, a non-numeric version, a media line without formats or with a
non-numeric port, a connection line without an address.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

from onvif_nvr.media.units import AudioParameters

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 static payload types: encoding, clock rate, channels.
_STATIC_PAYLOAD_TYPES = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    18: ("G729", 8000, 1),
    26: ("JPEG", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# RFC 8866 §5: the order of the session-level lines (unknown types go just before a=).
_SESSION_ORDER = {letter: rank for rank, letter in enumerate("vosiuepcbtrzk")}


class RtpMap(NamedTuple):
    encoding: str  # as the description spells it, e.g. "H264", "MPEG4-GENERIC", "PCMU"
    clock_rate: int
    channels: int = 1


@dataclasses.dataclass(slots=True)
class Origin:
    """The ``o=`` line, fields kept as text (session ids overflow 64 bits on some cameras)."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    unicast_address: str = "0.0.0.0"

    def __str__(self) -> str:
        return " ".join(
            (
                self.username,
                self.session_id,
                self.session_version,
                self.nettype,
                self.addrtype,
                self.unicast_address,
            )
        )


@dataclasses.dataclass(slots=True)
class Connection:
    """The ``c=`` line; ``address`` keeps any ``/ttl`` or ``/count`` suffix."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


Attribute = tuple[str, str | None]


class _Attributes:
    """Attribute look-ups shared by the session and media levels (names compare
    case-insensitively: cameras write ``a=Control:`` too)."""

    __slots__ = ()
    attributes: list[Attribute]

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name``; None when absent or a flag without value."""
        name = name.lower()
        for key, value in self.attributes:
            if key.lower() == name:
                return value
        return None

    def attributes_named(self, name: str) -> list[str | None]:
        name = name.lower()
        return [value for key, value in self.attributes if key.lower() == name]

    def has_attribute(self, name: str) -> bool:
        name = name.lower()
        return any(key.lower() == name for key, _ in self.attributes)

    @property
    def control(self) -> str | None:
        return self.attribute("control")

    @property
    def direction(self) -> str | None:
        """The direction attribute given at this level, if any."""
        for key, _ in self.attributes:
            if key.lower() in DIRECTIONS:
                return key.lower()
        return None


@dataclasses.dataclass(slots=True)
class MediaDescription(_Attributes):
    """One ``m=`` section. ``formats`` are payload types (ints where numeric)."""

    media: str
    port: int
    proto: str
    formats: list[int | str]
    port_count: int = 1
    connection: Connection | None = None
    #: ``b=<type>:<kbit/s>`` lines, e.g. ``("AS", 5000)``.
    bandwidths: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    attributes: list[Attribute] = dataclasses.field(default_factory=list)
    #: Other lines (``i=``, ``k=``, unknown types, unparseable ``b=``) as ``(type, value)``.
    other: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """``a=rtpmap`` for the payload type, else the RFC 3551 static assignment."""
        prefix = f"{payload_type} "
        for value in self.attributes_named("rtpmap"):
            if value is None or not value.startswith(prefix):
                continue
            parts = value[len(prefix) :].strip().split("/")
            try:
                clock_rate = int(parts[1])
                channels = int(parts[2]) if len(parts) > 2 and parts[2] else 1
            except (IndexError, ValueError):
                break  # unusable rtpmap: fall back to the static table
            return RtpMap(parts[0], clock_rate, channels)
        static = _STATIC_PAYLOAD_TYPES.get(payload_type)
        return RtpMap(*static) if static else None

    def fmtp(self, payload_type: int) -> dict[str, str]:
        """``a=fmtp`` parameters for the payload type, keys lower-cased, values as written."""
        prefix = f"{payload_type} "
        for value in self.attributes_named("fmtp"):
            if value is not None and value.startswith(prefix):
                return parse_fmtp(value[len(prefix) :])
        return {}

    @property
    def onvif_track(self) -> str | None:
        """ONVIF replay track token (``a=x-onvif-track``)."""
        return self.attribute("x-onvif-track")

    @property
    def framerate(self) -> float | None:
        try:
            rate = float(self.attribute("framerate") or "nan")
        except ValueError:
            return None
        return rate if 0 < rate < 1000 else None  # also rejects nan and inf

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count != 1 else str(self.port)
        formats = " ".join(str(f) for f in self.formats)
        lines = [f"m={self.media} {port} {self.proto} {formats}"]
        lines += [f"{t}={v}" for t, v in self.other if t == "i"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={t}:{v}" for t, v in self.bandwidths]
        lines += [f"{t}={v}" for t, v in self.other if t != "i"]
        lines += [_attribute_line(name, value) for name, value in self.attributes]
        return "\r\n".join(lines) + "\r\n"


@dataclasses.dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole description: what DESCRIBE returns (client) or answers (server). The defaults
    make a valid server description once ``media`` is filled in."""

    version: int = 0
    origin: Origin = dataclasses.field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    #: ``t=<start> <stop>`` lines (NTP seconds; ``(0, 0)`` is an unbounded session).
    timing: list[tuple[int, int]] = dataclasses.field(default_factory=lambda: [(0, 0)])
    bandwidths: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    attributes: list[Attribute] = dataclasses.field(default_factory=list)
    media: list[MediaDescription] = dataclasses.field(default_factory=list)
    #: Other session lines (``i= u= e= p= r= z= k=``, unknown types) as ``(type, value)``.
    other: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        session = cls(timing=[])
        seen: set[str] = set()
        media: MediaDescription | None = None
        for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            line = raw.strip(" \t\x00")
            if not line:
                continue
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise ValueError(f"SDP line is not <type>=<value>: {line[:40]!r}")
            kind, value = line[0], line[2:].strip()
            if kind == "m":
                media = _parse_media_line(value)
                session.media.append(media)
            elif kind == "a":
                name, sep, attr_value = value.partition(":")
                attribute = (name.strip(), attr_value.strip() if sep else None)
                (media or session).attributes.append(attribute)
            elif kind == "c":
                (media or session).connection = _parse_connection(value)
            elif kind == "b":
                bwtype, _, bandwidth = value.partition(":")
                if _is_number(bandwidth.strip()):
                    (media or session).bandwidths.append((bwtype.strip(), int(bandwidth)))
                else:
                    (media or session).other.append(("b", value))
            elif media is not None:
                media.other.append((kind, value))
            elif kind == "v":
                try:
                    session.version = int(value)
                except ValueError:
                    raise ValueError("SDP version is not a number") from None
            elif kind == "o" and "o" not in seen:
                fields = value.split()
                # Sloppy origins: too few fields are padded, a username with spaces joined.
                fields = [" ".join(fields[:-5])] + fields[-5:] if len(fields) > 6 else fields
                fields += ["-", "0", "0", "IN", "IP4", "0.0.0.0"][len(fields) :]
                session.origin = Origin(*fields)
            elif kind == "s" and "s" not in seen:
                session.session_name = value or "-"
            elif kind == "t":
                start, _, stop = value.partition(" ")
                try:
                    session.timing.append((int(start), int(stop)))
                except ValueError:
                    session.other.append(("t", value))
            else:
                session.other.append((kind, value))
            seen.add(kind)
        if not session.timing and not any(t == "t" for t, _ in session.other):
            session.timing.append((0, 0))
        # Keep the order serialization uses, so that parse(str(d)) == d holds.
        session.other.sort(key=lambda line: _SESSION_ORDER.get(line[0], len(_SESSION_ORDER)))
        for media_description in session.media:
            media_description.other.sort(key=lambda line: line[0] != "i")
        return session

    def effective_direction(self, media: MediaDescription) -> str:
        """The media's direction: its own attribute, else the session's, else sendrecv."""
        return media.direction or self.direction or "sendrecv"

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        tail: list[tuple[int, str]] = [
            (_SESSION_ORDER.get(t, len(_SESSION_ORDER)), f"{t}={v}") for t, v in self.other
        ]
        if self.connection is not None:
            tail.append((_SESSION_ORDER["c"], f"c={self.connection}"))
        tail += [(_SESSION_ORDER["b"], f"b={t}:{v}") for t, v in self.bandwidths]
        tail += [(_SESSION_ORDER["t"], f"t={start} {stop}") for start, stop in self.timing]
        tail.sort(key=lambda item: item[0])  # stable: keeps the order within a line type
        lines += [line for _, line in tail]
        lines += [_attribute_line(name, value) for name, value in self.attributes]
        return "\r\n".join(lines) + "\r\n" + "".join(str(m) for m in self.media)

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # "²".isdigit() is True, int("²") fails


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _parse_media_line(value: str) -> MediaDescription:
    fields = value.split()
    if len(fields) < 3:
        raise ValueError("SDP media line is incomplete")
    if len(fields) < 4:
        raise ValueError("SDP media line has no formats")
    port_text, _, count_text = fields[1].partition("/")
    if not _is_number(port_text) or not (_is_number(count_text) or not count_text):
        raise ValueError("SDP media line has invalid port")
    formats: list[int | str] = [int(f) if _is_number(f) else f for f in fields[3:]]
    port_count = int(count_text) if count_text else 1
    return MediaDescription(fields[0], int(port_text), fields[2], formats, port_count)


def _parse_connection(value: str) -> Connection:
    fields = value.split()
    if len(fields) < 3:
        raise ValueError("SDP connection line is invalid")
    return Connection(fields[0], fields[1], " ".join(fields[2:]))


def parse_fmtp(text: str) -> dict[str, str]:
    """``key=value;key=value`` parameters: keys lower-cased, values kept (a bare key maps to
    ""); stray spaces and empty entries are tolerated."""
    params: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key:
            params[key] = value.strip()
    return params


def resolve_control_url(base_url: str, control: str | None) -> str:
    """The URL to SETUP/PLAY for a control attribute (RFC 2326 C.1.1). Relative controls are
    appended to the base with a "/" the way live555 and ffmpeg do, since cameras rely on that
    rather than on RFC 3986 resolution (``rtsp://cam/live`` + ``track1``)."""
    if not control or control == "*":
        return base_url
    if "://" in control:
        return control
    return base_url + control if base_url.endswith("/") else f"{base_url}/{control}"


# --- Codec parameters -----------------------------------------------------------------------


def _decode_base64_list(value: str) -> tuple[bytes, ...]:
    """Comma-separated base64 NAL units, tolerant of whitespace, missing or extra padding
    and the URL-safe alphabet; entries that still do not decode are skipped."""
    units = []
    for entry in value.split(","):
        text = "".join(entry.split()).rstrip("=").replace("-", "+").replace("_", "/")
        if not text:
            continue
        try:
            unit = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            continue
        if unit:
            units.append(unit)
    return tuple(units)


def h264_parameter_sets(fmtp: dict[str, str]) -> tuple[bytes, ...]:
    """SPS and PPS NAL units from ``sprop-parameter-sets`` (RFC 6184), in the given order."""
    return _decode_base64_list(fmtp.get("sprop-parameter-sets", ""))


def h265_parameter_sets(fmtp: dict[str, str]) -> tuple[bytes, ...]:
    """VPS, SPS and PPS NAL units from ``sprop-vps``/``sprop-sps``/``sprop-pps`` (RFC 7798)."""
    return tuple(
        unit
        for key in ("sprop-vps", "sprop-sps", "sprop-pps")
        for unit in _decode_base64_list(fmtp.get(key, ""))
    )


def aac_config(fmtp: dict[str, str]) -> bytes:
    """The AudioSpecificConfig from ``config=`` (hex) of mpeg4-generic; b"" when absent."""
    try:
        return bytes.fromhex(fmtp.get("config", ""))
    except ValueError:
        raise ValueError("SDP fmtp config is not hex") from None


class AuHeaderLengths(NamedTuple):
    """RFC 3640 AU-header field sizes in bits."""

    size_length: int
    index_length: int
    index_delta_length: int


def aac_au_header_lengths(fmtp: dict[str, str]) -> AuHeaderLengths:
    """``sizeLength``/``indexLength``/``indexDeltaLength``. Missing values default to 0
    (RFC 3640), or to 13/3/3 in mode AAC-hbr, which fixes them and some cameras omit them."""
    hbr = fmtp.get("mode", "").lower() == "aac-hbr"
    lengths = []
    for key, hbr_default in (("sizelength", 13), ("indexlength", 3), ("indexdeltalength", 3)):
        value = fmtp.get(key, "")
        if not value:
            lengths.append(hbr_default if hbr else 0)
        elif _is_number(value):
            lengths.append(int(value))
        else:
            raise ValueError(f"SDP fmtp {key} is not a number")
    return AuHeaderLengths(*lengths)


def audio_parameters(media: MediaDescription, payload_type: int) -> AudioParameters | None:
    """Shared-vocabulary parameters of an AAC, G.711 or Opus payload type, else None."""
    rtpmap = media.rtpmap(payload_type)
    if rtpmap is None:
        return None
    encoding = rtpmap.encoding.upper()
    if encoding == "MPEG4-GENERIC":
        config = aac_config(media.fmtp(payload_type))
        return AudioParameters("AAC", rtpmap.clock_rate, rtpmap.channels, config)
    if encoding in ("PCMU", "PCMA", "OPUS"):
        return AudioParameters(encoding, rtpmap.clock_rate, rtpmap.channels)
    return None


# --- Builders for the RTSP server -----------------------------------------------------------


def _b64(unit: bytes) -> str:
    return base64.b64encode(unit).decode("ascii")


def _media(
    kind: str, payload_type: int, control: str, rtpmap: str, fmtp: str | None
) -> MediaDescription:
    attributes: list[Attribute] = [("rtpmap", f"{payload_type} {rtpmap}")]
    if fmtp is not None:
        attributes.append(("fmtp", f"{payload_type} {fmtp}"))
    attributes.append(("control", control))
    return MediaDescription(kind, 0, "RTP/AVP", [payload_type], attributes=attributes)


def video_media_h264(
    payload_type: int,
    control: str,
    parameter_sets: Sequence[bytes],
    profile_level_id: str | None = None,
    packetization_mode: int = 1,
) -> MediaDescription:
    """An H.264 media section; ``profile_level_id`` defaults to bytes 1-3 of the SPS."""
    if profile_level_id is None:
        sps = next((u for u in parameter_sets if u and u[0] & 0x1F == 7 and len(u) >= 4), None)
        profile_level_id = sps[1:4].hex() if sps else None
    params = [f"packetization-mode={packetization_mode}"]
    if profile_level_id:
        params.append(f"profile-level-id={profile_level_id}")
    if parameter_sets:
        params.append("sprop-parameter-sets=" + ",".join(_b64(u) for u in parameter_sets))
    return _media("video", payload_type, control, "H264/90000", ";".join(params))


def video_media_h265(
    payload_type: int, control: str, parameter_sets: Sequence[bytes]
) -> MediaDescription:
    """An H.265 media section; parameter sets are sorted into sprop-vps/-sps/-pps by their
    NAL unit type (32/33/34)."""
    params = []
    for nal_type, key in ((32, "sprop-vps"), (33, "sprop-sps"), (34, "sprop-pps")):
        units = [u for u in parameter_sets if u and (u[0] >> 1) & 0x3F == nal_type]
        if units:
            params.append(f"{key}=" + ",".join(_b64(u) for u in units))
    return _media("video", payload_type, control, "H265/90000", ";".join(params) or None)


def audio_media_aac(
    payload_type: int, control: str, sample_rate: int, channels: int, config: bytes
) -> MediaDescription:
    """An AAC (mpeg4-generic, AAC-hbr) media section with the AudioSpecificConfig."""
    fmtp = (
        "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
        f"indexdeltalength=3;config={config.hex()}"
    )
    return _media("audio", payload_type, control, f"MPEG4-GENERIC/{sample_rate}/{channels}", fmtp)


def audio_media_pcm(
    payload_type: int, control: str, codec: str = "PCMU", sample_rate: int = 8000, channels: int = 1
) -> MediaDescription:
    """A G.711 media section (``codec`` "PCMU" or "PCMA"); static PT 0/8 still get an
    rtpmap, which every client accepts."""
    if codec not in ("PCMU", "PCMA"):
        raise ValueError("PCM codec must be PCMU or PCMA")
    rtpmap = f"{codec}/{sample_rate}" + (f"/{channels}" if channels != 1 else "")
    return _media("audio", payload_type, control, rtpmap, None)


def metadata_media_onvif(payload_type: int, control: str) -> MediaDescription:
    """An ONVIF metadata stream section (``vnd.onvif.metadata/90000``)."""
    return _media("application", payload_type, control, "vnd.onvif.metadata/90000", None)


def audio_media_opus(payload_type: int, control: str, channels: int = 2) -> MediaDescription:
    """An Opus media section (RFC 7587: always ``opus/48000/2``; ``sprop-stereo`` tells
    whether the sender sends stereo)."""
    fmtp = f"sprop-stereo={1 if channels > 1 else 0}"
    return _media("audio", payload_type, control, "opus/48000/2", fmtp)


def video_media_jpeg(control: str, width: int, height: int) -> MediaDescription:
    """A JPEG (RFC 2435, static payload type 26) media section. The size is also given as
    ``framesize`` (RFC 6064; FFmpeg, GStreamer) and ``x-dimensions`` (live555, VLC), for
    players that set up their decoder before the first picture."""
    section = _media("video", 26, control, "JPEG/90000", None)
    section.attributes.insert(1, ("framesize", f"26 {width}-{height}"))
    section.attributes.insert(2, ("x-dimensions", f"{width},{height}"))
    return section
