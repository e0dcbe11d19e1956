"""H.265 RTP (de)packetization and SPS parsing against clips encoded by libx265 at test time."""

from __future__ import annotations

import re
from fractions import Fraction

import av
import pytest

from onvif_nvr.media.units import AccessUnit
from onvif_nvr.rtsp import h265
from onvif_nvr.rtsp.bits import remove_emulation_prevention
from tests import mediagen

Packet = tuple[bytes, int, bool, int]  # payload, RTP timestamp, marker, sequence number


def clip_units(data: bytes) -> list[tuple[list[bytes], bool]]:
    return [(h265.split_annexb(au), key) for au, key in mediagen.access_units(data, "hevc")]


def to_packets(
    packetizer: h265.H265Packetizer, units: list[tuple[list[bytes], bool]], seq0: int = 65_530
) -> list[Packet]:
    packets = []
    seq = seq0
    for i, (nals, key) in enumerate(units):
        ts = (0xFFFF_FF00 + 3600 * i) & 0xFFFF_FFFF
        for payload, marker in packetizer.packetize(AccessUnit("H265", tuple(nals), ts, key), ts):
            packets.append((payload, ts, marker, seq & 0xFFFF))
            seq += 1
    return packets


def feed_all(dep: h265.H265Depacketizer, packets: list[Packet]) -> list[AccessUnit]:
    out = []
    for payload, ts, marker, seq in packets:
        out.extend(dep.feed(payload, ts, marker, seq))
    return out + dep.flush()


def ptype(payload: bytes) -> int:
    return (payload[0] >> 1) & 0x3F


def parameter_sets(data: bytes) -> tuple[bytes, bytes, bytes]:
    nals = h265.split_annexb(data)
    vps, sps, pps = (next(n for n in nals if h265.nal_type(n) == t) for t in (32, 33, 34))
    return vps, sps, pps


@pytest.fixture(scope="module")
def clip() -> bytes:
    return mediagen.h265_annexb(320, 240, frames=30, fps=25, gop=10)


@pytest.mark.parametrize(
    ("width", "height", "fps", "kwargs", "expect"),
    [
        (320, 240, Fraction(25), {}, {"general_profile_idc": 1, "max_sub_layers": 1}),
        (854, 480, Fraction(30), {}, {"coded_width": 864, "conformance_window": (0, 5, 0, 0)}),
        (1920, 1080, Fraction(30000, 1001), {}, {"coded_height": 1088}),
        (
            320,
            240,
            Fraction(30),
            {"pix_fmt": "yuv420p10le"},
            {"general_profile_idc": 2, "bit_depth_luma": 10, "bit_depth_chroma": 10},
        ),
        (320, 240, Fraction(30), {"pix_fmt": "yuv444p"}, {"general_profile_idc": 4}),
        # Three temporal sub-layers: profile_tier_level carries sub-layer flags.
        (
            320,
            240,
            Fraction(30),
            {"x265_params": ":temporal-layers=3"},
            {"max_sub_layers": 3, "temporal_id_nesting": False},
        ),
    ],
)
def test_parse_sps_matches_encoder_and_decoder(
    width: int, height: int, fps: Fraction, kwargs: dict[str, str], expect: dict[str, object]
) -> None:
    data = mediagen.h265_annexb(width, height, frames=3, fps=fps, **kwargs)
    vps, sps, pps = parameter_sets(data)
    info = h265.parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert info.frame_rate == pytest.approx(float(fps))
    assert info.tier == 0 and info.general_profile_space == 0
    for name, value in expect.items():
        assert getattr(info, name) == value, name
    decoded = mediagen.decode(data, "hevc")
    assert decoded.sizes == [(width, height)] * 3
    assert decoded.frame_rate == fps
    chroma = 3 if kwargs.get("pix_fmt") == "yuv444p" else 1
    assert info.chroma_format_idc == chroma

    params = h265.video_parameters(vps, sps, pps)
    assert (params.codec, params.width, params.height) == ("H265", width, height)
    assert params.parameter_sets == (vps, sps, pps)
    assert params.codec_string == h265.codec_string(info)


def test_codec_strings() -> None:
    main = h265.parse_sps(parameter_sets(mediagen.h265_annexb(frames=3, fps=30))[1])
    # Main: compatibility flags 1 and 2 set (0x60000000), reversed -> 0x6; level 2 (60);
    # constraint byte progressive + frame-only (0x90), trailing zero bytes left off.
    assert h265.codec_string(main) == f"hvc1.1.6.L{main.general_level_idc}.90"
    assert main.general_level_idc == 60
    main10 = mediagen.h265_annexb(frames=3, fps=30, pix_fmt="yuv420p10le")
    assert h265.codec_string(h265.parse_sps(parameter_sets(main10)[1])) == "hvc1.2.4.L60.90"


def test_parse_sps_errors(clip: bytes) -> None:
    _, sps, pps = parameter_sets(clip)
    with pytest.raises(ValueError, match=re.escape("not an SPS: NAL unit type 34")):
        h265.parse_sps(pps)
    with pytest.raises(ValueError, match=re.escape("NAL unit of 1 bytes shorter than its 2-byte")):
        h265.parse_sps(b"\x42")
    with pytest.raises(
        ValueError,
        match=re.escape("bitstream ended early: general_profile_compatibility_flags needs 32"),
    ):
        h265.parse_sps(sps[:5])
    with pytest.raises(ValueError, match=r"^bitstream ended early: "):
        h265.parse_sps(sps[: len(sps) - 8])


def test_hvcc_record_feeds_a_decoder(clip: bytes) -> None:
    vps, sps, pps = parameter_sets(clip)
    record = h265.hvcc_record(vps, sps, pps)
    info = h265.parse_sps(sps)
    assert record[1] == info.general_profile_idc and record[12] == info.general_level_idc
    # The general part of profile_tier_level, as in the SPS.
    assert record[1:13] == remove_emulation_prevention(sps)[3:15]
    assert h265.parse_hvcc(record) == ({32: [vps], 33: [sps], 34: [pps]}, 4)
    ctx = av.CodecContext.create("hevc", "r")
    ctx.extradata = record
    frames = 0
    for au, _ in mediagen.access_units(clip, "hevc"):
        nals = [n for n in h265.split_annexb(au) if h265.nal_type(n) not in (32, 33, 34)]
        frames += len(ctx.decode(av.Packet(h265.to_avcc(nals))))
    frames += len(ctx.decode(None))
    assert frames == 30 and (ctx.width, ctx.height) == (320, 240)


@pytest.mark.parametrize("mtu", [200, 1400])
def test_round_trip_is_byte_identical(clip: bytes, mtu: int) -> None:
    units = clip_units(clip)
    assert len(units) == 30 and sum(key for _, key in units) == 3
    packets = to_packets(h265.H265Packetizer(96, 5, mtu=mtu), units)
    assert all(len(p[0]) <= mtu for p in packets)
    kinds = {ptype(p[0]) for p in packets}
    assert {h265.AP, h265.FU} <= kinds
    dep = h265.H265Depacketizer()
    aus = feed_all(dep, packets)
    assert [list(au.payloads) for au in aus] == [nals for nals, _ in units]
    assert [au.keyframe for au in aus] == [key for _, key in units]
    assert not any(au.damaged for au in aus)
    assert (dep.packets, dep.dropped, dep.lost) == (len(packets), 0, 0)
    vps, sps, pps = parameter_sets(clip)
    assert (dep.parameter_sets.vps, dep.parameter_sets.sps, dep.parameter_sets.pps) == (
        {0: vps},
        {0: sps},
        {0: pps},
    )
    stream = h265.to_annexb(n for au in aus for n in au.payloads)
    assert mediagen.decode(stream, "hevc").sizes == [(320, 240)] * 30


def test_aggregation_header_fields(clip: bytes) -> None:
    vps, sps, pps = parameter_sets(clip)
    out = h265.H265Packetizer(96, 5).packetize(AccessUnit("H265", (vps, sps, pps), 0, False), 0)
    assert len(out) == 1 and out[0][1]
    ap = out[0][0]
    # Type 48, LayerId 0, TID 1 (the lowest of the aggregated units).
    assert ap[:2] == bytes([48 << 1, 1])
    assert h265.H265Depacketizer().feed(ap, 0, True, 0)[0].payloads == (vps, sps, pps)


def test_loss_reordering_and_garbage(clip: bytes) -> None:
    units = clip_units(clip)
    packets = to_packets(h265.H265Packetizer(96, 5, mtu=200), units)

    # Lose the second fragment of a fragmented NAL unit in unit 3.
    def ts(i: int) -> int:
        return (packets[0][1] + i * 3600) & 0xFFFF_FFFF

    ts3 = ts(3)
    frag = [i for i, p in enumerate(packets) if p[1] == ts3 and ptype(p[0]) == h265.FU]
    lossy = packets[: frag[1]] + packets[frag[1] + 1 :]
    # Duplicate a packet of unit 6, add garbage into unit 8 with fresh sequence numbers.
    dup = next(i for i, p in enumerate(lossy) if p[1] == ts(6))
    lossy.insert(dup + 1, lossy[dup])
    first8 = next(i for i, p in enumerate(lossy) if p[1] == ts(8))
    ts8 = lossy[first8][1]
    garbage = [
        b"\x60\x01\x00\x05\x40",  # AP truncated inside a NAL unit
        b"\x62\x01\x05\x11\x22",  # FU middle fragment without its start
        b"\x64\x01\x00\x01",  # PACI: unsupported
        b"\x66\x01\x00",  # type 51: undefined
        b"\x40",  # shorter than the payload header
    ]
    shifted = [(p, t, m, (s + len(garbage)) & 0xFFFF) for p, t, m, s in lossy[first8:]]
    junk = [(g, ts8, False, (lossy[first8][3] + k) & 0xFFFF) for k, g in enumerate(garbage)]
    stream = lossy[:first8] + junk + shifted
    dep = h265.H265Depacketizer()
    aus = feed_all(dep, stream)
    assert dep.lost == 1
    assert dep.unsupported == 2
    by_index = {(au.rtp_timestamp - packets[0][1]) % (1 << 32) // 3600: au for au in aus}
    for i, (nals, key) in enumerate(units):
        if i == 3:
            assert i not in by_index or by_index[i].damaged
            continue
        assert list(by_index[i].payloads) == nals
        assert by_index[i].keyframe == key
        assert by_index[i].damaged == (i == 8)
    assert dep.damaged_units == 1 + (3 in by_index)


def test_embedded_start_codes_and_both_fu_flags(clip: bytes) -> None:
    vps, sps, pps = parameter_sets(clip)
    dep = h265.H265Depacketizer()
    (au,) = dep.feed(b"\x00\x00\x00\x01" + vps + b"\x00\x00\x00\x01" + sps, 9, True, 1)
    assert au.payloads == (vps, sps)
    (au,) = dep.feed(bytes([49 << 1, 1, 0xC0 | 19, 0xAF, 0x01]), 10, True, 2)
    assert au.payloads == (bytes([19 << 1, 1, 0xAF, 0x01]),) and au.keyframe


def test_insert_parameter_sets_lets_a_late_viewer_decode(clip: bytes) -> None:
    units = clip_units(clip)
    vps, sps, pps = parameter_sets(clip)
    bare = [([n for n in nals if h265.nal_type(n) not in (32, 33, 34)], k) for nals, k in units]
    late = bare[19:]  # decoding order: the third IRAP is the 20th unit
    assert late[0][1] and any(h265.nal_type(n) in range(16, 22) for n in late[0][0])

    def frames(packetizer: h265.H265Packetizer) -> int:
        aus = feed_all(h265.H265Depacketizer(), to_packets(packetizer, late))
        try:
            data = h265.to_annexb(n for au in aus for n in au.payloads)
            return len(mediagen.decode(data, "hevc").sizes)
        except av.error.InvalidDataError:
            return 0

    assert frames(h265.H265Packetizer(96, 5)) == 0
    inserting = h265.H265Packetizer(
        96, 5, insert_parameter_sets=True, parameter_sets=[vps, sps, pps]
    )
    # The unit starts with a CRA: leading pictures that refer to before it are skipped.
    assert 0 < frames(inserting) <= 11
    with pytest.raises(ValueError, match="MTU 9 too small"):
        h265.H265Packetizer(96, 5, mtu=9)
