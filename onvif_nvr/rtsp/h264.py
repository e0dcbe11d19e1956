"""H.264 over RTP (RFC 6184, non-interleaved mode) and the H.264 bitstream facts the NVR needs.

The depacketizer turns RTP payloads from a camera into access units and the packetizer does the
reverse for the RTSP server; neither decodes pictures. What does not depend on the codec
(sequence tracking, access unit assembly, fragment reassembly, fragmentation, aggregation, Annex B
and length-prefixed framing) lives in ``bits.py`` and is shared with ``h265.py``; the framing
functions are re-exported here.
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

__all__ = [
    "H264Depacketizer",
    "H264Packetizer",
    "ParameterSets",
    "SpsInfo",
    "avcc_record",
    "codec_string",
    "from_avcc",
    "nal_type",
    "parse_avcc",
    "parse_sps",
    "split_annexb",
    "to_annexb",
    "to_avcc",
    "video_parameters",
]

log = logging.getLogger(__name__)

# NAL unit types (H.264 table 7-1) and RFC 6184 packet types.
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
STAP_B = 25
MTAP16 = 26
MTAP24 = 27
FU_A = 28
FU_B = 29

_START_CODE = b"\x00\x00\x01"


def nal_type(nal: bytes) -> int:
    """The ``nal_unit_type`` of an H.264 NAL unit."""
    if not nal:
        raise ValueError("empty NAL unit")
    return nal[0] & 0x1F


# ---------------------------------------------------------------------------------------------
# H.264 RTP payload format.


def _ps_id(nal: bytes) -> tuple[str, int] | None:
    """("sps"|"pps", id) of an H.264 parameter set, None for other NAL units."""
    t = nal[0] & 0x1F
    if t == NAL_SPS:
        r = BitReader(remove_emulation_prevention(nal[1:8]))
        r.skip(24, "profile_idc, constraint flags, level_idc")
        return "sps", r.ue("seq_parameter_set_id")
    if t == NAL_PPS:
        return "pps", BitReader(remove_emulation_prevention(nal[1:8])).ue("pic_parameter_set_id")
    return None


class H264Depacketizer(BaseDepacketizer):
    """RFC 6184 non-interleaved mode: single NAL unit packets (types 1-23), STAP-A and FU-A.

    STAP-B, MTAP16/24 and FU-B only occur in interleaved mode, which the NVR never offers in
    SETUP; they are counted in ``unsupported`` and dropped. Types 0, 30 and 31 are undefined
    and ignored (RFC 6184 5.2). Some cameras put Annex B start codes into single NAL unit
    payloads (``00 00 00 01`` in front, or several NAL units joined by start codes); such
    payloads are split at the start codes and the start codes removed, since a start code
    cannot occur inside a well-formed NAL unit (emulation prevention forbids it).
    """

    codec = "H264"

    def _depacketize(self, payload: bytes) -> list[bytes]:
        if not payload:
            raise Drop("empty payload")
        t = payload[0] & 0x1F
        if (1 <= t <= 23 or t == 0) and _START_CODE in payload:
            nals = split_annexb(payload)
            if not nals or any(not 1 <= (n[0] & 0x1F) <= 23 for n in nals):
                raise Drop("payload with start codes does not hold single NAL units")
            return nals
        if 1 <= t <= 23:
            return [payload]
        if t == STAP_A:
            nals = self._unpack_aggregate(payload, 1)
            if any(not 1 <= (n[0] & 0x1F) <= 23 for n in nals):
                raise Drop("STAP-A holds a packet type instead of a NAL unit")
            return nals
        if t == FU_A:
            if len(payload) < 3:
                raise Drop("truncated FU-A")
            fu = payload[1]
            if not 1 <= fu & 0x1F <= 23:
                raise Drop(f"FU-A carries NAL unit type {fu & 0x1F}")
            header = bytes([(payload[0] & 0xE0) | (fu & 0x1F)])
            return self._fragment(bool(fu & 0x80), bool(fu & 0x40), header, payload[2:])
        if t in (STAP_B, MTAP16, MTAP24, FU_B):
            raise Drop(f"interleaved-mode packet type {t} not supported", unsupported=True)
        raise Drop(f"undefined packet type {t}", damaging=False, unsupported=True)

    def _continuation(self, view: memoryview, start: int, end: int, fu: bytearray) -> int:
        if end - start < 3:
            return 0
        indicator, header = view[start], view[start + 1]
        if indicator & 0x1F != FU_A or header & 0x80:
            return 0
        if (indicator & 0xE0) | (header & 0x1F) != fu[0] or not 1 <= header & 0x1F <= 23:
            return 0
        return start + 2

    def _is_keyframe_nal(self, nal: bytes) -> bool:
        return nal[0] & 0x1F == NAL_IDR

    def _remember(self, nal: bytes) -> None:
        remember_parameter_set(self.parameter_sets, nal, _ps_id, "H264")


class H264Packetizer(BasePacketizer):
    """RFC 6184 packetization-mode=1 (single NAL unit, STAP-A and FU-A packets)."""

    codec = "H264"
    _header_size = 1
    _needed_kinds = ("sps", "pps")

    def _remember(self, nal: bytes) -> None:
        remember_parameter_set(self.parameter_sets, nal, _ps_id, "H264")

    def _kind(self, nal: bytes) -> str | None:
        return {NAL_SPS: "sps", NAL_PPS: "pps"}.get(nal[0] & 0x1F)

    def _is_keyframe_nal(self, nal: bytes) -> bool:
        return nal[0] & 0x1F == NAL_IDR

    def _is_aud(self, nal: bytes) -> bool:
        return nal[0] & 0x1F == NAL_AUD

    def _aggregatable(self, nal: bytes) -> bool:
        return 6 <= nal[0] & 0x1F <= 13  # SEI, parameter sets, AUD, end marks, filler

    def _aggregation_header(self, group: list[bytes]) -> bytes:
        forbidden = max(n[0] & 0x80 for n in group)
        nri = max(n[0] & 0x60 for n in group)
        return bytes([forbidden | nri | STAP_A])

    def _fu_header(self, nal_header: bytes) -> tuple[bytes, int]:
        return bytes([(nal_header[0] & 0xE0) | FU_A]), nal_header[0] & 0x1F


# ---------------------------------------------------------------------------------------------
# Sequence parameter set (H.264 7.3.2.1.1) and the MP4 avcC record (ISO/IEC 14496-15 5.3.3).

_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_SUB_WH = {1: (2, 2), 2: (2, 1), 3: (1, 1)}


@dataclasses.dataclass(frozen=True, slots=True)
class SpsInfo:
    """The fields of an H.264 SPS the NVR uses; sizes are display sizes after cropping."""

    profile_idc: int
    #: constraint_set0..5 flags and the two reserved bits, as the byte after profile_idc.
    constraint_flags: int
    level_idc: int
    sps_id: int
    width: int
    height: int
    #: time_scale / (2 * num_units_in_tick) when the VUI has timing info.
    frame_rate: float | None
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    coded_width: int
    coded_height: int
    #: frame_crop_{left,right,top,bottom}_offset in crop units.
    crop: tuple[int, int, int, int]
    log2_max_frame_num: int
    pic_order_cnt_type: int
    max_num_ref_frames: int
    #: Sample aspect ratio (1, 1 when the VUI says nothing).
    sar: tuple[int, int]
    num_units_in_tick: int
    time_scale: int
    fixed_frame_rate: bool


def _scaling_list(r: BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = r.se("delta_scale")
            if not -128 <= delta <= 127:
                raise ValueError(f"invalid SPS: delta_scale {delta} out of range")
            nxt = (last + delta + 256) % 256
        last = nxt or last


# Table E-1 sample aspect ratios, indexed by aspect_ratio_idc.
_SAR = [(0, 0), (1, 1), (12, 11), (10, 11), (16, 11), (40, 33), (24, 11), (20, 11), (32, 11),
        (80, 33), (18, 11), (15, 11), (64, 33), (160, 99), (4, 3), (3, 2), (2, 1)]  # fmt: skip


def vui_sar(r: BitReader) -> tuple[int, int]:
    """Read the start of a VUI up to the chroma location (H.264 E.1.1, H.265 E.2.1 begin
    alike) and return the sample aspect ratio."""
    sar = (1, 1)
    if r.flag("aspect_ratio_info_present_flag"):
        idc = r.u(8, "aspect_ratio_idc")
        if idc == 255:
            sar = (r.u(16, "sar_width"), r.u(16, "sar_height"))
        elif idc < len(_SAR):
            sar = _SAR[idc]
    if r.flag("overscan_info_present_flag"):
        r.skip(1, "overscan_appropriate_flag")
    if r.flag("video_signal_type_present_flag"):
        r.skip(4, "video_format, video_full_range_flag")
        if r.flag("colour_description_present_flag"):
            r.skip(24, "colour description")
    if r.flag("chroma_loc_info_present_flag"):
        r.ue("chroma_sample_loc_type_top_field")
        r.ue("chroma_sample_loc_type_bottom_field")
    return sar


def parse_sps(sps: bytes) -> SpsInfo:
    """Parse an H.264 SPS NAL unit (with its 1-byte header) up to the VUI timing info."""
    if not sps:
        raise ValueError("empty NAL unit")
    if sps[0] & 0x1F != NAL_SPS:
        raise ValueError(f"not an SPS: NAL unit type {sps[0] & 0x1F}")
    r = BitReader(remove_emulation_prevention(sps[1:]))
    profile = r.u(8, "profile_idc")
    constraints = r.u(8, "constraint flags")
    level = r.u(8, "level_idc")
    sps_id = r.ue("seq_parameter_set_id")
    if sps_id > 31:
        raise ValueError(f"invalid SPS: seq_parameter_set_id {sps_id} > 31")
    chroma, separate_planes, depth_luma, depth_chroma = 1, False, 8, 8
    if profile in _HIGH_PROFILES:
        chroma = r.ue("chroma_format_idc")
        if chroma > 3:
            raise ValueError(f"invalid SPS: chroma_format_idc {chroma} > 3")
        if chroma == 3:
            separate_planes = r.flag("separate_colour_plane_flag")
        depth_luma = r.ue("bit_depth_luma_minus8") + 8
        depth_chroma = r.ue("bit_depth_chroma_minus8") + 8
        if depth_luma > 14 or depth_chroma > 14:
            raise ValueError(f"invalid SPS: bit depth {max(depth_luma, depth_chroma)} > 14")
        r.skip(1, "qpprime_y_zero_transform_bypass_flag")
        if r.flag("seq_scaling_matrix_present_flag"):
            for i in range(8 if chroma != 3 else 12):
                if r.flag("seq_scaling_list_present_flag"):
                    _scaling_list(r, 16 if i < 6 else 64)
    log2_max_frame_num = r.ue("log2_max_frame_num_minus4") + 4
    if log2_max_frame_num > 16:
        raise ValueError(f"invalid SPS: log2_max_frame_num_minus4 {log2_max_frame_num - 4} > 12")
    poc_type = r.ue("pic_order_cnt_type")
    if poc_type == 0:
        if r.ue("log2_max_pic_order_cnt_lsb_minus4") > 12:
            raise ValueError("invalid SPS: log2_max_pic_order_cnt_lsb_minus4 > 12")
    elif poc_type == 1:
        r.skip(1, "delta_pic_order_always_zero_flag")
        r.se("offset_for_non_ref_pic")
        r.se("offset_for_top_to_bottom_field")
        cycle = r.ue("num_ref_frames_in_pic_order_cnt_cycle")
        if cycle > 255:
            raise ValueError(f"invalid SPS: num_ref_frames_in_pic_order_cnt_cycle {cycle} > 255")
        for _ in range(cycle):
            r.se("offset_for_ref_frame")
    elif poc_type != 2:
        raise ValueError(f"invalid SPS: pic_order_cnt_type {poc_type} > 2")
    max_refs = r.ue("max_num_ref_frames")
    r.skip(1, "gaps_in_frame_num_value_allowed_flag")
    width_mbs = r.ue("pic_width_in_mbs_minus1") + 1
    height_units = r.ue("pic_height_in_map_units_minus1") + 1
    frame_mbs_only = r.flag("frame_mbs_only_flag")
    if not frame_mbs_only:
        r.skip(1, "mb_adaptive_frame_field_flag")
    r.skip(1, "direct_8x8_inference_flag")
    crop = (0, 0, 0, 0)
    if r.flag("frame_cropping_flag"):
        crop = (r.ue("frame_crop_left_offset"), r.ue("frame_crop_right_offset"),
                r.ue("frame_crop_top_offset"), r.ue("frame_crop_bottom_offset"))  # fmt: skip
    sar, units, scale, fixed = (1, 1), 0, 0, False
    if r.flag("vui_parameters_present_flag"):
        sar = vui_sar(r)
        if r.flag("timing_info_present_flag"):
            units = r.u(32, "num_units_in_tick")
            scale = r.u(32, "time_scale")
            fixed = r.flag("fixed_frame_rate_flag")

    coded_width = width_mbs * 16
    coded_height = (2 - frame_mbs_only) * height_units * 16
    if coded_width > 16384 or coded_height > 16384:
        raise ValueError(f"invalid SPS: coded size {coded_width}x{coded_height} too large")
    array_type = 0 if separate_planes else chroma
    sub_w, sub_h = _SUB_WH.get(array_type, (1, 1))
    crop_x = sub_w if array_type else 1
    crop_y = (2 - frame_mbs_only) * (sub_h if array_type else 1)
    width = coded_width - crop_x * (crop[0] + crop[1])
    height = coded_height - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise ValueError(
            f"invalid SPS: cropping {crop} leaves no picture of {coded_width}x{coded_height}"
        )
    return SpsInfo(
        profile_idc=profile,
        constraint_flags=constraints,
        level_idc=level,
        sps_id=sps_id,
        width=width,
        height=height,
        frame_rate=scale / (2 * units) if units and scale else None,
        chroma_format_idc=chroma,
        bit_depth_luma=depth_luma,
        bit_depth_chroma=depth_chroma,
        frame_mbs_only=frame_mbs_only,
        coded_width=coded_width,
        coded_height=coded_height,
        crop=crop,
        log2_max_frame_num=log2_max_frame_num,
        pic_order_cnt_type=poc_type,
        max_num_ref_frames=max_refs,
        sar=sar,
        num_units_in_tick=units,
        time_scale=scale,
        fixed_frame_rate=fixed,
    )


def codec_string(info: SpsInfo) -> str:
    """RFC 6381 ``avc1.PPCCLL``: profile, constraint byte and level in hex."""
    return f"avc1.{info.profile_idc:02x}{info.constraint_flags:02x}{info.level_idc:02x}"


def video_parameters(sps: bytes, pps: bytes | Sequence[bytes]) -> VideoParameters:
    """The stream description for the hub, the segment writer and SDP, from SPS and PPS."""
    pps_list = [pps] if isinstance(pps, bytes | bytearray) else list(pps)
    info = parse_sps(sps)
    return VideoParameters(
        codec="H264",
        width=info.width,
        height=info.height,
        parameter_sets=(bytes(sps), *map(bytes, pps_list)),
        codec_string=codec_string(info),
        frame_rate=info.frame_rate,
    )


def avcc_record(sps_list: Sequence[bytes], pps_list: Sequence[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord for an MP4 ``avcC`` box (4-byte NAL lengths)."""
    if not sps_list:
        raise ValueError("avcC needs at least one SPS")
    if len(sps_list) > 31 or len(pps_list) > 255:
        raise ValueError(f"too many parameter sets for avcC ({len(sps_list)}, {len(pps_list)})")
    info = parse_sps(sps_list[0])
    first = sps_list[0]
    out = bytearray([1, first[1], first[2], first[3], 0xFC | 3, 0xE0 | len(sps_list)])
    for ps in (*sps_list, None, *pps_list):
        if ps is None:
            out.append(len(pps_list))
            continue
        if len(ps) > 0xFFFF:
            raise ValueError(f"parameter set of {len(ps)} bytes too large for avcC")
        out += struct.pack(">H", len(ps)) + bytes(ps)
    if info.profile_idc in (100, 110, 122, 144):
        out += bytes([0xFC | info.chroma_format_idc, 0xF8 | (info.bit_depth_luma - 8),
                      0xF8 | (info.bit_depth_chroma - 8), 0])  # fmt: skip
    return bytes(out)


def parse_avcc(record: bytes) -> tuple[list[bytes], list[bytes], int]:
    """Read an AVCDecoderConfigurationRecord: (SPS list, PPS list, NAL length size)."""
    if len(record) < 7:
        raise ValueError(f"avcC truncated: {len(record)} bytes")
    if record[0] != 1:
        raise ValueError(f"unsupported avcC configurationVersion {record[0]}")
    length_size = (record[4] & 3) + 1
    pos = 5
    lists: list[list[bytes]] = []
    for mask in (0x1F, 0xFF):
        if pos >= len(record):
            raise ValueError("avcC truncated in a parameter set count")
        count = record[pos] & mask
        pos += 1
        items = []
        for _ in range(count):
            if pos + 2 > len(record):
                raise ValueError("avcC truncated in a parameter set length")
            size = int.from_bytes(record[pos : pos + 2], "big")
            if pos + 2 + size > len(record):
                raise ValueError("avcC truncated in a parameter set")
            items.append(bytes(record[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        lists.append(items)
    return lists[0], lists[1], length_size
