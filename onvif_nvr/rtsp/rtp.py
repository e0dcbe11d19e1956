"""RTP and RTCP packets (RFC 3550) and the receiver-side bookkeeping the ingest needs:
sequence tracking, interarrival jitter and a reorder buffer (the ONVIF replay header
extension: ``onvif_ext.py``).

Sans-IO: ``RtpPacket.parse(data)`` / ``bytes(packet)``, ``parse_rtcp(data)`` /
``build_compound(*packets)``. Malformed input raises ``ValueError`` with a fixed message; the
caller drops the packet (see STYLE.md habit 9).

Time units: ``timestamp``/``rtp_timestamp`` are 32-bit RTP clock ticks, ``ntp_timestamp`` is a
64-bit NTP timestamp (32.32 fixed point seconds since 1900-01-01), ``wall_ns`` is nanoseconds
since the Unix epoch.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview

_RTP_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_CSRC = tuple(struct.Struct(f"!{n}I") for n in range(32))  # CSRC list, BYE sources


@dataclasses.dataclass(slots=True)
class RtpPacket:
    """One RTP packet. ``extension`` is the header extension body (without its 4-byte
    profile/length header); ``padding`` is the number of padding octets, the count octet
    included (0: no padding)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0

    @classmethod
    def parse(cls, data: Buffer) -> RtpPacket:
        """Parse one packet. ``data`` may be a memoryview into a receive buffer: only the
        payload (and the extension, if any) are copied out of it."""
        length = len(data)
        if length < 12:
            raise ValueError("RTP packet length is less than 12 bytes")
        first, second, seq, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise ValueError("RTP packet has invalid version")
        pos = 12
        csrc: tuple[int, ...] = ()
        if cc := first & 0x0F:
            pos += 4 * cc
            if length < pos:
                raise ValueError("RTP packet has truncated CSRC")
            csrc = _CSRC[cc].unpack_from(data, 12)
        profile = None
        extension = b""
        if first & 0x10:
            if length < pos + 4:
                raise ValueError("RTP packet has truncated extension profile / value")
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            pos += 4 + 4 * words
            if length < pos:
                raise ValueError("RTP packet has truncated extension profile / value")
            extension = bytes(data[pos - 4 * words : pos])
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or padding > length - pos:
                raise ValueError("RTP packet padding length is invalid")
        payload = bytes(data[pos : length - padding])  # the one copy of the payload
        pt, marker = second & 0x7F, second > 0x7F
        return cls(pt, seq, timestamp, ssrc, payload, marker, csrc, profile, extension, padding)

    def __bytes__(self) -> bytes:
        has_extension = self.extension_profile is not None
        first = 0x80 | (0x20 if self.padding else 0) | (0x10 if has_extension else 0)
        second = (0x80 if self.marker else 0) | self.payload_type
        header = _RTP_HEADER.pack(
            first | len(self.csrc), second, self.sequence_number, self.timestamp, self.ssrc
        )
        parts = [header, _CSRC[len(self.csrc)].pack(*self.csrc)]
        if self.extension_profile is not None:
            if len(self.extension) % 4:
                raise ValueError("RTP header extension length is not a multiple of 4")
            parts += (
                _EXT_HEADER.pack(self.extension_profile, len(self.extension) // 4),
                self.extension,
            )
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


# --- RTCP -------------------------------------------------------------------------------------

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203

SDES_CNAME = 1

_RTCP_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")
_REPORT = struct.Struct("!IIIIII")
_SSRC = struct.Struct("!I")


@dataclasses.dataclass(slots=True)
class ReceptionReport:
    """One report block. ``packets_lost`` is signed (duplicates can make it negative) and is
    clamped to 24 bits on the wire; ``lsr`` is the middle 32 bits of the last SR's NTP time,
    ``dlsr`` the delay since then in 1/65536 s."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def __bytes__(self) -> bytes:
        word = (self.fraction_lost << 24) | (
            max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        )
        return _REPORT.pack(
            self.ssrc, word, self.highest_sequence, self.jitter, self.lsr, self.dlsr
        )


@dataclasses.dataclass(slots=True)
class SenderReport:
    """RTCP SR: the sender's wall clock (NTP) at the instant of RTP time ``rtp_timestamp``.
    Profile-specific extensions after the report blocks are dropped."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReceptionReport] = dataclasses.field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        return _rtcp_packet(RTCP_SR, len(self.reports), body + _report_blocks(self.reports))


@dataclasses.dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReceptionReport] = dataclasses.field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + _report_blocks(self.reports)
        return _rtcp_packet(RTCP_RR, len(self.reports), body)


@dataclasses.dataclass(slots=True)
class SourceDescription:
    """RTCP SDES: per source, its items as ``(item_type, text)`` (``SDES_CNAME`` = 1)."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = dataclasses.field(default_factory=list)

    def cname(self, ssrc: int) -> bytes | None:
        for chunk_ssrc, items in self.chunks:
            if chunk_ssrc == ssrc:
                for item_type, text in items:
                    if item_type == SDES_CNAME:
                        return text
        return None

    def __bytes__(self) -> bytes:
        parts = []
        for ssrc, items in self.chunks:
            chunk = bytearray(_SSRC.pack(ssrc))
            for item_type, text in items:
                if len(text) > 255:
                    raise ValueError("RTCP SDES item is longer than 255 bytes")
                chunk += bytes((item_type, len(text))) + text
            # The item list ends with at least one null octet, then pads to a word.
            chunk += bytes(4 - len(chunk) % 4)
            parts.append(bytes(chunk))
        return _rtcp_packet(RTCP_SDES, len(self.chunks), b"".join(parts))


@dataclasses.dataclass(slots=True)
class Goodbye:
    sources: list[int] = dataclasses.field(default_factory=list)
    reason: bytes = b""

    def __bytes__(self) -> bytes:
        body = _CSRC[len(self.sources)].pack(*self.sources)
        if self.reason:
            if len(self.reason) > 255:
                raise ValueError("RTCP BYE reason is longer than 255 bytes")
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _rtcp_packet(RTCP_BYE, len(self.sources), body)


@dataclasses.dataclass(slots=True)
class RtcpUnknown:
    """Any other RTCP packet (APP, RTPFB/PSFB feedback, XR...), kept as its body after the
    4-byte header. ``count`` is the 5-bit count/format field (FMT for feedback packets)."""

    packet_type: int
    data: bytes
    count: int = 0

    def __bytes__(self) -> bytes:
        return _rtcp_packet(self.packet_type, self.count, self.data)


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | SourceDescription | Goodbye | RtcpUnknown


def _report_blocks(reports: list[ReceptionReport]) -> bytes:
    if len(reports) > 31:
        raise ValueError("RTCP packet has more than 31 report blocks")
    return b"".join(bytes(report) for report in reports)


def _rtcp_packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError("RTCP packet count is larger than 31")
    padding = -len(body) % 4
    first = 0x80 | count
    if padding:
        # Only bodies of unknown packets can be unaligned; pad them the RFC 3550 way.
        first |= 0x20
        body += bytes(padding - 1) + bytes((padding,))
    return _RTCP_HEADER.pack(first, packet_type, len(body) // 4) + body


def _parse_reports(data: Buffer, pos: int, count: int) -> list[ReceptionReport]:
    reports = []
    for _ in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT.unpack_from(data, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        reports.append(ReceptionReport(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return reports


def _parse_sdes(data: Buffer, pos: int, end: int, count: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if pos + 4 > end:
            raise ValueError("RTCP SDES chunk is truncated")
        (ssrc,) = _SSRC.unpack_from(data, pos)
        pos += 4
        items = []
        # Lenient: the end of the packet also ends the item list of the last chunk.
        while pos < end:
            item_type = data[pos]
            if item_type == 0:
                pos = (pos + 4) & ~3  # null octet(s) up to the next word
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise ValueError("RTCP SDES item is truncated")
            item_end = pos + 2 + data[pos + 1]
            items.append((item_type, bytes(data[pos + 2 : item_end])))
            pos = item_end
        chunks.append((ssrc, items))
    return SourceDescription(chunks)


def _parse_bye(data: Buffer, pos: int, end: int, count: int) -> Goodbye:
    if pos + 4 * count > end:
        raise ValueError("RTCP BYE length is invalid")
    sources = list(_CSRC[count].unpack_from(data, pos))
    pos += 4 * count
    reason = b""
    if pos < end:
        reason_end = pos + 1 + data[pos]
        if reason_end > end:
            raise ValueError("RTCP BYE reason is truncated")
        reason = bytes(data[pos + 1 : reason_end])
    return Goodbye(sources, reason)


def parse_rtcp(data: Buffer) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (or a single one) into its packets, in order."""
    packets: list[RtcpPacket] = []
    length = len(data)
    pos = 0
    while pos < length:
        if pos + 4 > length:
            raise ValueError("RTCP packet length is less than 4 bytes")
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise ValueError("RTCP packet has invalid version")
        end = pos + 4 + 4 * words
        if end > length:
            raise ValueError("RTCP packet is truncated")
        body = pos + 4
        body_end = end
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or padding > end - body:
                raise ValueError("RTCP packet padding length is invalid")
            body_end -= padding
        count = first & 0x1F
        if packet_type == RTCP_SR:
            if body + 24 + 24 * count > body_end:
                raise ValueError("RTCP sender report length is invalid")
            ssrc, ntp, rtp_timestamp, packet_count, octet_count = _SR_INFO.unpack_from(data, body)
            reports = _parse_reports(data, body + 24, count)
            packets.append(
                SenderReport(ssrc, ntp, rtp_timestamp, packet_count, octet_count, reports)
            )
        elif packet_type == RTCP_RR:
            if body + 4 + 24 * count > body_end:
                raise ValueError("RTCP receiver report length is invalid")
            (ssrc,) = _SSRC.unpack_from(data, body)
            packets.append(ReceiverReport(ssrc, _parse_reports(data, body + 4, count)))
        elif packet_type == RTCP_SDES:
            packets.append(_parse_sdes(data, body, body_end, count))
        elif packet_type == RTCP_BYE:
            packets.append(_parse_bye(data, body, body_end, count))
        else:
            packets.append(RtcpUnknown(packet_type, bytes(data[body:body_end]), count))
        pos = end
    return packets


def build_compound(*packets: RtcpPacket) -> bytes:
    """Concatenate packets into one compound packet. RFC 3550 wants it to start with an SR or
    RR (and carry an SDES CNAME); that is the caller's choice of packets."""
    return b"".join(bytes(packet) for packet in packets)


# --- NTP time -------------------------------------------------------------------------------

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET_S = 2_208_988_800
_NTP_UNIX_OFFSET_NS = NTP_UNIX_OFFSET_S * 1_000_000_000


def ntp_to_wall_ns(ntp64: int) -> int:
    """64-bit NTP timestamp to nanoseconds since the Unix epoch, rounded to the nearest ns.

    Only NTP era 0 (1900-01-01 to 2036-02-07T06:28:15Z) is handled: a timestamp is never
    read as era 1. RTP senders in the field are all in era 0 until 2036.
    """
    if not 0 <= ntp64 < 1 << 64:
        raise ValueError("NTP timestamp is out of range")
    return ((ntp64 * 1_000_000_000 + (1 << 31)) >> 32) - _NTP_UNIX_OFFSET_NS


def wall_ns_to_ntp(wall_ns: int) -> int:
    """Nanoseconds since the Unix epoch to a 64-bit NTP timestamp (era 0 only, see above)."""
    ntp64 = ((wall_ns + _NTP_UNIX_OFFSET_NS) * (1 << 32) + 500_000_000) // 1_000_000_000
    if not 0 <= ntp64 < 1 << 64:
        raise ValueError("wall time is outside NTP era 0")
    return ntp64


def ntp_short(ntp64: int) -> int:
    """The middle 32 bits of an NTP timestamp, as used for LSR in reception reports."""
    return (ntp64 >> 16) & 0xFFFFFFFF


# --- Sequence numbers -----------------------------------------------------------------------


def seq_newer(a: int, b: int) -> bool:
    """True when 16-bit sequence number ``a`` comes after ``b`` (serial number arithmetic,
    RFC 1982). Exactly half the space apart is undefined there; it is False here."""
    return 0 < ((a - b) & 0xFFFF) < 0x8000


MIN_SEQUENTIAL = 2
MAX_DROPOUT = 3000
MAX_MISORDER = 100


class SequenceTracker:
    """Per-source reception statistics of RFC 3550 A.1/A.3, plus duplicate detection.

    ``update(seq)`` classifies each packet:

    * ``"probation"``: the source is not validated yet (a new source needs ``probation``
      packets in sequence), or a big jump waits for a second packet to confirm a restart;
    * ``"ok"``: the next packet in order; ``"gap:N"``: in order after ``N`` missing ones;
    * ``"reordered"``: an earlier missing packet arriving late; ``"duplicate"``: seen before;
    * ``"restart"``: two packets in sequence after a big jump: the sender restarted, the
      statistics start again from this packet.

    RTSP clients learn the first sequence number from RTP-Info and may pass ``probation=0``.
    """

    def __init__(
        self,
        *,
        probation: int = MIN_SEQUENTIAL,
        max_dropout: int = MAX_DROPOUT,
        max_misorder: int = MAX_MISORDER,
    ) -> None:
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self._min_sequential = probation
        self.probation = probation
        self.started = False
        self._init_seq(0)
        self._seen = 0
        self.duplicates = self.reordered = 0
        # _seen bit i set: max_seq - i was received (a window of max_misorder numbers).
        self._seen_mask = (1 << max(max_misorder, 1)) - 1

    def _init_seq(self, seq: int) -> None:
        self.base_seq = self.max_seq = seq
        self.bad_seq = 0x10001
        self.cycles = self.received = self._received_prior = self._expected_prior = 0
        self._seen = 1

    def update(self, seq: int) -> str:
        if not self.started:
            self.started = True
            if self.probation <= 0:
                self._init_seq(seq)
                self.received = 1
                return "ok"
            self.max_seq = (seq - 1) & 0xFFFF
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation > 0:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received = 1
                    return "ok"
            else:
                self.probation = max(self._min_sequential - 1, 0)
                self.max_seq = seq
            return "probation"
        if udelta == 0:
            self.received += 1
            self.duplicates += 1
            return "duplicate"
        if udelta < self.max_dropout:
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & self._seen_mask
            self.received += 1
            return "ok" if udelta == 1 else f"gap:{udelta - 1}"
        if udelta <= 0x10000 - self.max_misorder:
            if seq == self.bad_seq:
                self._init_seq(seq)
                self.received = 1
                return "restart"
            self.bad_seq = (seq + 1) & 0xFFFF
            return "probation"
        # Within max_misorder behind the highest: late or duplicated.
        back = 0x10000 - udelta
        self.received += 1
        bit = 1 << back
        if self._seen & bit:
            self.duplicates += 1
            return "duplicate"
        self._seen |= bit
        self.reordered += 1
        return "reordered"

    def advance(self, count: int, last_seq: int) -> None:
        """``update`` for ``count`` packets in order right after the highest sequence number
        so far, the last of them ``last_seq`` (the interleaved fast lane's bulk update)."""
        if count <= 0:
            return
        if not self.started or self.probation > 0:
            for i in range(count - 1, -1, -1):
                self.update((last_seq - i) & 0xFFFF)
            return
        if last_seq < self.max_seq:
            self.cycles += 0x10000
        self.max_seq = last_seq
        self.received += count
        self._seen = ((self._seen << count) | ((1 << count) - 1)) & self._seen_mask

    @property
    def extended_highest_sequence(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_highest_sequence - self.base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost: expected minus received (negative with duplicates)."""
        return self.expected - self.received

    def fraction_lost(self) -> int:
        """Fraction lost (in 1/256) since the previous call; starts the next interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min((lost_interval << 8) // expected_interval, 255)

    def reception_report(
        self, ssrc: int, *, jitter: int = 0, lsr: int = 0, dlsr: int = 0
    ) -> ReceptionReport:
        """A report block for this source; starts the next fraction-lost interval."""
        fraction, highest = self.fraction_lost(), self.extended_highest_sequence & 0xFFFFFFFF
        return ReceptionReport(ssrc, fraction, self.lost, highest, jitter, lsr, dlsr)


class InterarrivalJitter:
    """Interarrival jitter of RFC 3550 A.8, in RTP timestamp units.

    Feed each packet's RTP timestamp and its arrival time converted to the same clock (an
    unwrapped integer count of ticks at the stream's clock rate).
    """

    __slots__ = ("_jitter_x16", "_last_transit")

    def __init__(self) -> None:
        self._jitter_x16 = 0
        self._last_transit: int | None = None

    def update(self, rtp_timestamp: int, arrival_timestamp: int) -> None:
        transit = arrival_timestamp - rtp_timestamp
        if self._last_transit is not None:
            # RTP timestamps wrap at 2**32: take the difference modulo 2**32, signed.
            d = ((transit - self._last_transit + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            self._jitter_x16 += abs(d) - ((self._jitter_x16 + 8) >> 4)
        self._last_transit = transit

    @property
    def jitter(self) -> int:
        """The estimate for a reception report (timestamp units)."""
        return min(self._jitter_x16 >> 4, 0xFFFFFFFF)


class ReorderBuffer:
    """Puts RTP packets received over UDP back in sequence order.

    ``push`` returns the packets that can go out now. A missing packet is waited for until
    ``max_delay_packets`` later packets are held; then the gap is skipped (counted in
    ``lost``). Late packets (behind what was released) and duplicates are dropped and
    counted. A jump of ``restart_distance`` or more either way is a sender restart: what is
    held is released and the sequence starts again. Streams with few packets (audio,
    metadata) should also call ``flush`` on a timer, since the wait is counted in packets.
    """

    def __init__(self, max_delay_packets: int = 64, *, restart_distance: int = MAX_DROPOUT):
        if max_delay_packets < 1:
            raise ValueError("max_delay_packets must be at least 1")
        self.max_delay_packets = max_delay_packets
        self.restart_distance = restart_distance
        self._next: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self.lost = 0
        self.late = 0
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._held)

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        seq = packet.sequence_number
        if self._next is None:
            self._next = (seq + 1) & 0xFFFF
            return [packet]
        distance = (seq - self._next) & 0xFFFF
        if distance == 0 and not self._held:
            self._next = (seq + 1) & 0xFFFF  # the common case: in order, nothing held
            return [packet]
        if min(distance, 0x10000 - distance) >= self.restart_distance:
            released = self.flush()
            self._next = (seq + 1) & 0xFFFF
            released.append(packet)
            return released
        if distance >= 0x8000:
            self.late += 1
            return []
        if seq in self._held:
            self.duplicates += 1
            return []
        self._held[seq] = packet
        released = self._release()
        while len(self._held) >= self.max_delay_packets:
            self._skip_gap()
            released += self._release()
        return released

    def flush(self) -> list[RtpPacket]:
        """Release everything held, in order, skipping (and counting) the gaps."""
        released: list[RtpPacket] = []
        while self._held:
            self._skip_gap()
            released += self._release()
        return released

    def _release(self) -> list[RtpPacket]:
        released = []
        assert self._next is not None
        while (packet := self._held.pop(self._next, None)) is not None:
            released.append(packet)
            self._next = (self._next + 1) & 0xFFFF
        return released

    def _skip_gap(self) -> None:
        assert self._next is not None
        start = self._next
        oldest = min(self._held, key=lambda seq: (seq - start) & 0xFFFF)
        self.lost += (oldest - start) & 0xFFFF
        self._next = oldest
