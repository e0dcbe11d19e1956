"""H.265 over RTP (RFC 7798) and the H.265 bitstream facts the NVR needs (sans-IO).

Same model and shared core as ``h264.py`` (see ``bits.py``), with the 2-byte NAL unit header
``F(1) type(6) LayerId(6) TID(3)``. The NVR negotiates neither ``sprop-max-don-diff`` nor
``sprop-depack-buf-nalus``, so they are 0: NAL units are sent in decoding order and aggregation
packets and fragmentation units carry no DONL/DOND fields. A camera that announces
``sprop-max-don-diff`` > 0 in its SDP must be refused by the caller (or its DON fields would be
read as NAL data).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Sequence

from onvif_nvr.media.units import VideoParameters
from onvif_nvr.rtsp.bits import (
    BaseDepacketizer,
    BasePacketizer,
    BitReader,
    Drop,
    ParameterSets,
    from_avcc,
    remember_parameter_set,
    remove_emulation_prevention,
    split_annexb,
    to_annexb,
    to_avcc,
)
from onvif_nvr.rtsp.h264 import vui_sar

__all__ = [
    "H265Depacketizer",
    "H265Packetizer",
    "ParameterSets",
    "SpsInfo",
    "codec_string",
    "from_avcc",
    "hvcc_record",
    "nal_type",
    "parse_hvcc",
    "parse_sps",
    "split_annexb",
    "to_annexb",
    "to_avcc",
    "video_parameters",
]

log = logging.getLogger(__name__)

# NAL unit types (H.265 table 7-1) and RFC 7798 packet types.
NAL_IRAP_FIRST = 16  # BLA_W_LP
NAL_IRAP_LAST = 21  # CRA_NUT (22 and 23 are reserved IRAP types)
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
AP = 48
FU = 49
PACI = 50

_KINDS = {NAL_VPS: "vps", NAL_SPS: "sps", NAL_PPS: "pps"}


def nal_type(nal: bytes) -> int:
    """The ``nal_unit_type`` of an H.265 NAL unit."""
    if len(nal) < 2:
        raise ValueError(f"NAL unit of {len(nal)} bytes shorter than its 2-byte header")
    return (nal[0] >> 1) & 0x3F


def _is_irap(nal: bytes) -> bool:
    return NAL_IRAP_FIRST <= (nal[0] >> 1) & 0x3F <= NAL_IRAP_LAST


def _ps_id(nal: bytes) -> tuple[str, int] | None:
    """("vps"|"sps"|"pps", id) of an H.265 parameter set, None for other NAL units."""
    t = nal_type(nal)
    if t not in _KINDS:
        return None
    r = BitReader(remove_emulation_prevention(nal[2:]))
    if t == NAL_VPS:
        return "vps", r.u(4, "vps_video_parameter_set_id")
    if t == NAL_PPS:
        return "pps", r.ue("pps_pic_parameter_set_id")
    r.skip(4, "sps_video_parameter_set_id")
    sub_layers = r.u(3, "sps_max_sub_layers_minus1")
    r.skip(1, "sps_temporal_id_nesting_flag")
    _profile_tier_level(r, sub_layers)
    return "sps", r.ue("sps_seq_parameter_set_id")


def _single_nals(nals: list[bytes]) -> list[bytes]:
    for nal in nals:
        if len(nal) < 2 or (nal[0] >> 1) & 0x3F >= AP:
            raise Drop("packet holds a packet type or a truncated NAL unit header")
    return nals


class H265Depacketizer(BaseDepacketizer):
    """RFC 7798: single NAL unit packets (types 0-47), aggregation packets and fragmentation
    units. PACI packets (50) are counted in ``unsupported`` and dropped, as are undefined types
    (51-63). As with H.264, payloads with embedded Annex B start codes are split at them.
    """

    codec = "H265"

    def _depacketize(self, payload: bytes) -> list[bytes]:
        if len(payload) < 2:
            raise Drop(f"payload of {len(payload)} bytes shorter than the payload header")
        t = (payload[0] >> 1) & 0x3F
        if t < AP:
            if b"\x00\x00\x01" in payload:
                return _single_nals(split_annexb(payload))
            return [payload]
        if t == AP:
            return _single_nals(self._unpack_aggregate(payload, 2))
        if t == FU:
            if len(payload) < 4:
                raise Drop("truncated FU")
            fu = payload[2]
            fu_type = fu & 0x3F
            if fu_type >= AP:
                raise Drop(f"FU carries NAL unit type {fu_type}")
            header = bytes([(payload[0] & 0x81) | (fu_type << 1), payload[1]])
            return self._fragment(bool(fu & 0x80), bool(fu & 0x40), header, payload[3:])
        if t == PACI:
            raise Drop("PACI packets not supported", unsupported=True)
        raise Drop(f"undefined packet type {t}", damaging=False, unsupported=True)

    def _continuation(self, view: memoryview, start: int, end: int, fu: bytearray) -> int:
        if end - start < 4:
            return 0
        first, header = view[start], view[start + 2]
        if (first >> 1) & 0x3F != FU or header & 0x80 or (header & 0x3F) >= AP:
            return 0
        if (first & 0x81) | ((header & 0x3F) << 1) != fu[0] or view[start + 1] != fu[1]:
            return 0
        return start + 3

    def _is_keyframe_nal(self, nal: bytes) -> bool:
        return _is_irap(nal)

    def _remember(self, nal: bytes) -> None:
        remember_parameter_set(self.parameter_sets, nal, _ps_id, "H265")


class H265Packetizer(BasePacketizer):
    """RFC 7798 packetization without DONL: single NAL unit packets, APs and FUs."""

    codec = "H265"
    _header_size = 2
    _needed_kinds = ("vps", "sps", "pps")

    def _remember(self, nal: bytes) -> None:
        remember_parameter_set(self.parameter_sets, nal, _ps_id, "H265")

    def _kind(self, nal: bytes) -> str | None:
        return _KINDS.get((nal[0] >> 1) & 0x3F)

    def _is_keyframe_nal(self, nal: bytes) -> bool:
        return _is_irap(nal)

    def _is_aud(self, nal: bytes) -> bool:
        return (nal[0] >> 1) & 0x3F == NAL_AUD

    def _aggregatable(self, nal: bytes) -> bool:
        return len(nal) >= 2 and NAL_VPS <= (nal[0] >> 1) & 0x3F < AP

    def _aggregation_header(self, group: list[bytes]) -> bytes:
        # RFC 7798 4.4.2: F is the OR, LayerId and TID the lowest of the aggregated units.
        forbidden = max(n[0] & 0x80 for n in group)
        layer = min(((n[0] & 1) << 5) | (n[1] >> 3) for n in group)
        tid = min(n[1] & 7 for n in group)
        return bytes([forbidden | (AP << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid])

    def _fu_header(self, nal_header: bytes) -> tuple[bytes, int]:
        header = bytes([(nal_header[0] & 0x81) | (FU << 1), nal_header[1]])
        return header, (nal_header[0] >> 1) & 0x3F


# ---------------------------------------------------------------------------------------------
# Sequence parameter set (H.265 7.3.2.2) and the MP4 hvcC record (ISO/IEC 14496-15 8.3.3).


@dataclasses.dataclass(frozen=True, slots=True)
class _Ptl:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    constraint_flags: int
    level_idc: int


def _profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> _Ptl:
    """profile_tier_level(1, max_sub_layers_minus1) (7.3.3): the general part, sub-layers
    skipped."""
    space = r.u(2, "general_profile_space")
    tier = r.u(1, "general_tier_flag")
    profile = r.u(5, "general_profile_idc")
    compat = r.u(32, "general_profile_compatibility_flags")
    # progressive/interlaced/non-packed/frame-only flags + 43 constraint bits + 1 bit.
    constraints = r.u(48, "general constraint indicator flags")
    level = r.u(8, "general_level_idc")
    present = [
        (r.flag("sub_layer_profile_present_flag"), r.flag("sub_layer_level_present_flag"))
        for _ in range(max_sub_layers_minus1)
    ]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1), "reserved_zero_2bits")
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88, "sub-layer profile")
        if level_present:
            r.skip(8, "sub_layer_level_idc")
    return _Ptl(space, tier, profile, compat, constraints, level)


def _scaling_list_data(r: BitReader) -> None:
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not r.flag("scaling_list_pred_mode_flag"):
                r.ue("scaling_list_pred_matrix_id_delta")
                continue
            if size_id > 1:
                r.se("scaling_list_dc_coef_minus8")
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                r.se("scaling_list_delta_coef")


def _st_ref_pic_set(
    r: BitReader, idx: int, sets: list[tuple[list[int], list[int]]]
) -> tuple[list[int], list[int]]:
    """st_ref_pic_set(idx) (7.3.7) in an SPS: the (DeltaPocS0, DeltaPocS1) lists, whose
    lengths the following sets predicted from this one need."""
    if idx and r.flag("inter_ref_pic_set_prediction_flag"):
        # In an SPS delta_idx_minus1 is absent (inferred 0): predicted from the previous set.
        sign = r.u(1, "delta_rps_sign")
        magnitude = r.ue("abs_delta_rps_minus1") + 1
        if magnitude > 1 << 15:
            raise ValueError(f"invalid SPS: abs_delta_rps_minus1 {magnitude - 1} > 2^15 - 1")
        delta = -magnitude if sign else magnitude
        ref0, ref1 = sets[idx - 1]
        use = []
        for _ in range(len(ref0) + len(ref1) + 1):
            used = r.flag("used_by_curr_pic_flag")
            use.append(used or r.flag("use_delta_flag"))
        n0 = len(ref0)
        # Equations 7-61 and 7-62.
        s0 = [ref1[j] + delta for j in reversed(range(len(ref1))) if use[n0 + j]]
        s0 = [d for d in s0 if d < 0] + ([delta] if delta < 0 and use[-1] else [])
        s0 += [ref0[j] + delta for j in range(n0) if use[j] and ref0[j] + delta < 0]
        s1 = [ref0[j] + delta for j in reversed(range(n0)) if use[j] and ref0[j] + delta > 0]
        s1 += [delta] if delta > 0 and use[-1] else []
        s1 += [d + delta for j, d in enumerate(ref1) if use[n0 + j] and d + delta > 0]
        if len(s0) > 16 or len(s1) > 16:
            raise ValueError("invalid SPS: predicted reference picture set too large")
        return s0, s1
    negative = r.ue("num_negative_pics")
    positive = r.ue("num_positive_pics")
    if negative > 16 or positive > 16:
        raise ValueError(f"invalid SPS: {negative}+{positive} reference pictures > 16")
    lists: list[list[int]] = []
    for count, sign in ((negative, -1), (positive, 1)):
        poc = 0
        deltas = []
        for _ in range(count):
            poc += sign * (r.ue("delta_poc_minus1") + 1)
            r.skip(1, "used_by_curr_pic_flag")
            deltas.append(poc)
        lists.append(deltas)
    return lists[0], lists[1]


_SUB_WH = {1: (2, 2), 2: (2, 1), 3: (1, 1)}


@dataclasses.dataclass(frozen=True, slots=True)
class SpsInfo:
    """The fields of an H.265 SPS the NVR uses; sizes are after the conformance window."""

    general_profile_space: int
    #: general_tier_flag: 0 Main tier, 1 High tier.
    tier: int
    general_profile_idc: int
    general_profile_compatibility_flags: int
    #: The 48 bits from general_progressive_source_flag on, as an integer.
    general_constraint_indicator_flags: int
    general_level_idc: int
    vps_id: int
    sps_id: int
    max_sub_layers: int
    temporal_id_nesting: bool
    chroma_format_idc: int
    separate_colour_plane: bool
    width: int
    height: int
    coded_width: int
    coded_height: int
    #: conf_win_{left,right,top,bottom}_offset in chroma sample units.
    conformance_window: tuple[int, int, int, int]
    bit_depth_luma: int
    bit_depth_chroma: int
    log2_max_pic_order_cnt_lsb: int
    sar: tuple[int, int]
    num_units_in_tick: int
    time_scale: int
    #: vui_time_scale / vui_num_units_in_tick when the VUI has timing info.
    frame_rate: float | None


def parse_sps(sps: bytes) -> SpsInfo:
    """Parse an H.265 SPS NAL unit (with its 2-byte header) up to the VUI timing info."""
    if nal_type(sps) != NAL_SPS:
        raise ValueError(f"not an SPS: NAL unit type {nal_type(sps)}")
    r = BitReader(remove_emulation_prevention(sps[2:]))
    vps_id = r.u(4, "sps_video_parameter_set_id")
    sub_layers_minus1 = r.u(3, "sps_max_sub_layers_minus1")
    if sub_layers_minus1 > 6:
        raise ValueError(f"invalid SPS: sps_max_sub_layers_minus1 {sub_layers_minus1} > 6")
    nesting = r.flag("sps_temporal_id_nesting_flag")
    ptl = _profile_tier_level(r, sub_layers_minus1)
    sps_id = r.ue("sps_seq_parameter_set_id")
    if sps_id > 15:
        raise ValueError(f"invalid SPS: sps_seq_parameter_set_id {sps_id} > 15")
    chroma = r.ue("chroma_format_idc")
    if chroma > 3:
        raise ValueError(f"invalid SPS: chroma_format_idc {chroma} > 3")
    separate = chroma == 3 and r.flag("separate_colour_plane_flag")
    coded_width = r.ue("pic_width_in_luma_samples")
    coded_height = r.ue("pic_height_in_luma_samples")
    if not (0 < coded_width <= 16888 and 0 < coded_height <= 16888):
        raise ValueError(f"invalid SPS: coded size {coded_width}x{coded_height}")
    window = (0, 0, 0, 0)
    if r.flag("conformance_window_flag"):
        window = (r.ue("conf_win_left_offset"), r.ue("conf_win_right_offset"),
                  r.ue("conf_win_top_offset"), r.ue("conf_win_bottom_offset"))  # fmt: skip
    depth_luma = r.ue("bit_depth_luma_minus8") + 8
    depth_chroma = r.ue("bit_depth_chroma_minus8") + 8
    if depth_luma > 16 or depth_chroma > 16:
        raise ValueError(f"invalid SPS: bit depth {max(depth_luma, depth_chroma)} > 16")
    log2_poc_lsb = r.ue("log2_max_pic_order_cnt_lsb_minus4") + 4
    if log2_poc_lsb > 16:
        raise ValueError(f"invalid SPS: log2_max_pic_order_cnt_lsb_minus4 {log2_poc_lsb - 4} > 12")
    all_layers = r.flag("sps_sub_layer_ordering_info_present_flag")
    for _ in range(0 if all_layers else sub_layers_minus1, sub_layers_minus1 + 1):
        r.ue("sps_max_dec_pic_buffering_minus1")
        r.ue("sps_max_num_reorder_pics")
        r.ue("sps_max_latency_increase_plus1")
    for name in ("log2_min_luma_coding_block_size_minus3",
                 "log2_diff_max_min_luma_coding_block_size",
                 "log2_min_luma_transform_block_size_minus2",
                 "log2_diff_max_min_luma_transform_block_size",
                 "max_transform_hierarchy_depth_inter",
                 "max_transform_hierarchy_depth_intra"):  # fmt: skip
        r.ue(name)
    if r.flag("scaling_list_enabled_flag") and r.flag("sps_scaling_list_data_present_flag"):
        _scaling_list_data(r)
    r.skip(2, "amp_enabled_flag, sample_adaptive_offset_enabled_flag")
    if r.flag("pcm_enabled_flag"):
        r.skip(8, "pcm_sample_bit_depth_{luma,chroma}_minus1")
        r.ue("log2_min_pcm_luma_coding_block_size_minus3")
        r.ue("log2_diff_max_min_pcm_luma_coding_block_size")
        r.skip(1, "pcm_loop_filter_disabled_flag")
    num_sets = r.ue("num_short_term_ref_pic_sets")
    if num_sets > 64:
        raise ValueError(f"invalid SPS: num_short_term_ref_pic_sets {num_sets} > 64")
    sets: list[tuple[list[int], list[int]]] = []
    for idx in range(num_sets):
        sets.append(_st_ref_pic_set(r, idx, sets))
    if r.flag("long_term_ref_pics_present_flag"):
        count = r.ue("num_long_term_ref_pics_sps")
        if count > 32:
            raise ValueError(f"invalid SPS: num_long_term_ref_pics_sps {count} > 32")
        for _ in range(count):
            r.skip(log2_poc_lsb + 1, "lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag")
    r.skip(2, "sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag")
    sar, units, scale = (1, 1), 0, 0
    if r.flag("vui_parameters_present_flag"):
        sar = vui_sar(r)
        r.skip(3, "neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag")
        if r.flag("default_display_window_flag"):
            for _ in range(4):
                r.ue("def_disp_win_offset")
        if r.flag("vui_timing_info_present_flag"):
            units = r.u(32, "vui_num_units_in_tick")
            scale = r.u(32, "vui_time_scale")

    sub_w, sub_h = (1, 1) if separate else _SUB_WH.get(chroma, (1, 1))
    width = coded_width - sub_w * (window[0] + window[1])
    height = coded_height - sub_h * (window[2] + window[3])
    if width <= 0 or height <= 0:
        raise ValueError(
            f"invalid SPS: conformance window {window} leaves no picture of "
            f"{coded_width}x{coded_height}"
        )
    return SpsInfo(
        general_profile_space=ptl.profile_space,
        tier=ptl.tier,
        general_profile_idc=ptl.profile_idc,
        general_profile_compatibility_flags=ptl.compatibility_flags,
        general_constraint_indicator_flags=ptl.constraint_flags,
        general_level_idc=ptl.level_idc,
        vps_id=vps_id,
        sps_id=sps_id,
        max_sub_layers=sub_layers_minus1 + 1,
        temporal_id_nesting=nesting,
        chroma_format_idc=chroma,
        separate_colour_plane=separate,
        width=width,
        height=height,
        coded_width=coded_width,
        coded_height=coded_height,
        conformance_window=window,
        bit_depth_luma=depth_luma,
        bit_depth_chroma=depth_chroma,
        log2_max_pic_order_cnt_lsb=log2_poc_lsb,
        sar=sar,
        num_units_in_tick=units,
        time_scale=scale,
        frame_rate=scale / units if units and scale else None,
    )


def codec_string(info: SpsInfo) -> str:
    """RFC 6381 / ISO 14496-15 E.3 ``hvc1.<space><profile>.<compat>.<tier><level>.<bytes>``:
    compatibility flags bit-reversed in hex, constraint bytes with trailing zeros left off."""
    space = ("", "A", "B", "C")[info.general_profile_space]
    compat = int(f"{info.general_profile_compatibility_flags:032b}"[::-1], 2)
    tier = "H" if info.tier else "L"
    constraint = info.general_constraint_indicator_flags.to_bytes(6, "big").rstrip(b"\x00")
    text = f"hvc1.{space}{info.general_profile_idc}.{compat:X}.{tier}{info.general_level_idc}"
    return "".join([text, *(f".{b:02X}" for b in constraint)])


def _as_list(value: bytes | Sequence[bytes]) -> list[bytes]:
    return [bytes(value)] if isinstance(value, bytes | bytearray) else [bytes(v) for v in value]


def video_parameters(
    vps: bytes | Sequence[bytes], sps: bytes | Sequence[bytes], pps: bytes | Sequence[bytes]
) -> VideoParameters:
    """The stream description for the hub, the segment writer and SDP (the first SPS rules)."""
    sps_list = _as_list(sps)
    if not sps_list:
        raise ValueError("no SPS")
    info = parse_sps(sps_list[0])
    return VideoParameters(
        codec="H265",
        width=info.width,
        height=info.height,
        parameter_sets=(*_as_list(vps), *sps_list, *_as_list(pps)),
        codec_string=codec_string(info),
        frame_rate=info.frame_rate,
    )


def hvcc_record(
    vps: bytes | Sequence[bytes], sps: bytes | Sequence[bytes], pps: bytes | Sequence[bytes]
) -> bytes:
    """HEVCDecoderConfigurationRecord for an MP4 ``hvcC`` box (4-byte NAL lengths).

    Profile, tier, level, chroma format and bit depths come from the first SPS. The fields
    that need more of the VUI than ``parse_sps`` reads are written as "unknown":
    min_spatial_segmentation_idc 0, parallelismType 0, avgFrameRate 0, constantFrameRate 0.
    """
    arrays = [(NAL_VPS, _as_list(vps)), (NAL_SPS, _as_list(sps)), (NAL_PPS, _as_list(pps))]
    if not arrays[1][1]:
        raise ValueError("hvcC needs at least one SPS")
    info = parse_sps(arrays[1][1][0])
    out = bytearray([1])
    out.append((info.general_profile_space << 6) | (info.tier << 5) | info.general_profile_idc)
    out += struct.pack(">I", info.general_profile_compatibility_flags)
    out += info.general_constraint_indicator_flags.to_bytes(6, "big")
    out.append(info.general_level_idc)
    out += struct.pack(">H", 0xF000)  # reserved 1111, min_spatial_segmentation_idc 0
    out.append(0xFC)  # reserved 111111, parallelismType 0
    out.append(0xFC | info.chroma_format_idc)
    out.append(0xF8 | (info.bit_depth_luma - 8))
    out.append(0xF8 | (info.bit_depth_chroma - 8))
    out += struct.pack(">H", 0)  # avgFrameRate unknown
    # constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
    out.append((info.max_sub_layers << 3) | (info.temporal_id_nesting << 2) | 3)
    present = [(t, nals) for t, nals in arrays if nals]
    out.append(len(present))
    for t, nals in present:
        out.append(0x80 | t)  # array_completeness 1: all parameter sets are in the record
        out += struct.pack(">H", len(nals))
        for nal in nals:
            if len(nal) > 0xFFFF:
                raise ValueError(f"parameter set of {len(nal)} bytes too large for hvcC")
            out += struct.pack(">H", len(nal)) + nal
    return bytes(out)


def parse_hvcc(record: bytes) -> tuple[dict[int, list[bytes]], int]:
    """Read a HEVCDecoderConfigurationRecord: (NAL units by NAL type, NAL length size)."""
    if len(record) < 23:
        raise ValueError(f"hvcC truncated: {len(record)} bytes")
    if record[0] != 1:
        raise ValueError(f"unsupported hvcC configurationVersion {record[0]}")
    length_size = (record[21] & 3) + 1
    arrays: dict[int, list[bytes]] = {}
    pos = 23
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise ValueError("hvcC truncated in an array header")
        t, count = record[pos] & 0x3F, int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise ValueError("hvcC truncated in a NAL unit length")
            size = int.from_bytes(record[pos : pos + 2], "big")
            if pos + 2 + size > len(record):
                raise ValueError("hvcC truncated in a NAL unit")
            arrays.setdefault(t, []).append(bytes(record[pos + 2 : pos + 2 + size]))
            pos += 2 + size
    return arrays, length_size
