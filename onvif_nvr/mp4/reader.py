"""Fragmented MP4 reader: init segments, fragment scans and samples, sans-IO.

Used by crash recovery (how far is a segment file whole?), by ``check`` (do the files
match the index?) and by replay/export (the samples of one fragment). A scan never raises
on a torn or corrupt tail: it reports what is complete and why it stopped.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Literal, NamedTuple

from onvif_nvr.media.units import VIDEO_CODECS
from onvif_nvr.mp4.boxes import (
    SAMPLE_FLAG_IS_NON_SYNC,
    TFHD_BASE_DATA_OFFSET,
    TFHD_DEFAULT_BASE_IS_MOOF,
    TFHD_DEFAULT_DURATION,
    TFHD_DEFAULT_FLAGS,
    TFHD_DEFAULT_SIZE,
    TFHD_SAMPLE_DESCRIPTION_INDEX,
    TRUN_COMPOSITION_OFFSET,
    TRUN_DATA_OFFSET,
    TRUN_DURATION,
    TRUN_FIRST_SAMPLE_FLAGS,
    TRUN_FLAGS,
    TRUN_SIZE,
    TrackSpec,
)

Buffer = bytes | bytearray | memoryview

_HEADER = struct.Struct(">I4s")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")

#: Top-level boxes a fragment scan steps over (init segment, segment markers, padding).
_SKIPPABLE = frozenset({"ftyp", "styp", "moov", "sidx", "ssix", "prft", "emsg", "free", "skip"})

_CODECS = {
    "avc1": "H264",
    "avc3": "H264",
    "hvc1": "H265",
    "hev1": "H265",
    "mp4a": "AAC",
    "ulaw": "PCMU",
    "alaw": "PCMA",
    "Opus": "OPUS",
}
#: Largest sample count accepted for a trun whose samples all take tfhd defaults.
_MAX_IMPLICIT_SAMPLES = 1 << 16
_CONFIG_BOXES = {"H264": "avcC", "H265": "hvcC", "OPUS": "dOps"}


@dataclasses.dataclass(frozen=True, slots=True)
class Box:
    """Where one box lies in a buffer (``size`` includes the header)."""

    type: str
    offset: int
    size: int
    header_size: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size


@dataclasses.dataclass(frozen=True, slots=True)
class TrackRun:
    """One trun of a fragment: a contiguous run of one track's samples."""

    track_id: int
    base_decode_time: int
    sample_count: int
    duration_total: int
    first_sample_is_sync: bool
    sample_sizes: tuple[int, ...]
    sample_durations: tuple[int, ...]
    sample_flags: tuple[int, ...]
    composition_offsets: tuple[int, ...]
    #: Offset of the first sample's data in the scanned buffer (a tfhd base-data-offset,
    #: which our writer never uses, is taken as an offset into that buffer too).
    data_offset_absolute: int


@dataclasses.dataclass(frozen=True, slots=True)
class FragmentInfo:
    """A complete ``moof`` + ``mdat`` pair."""

    offset: int
    #: moof and mdat together.
    size: int
    sequence_number: int
    tracks: tuple[TrackRun, ...]

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclasses.dataclass(frozen=True, slots=True)
class FragmentScan:
    fragments: list[FragmentInfo]
    #: Offset just past the last complete fragment (or skippable box): recovery truncates here.
    complete_until: int
    #: Why the scan stopped before the end of the data; None when all of it is whole.
    stop_reason: str | None


class StoredSample(NamedTuple):
    track_id: int
    decode_time: int
    duration: int
    is_sync: bool
    composition_offset: int
    data: bytes


def _header(buf: memoryview, offset: int, end: int) -> Box:
    avail = end - offset
    if avail < 8:
        raise ValueError(f"truncated box header at offset {offset}: {avail} of 8 bytes")
    size, raw_type = _HEADER.unpack_from(buf, offset)
    kind = raw_type.decode("latin-1")
    header = 8
    if size == 1:
        if avail < 16:
            raise ValueError(
                f"truncated 64-bit size of box {kind!r} at offset {offset}: {avail} of 16 bytes"
            )
        (size,) = _U64.unpack_from(buf, offset + 8)
        header = 16
    elif size == 0:
        size = avail
    if kind == "uuid":
        header += 16
        if avail < header:
            raise ValueError(
                f"truncated uuid box header at offset {offset}: {avail} of {header} bytes"
            )
    if size < header:
        raise ValueError(f"box {kind!r} at offset {offset} has invalid size {size}")
    return Box(kind, offset, size, header)


def iter_boxes(data: Buffer, offset: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes lying back to back in ``data[offset:end]`` (size 0 means "to ``end``")."""
    buf = memoryview(data)
    stop = len(buf) if end is None else end
    if not 0 <= offset <= stop <= len(buf):
        raise ValueError(f"invalid range {offset}..{stop} of a {len(buf)}-byte buffer")
    while offset < stop:
        box = _header(buf, offset, stop)
        if box.end > stop:
            raise ValueError(
                f"box {box.type!r} at offset {offset} is truncated: "
                f"size {box.size}, {stop - offset} bytes available"
            )
        yield box
        offset = box.end


def _children(buf: memoryview, parent: Box, skip: int = 0) -> Iterator[Box]:
    return iter_boxes(buf, parent.payload_offset + skip, parent.end)


def _child(buf: memoryview, parent: Box, kind: str, skip: int = 0) -> Box:
    for box in _children(buf, parent, skip):
        if box.type == kind:
            return box
    raise ValueError(f"{parent.type!r} box at offset {parent.offset} has no {kind!r} box")


def _need(box: Box, length: int) -> None:
    if box.size - box.header_size < length:
        raise ValueError(
            f"{box.type!r} box at offset {box.offset} is too short: "
            f"{box.size - box.header_size} of {length} payload bytes"
        )


def _payload(buf: memoryview, box: Box) -> bytes:
    return bytes(buf[box.payload_offset : box.end])


def read_init(data: Buffer) -> list[TrackSpec]:
    """The tracks an init segment (``ftyp`` + ``moov``, e.g. from ``init_segment``) declares."""
    buf = memoryview(data)
    moov = next((b for b in iter_boxes(buf) if b.type == "moov"), None)
    if moov is None:
        raise ValueError("no 'moov' box")
    try:
        return [_read_trak(buf, trak) for trak in _children(buf, moov) if trak.type == "trak"]
    except (struct.error, IndexError) as exc:  # a field read past the end of its box
        raise ValueError(f"malformed 'moov': {exc}") from None


def _read_trak(buf: memoryview, trak: Box) -> TrackSpec:
    tkhd = _child(buf, trak, "tkhd")
    _need(tkhd, 4)
    p = tkhd.payload_offset
    v1 = buf[p] == 1
    _need(tkhd, 96 if v1 else 84)
    (track_id,) = _U32.unpack_from(buf, p + (20 if v1 else 12))
    mdia = _child(buf, trak, "mdia")
    mdhd = _child(buf, mdia, "mdhd")
    _need(mdhd, 4)
    p = mdhd.payload_offset
    v1 = buf[p] == 1
    _need(mdhd, 36 if v1 else 24)
    (timescale,) = _U32.unpack_from(buf, p + (20 if v1 else 12))
    (lang_code,) = _U16.unpack_from(buf, p + (32 if v1 else 20))
    language = "".join(chr(((lang_code >> s) & 0x1F) + 0x60) for s in (10, 5, 0))
    hdlr = _child(buf, mdia, "hdlr")
    _need(hdlr, 12)
    handler = bytes(buf[hdlr.payload_offset + 8 : hdlr.payload_offset + 12])
    kind: Literal["video", "audio"]
    if handler == b"vide":
        kind = "video"
    elif handler == b"soun":
        kind = "audio"
    else:
        raise ValueError(f"track {track_id}: unsupported handler {handler.decode('latin-1')!r}")
    stbl = _child(buf, _child(buf, mdia, "minf"), "stbl")
    stsd = _child(buf, stbl, "stsd")
    entry = next(_children(buf, stsd, 8), None)
    if entry is None:
        raise ValueError(f"track {track_id}: empty 'stsd'")
    codec = _CODECS.get(entry.type)
    if codec is None or (codec in VIDEO_CODECS) != (kind == "video"):
        raise ValueError(f"track {track_id}: unsupported {kind} sample entry {entry.type!r}")
    p = entry.payload_offset
    if kind == "video":
        _need(entry, 78)
        width, height = struct.unpack_from(">HH", buf, p + 24)
        config = _payload(buf, _child(buf, entry, _CONFIG_BOXES[codec], 78))
        return TrackSpec(track_id, kind, timescale, codec, width, height, config, language=language)
    _need(entry, 28)
    (version,) = _U16.unpack_from(buf, p + 8)
    channels, _, _, _, rate_fx = struct.unpack_from(">HHHHI", buf, p + 16)
    # QuickTime sound description versions 1 and 2 carry 16 / 36 more bytes.
    skip = 28 + {1: 16, 2: 36}.get(version, 0)
    sample_rate = rate_fx >> 16
    config = b""
    if codec == "AAC":
        config = _audio_specific_config(buf, _child(buf, entry, "esds", skip))
    elif codec == "OPUS":
        config = _payload(buf, _child(buf, entry, "dOps", skip))
    return TrackSpec(
        track_id,
        kind,
        timescale,
        codec,
        sample_entry_config=config,
        sample_rate=sample_rate,
        channels=channels,
        language=language,
    )


def _descriptor_at(raw: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of the MPEG-4 descriptor at ``pos``."""
    if pos >= len(raw):
        raise ValueError("truncated descriptor in 'esds'")
    tag = raw[pos]
    size = 0
    pos += 1
    for _ in range(4):
        if pos >= len(raw):
            raise ValueError("truncated descriptor size in 'esds'")
        byte = raw[pos]
        pos += 1
        size = size << 7 | (byte & 0x7F)
        if not byte & 0x80:
            break
    if pos + size > len(raw):
        raise ValueError(f"descriptor 0x{tag:02x} overruns 'esds'")
    return tag, pos, pos + size


def _audio_specific_config(buf: memoryview, esds: Box) -> bytes:
    raw = _payload(buf, esds)
    tag, start, end = _descriptor_at(raw, 4)
    if tag != 0x03 or end - start < 3:
        raise ValueError("'esds' does not start with an ES_Descriptor")
    flags = raw[start + 2]
    pos = start + 3
    if flags & 0x80:  # streamDependenceFlag
        pos += 2
    if flags & 0x40:  # URL_Flag
        pos += 1 + (raw[pos] if pos < end else 0)
    if flags & 0x20:  # OCRstreamFlag
        pos += 2
    while pos < end:
        tag, sub_start, sub_end = _descriptor_at(raw, pos)
        if tag == 0x04:
            inner = sub_start + 13  # objectType, streamType, bufferSizeDB, bitrates
            while inner < sub_end:
                tag, info_start, info_end = _descriptor_at(raw, inner)
                if tag == 0x05:
                    return raw[info_start:info_end]
                inner = info_end
            break
        pos = sub_end
    raise ValueError("'esds' has no DecoderSpecificInfo")


def scan_fragments(data: Buffer, start_offset: int = 0) -> FragmentScan:
    """Walk the moof+mdat pairs from ``start_offset`` until the data ends or stops making sense.

    ftyp/moov and segment-level boxes (styp, sidx, free, ...) are stepped over, so a whole
    segment file can be scanned from 0.
    """
    buf = memoryview(data)
    end = len(buf)
    if not 0 <= start_offset <= end:
        raise ValueError(f"start offset {start_offset} is outside the {end}-byte buffer")
    pos = complete = start_offset
    fragments: list[FragmentInfo] = []

    def stop(reason: str) -> FragmentScan:
        return FragmentScan(fragments, complete, reason)

    while pos < end:
        try:
            box = _header(buf, pos, end)
        except ValueError as exc:
            return stop(str(exc))
        if box.end > end:
            return stop(
                f"truncated {box.type!r} box at offset {pos}: "
                f"size {box.size}, {end - pos} bytes available"
            )
        if box.type in _SKIPPABLE:
            pos = complete = box.end
            continue
        if box.type != "moof":
            return stop(f"unexpected box {box.type!r} at offset {pos}")
        try:
            mdat = _header(buf, box.end, end)
        except ValueError as exc:
            return stop(f"incomplete fragment at offset {pos}: {exc}")
        if mdat.type != "mdat":
            return stop(f"moof at offset {pos} is followed by {mdat.type!r}, not 'mdat'")
        if mdat.end > end:
            return stop(
                f"truncated 'mdat' box at offset {mdat.offset}: "
                f"size {mdat.size}, {end - mdat.offset} bytes available"
            )
        try:
            sequence_number, runs = _read_moof(buf, box, mdat)
        except (ValueError, struct.error) as exc:
            return stop(f"corrupt moof at offset {pos}: {exc}")
        fragments.append(FragmentInfo(pos, mdat.end - pos, sequence_number, tuple(runs)))
        pos = complete = mdat.end
    return FragmentScan(fragments, complete, None)


def fragment_header(data: Buffer) -> FragmentInfo:
    """The fragment whose ``moof`` starts ``data``, read from the ``moof`` and the ``mdat``
    header alone (the sample data need not be there): where each sample lies, so that one
    sample (a keyframe) can be read without the rest of the fragment."""
    buf = memoryview(data)
    moof = _header(buf, 0, len(buf))
    if moof.type != "moof":
        raise ValueError(f"expected a 'moof' box, found {moof.type!r}")
    if moof.end + 8 > len(buf):
        raise ValueError(f"'moof' and the 'mdat' header need {moof.end + 8} bytes, have {len(buf)}")
    size, kind = _HEADER.unpack_from(buf, moof.end)
    if kind != b"mdat":
        raise ValueError(f"moof is followed by {kind.decode('latin-1')!r}, not 'mdat'")
    if size == 1:
        if moof.end + 16 > len(buf):
            raise ValueError("truncated 64-bit size of the 'mdat' box")
        (size,) = _U64.unpack_from(buf, moof.end + 8)
        mdat = Box("mdat", moof.end, size, 16)
    else:
        mdat = Box("mdat", moof.end, size, 8)
    if mdat.size < mdat.header_size:
        raise ValueError(f"box 'mdat' at offset {mdat.offset} has invalid size {mdat.size}")
    try:
        sequence_number, runs = _read_moof(buf, moof, mdat)
    except struct.error as exc:
        raise ValueError(f"corrupt moof: {exc}") from None
    return FragmentInfo(0, mdat.end, sequence_number, tuple(runs))


def _read_moof(buf: memoryview, moof: Box, mdat: Box) -> tuple[int, list[TrackRun]]:
    sequence_number: int | None = None
    runs: list[TrackRun] = []
    data_end = moof.offset  # where the previous traf's data ended (implicit base offsets)
    for child in _children(buf, moof):
        if child.type == "mfhd":
            _need(child, 8)
            (sequence_number,) = _U32.unpack_from(buf, child.payload_offset + 4)
        elif child.type == "traf":
            data_end = _read_traf(buf, child, moof, mdat, data_end, runs)
    if sequence_number is None:
        raise ValueError("no 'mfhd' box")
    return sequence_number, runs


def _read_traf(
    buf: memoryview, traf: Box, moof: Box, mdat: Box, data_end: int, runs: list[TrackRun]
) -> int:
    boxes = list(_children(buf, traf))
    tfhd = next((b for b in boxes if b.type == "tfhd"), None)
    if tfhd is None:
        raise ValueError(f"traf at offset {traf.offset} has no 'tfhd'")
    _need(tfhd, 8)
    p = tfhd.payload_offset
    flags, track_id = struct.unpack_from(">II", buf, p)
    flags &= 0xFF_FFFF
    p += 8
    optional = (
        TFHD_SAMPLE_DESCRIPTION_INDEX,
        TFHD_DEFAULT_DURATION,
        TFHD_DEFAULT_SIZE,
        TFHD_DEFAULT_FLAGS,
    )
    needed = (8 if flags & TFHD_BASE_DATA_OFFSET else 0) + 4 * sum(
        1 for bit in optional if flags & bit
    )
    if tfhd.end - p < needed:
        raise ValueError(f"'tfhd' of track {track_id} is too short for its flags 0x{flags:06x}")
    base = data_end
    if flags & TFHD_BASE_DATA_OFFSET:
        (base,) = _U64.unpack_from(buf, p)
        p += 8
    elif flags & TFHD_DEFAULT_BASE_IS_MOOF:
        base = moof.offset
    values: list[int | None] = []
    for bit in optional:
        if flags & bit:
            values.append(_U32.unpack_from(buf, p)[0])
            p += 4
        else:
            values.append(None)
    _, default_duration, default_size, flags_value = values
    default_flags = flags_value or 0
    tfdt = next((b for b in boxes if b.type == "tfdt"), None)
    if tfdt is None:
        raise ValueError(f"traf of track {track_id} has no 'tfdt'")
    _need(tfdt, 8)
    if buf[tfdt.payload_offset] == 1:
        _need(tfdt, 12)
        (decode_time,) = _U64.unpack_from(buf, tfdt.payload_offset + 4)
    else:
        (decode_time,) = _U32.unpack_from(buf, tfdt.payload_offset + 4)
    next_data = base
    for trun in (b for b in boxes if b.type == "trun"):
        run = _read_trun(
            buf, trun, track_id, decode_time, base, next_data,
            (default_duration, default_size, default_flags),
        )  # fmt: skip
        run_end = run.data_offset_absolute + sum(run.sample_sizes)
        if not mdat.payload_offset <= run.data_offset_absolute <= run_end <= mdat.end:
            raise ValueError(
                f"sample data of track {track_id} [{run.data_offset_absolute}, {run_end})"
                f" lies outside the mdat payload [{mdat.payload_offset}, {mdat.end})"
            )
        runs.append(run)
        decode_time += run.duration_total
        next_data = run_end
    return next_data


def _read_trun(
    buf: memoryview,
    trun: Box,
    track_id: int,
    decode_time: int,
    base: int,
    next_data: int,
    defaults: tuple[int | None, int | None, int],
) -> TrackRun:
    _need(trun, 8)
    p = trun.payload_offset
    version_flags, count = struct.unpack_from(">II", buf, p)
    version, flags = version_flags >> 24, version_flags & 0xFF_FFFF
    p += 8
    optional = (4 if flags & TRUN_DATA_OFFSET else 0) + (
        4 if flags & TRUN_FIRST_SAMPLE_FLAGS else 0
    )
    if trun.end - p < optional:
        raise ValueError(f"'trun' of track {track_id} is too short for its flags 0x{flags:06x}")
    start = next_data
    if flags & TRUN_DATA_OFFSET:
        start = base + _I32.unpack_from(buf, p)[0]
        p += 4
    first_flags = None
    if flags & TRUN_FIRST_SAMPLE_FLAGS:
        (first_flags,) = _U32.unpack_from(buf, p)
        p += 4
    fields = ""
    for bit, code in (
        (TRUN_DURATION, "I"),
        (TRUN_SIZE, "I"),
        (TRUN_FLAGS, "I"),
        (TRUN_COMPOSITION_OFFSET, "i" if version else "I"),
    ):
        if flags & bit:
            fields += code
    record = struct.Struct(">" + fields)
    if count * record.size > trun.end - p:
        raise ValueError(
            f"'trun' of track {track_id} declares {count} samples "
            f"but holds {(trun.end - p) // record.size}"
        )
    if not record.size and count > _MAX_IMPLICIT_SAMPLES:
        # Nothing bounds the count by the box size here; refuse to expand a hostile one.
        raise ValueError(f"'trun' of track {track_id} declares {count} samples without records")
    columns: list[tuple[int, ...]] = [()] * len(fields)
    if record.size and count:
        columns = list(zip(*record.iter_unpack(buf[p : p + count * record.size]), strict=True))
    it = iter(columns)
    default_duration, default_size, default_flags = defaults
    durations = next(it) if flags & TRUN_DURATION else (default_duration or 0,) * count
    if flags & TRUN_SIZE:
        sizes = next(it)
    elif default_size is not None:
        sizes = (default_size,) * count
    else:
        raise ValueError(f"'trun' of track {track_id} gives no sample sizes")
    sample_flags = next(it) if flags & TRUN_FLAGS else (default_flags,) * count
    if first_flags is not None and count:
        sample_flags = (first_flags, *sample_flags[1:])
    offsets = next(it) if flags & TRUN_COMPOSITION_OFFSET else (0,) * count
    return TrackRun(
        track_id=track_id,
        base_decode_time=decode_time,
        sample_count=count,
        duration_total=sum(durations),
        first_sample_is_sync=bool(count) and not sample_flags[0] & SAMPLE_FLAG_IS_NON_SYNC,
        sample_sizes=sizes,
        sample_durations=durations,
        sample_flags=sample_flags,
        composition_offsets=offsets,
        data_offset_absolute=start,
    )


def samples_of(data: Buffer, fragment: FragmentInfo) -> list[StoredSample]:
    """The samples of a scanned fragment, track by track, in decoding order."""
    buf = memoryview(data)
    out: list[StoredSample] = []
    for run in fragment.tracks:
        pos = run.data_offset_absolute
        if pos + sum(run.sample_sizes) > len(buf):
            raise ValueError(f"sample data of track {run.track_id} lies past the end of the data")
        t = run.base_decode_time
        for size, duration, flags, cto in zip(
            run.sample_sizes,
            run.sample_durations,
            run.sample_flags,
            run.composition_offsets,
            strict=True,
        ):
            sync = not flags & SAMPLE_FLAG_IS_NON_SYNC
            out.append(
                StoredSample(run.track_id, t, duration, sync, cto, bytes(buf[pos : pos + size]))
            )
            t += duration
            pos += size
    return out


def avcc_nals(sample: Buffer) -> list[bytes]:
    """The NAL units of an H.264/H.265 sample with 4-byte length prefixes."""
    buf = memoryview(sample)
    nals = []
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 4:
            raise ValueError(f"truncated NAL length at offset {pos}")
        (length,) = _U32.unpack_from(buf, pos)
        pos += 4
        if pos + length > len(buf):
            raise ValueError(
                f"NAL unit at offset {pos} overruns the sample by {pos + length - len(buf)} bytes"
            )
        nals.append(bytes(buf[pos : pos + length]))
        pos += length
    return nals
