"""The ONVIF replay RTP header extension (Streaming §6.3): byte layout, flags, the JPEG
extension words after it, insertion into packets already built, and a hypothesis round trip.
Expected bytes are written out by hand, independently of the module under test."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onvif_nvr.rtsp.onvif_ext import (
    OnvifReplayExtension,
    insert,
    mark_access_unit,
    onvif_replay_extension,
    pack,
    parse_packet,
)
from onvif_nvr.rtsp.rtp import RtpPacket, ntp_to_wall_ns, wall_ns_to_ntp
from tests.test_rtp import rtp_bytes


def test_onvif_extension_byte_layout() -> None:
    ext = OnvifReplayExtension(
        ntp_timestamp=(3_850_000_000 << 32) | 0x80000000,
        clean_point=True,
        discontinuity=True,
        cseq_low=0x1234,
    )
    profile, body = ext.to_extension()
    assert profile == 0xABAC
    assert body == bytes.fromhex("e57a5680 80000000 a0 34 0000")
    assert 3_850_000_000 == 0xE57A5680
    assert ext.cseq_low == 0x34

    data = rtp_bytes(ext=(profile, body), marker=False)
    assert data[12:16] == b"\xab\xac\x00\x03"
    packet = RtpPacket.parse(data)
    assert onvif_replay_extension(packet) == ext
    parsed = OnvifReplayExtension.parse(packet.extension_profile, packet.extension)
    assert (parsed.clean_point, parsed.end, parsed.discontinuity, parsed.terminal) == (
        True,
        False,
        True,
        False,
    )
    assert parsed.extra == b""


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0x40, (False, True, False, False)),
        (0x10, (False, False, False, True)),
        (0xF0, (True, True, True, True)),
        (0x8F, (True, False, False, False)),  # must-be-zero bits are ignored
    ],
)
def test_onvif_extension_flags(flags: int, expected: tuple[bool, ...]) -> None:
    body = struct.pack(">IIBBH", 1, 2, flags, 7, 0)
    ext = OnvifReplayExtension.parse(0xABAC, body)
    assert (ext.clean_point, ext.end, ext.discontinuity, ext.terminal) == expected
    assert ext.cseq_low == 7
    assert ext.ntp_timestamp == (1 << 32) | 2


def test_onvif_extension_with_jpeg_extension_words() -> None:
    jpeg = struct.pack(">HH", 0xFFD8, 1) + b"\xff\xc0\x00\x11"
    body = struct.pack(">IIBBH", 3_850_000_000, 0, 0x80, 0x01, 0) + jpeg
    packet = RtpPacket.parse(rtp_bytes(ext=(0xABAC, body), pt=26))
    ext = onvif_replay_extension(packet)
    assert ext is not None
    assert ext.extra == jpeg
    assert ext.to_extension() == (0xABAC, body)
    assert bytes(packet)[14:16] == b"\x00\x05"  # 3 ONVIF words + 2 JPEG words


def test_onvif_extension_errors() -> None:
    with pytest.raises(ValueError) as info:
        OnvifReplayExtension.parse(0xBEDE, bytes(12))
    assert str(info.value) == "RTP header extension is not the ONVIF replay extension"
    with pytest.raises(ValueError) as info:
        OnvifReplayExtension.parse(0xABAC, bytes(8))
    assert str(info.value) == "ONVIF replay extension is shorter than 12 bytes"
    assert onvif_replay_extension(RtpPacket.parse(rtp_bytes())) is None
    short = RtpPacket.parse(rtp_bytes(ext=(0xABAC, bytes(8))))
    assert onvif_replay_extension(short) is None
    with pytest.raises(ValueError) as info:
        OnvifReplayExtension(1 << 64).to_extension()
    assert str(info.value) == "ONVIF replay NTP timestamp is out of range"


# --- the replay server's fast path -----------------------------------------------------------
#: 2009-06-15T11:49:00.440Z, the time of Streaming §6.5's examples.
WALL_NS = 1_245_066_540_440_000_000


def test_pack_is_the_layout_of_streaming_6_3() -> None:
    data = pack(WALL_NS, clean_point=True, end=True, cseq=0x0123)
    ntp = wall_ns_to_ntp(WALL_NS)
    assert data == struct.pack(">HHII", 0xABAC, 3, ntp >> 32, ntp & 0xFFFFFFFF) + bytes(
        [0xC0, 0x23, 0, 0]
    )
    assert len(data) == 16
    assert pack(WALL_NS, clean_point=False, discontinuity=True)[12] == 0x20
    assert pack(WALL_NS, clean_point=False, terminal=True)[12] == 0x10


def test_insert_after_the_csrc_list_sets_x() -> None:
    extension = pack(WALL_NS, clean_point=True, cseq=7)
    for csrc in ((), (1, 2)):
        plain = rtp_bytes(csrc=csrc, marker=True, payload=b"\x65payload")
        marked = insert(plain, extension)
        assert marked[0] == plain[0] | 0x10 and marked[1:] != plain[1:]
        at = 12 + 4 * len(csrc)
        assert marked[:at][1:] == plain[:at][1:]
        assert marked[at : at + 16] == extension and marked[at + 16 :] == plain[at:]
        packet = RtpPacket.parse(marked)
        assert packet.payload == b"\x65payload" and packet.marker and packet.csrc == csrc
        ext = parse_packet(marked)
        assert ext is not None and ext.clean_point and ext.cseq_low == 7
        assert ntp_to_wall_ns(ext.ntp_timestamp) == WALL_NS


def test_insert_errors() -> None:
    extension = pack(WALL_NS, clean_point=True)
    cases = [
        (b"\x80" * 11, extension, "RTP packet length is less than 12 bytes"),
        (b"\x40" + bytes(11), extension, "RTP packet has invalid version"),
        (rtp_bytes(ext=(0xBEDE, bytes(4))), extension, "RTP packet already has a header extension"),
        (rtp_bytes(), extension[:14], "RTP header extension length is not a multiple of 4"),
        (rtp_bytes(), extension[:12], "RTP header extension length field does not match its body"),
        (b"\x82" + bytes(15), extension, "RTP packet has truncated CSRC"),
    ]
    for packet, ext, message in cases:
        with pytest.raises(ValueError) as info:
            insert(packet, ext)
        assert str(info.value) == message


def test_only_the_first_packet_of_a_unit_is_marked() -> None:
    packets = [rtp_bytes(seq=s, marker=s == 12) for s in (10, 11, 12)]
    extension = pack(WALL_NS, clean_point=True)
    marked = mark_access_unit(packets, extension)
    assert [parse_packet(p) is not None for p in marked] == [True, False, False]
    assert marked[1:] == packets[1:]
    assert mark_access_unit([], extension) == []
    assert parse_packet(rtp_bytes()) is None


@given(
    wall_ns=st.integers(min_value=0, max_value=2_085_978_495 * 10**9),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    cseq=st.integers(min_value=0, max_value=2**31),
    csrc=st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=15),
    payload=st.binary(max_size=64),
)
def test_round_trip(wall_ns, flags, cseq, csrc, payload) -> None:
    clean, end, discontinuity, terminal = flags
    extension = pack(wall_ns, clean_point=clean, end=end, discontinuity=discontinuity,
                     terminal=terminal, cseq=cseq)  # fmt: skip
    packet = insert(rtp_bytes(csrc=tuple(csrc), payload=payload), extension)
    parsed = RtpPacket.parse(packet)
    assert parsed.payload == payload and parsed.csrc == tuple(csrc)
    ext = onvif_replay_extension(parsed)
    assert ext == OnvifReplayExtension(
        wall_ns_to_ntp(wall_ns), clean, end, discontinuity, terminal, cseq & 0xFF
    )
    assert abs(ntp_to_wall_ns(ext.ntp_timestamp) - wall_ns) <= 1
    assert bytes(ext) == extension
    assert OnvifReplayExtension.parse(*ext.to_extension()) == ext
