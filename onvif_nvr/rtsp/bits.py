"""NAL unit plumbing shared by the H.264 and H.265 modules (sans-IO).

* bit level: emulation prevention and an Exp-Golomb ``BitReader`` for the parameter-set
  parsers;
* framing: Annex B byte streams and length-prefixed (AVCC, MP4 sample) NAL units, which are
  the same for both codecs;
* the RTP payload core of RFC 6184 and RFC 7798 (same model: single NAL unit packets,
  aggregation packets, fragmentation units): ``BaseDepacketizer`` and ``BasePacketizer``,
  which ``h264.py`` and ``h265.py`` specialise with the codec's header layout.

NAL unit payloads on the wire are "escaped": the encoder inserts an emulation prevention
byte 0x03 after every ``00 00`` that would otherwise be followed by a byte <= 0x03, so no
start code can appear inside a NAL unit (H.264 7.4.1 / H.265 7.4.2). The syntax parsers
work on the unescaped RBSP.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable, Iterable

from onvif_nvr.media.units import AccessUnit

log = logging.getLogger(__name__)


def remove_emulation_prevention(data: bytes) -> bytes:
    """Return the RBSP of an escaped NAL unit (every ``00 00 03`` becomes ``00 00``)."""
    if b"\x00\x00\x03" not in data:
        return bytes(data)
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            # The 0x03 is dropped; the byte after it starts a fresh zero count.
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def add_emulation_prevention(rbsp: bytes) -> bytes:
    """Escape an RBSP so that it can be carried as a NAL unit payload."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    if out and out[-1] == 0:
        # A NAL unit must not end in 0x00 (it ends in a cabac_zero_word): 7.4.1 appends 0x03.
        out.append(3)
    return bytes(out)


class BitReader:
    """Reads an RBSP most significant bit first, with the Exp-Golomb codes of H.264/H.265.

    Every read past the end raises ``ValueError("bitstream ended early ...")`` so that a
    truncated parameter set is reported, never silently read as zeros.
    """

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data) * 8

    @property
    def bits_left(self) -> int:
        return self._end - self._pos

    @property
    def position(self) -> int:
        """Bits consumed so far."""
        return self._pos

    def _need(self, n: int, what: str) -> None:
        if n < 0:
            raise ValueError(f"cannot read a negative number of bits ({n})")
        if n > self._end - self._pos:
            raise ValueError(
                f"bitstream ended early: {what} needs {n} bits, {self._end - self._pos} left"
            )

    def u(self, n: int, what: str = "u(n)") -> int:
        """Read ``n`` bits as an unsigned integer (``u(n)`` in the specs)."""
        self._need(n, what)
        value = 0
        pos = self._pos
        data = self._data
        for _ in range(n):
            value = (value << 1) | ((data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        self._pos = pos
        return value

    def flag(self, what: str = "flag") -> bool:
        return self.u(1, what) == 1

    def skip(self, n: int, what: str = "skip") -> None:
        self._need(n, what)
        self._pos += n

    def ue(self, what: str = "ue(v)") -> int:
        """Read an unsigned Exp-Golomb code (``ue(v)``); at most 32 leading zeros."""
        zeros = 0
        while self.u(1, what) == 0:
            zeros += 1
            if zeros > 32:
                raise ValueError(f"invalid Exp-Golomb code: {what} has more than 32 leading zeros")
        return (1 << zeros) - 1 + self.u(zeros, what)

    def se(self, what: str = "se(v)") -> int:
        """Read a signed Exp-Golomb code (``se(v)``): 1, -1, 2, -2, ..."""
        k = self.ue(what)
        return (k + 1) // 2 if k & 1 else -(k // 2)


# ---------------------------------------------------------------------------------------------
# Bitstream framing: Annex B byte streams and length-prefixed (AVCC / MP4) samples.

_START_CODE = b"\x00\x00\x01"


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (3- and 4-byte start codes removed).

    Zero bytes before a start code (``zero_byte``, ``trailing_zero_8bits``) are dropped. Bytes
    before the first start code are kept as a NAL unit: some cameras put the first NAL unit of
    an RTP payload bare and start codes only between the following ones.
    """
    data = bytes(data)
    nals: list[bytes] = []
    start = 0
    while True:
        found = data.find(_START_CODE, start)
        end = len(data) if found < 0 else found
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if found < 0:
            return nals
        start = found + 3


def to_annexb(nals: Iterable[bytes]) -> bytes:
    """Join NAL units into an Annex B byte stream with 4-byte start codes."""
    return b"".join(b"\x00\x00\x00\x01" + bytes(nal) for nal in nals)


def to_avcc(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    """Join NAL units with big-endian length prefixes, as in MP4 samples."""
    if length_size not in (1, 2, 4):
        raise ValueError(f"invalid NAL length size {length_size} (1, 2 or 4)")
    limit = 1 << (8 * length_size)
    out = bytearray()
    for nal in nals:
        if len(nal) >= limit:
            raise ValueError(
                f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length"
            )
        out += len(nal).to_bytes(length_size, "big")
        out += nal
    return bytes(out)


def from_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    """Split length-prefixed NAL units (an MP4 sample); zero-length entries are skipped."""
    if length_size not in (1, 2, 4):
        raise ValueError(f"invalid NAL length size {length_size} (1, 2 or 4)")
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise ValueError(f"length-prefixed data truncated in the NAL unit length at {pos}")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > len(data):
            raise ValueError(
                f"length-prefixed data truncated: NAL unit at {pos - length_size} claims "
                f"{size} bytes, {len(data) - pos} left"
            )
        if size:
            nals.append(bytes(data[pos : pos + size]))
        pos += size
    return nals


# ---------------------------------------------------------------------------------------------
# RTP payload core: depacketization and packetization shared by H.264 and H.265.

#: An access unit larger than this is discarded (a camera that never ends its units, or junk).
MAX_ACCESS_UNIT_SIZE = 32 * 1024 * 1024
# RFC 3550 appendix A.1: a forward jump up to MAX_DROPOUT is loss, a backward step up to
# MAX_MISORDER is a late or duplicated packet, anything in between is a sender restart.
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclasses.dataclass(slots=True)
class ParameterSets:
    """The latest parameter sets seen in-band, by id; ``version`` grows on every change."""

    vps: dict[int, bytes] = dataclasses.field(default_factory=dict)
    sps: dict[int, bytes] = dataclasses.field(default_factory=dict)
    pps: dict[int, bytes] = dataclasses.field(default_factory=dict)
    version: int = 0

    def store(self, kind: str, ps_id: int, nal: bytes) -> None:
        table: dict[int, bytes] = getattr(self, kind)
        if table.get(ps_id) != nal:
            table[ps_id] = nal
            self.version += 1


class Drop(Exception):
    """Raised by a codec's ``_depacketize`` for a packet that cannot be used; ``damaging``
    when media content was lost with it (the unit it falls into is marked damaged)."""

    def __init__(self, reason: str, *, damaging: bool = True, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.damaging = damaging
        self.unsupported = unsupported


def remember_parameter_set(
    store: ParameterSets, nal: bytes, ps_id: Callable[[bytes], tuple[str, int] | None], codec: str
) -> None:
    """Keep ``nal`` in ``store`` if it is a parameter set (unreadable ones are skipped)."""
    try:
        key = ps_id(nal)
    except ValueError as exc:
        log.debug("%s: unreadable parameter set: %s", codec, exc)
        return
    if key is not None:
        store.store(key[0], key[1], nal)


#: An interleaved frame header and a plain RTP header: '$', channel, length, V/P/X/CC,
#: M/PT, sequence number, timestamp, SSRC.
_INTERLEAVED_RTP = struct.Struct(">BBHBBHII")


class BaseDepacketizer:
    """RTP payloads in, access units out; the codec subclasses know the payload formats.

    Packets are expected in sequence order (a jitter buffer, if any, sits in front). A
    duplicate or late packet is dropped; a gap marks the access unit under assembly and the
    next one ``damaged`` and discards a half-received fragmented NAL unit. Every dropped packet
    is counted and logged at debug level; ``feed`` never raises on bad input.
    """

    codec = ""

    def __init__(self, *, max_access_unit_size: int = MAX_ACCESS_UNIT_SIZE) -> None:
        self.parameter_sets = ParameterSets()
        #: Packets fed, packets not used (any reason), of those of unsupported packet types,
        #: sequence numbers never seen, access units emitted with ``damaged=True``.
        self.packets = 0
        self.dropped = 0
        self.unsupported = 0
        self.lost = 0
        self.damaged_units = 0
        self._max_size = max_access_unit_size
        self._last_seq: int | None = None
        self._ts: int | None = None
        self._nals: list[bytes] = []
        self._size = 0
        self._damaged = False
        self._fu: bytearray | None = None
        self._fu_packets = 0
        self._marks_units = False

    def feed(
        self, payload: bytes, rtp_timestamp: int, marker: bool, sequence_number: int
    ) -> list[AccessUnit]:
        """Take one RTP packet's payload; return the access units it completed (often none).

        A unit ends at a packet with the marker bit, or when the RTP timestamp changes (for
        cameras that never set the marker), or on ``flush``.
        """
        self.packets += 1
        missing = self._sequence(sequence_number & 0xFFFF)
        if missing is None:
            self.dropped += 1
            log.debug("%s: dropped duplicate or late packet %d", self.codec, sequence_number)
            return []
        rtp_timestamp &= 0xFFFFFFFF
        out: list[AccessUnit] = []
        unit_open = bool(self._nals) or self._fu is not None
        new_unit = self._ts is not None and rtp_timestamp != self._ts
        if missing:
            # The lost packets may have been the tail of the unit under assembly...
            self._abort_fu("packets lost")
            self._damaged |= unit_open
        if new_unit:
            out.extend(self._emit())
        # ...or the head of the unit this packet belongs to; except when exactly one packet
        # is missing between an open unit and a new one of a stream that marks its units:
        # then the lost packet was the open unit's last (marker) packet.
        if missing and not (missing == 1 and unit_open and new_unit and self._marks_units):
            self._damaged = True
        self._ts = rtp_timestamp
        try:
            nals = self._depacketize(bytes(payload))
        except Drop as drop:
            self.dropped += 1
            self.unsupported += drop.unsupported
            self._damaged |= drop.damaging
            log.debug("%s: dropped packet %d: %s", self.codec, sequence_number, drop)
            nals = []
        for nal in nals:
            self._add(nal)
        if marker:
            self._marks_units = True
            out.extend(self._emit())
        return out

    def flush(self) -> list[AccessUnit]:
        """End the access unit under assembly (at end of stream or on a pause)."""
        return self._emit()

    def feed_view(
        self,
        view: memoryview,
        start: int,
        end: int,
        rtp_timestamp: int,
        marker: bool,
        sequence_number: int,
    ) -> list[AccessUnit]:
        """:meth:`feed` for the payload ``view[start:end]`` of a receive buffer.

        Most packets of a high-bitrate stream are the middle or end fragments of a large
        NAL unit; such a fragment, in sequence and with the timestamp of the unit under
        assembly, is appended straight from the buffer (no payload copy, no per-packet
        objects). Any other packet takes :meth:`feed`. Same results either way.
        """
        fu = self._fu
        if (
            fu is not None
            and rtp_timestamp == self._ts
            and self._last_seq is not None
            and sequence_number == (self._last_seq + 1) & 0xFFFF
        ):
            data = self._continuation(view, start, end, fu)
            if data:
                self.packets += 1
                self._last_seq = sequence_number
                fu += view[data:end]
                self._fu_packets += 1
                if self._size + len(fu) > self._max_size:
                    self._abort_fu(f"fragmented NAL unit larger than {self._max_size} bytes")
                elif view[data - 1] & 0x40:  # E bit of the FU header before the data
                    self._fu = None
                    self._add(bytes(fu))
                if marker:
                    self._marks_units = True
                    return self._emit()
                return []
        return self.feed(view[start:end].tobytes(), rtp_timestamp, marker, sequence_number)

    @property
    def fu_open(self) -> bool:
        """A fragmented NAL unit is under assembly (the next packet may continue it)."""
        return self._fu is not None

    @property
    def last_sequence_number(self) -> int | None:
        """The sequence number of the last packet taken."""
        return self._last_seq

    def feed_interleaved_run(
        self, view: memoryview, pos: int, limit: int, channel: int, payload_type: int
    ) -> tuple[int, int, int]:
        """The interleaved fast lane's inner loop, for RTP over RTSP/TCP (RFC 2326 §10.12).

        From ``view[pos:]``, consume the consecutive ``$`` frames on ``channel`` that carry
        a plain RTP packet (version 2, no padding, extension or CSRC; ``payload_type``; no
        marker) continuing the fragmented NAL unit under assembly: next sequence number,
        same timestamp, middle or end fragment. Their data is appended straight from the
        buffer, with no call or object per packet. Stops before the first frame that is
        anything else (the caller's general path takes it) and after an end fragment.
        Returns (offset after the last frame consumed, packets consumed, last SSRC); the
        effect is that of :meth:`feed` for each packet.
        """
        fu = self._fu
        last_seq = self._last_seq
        if fu is None or last_seq is None:
            return pos, 0, 0
        timestamp, max_size, size = self._ts, self._max_size, self._size
        continuation, unpack = self._continuation, _INTERLEAVED_RTP.unpack_from
        count = ssrc = 0
        ended = False
        while limit - pos >= 16:
            dollar, ch, length, first, second, seq, ts, ssrc_ = unpack(view, pos)
            end = pos + 4 + length
            if (
                dollar != 0x24
                or ch != channel
                or length < 12
                or end > limit
                or first != 0x80
                or second != payload_type
                or ts != timestamp
                or seq != (last_seq + 1) & 0xFFFF
            ):
                break
            data = continuation(view, pos + 16, end, fu)
            if not data:
                break
            fu += view[data:end]
            count += 1
            last_seq, ssrc, pos = seq, ssrc_, end
            if size + len(fu) > max_size:
                break
            if view[data - 1] & 0x40:  # E bit of the FU header
                ended = True
                break
        self.packets += count
        self._fu_packets += count
        self._last_seq = last_seq
        if size + len(fu) > max_size:
            self._abort_fu(f"fragmented NAL unit larger than {max_size} bytes")
        elif ended:
            self._fu = None
            self._add(bytes(fu))
        return pos, count, ssrc

    def _continuation(self, view: memoryview, start: int, end: int, fu: bytearray) -> int:
        """Offset of the data of a middle/end fragment of the NAL unit ``fu`` (whose header
        it carries) in ``view[start:end]``; 0 for any other packet. The FU header is the
        byte before the data."""
        return 0

    # -- codec hooks ------------------------------------------------------------------------

    def _depacketize(self, payload: bytes) -> list[bytes]:
        raise NotImplementedError

    def _is_keyframe_nal(self, nal: bytes) -> bool:
        raise NotImplementedError

    def _remember(self, nal: bytes) -> None:
        """Record ``nal`` in ``parameter_sets`` if it is one."""

    # -- shared machinery -------------------------------------------------------------------

    def _sequence(self, seq: int) -> int | None:
        """Packets missing before ``seq`` (-1: unknown, the sender jumped), None for a
        duplicate or late packet."""
        last, self._last_seq = self._last_seq, seq
        if last is None:
            return 0
        delta = (seq - last) & 0xFFFF
        if delta == 0 or delta > 0xFFFF - MAX_MISORDER:
            self._last_seq = last
            return None
        if delta >= MAX_DROPOUT:
            return -1
        self.lost += delta - 1
        return delta - 1

    def _unpack_aggregate(self, payload: bytes, header_size: int) -> list[bytes]:
        """NAL units of a STAP-A / AP: repeated 16-bit size and NAL unit, no DON fields."""
        nals: list[bytes] = []
        pos = header_size
        if len(payload) <= pos:
            raise Drop("empty aggregation packet")
        while pos < len(payload):
            if pos + 2 > len(payload):
                raise Drop("aggregation packet truncated in a NAL unit size")
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size == 0:
                raise Drop("aggregation packet has a zero-length NAL unit")
            if pos + size > len(payload):
                raise Drop(
                    f"aggregation packet truncated: NAL unit of {size} bytes, "
                    f"{len(payload) - pos} left"
                )
            nals.append(payload[pos : pos + size])
            pos += size
        return nals

    def _fragment(self, start: bool, end: bool, header: bytes, data: bytes) -> list[bytes]:
        """Reassemble FU-A / FU fragments; ``header`` is the rebuilt NAL unit header."""
        if start:
            self._abort_fu("fragmented NAL unit restarted before its end")
            if end:
                # RFC 6184/7798 forbid S and E in one FU, but the NAL unit is complete.
                return [header + data]
            self._fu = bytearray(header + data)
            self._fu_packets = 1
            return []
        fu = self._fu
        if fu is None:
            raise Drop("fragment without its start fragment")
        if fu[: len(header)] != header:
            self._abort_fu("fragment of another NAL unit")
            raise Drop("fragment of another NAL unit")
        fu += data
        self._fu_packets += 1
        if self._size + len(fu) > self._max_size:
            self._abort_fu(f"fragmented NAL unit larger than {self._max_size} bytes")
            return []
        if not end:
            return []
        self._fu = None
        return [bytes(fu)]

    def _abort_fu(self, reason: str) -> None:
        if self._fu is not None:
            log.debug("%s: discarded %d fragments: %s", self.codec, self._fu_packets, reason)
            self.dropped += self._fu_packets
            self._damaged = True
            self._fu = None
            self._fu_packets = 0

    def _add(self, nal: bytes) -> None:
        if self._size + len(nal) > self._max_size:
            log.debug("%s: access unit larger than %d bytes discarded", self.codec, self._max_size)
            self._nals.clear()
            self._size = 0
            self._damaged = True
            return
        self._nals.append(nal)
        self._size += len(nal)
        self._remember(nal)

    def _emit(self) -> list[AccessUnit]:
        self._abort_fu("access unit ended inside a fragmented NAL unit")
        nals, damaged, ts = self._nals, self._damaged, self._ts
        self._nals, self._size, self._damaged = [], 0, False
        if not nals or ts is None:
            return []
        self.damaged_units += damaged
        keyframe = any(self._is_keyframe_nal(nal) for nal in nals)
        return [AccessUnit(self.codec, tuple(nals), ts, keyframe=keyframe, damaged=damaged)]


class BasePacketizer:
    """Access units in, RTP payloads out: single NAL unit packets when they fit, fragmentation
    units otherwise, and aggregation of consecutive small non-VCL NAL units (parameter sets,
    SEI, AUD) when ``aggregate``. ``mtu`` is the largest payload returned; the caller's RTP
    header comes on top of it.
    """

    codec = ""
    _header_size = 1
    #: Parameter set kinds a keyframe needs, in the order they are inserted.
    _needed_kinds: tuple[str, ...] = ()

    def __init__(
        self,
        payload_type: int,
        ssrc: int,
        mtu: int = 1400,
        *,
        insert_parameter_sets: bool = False,
        aggregate: bool = True,
        parameter_sets: Iterable[bytes] = (),
    ) -> None:
        if mtu < self._header_size + 8:
            raise ValueError(f"MTU {mtu} too small")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.mtu = mtu
        #: Put the known parameter sets in front of keyframes that lack them (viewers that
        #: join mid-stream need them; some cameras only send them out of band, in the SDP).
        self.insert_parameter_sets = insert_parameter_sets
        self.aggregate = aggregate
        self.parameter_sets = ParameterSets()
        for nal in parameter_sets:
            self._remember(nal)

    def packetize(self, au: AccessUnit, rtp_timestamp: int) -> list[tuple[bytes, bool]]:
        """Return the (payload, marker) pairs of one access unit; marker on the last one."""
        nals = [bytes(nal) for nal in au.payloads if nal]
        for nal in nals:
            self._remember(nal)
        if self.insert_parameter_sets and any(self._is_keyframe_nal(n) for n in nals):
            nals = self._with_parameter_sets(nals)
        packets: list[bytes] = []
        i = 0
        while i < len(nals):
            nal = nals[i]
            if self.aggregate and self._aggregatable(nal):
                group = [nal]
                size = self._header_size + 2 + len(nal)
                while (
                    i + len(group) < len(nals)
                    and self._aggregatable(nals[i + len(group)])
                    and size + 2 + len(nals[i + len(group)]) <= self.mtu
                ):
                    size += 2 + len(nals[i + len(group)])
                    group.append(nals[i + len(group)])
                if len(group) > 1:
                    body = b"".join(len(n).to_bytes(2, "big") + n for n in group)
                    packets.append(self._aggregation_header(group) + body)
                    i += len(group)
                    continue
            if len(nal) <= self.mtu:
                packets.append(nal)
            else:
                packets.extend(self._fragments(nal))
            i += 1
        return [(p, n == len(packets) - 1) for n, p in enumerate(packets)]

    def _with_parameter_sets(self, nals: list[bytes]) -> list[bytes]:
        present = {self._kind(nal) for nal in nals}
        missing: list[bytes] = []
        for kind in self._needed_kinds:
            if kind not in present:
                missing.extend(getattr(self.parameter_sets, kind).values())
        if not missing:
            return nals
        # An access unit delimiter must stay first.
        at = 1 if self._is_aud(nals[0]) else 0
        return nals[:at] + missing + nals[at:]

    def _fragments(self, nal: bytes) -> list[bytes]:
        hs = self._header_size
        payload_header, fu_type = self._fu_header(nal[:hs])
        data = memoryview(nal)[hs:]
        chunk = self.mtu - hs - 1
        out: list[bytes] = []
        for pos in range(0, len(data), chunk):
            bits = (0x80 if pos == 0 else 0) | (0x40 if pos + chunk >= len(data) else 0)
            out.append(payload_header + bytes([bits | fu_type]) + data[pos : pos + chunk])
        return out

    # -- codec hooks ------------------------------------------------------------------------

    def _remember(self, nal: bytes) -> None:
        raise NotImplementedError

    def _kind(self, nal: bytes) -> str | None:
        raise NotImplementedError

    def _is_keyframe_nal(self, nal: bytes) -> bool:
        raise NotImplementedError

    def _is_aud(self, nal: bytes) -> bool:
        raise NotImplementedError

    def _aggregatable(self, nal: bytes) -> bool:
        raise NotImplementedError

    def _aggregation_header(self, group: list[bytes]) -> bytes:
        raise NotImplementedError

    def _fu_header(self, nal_header: bytes) -> tuple[bytes, int]:
        raise NotImplementedError
