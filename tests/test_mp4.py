"""fMP4 writer and reader, checked against FFmpeg (through PyAV) with clips encoded here.

The clips are synthesized at session scope with PyAV (no media in the repository). The
Annex-B splitting and the avcC/hvcC records are built in this file on purpose: the
project's H.264/H.265 modules are not what is under test here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import json
import math
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import pytest

from onvif_nvr.mp4.boxes import (
    Sample,
    TrackSpec,
    avcc_sample,
    init_segment,
    media_fragment,
)
from onvif_nvr.mp4.reader import (
    avcc_nals,
    iter_boxes,
    read_init,
    samples_of,
    scan_fragments,
)

FRAME_90K = 3000  # 30 fps


@dataclasses.dataclass(frozen=True)
class Frame:
    nals: list[bytes]
    keyframe: bool
    pts: int  # encoder ticks (one per frame)
    dts: int


@dataclasses.dataclass(frozen=True)
class VideoClip:
    codec: str
    width: int
    height: int
    config: bytes  # avcC / hvcC record
    frames: list[Frame]


@dataclasses.dataclass(frozen=True)
class AudioClip:
    codec: str
    sample_rate: int
    channels: int
    config: bytes
    frames: list[tuple[bytes, int]]  # (access unit, duration in samples)


# --- bitstream helpers (test-only, deliberately independent of onvif_nvr.rtsp) ---------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (3- or 4-byte start codes)."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    nals = []
    for k, start in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[start:end]
        nals.append(nal.rstrip(b"\x00") if k + 1 < len(starts) else nal)
    return nals


def unescape(nal: bytes) -> bytes:
    """RBSP of a NAL unit: emulation-prevention bytes (00 00 03) removed."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def avcc_record(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) for one SPS and one PPS."""
    record = bytes([1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1])
    record += struct.pack(">H", len(sps)) + sps + b"\x01" + struct.pack(">H", len(pps)) + pps
    if sps[1] in (100, 110, 122, 144):  # High profiles: chroma 4:2:0, 8 bit, no SPS ext
        record += bytes([0xFC | 1, 0xF8, 0xF8, 0])
    return record


def hvcc_record(vps: bytes, sps: bytes, pps: bytes) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1), 4:2:0 8-bit assumed."""
    rbsp = unescape(sps[2:])
    max_sub_layers = ((rbsp[0] >> 1) & 7) + 1
    nested = rbsp[0] & 1
    ptl = rbsp[1:13]  # profile space/tier/idc, compatibility flags, constraint flags, level
    record = bytes([1]) + ptl
    record += struct.pack(">HBBBBH", 0xF000, 0xFC, 0xFC | 1, 0xF8, 0xF8, 0)
    record += bytes([max_sub_layers << 3 | nested << 2 | 3, 3])
    for nal in (vps, sps, pps):
        record += bytes([0x80 | (nal[0] >> 1) & 0x3F]) + struct.pack(">HH", 1, len(nal)) + nal
    return record


def _nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "H264" else (nal[0] >> 1) & 0x3F


PARAMETER_SET_TYPES = {"H264": (7, 8), "H265": (32, 33, 34)}


def encode_video(codec: str, frames: int, gop: int, bframes: int) -> VideoClip:
    name = "libx264" if codec == "H264" else "libx265"
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
    if codec == "H265":
        params += ":log-level=error:open-gop=0"
    ctx = av.CodecContext.create(name, "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"preset": "ultrafast", f"{name[3:]}-params": params}
    packets = []
    for i in range(frames):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(frame.planes):
            row = bytes((x + i * 3 * (n + 1)) & 0xFF for x in range(plane.line_size))
            plane.update(row * plane.height)
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    out = []
    params_sets: dict[int, bytes] = {}
    for packet in packets:
        nals = split_annexb(bytes(packet))
        for nal in nals:
            if _nal_type(codec, nal) in PARAMETER_SET_TYPES[codec]:
                params_sets.setdefault(_nal_type(codec, nal), nal)
        kept = [n for n in nals if _nal_type(codec, n) not in PARAMETER_SET_TYPES[codec]]
        assert packet.pts is not None and packet.dts is not None
        out.append(Frame(kept, packet.is_keyframe, packet.pts, packet.dts))
    if codec == "H264":
        config = avcc_record(params_sets[7], params_sets[8])
    else:
        config = hvcc_record(params_sets[32], params_sets[33], params_sets[34])
    return VideoClip(codec, 320, 240, config, out)


def encode_audio(codec: str, seconds: float) -> AudioClip:
    name, rate, fmt = {
        "AAC": ("aac", 48000, "fltp"),
        "PCMU": ("pcm_mulaw", 8000, "s16"),
        "PCMA": ("pcm_alaw", 8000, "s16"),
        "OPUS": ("libopus", 48000, "s16"),
    }[codec]
    ctx = av.CodecContext.create(name, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = rate, "mono", fmt
    ctx.time_base = fractions.Fraction(1, rate)
    ctx.open()
    chunk = ctx.frame_size or 160
    packets = []
    for start in range(0, int(rate * seconds), chunk):
        frame = av.AudioFrame(format=fmt, layout="mono", samples=chunk)
        pcm = [math.sin(2 * math.pi * 440 * (start + i) / rate) * 0.3 for i in range(chunk)]
        if fmt == "fltp":
            frame.planes[0].update(struct.pack(f"<{chunk}f", *pcm))
        else:
            frame.planes[0].update(struct.pack(f"<{chunk}h", *(int(v * 32767) for v in pcm)))
        frame.sample_rate, frame.pts = rate, start
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    frames = [(bytes(p), p.duration or chunk) for p in packets]
    # AAC: FFmpeg's encoder emits raw access units and the AudioSpecificConfig as
    # extradata; Opus: leave the dOps to the writer (the OpusHead extradata is not one).
    config = bytes(ctx.extradata or b"") if codec == "AAC" else b""
    return AudioClip(codec, rate, 1, config, frames)


@pytest.fixture(scope="session")
def h264() -> VideoClip:
    return encode_video("H264", 60, 15, bframes=2)


@pytest.fixture(scope="session")
def h265() -> VideoClip:
    return encode_video("H265", 16, 8, bframes=0)


@pytest.fixture(scope="session")
def aac() -> AudioClip:
    return encode_audio("AAC", 2.0)


# --- building segment files -----------------------------------------------------------


def video_track(clip: VideoClip, track_id: int = 1) -> TrackSpec:
    return TrackSpec(track_id, "video", 90000, clip.codec, clip.width, clip.height, clip.config)


def video_samples(clip: VideoClip) -> list[Sample]:
    """CMAF convention: decode times from 0, first presentation time 0, signed offsets."""
    first = clip.frames[0]
    delay = first.pts - first.dts
    return [
        Sample(avcc_sample(f.nals), FRAME_90K, f.keyframe, (f.pts - f.dts - delay) * FRAME_90K)
        for f in clip.frames
    ]


def groups(samples: Sequence[Sample], min_duration: int) -> Iterator[list[Sample]]:
    """Runs of samples starting at a sync sample, each at least ``min_duration`` long."""
    run: list[Sample] = []
    for sample in samples:
        if sample.is_sync and run and sum(s.duration for s in run) >= min_duration:
            yield run
            run = []
        run.append(sample)
    if run:
        yield run


def video_file(clip: VideoClip, min_duration: int = 0) -> tuple[bytes, list[list[Sample]]]:
    parts = [init_segment([video_track(clip)], creation_time_s=1_700_000_000)]
    fragments = list(groups(video_samples(clip), min_duration))
    base = 0
    for seq, run in enumerate(fragments, 1):
        parts.append(media_fragment(seq, [(1, base, run)]))
        base += sum(s.duration for s in run)
    return b"".join(parts), fragments


def demux(path: Path) -> dict[int, list[av.Packet[Any]]]:
    with av.open(str(path)) as container:
        out: dict[int, list[av.Packet[Any]]] = {s.index: [] for s in container.streams}
        for packet in container.demux():
            if packet.size:
                out[packet.stream.index].append(packet)
        return out


def ffprobe(path: Path) -> list[dict[str, object]] | None:
    exe = shutil.which("ffprobe")
    if exe is None:
        return None
    result = subprocess.run(
        [exe, "-v", "error", "-count_packets", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    streams: list[dict[str, object]] = json.loads(result.stdout)["streams"]
    return streams


def check_video_plays(path: Path, clip: VideoClip, samples: Sequence[Sample]) -> None:
    expected_name = "h264" if clip.codec == "H264" else "hevc"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == expected_name
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        assert stream.time_base == fractions.Fraction(1, 90000)
        assert stream.duration == len(samples) * FRAME_90K
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == len(samples)
    packets = demux(path)[0]
    assert len(packets) == len(samples)
    assert [p.is_keyframe for p in packets] == [s.is_sync for s in samples]
    # FFmpeg keeps decode times and lifts presentation times by the largest negative
    # composition offset so that pts >= dts (it reads no edit list from us).
    shift = max(0, -min(s.composition_offset for s in samples))
    dts = 0
    for packet, sample in zip(packets, samples, strict=True):
        assert packet.dts == dts
        assert packet.pts == dts + sample.composition_offset + shift
        assert packet.duration == sample.duration
        dts += sample.duration
    probed = ffprobe(path)
    if probed is not None:
        assert probed[0]["codec_name"] == expected_name
        assert (probed[0]["width"], probed[0]["height"]) == (320, 240)
        assert int(str(probed[0]["nb_read_packets"])) == len(samples)


# --- the writer against FFmpeg ---------------------------------------------------------


@pytest.mark.parametrize("min_duration", [0, 90000], ids=["fragment-per-gop", "fragment-1s"])
def test_h264_segment_plays(h264: VideoClip, tmp_path: Path, min_duration: int) -> None:
    data, fragments = video_file(h264, min_duration)
    assert [len(f) for f in fragments] == ([15] * 4 if min_duration == 0 else [30, 30])
    path = tmp_path / "h264.mp4"
    path.write_bytes(data)
    check_video_plays(path, h264, [s for f in fragments for s in f])
    assert any(s.composition_offset < 0 for f in fragments for s in f)  # B-frames covered
    with av.open(str(path)) as container:
        assert container.format.name.startswith("mov,mp4")
        assert container.metadata["major_brand"] == "iso6"
        assert container.metadata["compatible_brands"] == "iso6iso5cmfcmp41avc1"


def test_h265_segment_plays(h265: VideoClip, tmp_path: Path) -> None:
    data, fragments = video_file(h265)
    assert [len(f) for f in fragments] == [8, 8]
    path = tmp_path / "h265.mp4"
    path.write_bytes(data)
    check_video_plays(path, h265, [s for f in fragments for s in f])
    assert read_init(data)[0].sample_entry_config == h265.config


def audio_fragments(clip: AudioClip, per_fragment: int) -> list[list[Sample]]:
    samples = [Sample(au, duration, True) for au, duration in clip.frames]
    return [samples[i : i + per_fragment] for i in range(0, len(samples), per_fragment)]


@pytest.mark.parametrize("codec", ["AAC", "PCMU", "PCMA", "OPUS"])
def test_audio_segment_plays(codec: str, tmp_path: Path) -> None:
    clip = encode_audio(codec, 0.5)
    track = TrackSpec(
        1, "audio", clip.sample_rate, codec, sample_entry_config=clip.config,
        sample_rate=clip.sample_rate, channels=1,
    )  # fmt: skip
    parts = [init_segment([track])]
    base = 0
    for seq, run in enumerate(audio_fragments(clip, 10), 1):
        parts.append(media_fragment(seq, [(1, base, run)]))
        base += sum(s.duration for s in run)
    path = tmp_path / "audio.mp4"
    path.write_bytes(b"".join(parts))
    expected = {"AAC": "aac", "PCMU": "pcm_mulaw", "PCMA": "pcm_alaw", "OPUS": "opus"}[codec]
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == expected
        assert stream.codec_context.sample_rate == clip.sample_rate
        assert stream.codec_context.channels == 1
        assert sum(frame.samples for frame in container.decode(audio=0)) > 0
    packets = demux(path)[0]
    assert [bytes(p) for p in packets] == [au for au, _ in clip.frames]
    starts = [sum(d for _, d in clip.frames[:i]) for i in range(len(clip.frames))]
    assert [p.dts for p in packets] == starts
    (read,) = read_init(path.read_bytes())
    if codec == "OPUS":  # the writer built the dOps: version 0, 1 channel, 48 kHz input
        assert read.sample_entry_config == struct.pack(">BBHIhB", 0, 1, 0, 48000, 0, 0)
        read = dataclasses.replace(read, sample_entry_config=b"")
    assert read == track


def av_file(video: VideoClip, audio: AudioClip) -> tuple[bytes, list[tuple[int, list[Sample]]]]:
    """H.264 (track 1) + AAC (track 2), one fragment per GOP, audio cut at the same times."""
    tracks = [
        video_track(video),
        TrackSpec(2, "audio", 48000, "AAC", sample_entry_config=audio.config,
                  sample_rate=48000, channels=1, language="eng"),
    ]  # fmt: skip
    parts = [init_segment(tracks)]
    audio_samples = [Sample(au, duration, True) for au, duration in audio.frames]
    used = 0
    video_base = audio_base = 0
    layout: list[tuple[int, list[Sample]]] = []
    for seq, run in enumerate(groups(video_samples(video), 0), 1):
        video_base_next = video_base + sum(s.duration for s in run)
        audio_run = []
        # audio up to the end of this GOP (48 kHz samples vs 90 kHz ticks)
        while used < len(audio_samples) and audio_base * 90000 < video_base_next * 48000:
            audio_run.append(audio_samples[used])
            audio_base += audio_samples[used].duration
            used += 1
        audio_start = audio_base - sum(s.duration for s in audio_run)
        parts.append(media_fragment(seq, [(1, video_base, run), (2, audio_start, audio_run)]))
        layout.append((len(run), audio_run))
        video_base = video_base_next
    return b"".join(parts), layout


def test_video_and_audio_tracks(h264: VideoClip, aac: AudioClip, tmp_path: Path) -> None:
    data, layout = av_file(h264, aac)
    path = tmp_path / "av.mp4"
    path.write_bytes(data)
    video_count = sum(n for n, _ in layout)
    audio_samples = [s for _, run in layout for s in run]
    with av.open(str(path)) as container:
        kinds = [s.type for s in container.streams]
        assert kinds == ["video", "audio"]
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].language == "eng"
    packets = demux(path)
    assert len(packets[0]) == video_count == 60
    assert [bytes(p) for p in packets[1]] == [s.data for s in audio_samples]
    audio_times = [sum(s.duration for s in audio_samples[:i]) for i in range(len(audio_samples))]
    assert [p.dts for p in packets[1]] == [p.pts for p in packets[1]] == audio_times
    assert [bytes(p) for p in packets[0]] == [s.data for s in video_samples(h264)]
    scan = scan_fragments(data)
    assert scan.stop_reason is None and len(scan.fragments) == 4
    got = [s for f in scan.fragments for s in samples_of(data, f) if s.track_id == 2]
    assert [s.data for s in got] == [s.data for s in audio_samples]
    assert [s.decode_time for s in got[:3]] == [0, 1024, 2048]


# --- the reader ------------------------------------------------------------------------


def test_read_init_round_trip(h264: VideoClip, aac: AudioClip) -> None:
    tracks = [
        video_track(h264, 7),
        TrackSpec(3, "audio", 48000, "AAC", sample_entry_config=aac.config,
                  sample_rate=48000, channels=2, language="deu"),
        TrackSpec(4, "audio", 8000, "PCMU", sample_rate=8000, channels=1),
        TrackSpec(5, "audio", 8000, "PCMA", sample_rate=8000, channels=1),
        TrackSpec(6, "audio", 48000, "OPUS", sample_rate=48000, channels=2),
    ]  # fmt: skip
    data = init_segment(tracks, creation_time_s=4_000_000_000)  # needs 64-bit times
    got = read_init(data)
    dops = struct.pack(">BBHIhB", 0, 2, 0, 48000, 0, 0)
    assert got == [*tracks[:4], dataclasses.replace(tracks[4], sample_entry_config=dops)]
    boxes = [b.type for b in iter_boxes(data)]
    assert boxes == ["ftyp", "moov"]
    ftyp = next(iter_boxes(data))
    assert data[ftyp.payload_offset : ftyp.end] == b"iso6\0\0\0\0iso6iso5mp41avc1"


def test_samples_round_trip(h264: VideoClip) -> None:
    data, fragments = video_file(h264)
    init_end = len(init_segment([video_track(h264)], creation_time_s=1_700_000_000))
    scan = scan_fragments(data, init_end)
    assert scan.stop_reason is None and scan.complete_until == len(data)
    assert [f.sequence_number for f in scan.fragments] == [1, 2, 3, 4]
    assert scan.fragments[0].offset == init_end
    decode_time = 0
    for info, expected in zip(scan.fragments, fragments, strict=True):
        (run,) = info.tracks
        assert run.track_id == 1 and run.first_sample_is_sync
        assert run.base_decode_time == decode_time
        assert run.sample_count == len(expected) and run.duration_total == 15 * FRAME_90K
        samples = samples_of(data, info)
        assert [(s.data, s.duration, s.is_sync, s.composition_offset) for s in samples] == [
            (s.data, s.duration, s.is_sync, s.composition_offset) for s in expected
        ]
        assert samples[0].decode_time == decode_time
        decode_time += run.duration_total
    first = samples_of(data, scan.fragments[0])[0]
    assert avcc_nals(first.data) == h264.frames[0].nals


def test_torn_tail_recovers_to_last_complete_fragment(h264: VideoClip, tmp_path: Path) -> None:
    data, fragments = video_file(h264)
    whole = scan_fragments(data)
    ends = [f.end for f in whole.fragments]
    init_end = whole.fragments[0].offset
    cuts = set()
    for info in whole.fragments:
        mdat = info.offset + next(iter_boxes(data, info.offset)).size
        for edge in (info.offset, mdat, info.end):
            cuts.update({edge - 1, edge, edge + 1, edge + 4, edge + 8, edge + 12})
        cuts.update(range(info.offset, info.end, 997))
    cuts = {c for c in cuts if init_end <= c <= len(data)}
    played = 0
    for cut in sorted(cuts):
        torn = data[:cut]
        scan = scan_fragments(torn)
        expected_end = max([e for e in ends if e <= cut], default=init_end)
        assert scan.complete_until == expected_end, cut
        assert (scan.stop_reason is None) == (cut == expected_end), (cut, scan.stop_reason)
        assert len(scan.fragments) == sum(1 for e in ends if e <= cut)
        if cut in (ends[0] + 1, ends[1] + 100, ends[2] - 1) or played == 0:
            path = tmp_path / f"cut{cut}.mp4"
            path.write_bytes(torn[: scan.complete_until])
            packets = demux(path).get(0, [])
            assert len(packets) == 15 * len(scan.fragments)
            played += 1
    assert played >= 3


def _patched(data: bytes, offset: int, fmt: str, *values: int | bytes) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


def test_corrupt_fragments_stop_the_scan(h264: VideoClip) -> None:
    data, _ = video_file(h264)
    whole = scan_fragments(data)
    second = whole.fragments[1]
    at = second.offset
    moof = next(iter_boxes(data, at))
    mdat_at = moof.end
    traf = next(b for b in iter_boxes(data, at + 8, moof.end) if b.type == "traf")
    trun = next(b for b in iter_boxes(data, traf.payload_offset, traf.end) if b.type == "trun")
    cases = {
        "moof size 4": (
            _patched(data, at, ">I", 4),
            f"box 'moof' at offset {at} has invalid size 4",
        ),
        "moof type": (
            _patched(data, at + 4, ">4s", b"mooX"),
            f"unexpected box 'mooX' at offset {at}",
        ),
        "mdat too large": (
            _patched(data, mdat_at, ">I", 0x7FFF_0000),
            f"truncated 'mdat' box at offset {mdat_at}: size {0x7FFF0000}, "
            f"{len(data) - mdat_at} bytes available",
        ),
        "traf past moof": (
            _patched(data, traf.offset, ">I", traf.size + 64),
            f"corrupt moof at offset {at}: box 'traf' at offset {traf.offset} is truncated: "
            f"size {traf.size + 64}, {moof.end - traf.offset} bytes available",
        ),
        "trun count": (
            _patched(data, trun.payload_offset + 4, ">I", 1_000_000),
            f"corrupt moof at offset {at}: 'trun' of track 1 declares 1000000 samples but holds 15",
        ),
        "data offset": (
            _patched(data, trun.payload_offset + 8, ">i", 1 << 20),
            f"corrupt moof at offset {at}: sample data of track 1 [{at + (1 << 20)}, ",
        ),
    }
    for name, (corrupt, reason) in cases.items():
        scan = scan_fragments(corrupt)
        assert scan.complete_until == at, name
        assert len(scan.fragments) == 1, name
        assert scan.stop_reason is not None and scan.stop_reason.startswith(reason), (
            name,
            scan.stop_reason,
        )


def test_iter_boxes() -> None:
    free = struct.pack(">I4s", 12, b"free") + b"abcd"
    large = struct.pack(">I4sQ", 1, b"mdat", 20) + b"1234"
    to_end = struct.pack(">I4s", 0, b"mdat") + b"rest"
    boxes = list(iter_boxes(free + large + to_end))
    assert [(b.type, b.offset, b.size, b.header_size) for b in boxes] == [
        ("free", 0, 12, 8),
        ("mdat", 12, 20, 16),
        ("mdat", 32, 12, 8),
    ]
    assert list(iter_boxes(free + free, 12)) == [boxes[0].__class__("free", 12, 12, 8)]
    assert list(iter_boxes(free, 0, 0)) == []
    errors = {
        b"\0\0\0": "truncated box header at offset 0: 3 of 8 bytes",
        free + b"\0\0\0\x10moo": "truncated box header at offset 12: 7 of 8 bytes",
        struct.pack(">I4sI", 1, b"mdat", 0): (
            "truncated 64-bit size of box 'mdat' at offset 0: 12 of 16 bytes"
        ),
        struct.pack(">I4s", 7, b"free"): "box 'free' at offset 0 has invalid size 7",
        struct.pack(">I4sQ", 1, b"mdat", 15) + bytes(8): (
            "box 'mdat' at offset 0 has invalid size 15"
        ),
        struct.pack(">I4s", 16, b"free"): (
            "box 'free' at offset 0 is truncated: size 16, 8 bytes available"
        ),
        struct.pack(">I4s", 24, b"uuid") + bytes(8): (
            "truncated uuid box header at offset 0: 16 of 24 bytes"
        ),
        struct.pack(">I4s", 3, b"\x00\x01ab"): "box '\\x00\\x01ab' at offset 0 has invalid size 3",
    }
    for raw, message in errors.items():
        with pytest.raises(ValueError) as info:
            list(iter_boxes(raw))
        assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^invalid range 4\.\.2 of a 12-byte buffer$"):
        list(iter_boxes(free, 4, 2))
    with pytest.raises(ValueError, match=r"^truncated NAL length at offset 0$"):
        avcc_nals(b"\0\0\0")


def test_writer_layout_and_errors(h264: VideoClip) -> None:
    samples = [Sample(b"\0\0\0\x02ab", 3000, True), Sample(b"\0\0\0\x01c", 3000, False)]
    plain = media_fragment(9, [(1, 2**40, samples)])
    moof, mdat = iter_boxes(plain)
    assert (moof.type, mdat.type, mdat.size) == ("moof", "mdat", 8 + 11)
    (info,) = scan_fragments(plain).fragments
    (run,) = info.tracks
    assert (info.sequence_number, run.base_decode_time) == (9, 2**40)
    assert run.sample_flags == (0x0200_0000, 0x0101_0000)
    assert run.data_offset_absolute == moof.size + 8
    trun = plain.index(b"trun")
    assert plain[trun + 4] == 0  # version 0 without composition offsets
    signed = media_fragment(
        1, [(1, 0, [dataclasses.replace(samples[0], composition_offset=-3000)])]
    )
    assert signed[signed.index(b"trun") + 4] == 1
    track = video_track(h264)
    bad = {
        "track_id 0 is out of range": [dataclasses.replace(track, track_id=0)],
        "track 1: invalid dimensions 0x240": [dataclasses.replace(track, width=0)],
        "track 1: 'AAC' is not a video codec": [dataclasses.replace(track, codec="AAC")],
        "track 1: H264 needs its decoder configuration record": [
            dataclasses.replace(track, sample_entry_config=b"")
        ],
        "duplicate track_id 1": [track, track],
        "track 1: invalid language code 'EN'": [dataclasses.replace(track, language="EN")],
        "an init segment needs at least one track": [],
    }
    for message, tracks in bad.items():
        with pytest.raises(ValueError) as info_:
            init_segment(tracks)
        assert str(info_.value) == message
    with pytest.raises(ValueError, match=r"^track 1: sample field out of range"):
        media_fragment(1, [(1, 0, [Sample(b"x", -1, True)])])
    with pytest.raises(ValueError, match=r"^sequence_number -1 is out of range$"):
        media_fragment(-1, [(1, 0, samples)])


def test_hostile_bytes_raise_value_error_or_stop_the_scan(h264: VideoClip, aac: AudioClip) -> None:
    data, _ = av_file(h264, aac)
    init_end = scan_fragments(data).fragments[0].offset
    rng = random.Random(1234)
    for _ in range(300):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        with contextlib.suppress(ValueError):
            read_init(bytes(buf[:init_end]))
        scan = scan_fragments(bytes(buf), init_end)
        assert init_end <= scan.complete_until <= len(buf)
        for info in scan.fragments:
            samples_of(bytes(buf), info)
    for cut in range(0, init_end, 7):
        with pytest.raises(ValueError):
            read_init(data[:cut])
