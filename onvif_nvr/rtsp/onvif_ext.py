"""The ONVIF replay RTP header extension (Streaming §6.3, profile 0xABAC), sans-IO.

During replay the first RTP packet of every access unit carries, after the fixed header and
CSRC list (X bit set), the extension header ``0xABAC`` with a length of 3 words, then:

    word 0-1  NTP timestamp: the capture time of the access unit (RFC 1305, 32.32)
    word 2    C E D T mbz(4) | CSeq low byte | padding (16 bits, zero)

C: a clean point (keyframe); E: the last access unit of its track before a gap or the end
of the footage; D: follows a discontinuity in transmission (each GOP backward, the first
unit after an Immediate jump); T: the terminal unit of the track for this playback; CSeq:
the low byte of the CSeq of the PLAY that started the transmission. A JPEG header extension
may follow the three words in the same extension (length > 3, §6.3.2): kept as ``extra``.

:class:`OnvifReplayExtension` is the value (``parse`` / ``to_extension`` for an
:class:`~onvif_nvr.rtsp.rtp.RtpPacket`); the replay server's fast path builds the 16 bytes
with :func:`pack` and puts them into packets it has already built with :func:`insert`
(:func:`mark_access_unit` for the first packet of a unit).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from typing import ClassVar

from onvif_nvr.rtsp.rtp import Buffer, RtpPacket, wall_ns_to_ntp

ONVIF_REPLAY_PROFILE = 0xABAC
#: Words of the extension body (NTP timestamp, flags + CSeq + padding).
EXTENSION_WORDS = 3
_BODY = struct.Struct("!QBBxx")
#: Profile, length, body: what follows an RTP packet's CSRC list.
_WHOLE = struct.Struct("!HHQBBxx")
_C, _E, _D, _T = 0x80, 0x40, 0x20, 0x10


def _flags(clean_point: bool, end: bool, discontinuity: bool, terminal: bool) -> int:
    return (
        (_C if clean_point else 0)
        | (_E if end else 0)
        | (_D if discontinuity else 0)
        | (_T if terminal else 0)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class OnvifReplayExtension:
    """The replay extension of one access unit: capture wall time as NTP, and the C/E/D/T
    flags. ``cseq_low`` keeps the low 8 bits of the CSeq of the PLAY that started the data
    (a full CSeq may be passed; it is masked). ``extra`` holds the words after the three
    ONVIF words: the JPEG header extension when both are present (§6.3.2)."""

    PROFILE: ClassVar[int] = ONVIF_REPLAY_PROFILE

    ntp_timestamp: int
    clean_point: bool = False
    end: bool = False
    discontinuity: bool = False
    terminal: bool = False
    cseq_low: int = 0
    extra: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cseq_low", self.cseq_low & 0xFF)

    @classmethod
    def parse(cls, profile: int | None, data: Buffer) -> OnvifReplayExtension:
        """The extension from an RTP header extension's profile and body (without its
        4-byte header); the must-be-zero bits and the padding are ignored."""
        if profile != ONVIF_REPLAY_PROFILE:
            raise ValueError("RTP header extension is not the ONVIF replay extension")
        if len(data) < 4 * EXTENSION_WORDS:
            raise ValueError("ONVIF replay extension is shorter than 12 bytes")
        ntp_timestamp, flags, cseq_low = _BODY.unpack_from(data)
        return cls(
            ntp_timestamp,
            bool(flags & _C),
            bool(flags & _E),
            bool(flags & _D),
            bool(flags & _T),
            cseq_low,
            bytes(data[4 * EXTENSION_WORDS :]),
        )

    def to_extension(self) -> tuple[int, bytes]:
        """``(extension_profile, extension)`` for an ``RtpPacket``."""
        if not 0 <= self.ntp_timestamp < 1 << 64:
            raise ValueError("ONVIF replay NTP timestamp is out of range")
        if len(self.extra) % 4:
            raise ValueError("RTP header extension length is not a multiple of 4")
        flags = _flags(self.clean_point, self.end, self.discontinuity, self.terminal)
        body = _BODY.pack(self.ntp_timestamp, flags, self.cseq_low)
        return ONVIF_REPLAY_PROFILE, body + self.extra

    def __bytes__(self) -> bytes:
        """The whole header extension: profile, length in words, body."""
        profile, body = self.to_extension()
        return struct.pack("!HH", profile, len(body) // 4) + body


def onvif_replay_extension(packet: RtpPacket) -> OnvifReplayExtension | None:
    """The packet's ONVIF replay extension, or None when it carries none (or a short one)."""
    if packet.extension_profile != ONVIF_REPLAY_PROFILE or len(packet.extension) < 12:
        return None
    return OnvifReplayExtension.parse(packet.extension_profile, packet.extension)


def pack(
    wall_ns: int,
    *,
    clean_point: bool,
    end: bool = False,
    discontinuity: bool = False,
    terminal: bool = False,
    cseq: int = 0,
) -> bytes:
    """The 16 bytes of the extension (header included) for a unit captured at ``wall_ns``;
    ``cseq`` is the PLAY's CSeq (its low byte is sent)."""
    flags = _flags(clean_point, end, discontinuity, terminal)
    return _WHOLE.pack(ONVIF_REPLAY_PROFILE, EXTENSION_WORDS, wall_ns_to_ntp(wall_ns), flags,
                       cseq & 0xFF)  # fmt: skip


def insert(packet: Buffer, extension: bytes) -> bytes:
    """``packet`` (an RTP packet without a header extension) with ``extension`` (profile,
    length and body, as :func:`pack` makes it) after its CSRC list and the X bit set."""
    if len(packet) < 12:
        raise ValueError("RTP packet length is less than 12 bytes")
    first = packet[0]
    if first >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    if first & 0x10:
        raise ValueError("RTP packet already has a header extension")
    if len(extension) < 4 or len(extension) % 4:
        raise ValueError("RTP header extension length is not a multiple of 4")
    if (len(extension) - 4) // 4 != int.from_bytes(extension[2:4], "big"):
        raise ValueError("RTP header extension length field does not match its body")
    at = 12 + 4 * (first & 0x0F)
    if len(packet) < at:
        raise ValueError("RTP packet has truncated CSRC")
    return b"".join((bytes((first | 0x10,)), packet[1:at], extension, packet[at:]))


def mark_access_unit(packets: Sequence[bytes], extension: bytes) -> list[bytes]:
    """The RTP packets of one access unit with the extension in the first one (§6.3: "the
    replay header extension shall be present in the first packet of every access unit")."""
    if not packets:
        return []
    return [insert(packets[0], extension), *packets[1:]]


def parse_packet(data: Buffer) -> OnvifReplayExtension | None:
    """The replay extension of a raw RTP packet, or None when it carries none."""
    return onvif_replay_extension(RtpPacket.parse(data))
