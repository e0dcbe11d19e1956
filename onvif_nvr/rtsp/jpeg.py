"""RTP payload format for JPEG-compressed video (RFC 2435; ONVIF Streaming §5.1.4).

The packetizer takes a baseline JFIF/JPEG picture (what the MJPEG transcoder's encoder writes)
and sends only what RFC 2435 carries: its entropy-coded scan, a main header (type, size in
8-pixel units, Q), a restart marker header when the picture has restart intervals, and, on
the first packet of each frame, its two quantization tables in band (Q = 255, so a receiver
takes new tables with every frame). The Huffman tables are not sent: the receiver uses the
standard ones of ITU-T T.81 Annex K, so a picture with other tables is refused.

Types: 0 (4:2:2, luma sampled 2x1) and 1 (4:2:0, luma 2x2), +64 with restart markers. Three
components, Y with quantization table 0, Cb and Cr with table 1 (a picture whose components
share one table sends it twice). Sizes are in 8-pixel units, at most 2040x2040.

The depacketizer rebuilds a complete JPEG file from the packets of one frame; the tests use
it to check the round trip and to fuzz, and it reads what other RFC 2435 senders send with
in-band tables.
"""

from __future__ import annotations

import dataclasses
import struct

from onvif_nvr.media.units import AccessUnit

#: The static RTP payload type of JPEG (RFC 3551).
PAYLOAD_TYPE = 26
#: Largest frame dimension RFC 2435 can express (255 8-pixel units).
MAX_DIMENSION = 2040
#: The Q of every frame we send: quantization tables in band, may change each frame.
Q_IN_BAND = 255

_MAIN = struct.Struct("!BBHBBBB")  # type-specific, offset (24 bits: high byte + 16), ...
_RESTART = struct.Struct("!HH")
_QTABLE = struct.Struct("!BBH")

# ITU-T T.81 Annex K.3: the standard Huffman tables (code counts per length 1..16, values).
_DC_LUMA_BITS = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
_DC_CHROMA_BITS = bytes([0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
_DC_VALUES = bytes(range(12))
_AC_LUMA_BITS = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])
_AC_CHROMA_BITS = bytes([0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77])


def _runs(*spans: tuple[int, int]) -> bytes:
    return b"".join(bytes(range(first, last + 1)) for first, last in spans)


_AC_LUMA_VALUES = bytes.fromhex(
    "01020300041105122131410613516107227114328191a10823"
    "42b1c11552d1f02433627282090a161718191a25262728292a"
) + _runs(
    (0x34, 0x3A), (0x43, 0x4A), (0x53, 0x5A), (0x63, 0x6A), (0x73, 0x7A), (0x83, 0x8A),
    (0x92, 0x9A), (0xA2, 0xAA), (0xB2, 0xBA), (0xC2, 0xCA), (0xD2, 0xDA), (0xE1, 0xEA),
    (0xF1, 0xFA),
)  # fmt: skip
_AC_CHROMA_VALUES = bytes.fromhex(
    "0001020311040521310612415107617113223281081442"
    "91a1b1c109233352f0156272d10a162434e125f11718191a"
    "262728292a35363738393a"
) + _runs(
    (0x43, 0x4A), (0x53, 0x5A), (0x63, 0x6A), (0x73, 0x7A), (0x82, 0x8A), (0x92, 0x9A),
    (0xA2, 0xAA), (0xB2, 0xBA), (0xC2, 0xCA), (0xD2, 0xDA), (0xE2, 0xEA), (0xF2, 0xFA),
)  # fmt: skip

#: (class << 4 | id) -> (bits, values) of the standard tables.
STANDARD_HUFFMAN: dict[int, tuple[bytes, bytes]] = {
    0x00: (_DC_LUMA_BITS, _DC_VALUES),
    0x01: (_DC_CHROMA_BITS, _DC_VALUES),
    0x10: (_AC_LUMA_BITS, _AC_LUMA_VALUES),
    0x11: (_AC_CHROMA_BITS, _AC_CHROMA_VALUES),
}


@dataclasses.dataclass(frozen=True)
class JpegFrame:
    """What RFC 2435 carries of one picture."""

    #: 0 (4:2:2) or 1 (4:2:0); restart markers are ``restart_interval > 0``.
    type: int
    width: int
    height: int
    #: (luma, chroma) quantization tables, 64 bytes each, zig-zag order (as in DQT).
    tables: tuple[bytes, bytes]
    #: MCUs per restart interval (DRI), 0 = none.
    restart_interval: int
    #: The entropy-coded scan (restart markers included), without the EOI marker.
    scan: bytes

    @property
    def rtp_type(self) -> int:
        return self.type + (64 if self.restart_interval else 0)


def _segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The marker segments up to and including SOS, and where the scan starts."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG picture (no SOI marker)")
    pos, size = 2, len(data)
    segments: list[tuple[int, bytes]] = []
    while True:
        while pos < size and data[pos] == 0xFF and pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > size:
            raise ValueError("JPEG picture ends before its scan")
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > size:
            raise ValueError(f"JPEG segment 0x{marker:02X} at byte {pos} is truncated")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            return segments, pos


def parse_jpeg(data: bytes) -> JpegFrame:
    """Read a baseline JPEG picture into what RFC 2435 sends; ``ValueError`` for pictures
    it cannot carry."""
    segments, scan_start = _segments(data)
    tables: dict[int, bytes] = {}
    sof: bytes | None = None
    restart_interval = 0
    sos = b""
    for marker, body in segments:
        if marker == 0xDB:
            pos = 0
            while pos < len(body):
                precision, table_id = body[pos] >> 4, body[pos] & 0x0F
                if precision != 0:
                    raise ValueError("16-bit quantization tables cannot be sent")
                if pos + 65 > len(body):
                    raise ValueError("JPEG quantization table is truncated")
                tables[table_id] = body[pos + 1 : pos + 65]
                pos += 65
        elif marker == 0xC4:
            pos = 0
            while pos < len(body):
                if pos + 17 > len(body):
                    raise ValueError("JPEG Huffman table is truncated")
                key, bits = body[pos], body[pos + 1 : pos + 17]
                count = sum(bits)
                values = body[pos + 17 : pos + 17 + count]
                if STANDARD_HUFFMAN.get(key) != (bits, values):
                    raise ValueError(
                        "JPEG Huffman tables are not the standard ones (RFC 2435 sends none)"
                    )
                pos += 17 + count
        elif marker == 0xDD:
            if len(body) != 2:
                raise ValueError("JPEG DRI segment has the wrong length")
            restart_interval = int.from_bytes(body, "big")
        elif marker == 0xC0:
            sof = body
        elif 0xC1 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise ValueError("only baseline JPEG (SOF0) can be sent")
        elif marker == 0xDA:
            sos = body
    if sof is None:
        raise ValueError("JPEG picture has no SOF0 segment")
    if len(sof) != 15 or sof[0] != 8 or sof[5] != 3:
        raise ValueError("JPEG picture must be 8-bit with 3 components")
    height, width = struct.unpack_from("!HH", sof, 1)
    luma_sampling, luma_table = sof[7], sof[8]
    chroma = {(sof[10], sof[11]), (sof[13], sof[14])}
    if luma_sampling == 0x21:
        kind = 0
    elif luma_sampling == 0x22:
        kind = 1
    else:
        raise ValueError(f"JPEG luma sampling 0x{luma_sampling:02X} is not 4:2:2 or 4:2:0")
    if len(chroma) != 1 or next(iter(chroma))[0] != 0x11:
        raise ValueError("JPEG chroma components must both be sampled 1x1 with one table")
    chroma_table = next(iter(chroma))[1]
    if luma_table not in tables or chroma_table not in tables:
        raise ValueError("JPEG picture refers to a missing quantization table")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ValueError(f"JPEG size {width}x{height} cannot be sent (at most 2040x2040)")
    # The scan must use DC/AC table 0 for Y and 1 for Cb and Cr (the receiver's header).
    if len(sos) != 10 or sos[0] != 3 or (sos[2], sos[4], sos[6]) != (0x00, 0x11, 0x11):
        raise ValueError("JPEG scan must code Y with Huffman tables 0 and Cb, Cr with 1")
    scan = data[scan_start:]
    if scan.endswith(b"\xff\xd9"):
        scan = scan[:-2]
    return JpegFrame(
        kind, width, height, (tables[luma_table], tables[chroma_table]), restart_interval, scan
    )


class JpegPacketizer:
    """RFC 2435 packets of JPEG pictures (one :class:`AccessUnit` = one picture)."""

    codec = "JPEG"

    def __init__(self, mtu: int = 1400) -> None:
        if mtu < 256:
            raise ValueError(f"MTU {mtu} too small")
        self.mtu = mtu

    def packetize(self, au: AccessUnit, rtp_timestamp: int) -> list[tuple[bytes, bool]]:
        """The (payload, marker) pairs of one picture; the marker is on the last."""
        return packetize(parse_jpeg(b"".join(au.payloads)), self.mtu)


def packetize(frame: JpegFrame, mtu: int = 1400) -> list[tuple[bytes, bool]]:
    """RFC 2435 payloads of ``frame`` (each at most ``mtu`` bytes)."""
    scan = frame.scan
    if len(scan) >= 1 << 24:
        raise ValueError("JPEG scan larger than 16 MB cannot be sent")
    kind = frame.rtp_type
    width, height = (frame.width + 7) // 8, (frame.height + 7) // 8
    # F = L = 1 and count 0x3FFF: packets are not aligned to restart intervals (§3.1.7).
    restart = _RESTART.pack(frame.restart_interval, 0xFFFF) if frame.restart_interval else b""
    tables = _QTABLE.pack(0, 0, 128) + frame.tables[0] + frame.tables[1]
    out: list[tuple[bytes, bool]] = []
    offset = 0
    while True:
        header = _MAIN.pack(0, offset >> 16, offset & 0xFFFF, kind, Q_IN_BAND, width, height)
        header += restart
        if offset == 0:
            header += tables
        room = mtu - len(header)
        chunk = scan[offset : offset + room]
        offset += len(chunk)
        last = offset >= len(scan)
        out.append((header + chunk, last))
        if last:
            return out


def _huffman_segment() -> bytes:
    body = b"".join(
        bytes([key]) + bits + values for key, (bits, values) in STANDARD_HUFFMAN.items()
    )
    return b"\xff\xc4" + struct.pack("!H", len(body) + 2) + body


_DHT = _huffman_segment()


def build_jpeg(
    kind: int,
    width: int,
    height: int,
    tables: tuple[bytes, bytes],
    restart_interval: int,
    scan: bytes,
) -> bytes:
    """A complete JPEG file from RFC 2435 fields (the receiver's side of §3.1 and App. A)."""
    luma_sampling = 0x21 if kind == 0 else 0x22
    dqt = b"\x00" + tables[0] + b"\x01" + tables[1]
    sof = struct.pack("!BHHB", 8, height, width, 3) + bytes(
        [1, luma_sampling, 0, 2, 0x11, 1, 3, 0x11, 1]
    )
    sos = bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
    parts = [
        b"\xff\xd8",
        b"\xff\xdb" + struct.pack("!H", len(dqt) + 2) + dqt,
        b"\xff\xc0" + struct.pack("!H", len(sof) + 2) + sof,
        _DHT,
    ]
    if restart_interval:
        parts.append(b"\xff\xdd\x00\x04" + struct.pack("!H", restart_interval))
    parts += [b"\xff\xda" + struct.pack("!H", len(sos) + 2) + sos, scan, b"\xff\xd9"]
    return b"".join(parts)


class JpegDepacketizer:
    """Reassembles RFC 2435 packets into JPEG files. Frames are told apart by their RTP
    timestamp; a frame with a missing fragment is dropped (``ValueError``)."""

    def __init__(self) -> None:
        self._timestamp: int | None = None
        self._parts: list[bytes] = []
        self._received = 0
        self._header: tuple[int, int, int, int, tuple[bytes, bytes]] | None = None
        #: Tables last received per Q (Q 128-254 may omit them on later frames).
        self._tables: dict[int, tuple[bytes, bytes]] = {}

    def _reset(self) -> None:
        self._timestamp, self._parts, self._received, self._header = None, [], 0, None

    def push(self, payload: bytes, marker: bool, rtp_timestamp: int) -> bytes | None:
        """Take one packet's payload; the complete JPEG when ``marker`` ends a frame."""
        if len(payload) < _MAIN.size:
            raise ValueError("RTP/JPEG packet shorter than its main header")
        _, offset_high, offset_low, kind, q, width, height = _MAIN.unpack_from(payload)
        offset = offset_high << 16 | offset_low
        pos = _MAIN.size
        if kind & 0x3F > 1:
            raise ValueError(f"RTP/JPEG type {kind} is not supported")
        restart_interval = 0
        if kind >= 64:
            if len(payload) < pos + _RESTART.size:
                raise ValueError("RTP/JPEG restart marker header is truncated")
            restart_interval = _RESTART.unpack_from(payload, pos)[0]
            pos += _RESTART.size
        if self._timestamp != rtp_timestamp:
            self._reset()
            if offset != 0:
                raise ValueError("RTP/JPEG frame starts at a non-zero fragment offset")
            self._timestamp = rtp_timestamp
        if offset == 0:
            if q < 128:
                raise ValueError(f"RTP/JPEG Q {q} (tables from a quality factor) is not supported")
            if len(payload) < pos + _QTABLE.size:
                raise ValueError("RTP/JPEG quantization table header is truncated")
            _, precision, length = _QTABLE.unpack_from(payload, pos)
            pos += _QTABLE.size
            if length:
                if precision or length != 128 or len(payload) < pos + length:
                    raise ValueError("RTP/JPEG quantization tables must be two 8-bit tables")
                self._tables[q] = (payload[pos : pos + 64], payload[pos + 64 : pos + 128])
                pos += length
            tables = self._tables.get(q)
            if tables is None:
                raise ValueError(f"RTP/JPEG Q {q} without quantization tables")
            self._header = (kind & 1, width * 8, height * 8, restart_interval, tables)
        if self._header is None or offset != self._received:
            got = offset
            self._reset()
            raise ValueError(f"RTP/JPEG fragment at offset {got} lost its predecessor")
        data = payload[pos:]
        self._parts.append(data)
        self._received += len(data)
        if not marker:
            return None
        header = self._header
        scan = b"".join(self._parts)
        self._reset()
        if header[1] == 0 or header[2] == 0:
            raise ValueError("RTP/JPEG frame of size zero")
        return build_jpeg(header[0], header[1], header[2], header[4], header[3], scan)
