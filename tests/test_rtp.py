"""RTP/RTCP wire formats and receiver bookkeeping (the ONVIF replay extension:
tests/test_onvif_ext.py).

Packets are built byte by byte here with struct, independently of the module under test.
"""

from __future__ import annotations

import calendar
import random
import struct

import pytest

from onvif_nvr.rtsp.rtp import (
    Goodbye,
    InterarrivalJitter,
    ReceiverReport,
    ReceptionReport,
    ReorderBuffer,
    RtcpUnknown,
    RtpPacket,
    SenderReport,
    SequenceTracker,
    SourceDescription,
    build_compound,
    ntp_short,
    ntp_to_wall_ns,
    parse_rtcp,
    seq_newer,
    wall_ns_to_ntp,
)


def rtp_bytes(
    *,
    pt: int = 96,
    seq: int = 1000,
    ts: int = 90000,
    ssrc: int = 0x11223344,
    marker: bool = False,
    csrc: tuple[int, ...] = (),
    ext: tuple[int, bytes] | None = None,
    padding: int = 0,
    payload: bytes = b"\x65\x88\x84",
) -> bytes:
    first = 0x80 | len(csrc) | (0x10 if ext else 0) | (0x20 if padding else 0)
    out = struct.pack(">BBHII", first, pt | (0x80 if marker else 0), seq, ts, ssrc)
    for c in csrc:
        out += struct.pack(">I", c)
    if ext:
        out += struct.pack(">HH", ext[0], len(ext[1]) // 4) + ext[1]
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


# --- RTP ------------------------------------------------------------------------------------


def test_parse_minimal_packet() -> None:
    packet = RtpPacket.parse(rtp_bytes(marker=True))
    assert packet == RtpPacket(96, 1000, 90000, 0x11223344, b"\x65\x88\x84", marker=True)
    assert packet.extension_profile is None
    assert bytes(packet) == rtp_bytes(marker=True)


def test_parse_csrc_extension_and_padding_round_trip() -> None:
    data = rtp_bytes(
        pt=0,
        seq=65535,
        ts=0xFFFFFFFF,
        csrc=(1, 2, 0xFFFFFFFF),
        ext=(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=4,
        payload=b"\xff" * 160,
    )
    packet = RtpPacket.parse(data)
    assert packet.payload_type == 0
    assert packet.sequence_number == 65535
    assert packet.timestamp == 0xFFFFFFFF
    assert packet.csrc == (1, 2, 0xFFFFFFFF)
    assert packet.extension_profile == 0xBEDE
    assert packet.extension == b"\x10\xaa\x00\x00"
    assert packet.padding == 4
    assert packet.payload == b"\xff" * 160
    assert bytes(packet) == data


def test_parse_accepts_memoryview_and_copies_payload() -> None:
    buffer = bytearray(b"$\x00\x00\x0f" + rtp_bytes())
    packet = RtpPacket.parse(memoryview(buffer)[4:])
    buffer[-1] = 0  # the receive buffer is reused; the packet must not change
    assert type(packet.payload) is bytes
    assert packet.payload == b"\x65\x88\x84"


def test_empty_extension_and_empty_payload() -> None:
    data = rtp_bytes(ext=(0x1000, b""), payload=b"")
    packet = RtpPacket.parse(data)
    assert packet.extension_profile == 0x1000
    assert packet.extension == b""
    assert packet.payload == b""
    assert bytes(packet) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80" * 11, "RTP packet length is less than 12 bytes"),
        (b"", "RTP packet length is less than 12 bytes"),
        (b"\x40" + rtp_bytes()[1:], "RTP packet has invalid version"),
        (b"\x00" + rtp_bytes()[1:], "RTP packet has invalid version"),
        (rtp_bytes(csrc=(1, 2), payload=b"")[:19], "RTP packet has truncated CSRC"),
        (
            rtp_bytes(ext=(0xABAC, bytes(12)), payload=b"")[:14],
            "RTP packet has truncated extension profile / value",
        ),
        (
            rtp_bytes(ext=(0xABAC, bytes(12)), payload=b"")[:20],
            "RTP packet has truncated extension profile / value",
        ),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


@pytest.mark.parametrize("last", [0, 4])
def test_parse_invalid_padding(last: int) -> None:
    # P bit set; count 0, or larger than what follows the 12-byte header.
    data = bytearray(rtp_bytes(payload=b"\x01\x02\x03"))
    data[0] |= 0x20
    data[-1] = last
    with pytest.raises(ValueError) as info:
        RtpPacket.parse(bytes(data))
    assert str(info.value) == "RTP packet padding length is invalid"


def test_padding_may_cover_the_whole_payload() -> None:
    packet = RtpPacket.parse(rtp_bytes(payload=b"", padding=8))
    assert packet.payload == b""
    assert packet.padding == 8


def test_serialize_rejects_unaligned_extension() -> None:
    packet = RtpPacket(96, 1, 2, 3, b"", extension_profile=0xBEDE, extension=b"\x01")
    with pytest.raises(ValueError) as info:
        bytes(packet)
    assert str(info.value) == "RTP header extension length is not a multiple of 4"


def test_parse_at_volume() -> None:
    datas = [
        rtp_bytes(seq=i & 0xFFFF, ts=i * 3000, marker=i % 30 == 0, payload=bytes([i & 0xFF]) * 20)
        for i in range(100_000)
    ]
    parse = RtpPacket.parse
    packets = [parse(data) for data in datas]
    assert [p.sequence_number for p in packets[65530:65540]] == [
        65530,
        65531,
        65532,
        65533,
        65534,
        65535,
        0,
        1,
        2,
        3,
    ]
    assert sum(p.marker for p in packets) == 3334
    assert all(bytes(p) == d for p, d in zip(packets[::997], datas[::997], strict=True))


# --- RTCP -----------------------------------------------------------------------------------


def camera_sr_sdes() -> bytes:
    """SR (no report blocks) + SDES CNAME, as an Axis/Hikvision camera sends every 5 s."""
    sr = struct.pack(
        ">BBHIIIIII",
        0x80,
        200,
        6,
        0x5EED1234,
        3_976_214_400,
        0x40000000,
        123_456_789,
        1500,
        1_800_000,
    )
    cname = b"axis-00408c123456"
    items = bytes([1, len(cname)]) + cname
    chunk = struct.pack(">I", 0x5EED1234) + items
    chunk += b"\x00" * (4 - len(chunk) % 4)
    sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def test_parse_camera_compound() -> None:
    data = camera_sr_sdes()
    sr, sdes = parse_rtcp(data)
    assert sr == SenderReport(
        0x5EED1234, (3_976_214_400 << 32) | 0x40000000, 123_456_789, 1500, 1_800_000
    )
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks == [(0x5EED1234, [(1, b"axis-00408c123456")])]
    assert sdes.cname(0x5EED1234) == b"axis-00408c123456"
    assert sdes.cname(1) is None
    assert build_compound(sr, sdes) == data


def test_sender_report_time_is_2026_new_year() -> None:
    (sr, _) = parse_rtcp(camera_sr_sdes())
    assert isinstance(sr, SenderReport)
    new_year_ns = calendar.timegm((2026, 1, 1, 0, 0, 0)) * 1_000_000_000
    # 3_976_214_400 s after 1900-01-01 is 2026-01-01T00:00:00Z; fraction 0x40000000 = 0.25 s.
    assert ntp_to_wall_ns(sr.ntp_timestamp) == new_year_ns + 250_000_000
    assert wall_ns_to_ntp(new_year_ns) == 3_976_214_400 << 32
    assert ntp_short(sr.ntp_timestamp) == ((3_976_214_400 & 0xFFFF) << 16) | 0x4000


def test_ntp_conversions() -> None:
    assert ntp_to_wall_ns(2_208_988_800 << 32) == 0
    assert ntp_to_wall_ns(0) == -2_208_988_800 * 1_000_000_000
    assert wall_ns_to_ntp(1) == (2_208_988_800 << 32) + 4  # 1 ns = 4.29 units of 2**-32 s
    for wall_ns in (0, 1, 999_999_999, 1_767_225_600_123_456_789, 2_085_978_495_999_999_999):
        assert ntp_to_wall_ns(wall_ns_to_ntp(wall_ns)) == wall_ns
    with pytest.raises(ValueError) as info:
        wall_ns_to_ntp(2_085_978_496 * 1_000_000_000)  # 2036-02-07T06:28:16Z: era 1
    assert str(info.value) == "wall time is outside NTP era 0"
    with pytest.raises(ValueError) as info:
        ntp_to_wall_ns(-1)
    assert str(info.value) == "NTP timestamp is out of range"


def test_receiver_report_with_blocks_round_trip() -> None:
    block = struct.pack(
        ">IIIIII", 0xCAFE, (25 << 24) | 0xFFFFFE, 0x0001_0005, 42, 0x12345678, 65536
    )
    data = struct.pack(">BBHI", 0x81, 201, 7, 0xFEED) + block
    (rr,) = parse_rtcp(data)
    assert rr == ReceiverReport(
        0xFEED, [ReceptionReport(0xCAFE, 25, -2, 0x0001_0005, 42, 0x12345678, 65536)]
    )
    assert bytes(rr) == data


def test_reception_report_clamps_loss() -> None:
    report = ReceptionReport(1, 0, 10_000_000, 0, 0, 0, 0)
    assert bytes(report)[5:8] == b"\x7f\xff\xff"
    report.packets_lost = -10_000_000
    assert bytes(report)[5:8] == b"\x80\x00\x00"


def test_sender_report_with_blocks_and_padding() -> None:
    block = struct.pack(">IIIIII", 7, 0, 100, 3, 0, 0)
    body = struct.pack(">IQIII", 9, 1 << 32, 2, 3, 4) + block + b"\x00\x00\x00\x04"
    data = struct.pack(">BBH", 0xA1, 200, len(body) // 4) + body
    (sr,) = parse_rtcp(data)
    assert isinstance(sr, SenderReport)
    assert sr.reports == [ReceptionReport(7, 0, 0, 100, 3, 0, 0)]
    # Re-encoded without the (needless) padding: 12 words after the header.
    assert bytes(sr) == struct.pack(">BBH", 0x81, 200, 12) + data[4:-4]


def test_bye_round_trip() -> None:
    reason = b"camera shutdown"
    body = struct.pack(">II", 1, 2) + bytes([len(reason)]) + reason
    data = struct.pack(">BBH", 0x82, 203, len(body) // 4) + body
    (bye,) = parse_rtcp(data)
    assert bye == Goodbye([1, 2], reason)
    assert bytes(bye) == data
    assert parse_rtcp(bytes(Goodbye([5]))) == [Goodbye([5], b"")]
    reason_padded = bytes(Goodbye([5], b"bye"))
    assert len(reason_padded) == 12
    assert parse_rtcp(reason_padded) == [Goodbye([5], b"bye")]


def test_unknown_packets_are_kept() -> None:
    pli = struct.pack(">BBHII", 0x81, 206, 2, 1, 2)  # PSFB FMT=1 (PLI)
    app = struct.pack(">BBHI", 0x80, 204, 2, 3) + b"NAME"
    sr, unknown_pli, unknown_app = parse_rtcp(camera_sr_sdes()[:28] + pli + app)
    assert isinstance(sr, SenderReport)
    assert unknown_pli == RtcpUnknown(206, struct.pack(">II", 1, 2), 1)
    assert unknown_app == RtcpUnknown(204, struct.pack(">I", 3) + b"NAME", 0)
    assert build_compound(unknown_pli, unknown_app) == pli + app
    odd = bytes(RtcpUnknown(204, b"abcde"))
    assert odd[0] & 0x20
    assert parse_rtcp(odd) == [RtcpUnknown(204, b"abcde")]


def test_sdes_round_trip_and_lenient_end() -> None:
    sdes = SourceDescription([(1, [(1, b"user@host"), (6, b"onvif-nvr")]), (2, [])])
    data = bytes(sdes)
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == [sdes]
    # No null octet after the last item: accepted, the packet end closes the list.
    chunk = struct.pack(">I", 3) + bytes([1, 2]) + b"ab"
    assert parse_rtcp(struct.pack(">BBH", 0x81, 202, 2) + chunk) == [
        SourceDescription([(3, [(1, b"ab")])])
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc8\x00", "RTCP packet length is less than 4 bytes"),
        (camera_sr_sdes() + b"\x80", "RTCP packet length is less than 4 bytes"),
        (b"\x40\xc8\x00\x00", "RTCP packet has invalid version"),
        (camera_sr_sdes()[:27], "RTCP packet is truncated"),
        (struct.pack(">BBHI", 0x80, 200, 1, 1), "RTCP sender report length is invalid"),
        (
            struct.pack(">BBH", 0x81, 200, 6) + bytes(24),
            "RTCP sender report length is invalid",
        ),
        (b"\x80\xc9\x00\x00", "RTCP receiver report length is invalid"),
        (struct.pack(">BBHI", 0x81, 201, 1, 1), "RTCP receiver report length is invalid"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "RTCP packet padding length is invalid"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x05", "RTCP packet padding length is invalid"),
        (b"\x81\xca\x00\x00", "RTCP SDES chunk is truncated"),
        (struct.pack(">BBHI", 0x81, 202, 2, 1) + b"\x01\x09ab", "RTCP SDES item is truncated"),
        (struct.pack(">BBHI", 0x82, 203, 1, 1), "RTCP BYE length is invalid"),
        (struct.pack(">BBHI", 0x81, 203, 2, 1) + b"\x09abc", "RTCP BYE reason is truncated"),
    ],
)
def test_rtcp_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rtcp(data)
    assert str(info.value) == message


# --- Sequence numbers -----------------------------------------------------------------------


def test_seq_newer() -> None:
    assert seq_newer(1, 0)
    assert seq_newer(0, 65535)
    assert seq_newer(100, 65500)
    assert not seq_newer(65535, 0)
    assert not seq_newer(5, 5)
    assert seq_newer(0x7FFF, 0)
    assert not seq_newer(0x8000, 0)  # half the space apart: undefined, not newer


def feed(tracker: SequenceTracker, seqs: list[int]) -> list[str]:
    return [tracker.update(seq) for seq in seqs]


def test_tracker_probation_then_wrap() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [65533, 65534, 65535, 0, 1]) == ["probation", "ok", "ok", "ok", "ok"]
    assert tracker.cycles == 65536
    assert tracker.extended_highest_sequence == 65537
    assert tracker.base_seq == 65534
    assert (tracker.expected, tracker.received, tracker.lost) == (4, 4, 0)


def test_tracker_probation_restarts_on_out_of_order() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [10, 20, 21, 22]) == ["probation", "probation", "ok", "ok"]
    assert tracker.base_seq == 21


def test_tracker_gap_reorder_duplicate() -> None:
    tracker = SequenceTracker(probation=0)
    statuses = feed(tracker, [65534, 65535, 2, 0, 1, 1, 2, 3, 65535])
    assert statuses == [
        "ok",
        "ok",
        "gap:2",
        "reordered",
        "reordered",
        "duplicate",
        "duplicate",
        "ok",
        "duplicate",
    ]
    assert tracker.reordered == 2
    assert tracker.duplicates == 3
    assert tracker.expected == 6
    assert tracker.received == 9
    assert tracker.lost == -3  # duplicates count as received (RFC 3550 A.3)


def test_tracker_fraction_lost_and_report() -> None:
    tracker = SequenceTracker(probation=0)
    feed(tracker, [100, 101, 104, 105])  # 102, 103 missing: 2 of 6
    assert tracker.fraction_lost() == (2 << 8) // 6
    feed(tracker, [106, 107])
    report = tracker.reception_report(0xABC, jitter=12, lsr=5, dlsr=6)
    assert report == ReceptionReport(0xABC, 0, 2, 107, 12, 5, 6)


def test_tracker_restart_needs_two_sequential_packets() -> None:
    tracker = SequenceTracker(probation=0)
    assert feed(tracker, [500, 501, 40000, 502, 30000, 30001, 30002]) == [
        "ok",
        "ok",
        "probation",  # a stray far packet is not a restart by itself
        "ok",
        "probation",
        "restart",
        "ok",
    ]
    assert tracker.base_seq == 30001
    assert tracker.received == 2
    assert tracker.lost == 0


def test_tracker_old_packet_far_behind_is_a_restart_candidate() -> None:
    tracker = SequenceTracker(probation=0)
    assert feed(tracker, [5000, 5001, 1000, 1001]) == ["ok", "ok", "probation", "restart"]


def test_interarrival_jitter() -> None:
    jitter = InterarrivalJitter()
    jitter.update(0, 1000)
    assert jitter.jitter == 0
    jitter.update(3000, 4000)  # perfectly paced
    assert jitter.jitter == 0
    jitter.update(6000, 7160)  # 160 ticks late: J += (160 - 0) / 16
    assert jitter.jitter == 10
    # Across the 32-bit RTP timestamp wrap the transit difference stays small.
    wrap = InterarrivalJitter()
    wrap.update(0xFFFFFF00, 10_000)
    wrap.update(0x00000100, 10_000 + 0x200 + 16)
    assert wrap.jitter == 1


# --- Reorder buffer -------------------------------------------------------------------------


def packet(seq: int) -> RtpPacket:
    return RtpPacket(96, seq & 0xFFFF, seq * 3000 & 0xFFFFFFFF, 1)


def seqs(packets: list[RtpPacket]) -> list[int]:
    return [p.sequence_number for p in packets]


def test_reorder_in_order_and_swapped_across_wrap() -> None:
    buffer = ReorderBuffer()
    assert seqs(buffer.push(packet(65534))) == [65534]
    assert seqs(buffer.push(packet(0))) == []
    assert seqs(buffer.push(packet(65535))) == [65535, 0]
    assert seqs(buffer.push(packet(1))) == [1]
    assert seqs(buffer.push(packet(1))) == []
    assert (buffer.lost, buffer.late, buffer.duplicates) == (0, 1, 0)


def test_reorder_skips_lost_packet_after_max_delay() -> None:
    buffer = ReorderBuffer(max_delay_packets=4)
    assert seqs(buffer.push(packet(10))) == [10]
    # 11 is lost.
    assert seqs(buffer.push(packet(12))) == []
    assert seqs(buffer.push(packet(14))) == []
    assert seqs(buffer.push(packet(14))) == []
    assert seqs(buffer.push(packet(13))) == []
    assert seqs(buffer.push(packet(15))) == [12, 13, 14, 15]
    assert buffer.lost == 1
    assert buffer.duplicates == 1
    assert seqs(buffer.push(packet(11))) == []  # too late now
    assert buffer.late == 1
    assert seqs(buffer.push(packet(16))) == [16]
    assert len(buffer) == 0


def test_reorder_flush_and_restart() -> None:
    buffer = ReorderBuffer()
    buffer.push(packet(100))
    buffer.push(packet(103))
    buffer.push(packet(102))
    assert len(buffer) == 2
    assert seqs(buffer.flush()) == [102, 103]
    assert buffer.lost == 1
    assert seqs(buffer.push(packet(104))) == [104]
    buffer.push(packet(106))
    assert seqs(buffer.push(packet(20000))) == [106, 20000]
    assert seqs(buffer.push(packet(20001))) == [20001]
    with pytest.raises(ValueError):
        ReorderBuffer(0)


def test_hostile_input_raises_only_value_error() -> None:
    rng = random.Random(3550)
    for _ in range(20_000):
        data = bytearray(rng.randbytes(rng.randrange(0, 64)))
        if data and rng.random() < 0.8:
            data[0] = 0x80 | (data[0] & 0x3F)  # version 2, so parsing gets past the first check
        try:
            packet = RtpPacket.parse(bytes(data))
        except ValueError:
            pass
        else:
            assert RtpPacket.parse(bytes(packet)) == packet
        try:
            rtcp = parse_rtcp(bytes(data))
        except ValueError:
            pass
        else:
            assert parse_rtcp(build_compound(*rtcp)) == rtcp
