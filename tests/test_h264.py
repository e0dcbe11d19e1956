"""H.264 RTP (de)packetization and SPS parsing against clips encoded by libx264 at test time."""

from __future__ import annotations

import re
from fractions import Fraction

import av
import pytest

from onvif_nvr.media.units import AccessUnit
from onvif_nvr.rtsp import h264
from onvif_nvr.rtsp.bits import (
    BaseDepacketizer,
    BasePacketizer,
    BitReader,
    add_emulation_prevention,
    remove_emulation_prevention,
)
from tests import mediagen

Packet = tuple[bytes, int, bool, int]  # payload, RTP timestamp, marker, sequence number


def clip_units(data: bytes) -> list[tuple[list[bytes], bool]]:
    """The clip's access units as FFmpeg's demuxer splits them: (NAL units, keyframe)."""
    return [(h264.split_annexb(au), key) for au, key in mediagen.access_units(data, "h264")]


def to_packets(
    packetizer: BasePacketizer,
    units: list[tuple[list[bytes], bool]],
    codec: str = "H264",
    seq0: int = 65_500,
    ts0: int = 0xFFFF_F000,
) -> list[Packet]:
    """Packetize units with sequence numbers and timestamps that both wrap."""
    packets = []
    seq = seq0
    for i, (nals, key) in enumerate(units):
        ts = (ts0 + 3000 * i) & 0xFFFF_FFFF
        au = AccessUnit(codec, tuple(nals), ts, keyframe=key)
        for payload, marker in packetizer.packetize(au, ts):
            packets.append((payload, ts, marker, seq & 0xFFFF))
            seq += 1
    return packets


def feed_all(dep: BaseDepacketizer, packets: list[Packet]) -> list[AccessUnit]:
    out = []
    for payload, ts, marker, seq in packets:
        out.extend(dep.feed(payload, ts, marker, seq))
    return out + dep.flush()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return mediagen.h264_annexb(320, 240, frames=30, fps=30, gop=10)


# -- bits ------------------------------------------------------------------------------------


def test_emulation_prevention_round_trip() -> None:
    rbsp = bytes([0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0])
    escaped = add_emulation_prevention(rbsp)
    assert escaped == bytes([0, 0, 3, 0, 0, 3, 0, 1, 0, 0, 3, 2, 0, 0, 3, 3, 0, 0, 4, 0, 0, 3])
    assert remove_emulation_prevention(escaped) == rbsp
    assert b"\x00\x00\x01" not in escaped


def test_bit_reader_exp_golomb_and_errors() -> None:
    # 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2; se +2, -2
    r = BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [r.ue(), r.ue(), r.ue(), r.se(), r.se()] == [0, 1, 2, 2, -2]
    assert r.bits_left == 7
    r.skip(7)
    with pytest.raises(ValueError, match=re.escape("bitstream ended early: ue(v) needs 1 bits")):
        r.ue()
    with pytest.raises(ValueError, match=r"more than 32 leading zeros"):
        BitReader(bytes(8)).ue("x")


# -- framing ---------------------------------------------------------------------------------


def test_annexb_and_avcc_framing() -> None:
    stream = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x00\x01\x65\x88"
    assert h264.split_annexb(stream) == [b"\x67\x42", b"\x68\xce", b"\x65\x88"]
    nals = [b"\x67\x42", b"\x68\xce", b"\x65\x88"]
    assert h264.split_annexb(h264.to_annexb(nals)) == nals
    for size in (1, 2, 4):
        assert h264.from_avcc(h264.to_avcc(nals, size), size) == nals
    assert h264.to_avcc([b"\x65\x88"]) == b"\x00\x00\x00\x02\x65\x88"
    with pytest.raises(ValueError, match="NAL unit at 0 claims 5 bytes, 2 left"):
        h264.from_avcc(b"\x00\x00\x00\x05\x65\x88")
    with pytest.raises(ValueError, match="invalid NAL length size 3"):
        h264.to_avcc(nals, 3)
    assert h264.nal_type(b"\x65") == 5


# -- SPS -------------------------------------------------------------------------------------

PROFILES = {"baseline": 66, "main": 77, "high": 100}


@pytest.mark.parametrize(
    ("width", "height", "profile", "fps", "coded_height"),
    [
        (320, 240, "high", Fraction(30), 240),
        (854, 480, "main", Fraction(25), 480),
        (1920, 1080, "high", Fraction(30000, 1001), 1088),
        (176, 144, "baseline", Fraction(15), 144),
        (642, 362, "high", Fraction(12), 368),
    ],
)
def test_parse_sps_matches_encoder_and_decoder(
    width: int, height: int, profile: str, fps: Fraction, coded_height: int
) -> None:
    data = mediagen.h264_annexb(width, height, frames=2, fps=fps, profile=profile)
    sps = next(n for n in h264.split_annexb(data) if h264.nal_type(n) == 7)
    pps = next(n for n in h264.split_annexb(data) if h264.nal_type(n) == 8)
    info = h264.parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert info.coded_height == coded_height
    assert info.profile_idc == PROFILES[profile]
    assert info.frame_rate == pytest.approx(float(fps))
    assert (info.chroma_format_idc, info.bit_depth_luma, info.frame_mbs_only) == (1, 8, True)
    decoded = mediagen.decode(data, "h264")
    assert decoded.sizes == [(width, height)] * 2
    assert decoded.frame_rate == fps
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = h264.avcc_record([sps], [pps])
    for packet in ctx.parse(data):
        ctx.decode(packet)
    assert ctx.level == info.level_idc

    params = h264.video_parameters(sps, pps)
    assert (params.codec, params.width, params.height) == ("H264", width, height)
    assert params.parameter_sets == (sps, pps)
    assert params.codec_string == f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"
    assert params.frame_rate == pytest.approx(float(fps))


@pytest.mark.parametrize(
    ("kwargs", "profile_idc", "chroma", "depth", "frame_mbs_only", "size"),
    [
        ({"pix_fmt": "yuv422p"}, 122, 2, 8, True, (320, 240)),
        ({"pix_fmt": "yuv444p"}, 244, 3, 8, True, (320, 240)),
        ({"pix_fmt": "yuv420p10le"}, 110, 1, 10, True, (320, 240)),
        ({"x264_params": ":cqm=jvt"}, 100, 1, 8, True, (320, 240)),  # scaling lists in the SPS
        (
            {"width": 1920, "height": 1080, "x264_params": ":interlaced=1"},
            100,
            1,
            8,
            False,
            (1920, 1080),
        ),
    ],
)
def test_parse_sps_high_profiles(
    kwargs: dict[str, object],
    profile_idc: int,
    chroma: int,
    depth: int,
    frame_mbs_only: bool,
    size: tuple[int, int],
) -> None:
    data = mediagen.h264_annexb(frames=2, **kwargs)
    nals = h264.split_annexb(data)
    sps = next(n for n in nals if h264.nal_type(n) == 7)
    pps = next(n for n in nals if h264.nal_type(n) == 8)
    info = h264.parse_sps(sps)
    assert info.profile_idc == profile_idc
    assert (info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma) == (
        chroma,
        depth,
        depth,
    )
    assert info.frame_mbs_only is frame_mbs_only
    assert (info.width, info.height) == size
    assert info.frame_rate == 30.0
    assert mediagen.decode(data, "h264").sizes == [size] * 2

    record = h264.avcc_record([sps], [pps])
    assert h264.parse_avcc(record) == ([sps], [pps], 4)
    if profile_idc in (100, 110, 122, 144):
        assert record[-4:] == bytes([0xFC | chroma, 0xF8 | depth - 8, 0xF8 | depth - 8, 0])
    else:
        assert record.endswith(pps)


def test_parse_sps_errors(clip: bytes) -> None:
    sps = next(n for n in h264.split_annexb(clip) if h264.nal_type(n) == 7)
    with pytest.raises(ValueError, match=re.escape("not an SPS: NAL unit type 8")):
        h264.parse_sps(b"\x68\xce\x38\x80")
    with pytest.raises(ValueError, match=re.escape("empty NAL unit")):
        h264.parse_sps(b"")
    with pytest.raises(
        ValueError, match=re.escape("bitstream ended early: level_idc needs 8 bits, 0 left")
    ):
        h264.parse_sps(sps[:3])
    with pytest.raises(ValueError, match=r"^bitstream ended early: \w+"):
        h264.parse_sps(sps[:10])
    # seq_parameter_set_id 32 (ue 000001 00001) is out of range.
    with pytest.raises(ValueError, match=re.escape("invalid SPS: seq_parameter_set_id 32 > 31")):
        h264.parse_sps(bytes([0x67, 66, 0, 30, 0b00000100, 0b00100000]))


# -- RTP round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("mtu", [200, 1400, 60_000])
def test_round_trip_is_byte_identical(clip: bytes, mtu: int) -> None:
    units = clip_units(clip)
    assert len(units) == 30 and sum(key for _, key in units) == 3
    packetizer = h264.H264Packetizer(96, 0x1234, mtu=mtu)
    packets = to_packets(packetizer, units)
    assert all(len(p[0]) <= mtu for p in packets)
    kinds = {p[0][0] & 0x1F for p in packets}
    assert h264.STAP_A in kinds
    assert (h264.FU_A in kinds) == (mtu < 60_000)
    assert bool(kinds & set(range(1, 24))) == (mtu > 200)
    assert [p[2] for p in packets].count(True) == len(units)

    dep = h264.H264Depacketizer()
    aus = feed_all(dep, packets)
    assert [list(au.payloads) for au in aus] == [nals for nals, _ in units]
    assert [au.keyframe for au in aus] == [key for _, key in units]
    assert [au.rtp_timestamp for au in aus] == [p[1] for p in packets if p[2]]
    assert not any(au.damaged for au in aus)
    assert (dep.packets, dep.dropped, dep.lost, dep.damaged_units) == (len(packets), 0, 0, 0)
    sps = next(n for n in units[0][0] if h264.nal_type(n) == 7)
    pps = next(n for n in units[0][0] if h264.nal_type(n) == 8)
    assert dep.parameter_sets.sps == {0: sps} and dep.parameter_sets.pps == {0: pps}

    # What came out decodes to the source frames; and through the avcC record with
    # length-prefixed samples, as an MP4 reader would.
    stream = h264.to_annexb(n for au in aus for n in au.payloads)
    assert mediagen.decode(stream, "h264").sizes == [(320, 240)] * 30
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = h264.avcc_record([sps], [pps])
    frames = 0
    for au in aus:
        sample = h264.to_avcc(n for n in au.payloads if h264.nal_type(n) not in (7, 8))
        frames += len(ctx.decode(av.Packet(sample)))
    frames += len(ctx.decode(None))
    assert frames == 30


def test_without_marker_bits_timestamps_end_units(clip: bytes) -> None:
    units = clip_units(clip)
    packets = [
        (p, ts, False, seq) for p, ts, _, seq in to_packets(h264.H264Packetizer(96, 1), units)
    ]
    dep = h264.H264Depacketizer()
    aus = []
    for payload, ts, marker, seq in packets:
        aus.extend(dep.feed(payload, ts, marker, seq))
    assert len(aus) == len(units) - 1
    aus += dep.flush()
    assert [list(au.payloads) for au in aus] == [nals for nals, _ in units]
    assert dep.flush() == []


def fu_runs(packets: list[Packet]) -> list[list[int]]:
    """Indexes of the packets of each fragmented NAL unit."""
    runs: list[list[int]] = []
    for i, (payload, *_) in enumerate(packets):
        if payload[0] & 0x1F == h264.FU_A:
            if payload[1] & 0x80:
                runs.append([])
            runs[-1].append(i)
    return runs


def test_lost_fragment_damages_only_its_unit(clip: bytes) -> None:
    units = clip_units(clip)
    packets = to_packets(h264.H264Packetizer(96, 1, mtu=200), units)
    run = next(r for r in fu_runs(packets) if len(r) > 3 and packets[r[0]][1] != packets[0][1])
    lost = run[1]
    victim = None
    ts = packets[lost][1]
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, packets[:lost] + packets[lost + 1 :])
    assert dep.lost == 1
    assert dep.dropped == len(run) - 1  # the fragments before and after the hole
    by_ts = {au.rtp_timestamp: au for au in aus}
    for i, (nals, _) in enumerate(units):
        t = (0xFFFF_F000 + 3000 * i) & 0xFFFF_FFFF
        if t == ts:
            victim = by_ts.get(t)
            assert victim is None or victim.damaged
            if victim is not None:
                assert set(victim.payloads) < set(nals)
        else:
            assert list(by_ts[t].payloads) == nals and not by_ts[t].damaged
    assert dep.damaged_units == (victim is not None)


def test_lost_marker_packet_damages_that_unit_only(clip: bytes) -> None:
    units = clip_units(clip)
    packets = to_packets(h264.H264Packetizer(96, 1, mtu=200), units)
    lost = [i for i, p in enumerate(packets) if p[2]][4]
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, packets[:lost] + packets[lost + 1 :])
    assert len(aus) == len(units)
    assert [au.damaged for au in aus] == [i == 4 for i in range(len(units))]
    assert [list(au.payloads) for au in aus][5:] == [nals for nals, _ in units][5:]


def test_loss_without_markers_damages_both_neighbours(clip: bytes) -> None:
    units = clip_units(clip)
    packets = [(p, t, False, s) for p, t, _, s in to_packets(h264.H264Packetizer(96, 1), units)]
    first_of_5 = next(i for i, p in enumerate(packets) if p[1] == packets[-1][1] - 3000 * 24)
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, packets[:first_of_5] + packets[first_of_5 + 1 :])
    # Without marker bits the lost packet may have ended unit 4 or begun unit 5.
    assert [i for i, au in enumerate(aus) if au.damaged] == [4, 5]
    assert len(aus) == len(units)


def test_duplicates_and_reordering(clip: bytes) -> None:
    units = clip_units(clip)
    packets = to_packets(h264.H264Packetizer(96, 1, mtu=200), units)
    dup = packets[:20] + [packets[19], packets[10]] + packets[20:]
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, dup)
    assert [list(au.payloads) for au in aus] == [nals for nals, _ in units]
    assert (dep.dropped, dep.lost, dep.damaged_units) == (2, 0, 0)

    # Swap two packets of one unit: the early one opens a gap, the late one is dropped.
    i = next(r for r in fu_runs(packets) if len(r) > 4)[1]
    swapped = packets[:i] + [packets[i + 1], packets[i]] + packets[i + 2 :]
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, swapped)
    assert dep.lost == 1 and dep.dropped >= 2
    damaged = [au.rtp_timestamp for au in aus if au.damaged]
    assert damaged == [packets[i][1]] or (
        not damaged and packets[i][1] not in {au.rtp_timestamp for au in aus}
    )
    assert len([au for au in aus if not au.damaged]) >= len(units) - 1


def test_sequence_jump_is_a_discontinuity_not_a_stall(clip: bytes) -> None:
    units = clip_units(clip)
    packets = to_packets(h264.H264Packetizer(96, 1), units)
    half = len(packets) // 2
    while not packets[half - 1][2]:
        half += 1
    jumped = packets[:half] + [(p, t, m, (s + 30_000) & 0xFFFF) for p, t, m, s in packets[half:]]
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, jumped)
    assert [list(au.payloads) for au in aus] == [nals for nals, _ in units]
    assert sum(au.damaged for au in aus) == 1 and dep.lost == 0


def test_garbage_is_dropped_and_counted(clip: bytes) -> None:
    units = clip_units(clip)[:12]
    good = to_packets(h264.H264Packetizer(96, 1, mtu=200), units, seq0=0)
    garbage = [
        (b"", False),  # zero-length
        (b"\x18\x00\x10\x67\x42", False),  # STAP-A truncated inside a NAL unit
        (b"\x18\x00", False),  # STAP-A truncated inside a size
        (b"\x18", False),  # empty STAP-A
        (b"\x7c\x05\x11\x22", False),  # FU-A middle fragment without a start
        (b"\x7c", False),  # truncated FU-A
        (b"\x7c\x98\x11", False),  # FU-A carrying a STAP-A
        (b"\x19\x00\x01\x02", True),  # STAP-B: interleaved mode
        (b"\x1d\x85\x00\x00\x11", True),  # FU-B
        (b"\x1e\x01\x02", True),  # type 30: undefined, ignored
    ]
    packets: list[Packet] = []
    seq = 0
    junk = iter(garbage)
    for i, (payload, ts, marker, _) in enumerate(good):
        packets.append((payload, ts, marker, seq))
        seq += 1
        if marker and i < len(good) - 1 and (item := next(junk, None)) is not None:
            # Between two units, with the next unit's timestamp.
            packets.append((item[0], good[i + 1][1], False, seq))
            seq += 1
    dep = h264.H264Depacketizer()
    aus = feed_all(dep, packets)
    assert [list(au.payloads) for au in aus] == [nals for nals, _ in units]
    assert len(packets) - len(good) == len(garbage)
    assert (dep.dropped, dep.lost, dep.unsupported) == (len(garbage), 0, 3)
    # An unusable packet marks the unit it fell into (it may have carried part of it), except
    # the undefined types 0/30/31 that RFC 6184 tells receivers to ignore.
    assert [i for i, au in enumerate(aus) if au.damaged] == list(range(1, len(garbage)))


def test_embedded_start_codes_and_aggregation(clip: bytes) -> None:
    sps, pps = h264.split_annexb(clip)[:2]
    dep = h264.H264Depacketizer()
    assert dep.feed(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps, 1, True, 7)[0].payloads == (
        sps,
        pps,
    )
    stap = b"\x78" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    (au,) = dep.feed(stap, 2, True, 8)
    assert au.payloads == (sps, pps) and not au.keyframe and not au.damaged
    # S and E in one FU-A breaks RFC 6184, but the NAL unit is whole: keep it.
    (au,) = dep.feed(b"\x7c\xc5\x88\x84", 3, True, 9)
    assert au.payloads == (b"\x65\x88\x84",) and au.keyframe


def test_oversized_unit_is_discarded(clip: bytes) -> None:
    units = clip_units(clip)
    packets = to_packets(h264.H264Packetizer(96, 1, mtu=200), units)
    dep = h264.H264Depacketizer(max_access_unit_size=8000)
    aus = feed_all(dep, packets)
    big = [i for i, (nals, _) in enumerate(units) if sum(map(len, nals)) > 8000]
    assert big
    assert [list(au.payloads) for au in aus if not au.damaged] == [
        nals for i, (nals, _) in enumerate(units) if i not in big
    ]


def test_packetizer_fragments_and_inserts_parameter_sets(clip: bytes) -> None:
    with pytest.raises(ValueError, match="MTU 5 too small"):
        h264.H264Packetizer(96, 1, mtu=5)
    units = clip_units(clip)
    sps, pps = units[0][0][:2]
    # A camera that sends SPS/PPS only out of band (SDP): the units carry none.
    bare = [([n for n in nals if h264.nal_type(n) not in (7, 8)], key) for nals, key in units]
    second_gop = bare[10:]
    assert second_gop[0][1]

    def decoded_frames(packetizer: h264.H264Packetizer) -> int:
        aus = feed_all(h264.H264Depacketizer(), to_packets(packetizer, second_gop))
        try:
            return len(
                mediagen.decode(h264.to_annexb(n for a in aus for n in a.payloads), "h264").sizes
            )
        except av.error.InvalidDataError:
            return 0

    assert decoded_frames(h264.H264Packetizer(96, 1, mtu=300)) == 0
    inserting = h264.H264Packetizer(
        96, 1, mtu=300, insert_parameter_sets=True, parameter_sets=[sps, pps]
    )
    assert decoded_frames(inserting) == 20
    au = AccessUnit("H264", (b"\x09\xf0", *second_gop[0][0]), 0, keyframe=True)
    out = inserting.packetize(au, 0)
    # The AUD stays first: one STAP-A with AUD, SPS and PPS, then the IDR slices as FU-As.
    assert out[0][0] == b"\x78" + b"".join(
        len(n).to_bytes(2, "big") + n for n in (b"\x09\xf0", sps, pps)
    )
    assert {p[0] & 0x1F for p, _ in out[1:]} == {h264.FU_A}
    assert [m for _, m in out] == [False] * (len(out) - 1) + [True]
    (back,) = feed_all(h264.H264Depacketizer(), [(p, 0, m, i) for i, (p, m) in enumerate(out)])
    assert back.payloads == (b"\x09\xf0", sps, pps, *second_gop[0][0])
    # Non-keyframes and keyframes that carry their parameter sets are left alone.
    assert len(inserting.packetize(AccessUnit("H264", tuple(units[0][0]), 0, True), 0)) == len(
        h264.H264Packetizer(96, 1, mtu=300).packetize(
            AccessUnit("H264", tuple(units[0][0]), 0, True), 0
        )
    )
    assert inserting.packetize(AccessUnit("H264", (), 0, False), 0) == []
