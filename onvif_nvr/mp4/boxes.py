"""Fragmented MP4 writer (ISO/IEC 14496-12, sample entries of -14 and -15), CMAF style.

A segment file is one init segment (``ftyp`` + ``moov`` with empty sample tables and an
``mvex``) followed by self-contained fragments (``moof`` + ``mdat``), each starting at a
sync sample. Every fragment carries its decode time (``tfdt``) and addresses its data
relative to its own ``moof`` (default-base-is-moof), so fragments can be cut out of a file
and served to MSE/HLS or concatenated for export without rewriting a byte.

Sans-IO: values in, bytes out. Out-of-range values raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from typing import Literal

from onvif_nvr.media.units import AUDIO_CODECS, VIDEO_CODECS

_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">I4s")
_HEADER64 = struct.Struct(">I4sQ")
_FULL_HEADER = struct.Struct(">I4sI")

#: Seconds from the MP4 epoch (1904-01-01 UTC) to the Unix epoch.
MP4_EPOCH_OFFSET_S = 2_082_844_800
#: Timescale of the movie header; only the (empty) movie duration is expressed in it.
MOVIE_TIMESCALE = 1000

#: sample_flags of a sync sample: sample_depends_on=2 (depends on no other sample).
SAMPLE_FLAGS_SYNC = 0x0200_0000
#: sample_flags of a non-sync sample: sample_depends_on=1, sample_is_non_sync_sample=1.
SAMPLE_FLAGS_NON_SYNC = 0x0101_0000
#: The sample_is_non_sync_sample bit of sample_flags.
SAMPLE_FLAG_IS_NON_SYNC = 0x0001_0000

TFHD_BASE_DATA_OFFSET = 0x00_0001
TFHD_SAMPLE_DESCRIPTION_INDEX = 0x00_0002
TFHD_DEFAULT_DURATION = 0x00_0008
TFHD_DEFAULT_SIZE = 0x00_0010
TFHD_DEFAULT_FLAGS = 0x00_0020
TFHD_DEFAULT_BASE_IS_MOOF = 0x02_0000
TRUN_DATA_OFFSET = 0x00_0001
TRUN_FIRST_SAMPLE_FLAGS = 0x00_0004
TRUN_DURATION = 0x00_0100
TRUN_SIZE = 0x00_0200
TRUN_FLAGS = 0x00_0400
TRUN_COMPOSITION_OFFSET = 0x00_0800

# Identity transformation matrix of mvhd/tkhd (16.16 and 2.30 fixed point).
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000)
# SampleEntry + VisualSampleEntry fields up to the child boxes (78 bytes).
_VISUAL_ENTRY = struct.Struct(">6xH16xHHIIIH32sHh")
# SampleEntry + AudioSampleEntry (version 0) fields up to the child boxes (28 bytes).
_AUDIO_ENTRY = struct.Struct(">6xH8xHHHHI")
_MFHD = struct.Struct(">I4sII")
# traf header, tfhd (track_ID only), tfdt v1, trun header with data_offset: one pack per traf.
_TRAF_HEAD = struct.Struct(">I4s" + "I4sII" + "I4sIQ" + "I4sIIi")
_TRAF_HEAD_SIZE = _TRAF_HEAD.size
_TRUN_RECORD = struct.Struct(">III")
_TRUN_RECORD_CTO = struct.Struct(">IIIi")
_TRUN_FLAGS_PLAIN = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS
_TRUN_FLAGS_CTO = _TRUN_FLAGS_PLAIN | TRUN_COMPOSITION_OFFSET

_SAMPLE_ENTRY_TYPES = {
    "H264": b"avc1",
    "H265": b"hvc1",
    "AAC": b"mp4a",
    "PCMU": b"ulaw",
    "PCMA": b"alaw",
    "OPUS": b"Opus",
}


@dataclasses.dataclass(frozen=True, slots=True)
class TrackSpec:
    """One track of a segment file, as written to (and read back from) its init segment."""

    track_id: int
    kind: Literal["video", "audio"]
    #: Media time units per second (90000 for video, the sample rate for audio).
    timescale: int
    codec: str  # "H264", "H265", "AAC", "PCMU", "PCMA", "OPUS"
    width: int = 0
    height: int = 0
    #: Body of the decoder configuration: the avcC / hvcC record, the AAC
    #: AudioSpecificConfig, or (optional) the dOps body for Opus; b"" for G.711.
    sample_entry_config: bytes = b""
    sample_rate: int = 0
    channels: int = 0
    #: ISO 639-2/T code written to mdhd.
    language: str = "und"


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a fragment: an access unit in MP4 form (AVCC for video)."""

    data: bytes
    #: In the track's timescale.
    duration: int
    is_sync: bool
    #: Presentation minus decode time, in the track's timescale (signed).
    composition_offset: int = 0


def avcc_sample(nals: Sequence[bytes]) -> bytes:
    """An H.264/H.265 sample: each NAL unit prefixed by its 4-byte big-endian length."""
    pack = _U32.pack
    return b"".join([part for nal in nals for part in (pack(len(nal)), nal)])


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    size = 8 + len(payload)
    if size > 0xFFFF_FFFF:
        return _HEADER64.pack(1, kind, size + 8) + payload
    return _HEADER.pack(size, kind) + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, _U32.pack(version << 24 | flags), *parts)


def _check_track(track: TrackSpec) -> None:
    tid = track.track_id
    if not 0 < tid <= 0xFFFF_FFFF:
        raise ValueError(f"track_id {tid} is out of range")
    if not 0 < track.timescale <= 0xFFFF_FFFF:
        raise ValueError(f"track {tid}: timescale {track.timescale} is out of range")
    if track.kind == "video":
        if track.codec not in VIDEO_CODECS:
            raise ValueError(f"track {tid}: {track.codec!r} is not a video codec")
        if not (0 < track.width <= 0xFFFF and 0 < track.height <= 0xFFFF):
            raise ValueError(f"track {tid}: invalid dimensions {track.width}x{track.height}")
        if not track.sample_entry_config:
            raise ValueError(f"track {tid}: {track.codec} needs its decoder configuration record")
    elif track.kind == "audio":
        if track.codec not in AUDIO_CODECS:
            raise ValueError(f"track {tid}: {track.codec!r} is not an audio codec")
        if not 0 < track.channels <= 0xFFFF:
            raise ValueError(f"track {tid}: invalid channel count {track.channels}")
        if not 0 < track.sample_rate <= 0xFFFF_FFFF:
            raise ValueError(f"track {tid}: invalid sample rate {track.sample_rate}")
        if track.codec == "AAC" and not track.sample_entry_config:
            raise ValueError(f"track {tid}: AAC needs its AudioSpecificConfig")
    else:
        raise ValueError(f"track {tid}: invalid kind {track.kind!r}")
    lang = track.language
    if len(lang) != 3 or not all("a" <= c <= "z" for c in lang):
        raise ValueError(f"track {tid}: invalid language code {lang!r}")


def _ftyp(tracks: Sequence[TrackSpec]) -> bytes:
    # iso6: tfdt and default-base-is-moof are in use; cmfc (CMAF structural brand) only
    # when the file holds a single track, as CMAF requires.
    brands = [b"iso6", b"iso5"]
    if len(tracks) == 1:
        brands.append(b"cmfc")
    brands.append(b"mp41")
    codecs = {t.codec for t in tracks}
    if "H264" in codecs:
        brands.append(b"avc1")
    if "H265" in codecs:
        brands.append(b"hvc1")
    return _box(b"ftyp", b"iso6", _U32.pack(0), *brands)


def _times(creation_time_s: int) -> tuple[int, int]:
    """(version, MP4-epoch time) for mvhd/tkhd/mdhd: version 1 only past 2040."""
    if creation_time_s < 0:
        raise ValueError(f"creation time {creation_time_s} is before the Unix epoch")
    t = creation_time_s + MP4_EPOCH_OFFSET_S if creation_time_s else 0
    return (1 if t > 0xFFFF_FFFF else 0), t


def _mvhd(when: tuple[int, int], next_track_id: int) -> bytes:
    version, t = when
    if version:
        head = struct.pack(">QQIQ", t, t, MOVIE_TIMESCALE, 0)
    else:
        head = struct.pack(">IIII", t, t, MOVIE_TIMESCALE, 0)
    rest = struct.pack(">IH10x", 0x10000, 0x0100) + _MATRIX + bytes(24) + _U32.pack(next_track_id)
    return _full_box(b"mvhd", version, 0, head, rest)


def _tkhd(track: TrackSpec, when: tuple[int, int]) -> bytes:
    version, t = when
    if version:
        head = struct.pack(">QQIIQ", t, t, track.track_id, 0, 0)
    else:
        head = struct.pack(">IIIII", t, t, track.track_id, 0, 0)
    volume = 0x0100 if track.kind == "audio" else 0
    rest = struct.pack(">8xhhhH", 0, 0, volume, 0) + _MATRIX
    size = struct.pack(">II", track.width << 16, track.height << 16)
    # flags: track_enabled | track_in_movie
    return _full_box(b"tkhd", version, 3, head, rest, size)


def _mdhd(track: TrackSpec, when: tuple[int, int]) -> bytes:
    version, t = when
    if version:
        head = struct.pack(">QQIQ", t, t, track.timescale, 0)
    else:
        head = struct.pack(">IIII", t, t, track.timescale, 0)
    a, b, c = (ord(ch) - 0x60 for ch in track.language)
    return _full_box(b"mdhd", version, 0, head, struct.pack(">HH", a << 10 | b << 5 | c, 0))


def _hdlr(kind: str) -> bytes:
    handler, name = (b"vide", b"VideoHandler") if kind == "video" else (b"soun", b"SoundHandler")
    return _full_box(b"hdlr", 0, 0, _U32.pack(0), handler, bytes(12), name, b"\0")


def _descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1) with its size in the shortest 7-bit form."""
    n = len(payload)
    size = [n & 0x7F]
    n >>= 7
    while n:
        size.append(0x80 | (n & 0x7F))
        n >>= 7
    if len(size) > 4:
        raise ValueError("descriptor is too large")
    return bytes([tag, *reversed(size)]) + payload


def _esds(audio_specific_config: bytes) -> bytes:
    decoder_config = _descriptor(
        0x04,
        # objectTypeIndication 0x40 (ISO/IEC 14496-3 audio); streamType 5 (audio) << 2 | 1
        # (reserved bit); bufferSizeDB, maxBitrate, avgBitrate unknown on the recording path.
        struct.pack(">BB3xII", 0x40, 0x15, 0, 0) + _descriptor(0x05, audio_specific_config),
    )
    sl_config = _descriptor(0x06, b"\x02")  # predefined: reserved for MP4 files
    es = _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder_config + sl_config)
    return _full_box(b"esds", 0, 0, es)


def _dops(track: TrackSpec) -> bytes:
    if track.sample_entry_config:
        return _box(b"dOps", track.sample_entry_config)
    if track.channels > 2:
        raise ValueError(f"track {track.track_id}: Opus with more than 2 channels needs dOps")
    # Version 0, OutputChannelCount, PreSkip (unknown from RTP: 0), InputSampleRate,
    # OutputGain 0, ChannelMappingFamily 0 (mono/stereo).
    return _box(b"dOps", struct.pack(">BBHIhB", 0, track.channels, 0, track.sample_rate, 0, 0))


def _sample_entry(track: TrackSpec) -> bytes:
    kind = _SAMPLE_ENTRY_TYPES[track.codec]
    if track.kind == "video":
        config_type = b"avcC" if track.codec == "H264" else b"hvcC"
        fields = _VISUAL_ENTRY.pack(
            1, track.width, track.height, 0x0048_0000, 0x0048_0000, 0, 1, b"", 0x0018, -1
        )
        return _box(kind, fields, _box(config_type, track.sample_entry_config))
    rate = 48000 if track.codec == "OPUS" else track.sample_rate
    fields = _AUDIO_ENTRY.pack(1, track.channels, 16, 0, 0, (rate << 16) if rate < 0x10000 else 0)
    if track.codec == "AAC":
        return _box(kind, fields, _esds(track.sample_entry_config))
    if track.codec == "OPUS":
        return _box(kind, fields, _dops(track))
    return _box(kind, fields)


_EMPTY_TABLES = (
    _full_box(b"stts", 0, 0, _U32.pack(0))
    + _full_box(b"stsc", 0, 0, _U32.pack(0))
    + _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0))
    + _full_box(b"stco", 0, 0, _U32.pack(0))
)
_DINF = _box(b"dinf", _full_box(b"dref", 0, 0, _U32.pack(1), _full_box(b"url ", 0, 1)))
_VMHD = _full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
_SMHD = _full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))


def _trak(track: TrackSpec, when: tuple[int, int]) -> bytes:
    stsd = _full_box(b"stsd", 0, 0, _U32.pack(1), _sample_entry(track))
    minf = _box(
        b"minf",
        _VMHD if track.kind == "video" else _SMHD,
        _DINF,
        _box(b"stbl", stsd, _EMPTY_TABLES),
    )
    mdia = _box(b"mdia", _mdhd(track, when), _hdlr(track.kind), minf)
    return _box(b"trak", _tkhd(track, when), mdia)


def init_segment(tracks: Sequence[TrackSpec], *, creation_time_s: int = 0) -> bytes:
    """``ftyp`` + ``moov`` describing ``tracks`` (Unix ``creation_time_s``, 0 = unknown)."""
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    seen: set[int] = set()
    for track in tracks:
        _check_track(track)
        if track.track_id in seen:
            raise ValueError(f"duplicate track_id {track.track_id}")
        seen.add(track.track_id)
    when = _times(creation_time_s)
    next_track_id = max(seen) + 1
    if next_track_id > 0xFFFF_FFFF:
        next_track_id = 0xFFFF_FFFF  # "search for an unused id", as the spec allows
    # trex defaults are never relied upon: every trun spells out its samples.
    trex = [_full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks]
    moov = _box(
        b"moov",
        _mvhd(when, next_track_id),
        *[_trak(t, when) for t in tracks],
        _box(b"mvex", *trex),
    )
    return _ftyp(tracks) + moov


def media_fragment(
    sequence_number: int, tracks: Sequence[tuple[int, int, Sequence[Sample]]]
) -> bytes:
    """One ``moof`` + ``mdat``; ``tracks`` are (track_id, base_media_decode_time, samples).

    The mdat holds each track's samples contiguously, in the order given. Every trun
    carries per-sample duration, size and flags, plus signed composition offsets
    (trun version 1) when any sample of the track has one.
    """
    if not tracks:
        raise ValueError("a fragment needs at least one track")
    if not 0 <= sequence_number <= 0xFFFF_FFFF:
        raise ValueError(f"sequence_number {sequence_number} is out of range")
    records: list[tuple[int, int, int, bytes]] = []  # (track_id, base, version, records)
    data_sizes: list[int] = []
    moof_size = _MFHD.size + 8
    if len({t[0] for t in tracks}) != len(tracks):
        raise ValueError("a fragment holds each track at most once")
    for track_id, base_time, samples in tracks:
        has_cto = any(s.composition_offset for s in samples)
        try:
            if has_cto:
                pack = _TRUN_RECORD_CTO.pack
                body = b"".join(
                    [
                        pack(
                            s.duration,
                            len(s.data),
                            SAMPLE_FLAGS_SYNC if s.is_sync else SAMPLE_FLAGS_NON_SYNC,
                            s.composition_offset,
                        )
                        for s in samples
                    ]
                )
            else:
                pack = _TRUN_RECORD.pack
                body = b"".join(
                    [
                        pack(
                            s.duration,
                            len(s.data),
                            SAMPLE_FLAGS_SYNC if s.is_sync else SAMPLE_FLAGS_NON_SYNC,
                        )
                        for s in samples
                    ]
                )
        except struct.error as exc:
            raise ValueError(f"track {track_id}: sample field out of range ({exc})") from None
        if not 0 < track_id <= 0xFFFF_FFFF:
            raise ValueError(f"track_id {track_id} is out of range")
        if not 0 <= base_time <= 0xFFFF_FFFF_FFFF_FFFF:
            raise ValueError(
                f"track {track_id}: base media decode time {base_time} is out of range"
            )
        records.append((track_id, base_time, 1 if has_cto else 0, body))
        data_sizes.append(sum([len(s.data) for s in samples]))
        moof_size += _TRAF_HEAD_SIZE + len(body)
    mdat_payload = sum(data_sizes)
    large_mdat = mdat_payload + 8 > 0xFFFF_FFFF
    mdat_header = (
        _HEADER64.pack(1, b"mdat", mdat_payload + 16)
        if large_mdat
        else _HEADER.pack(mdat_payload + 8, b"mdat")
    )
    parts = [_HEADER.pack(moof_size, b"moof"), _MFHD.pack(16, b"mfhd", 0, sequence_number)]
    data_offset = moof_size + len(mdat_header)
    for (track_id, base_time, version, body), data_size, (_, _, samples) in zip(
        records, data_sizes, tracks, strict=True
    ):
        if data_offset > 0x7FFF_FFFF:
            raise ValueError("fragment is too large for 32-bit data offsets")
        trun_size = 20 + len(body)
        count = len(samples)
        parts.append(
            _TRAF_HEAD.pack(
                _TRAF_HEAD_SIZE + len(body),
                b"traf",
                16,
                b"tfhd",
                TFHD_DEFAULT_BASE_IS_MOOF,
                track_id,
                20,
                b"tfdt",
                1 << 24,
                base_time,
                trun_size,
                b"trun",
                version << 24 | (_TRUN_FLAGS_CTO if version else _TRUN_FLAGS_PLAIN),
                count,
                data_offset,
            )
        )
        parts.append(body)
        data_offset += data_size
    parts.append(mdat_header)
    for _, _, samples in tracks:
        parts.extend([s.data for s in samples])
    return b"".join(parts)
