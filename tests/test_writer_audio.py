"""The segment writer with audio (track 2 next to the video in the same fragments) and its
wall-clock rule (a segment's wall times stay on one line with its media time). Synthetic
units from clips encoded with PyAV; the files are read back with FFmpeg (PyAV) and the
project's reader."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from onvif_nvr.clock import ManualClock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.media.units import AccessUnit, AudioParameters, TimedUnit
from onvif_nvr.mp4.reader import read_init, samples_of, scan_fragments
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import SegmentIndex, SegmentRow
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.rtsp.bits import split_annexb
from onvif_nvr.system.secrets import Sealer
from tests.mediagen import aac_frames, access_units, h264_annexb

T0 = 1_800_000_000 * 10**9
VIDEO_90K = 3600  # 25 fps
AAC_90K = 1920  # 1024 samples at 48 kHz


def video_units(count: int, start_90k: int = 0) -> list[TimedUnit]:
    clip = access_units(h264_annexb(frames=count, fps=25, gop=10), "h264")
    out = []
    for i, (data, key) in enumerate(clip):
        dts = start_90k + i * VIDEO_90K
        au = AccessUnit("H264", tuple(split_annexb(data)), dts, key)
        out.append(TimedUnit(au, 0, dts, T0 + dts * 100_000 // 9))
    return out


def audio_units(
    frames: tuple[bytes, ...], codec: str = "AAC", step_90k: int = AAC_90K, clock_90k: int = 0
) -> list[TimedUnit]:
    """Audio at the video's times; its own media clock reads ``clock_90k`` more (RTP
    timestamps of each stream start at random values; only wall times relate them)."""
    return [
        TimedUnit(AccessUnit(codec, (f,), i * step_90k, True), 1, clock_90k + i * step_90k,
                  T0 + i * step_90k * 100_000 // 9)
        for i, f in enumerate(frames)
    ]  # fmt: skip


def interleave(*streams: list[TimedUnit], video_late_ns: int = 0) -> list[TimedUnit]:
    """Arrival order: by wall time (video ``video_late_ns`` later), video first at equal
    times."""
    return sorted(
        (u for s in streams for u in s),
        key=lambda u: (u.wall_ns + (video_late_ns if u.track == 0 else 0), u.track),
    )


@pytest.fixture
async def env(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("cam", "rtsp://192.0.2.1/x")
    index = SegmentIndex(db)
    volume = tmp_path / "vol"
    volume_id = await index.ensure_volume(str(volume))
    yield db, index, cam.id, volume_id, volume
    db.close()


async def write(env, units, audio=None, **options) -> tuple[SegmentWriter, list[SegmentRow]]:
    _, index, cam, volume_id, volume = env
    writer = SegmentWriter(cam, volume_id, volume, index, audio_parameters=audio, **options)
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    for unit in units:
        await writer.add(unit)
    await writer.finish()
    writer._io.shutdown(wait=True)
    return writer, await index.segments(cam)


def segment_path(env, segment: SegmentRow) -> Path:
    return env[4] / str(env[2]) / f"{segment.id}.mp4"


def stored_tracks(db: Database) -> list[object]:
    with db.session() as session:
        return list(session.scalars(select(models.Segment.tracks).order_by(models.Segment.id)))


async def test_video_and_aac_segments(env):
    config, frames = aac_frames(2.5)
    params = AudioParameters("AAC", 48000, 1, config)
    video = video_units(60)  # 2.4 s, a keyframe every 10
    clock = 3_000_000_000  # the audio's media clock is far from the video's
    audio = audio_units(frames, clock_90k=clock)
    sent = [u for u in audio if u.dts_90k - clock < video[-1].dts_90k + VIDEO_90K]
    # The ingest may hand a picture over only when the next one starts (PyAV does): audio
    # then arrives ahead of the keyframe that opens a segment and waits for it.
    units = interleave(video, sent, video_late_ns=40_000_000)
    writer, segments = await write(env, units, lambda: params, segment_s=0.7, fragment_s=1.0)
    assert len(segments) == 3 and all(s.state == "closed" for s in segments)
    assert writer.units_written == 60 and writer.units_skipped == 0
    assert writer.audio_units_written == len(sent) and writer.audio_units_skipped == 0
    got_audio: list[tuple[int, bytes]] = []  # (dts_90k, frame) as read back with FFmpeg
    for segment in segments:
        path = segment_path(env, segment)
        data = path.read_bytes()
        video_spec, audio_spec = read_init(data)
        assert (audio_spec.track_id, audio_spec.timescale, audio_spec.codec) == (2, 48000, "AAC")
        assert (audio_spec.sample_rate, audio_spec.channels) == (48000, 1)
        assert audio_spec.sample_entry_config == config
        scan = scan_fragments(data)
        assert scan.stop_reason is None and scan.complete_until == len(data) == segment.size
        rows = await env[1].fragments(segment.id)
        assert [(r.offset, r.size) for r in rows] == [(f.offset, f.size) for f in scan.fragments]
        for row, fragment in zip(rows, scan.fragments, strict=True):
            (video_run,) = [t for t in fragment.tracks if t.track_id == 1]
            assert row.sample_count == video_run.sample_count  # rows describe the video
            assert row.start_90k == segment.start_90k + video_run.base_decode_time
        with av.open(str(path)) as container:
            assert [s.type for s in container.streams] == ["video", "audio"]
            stream = container.streams.audio[0]
            assert stream.codec_context.name == "aac"
            assert stream.codec_context.sample_rate == 48000
            assert stream.time_base == Fraction(1, 48000)
            packets = [p for p in container.demux(stream) if p.size]
            for packet in packets:
                assert packet.pts is not None and packet.pts == packet.dts
                dts_90k = segment.start_90k + packet.pts * 90_000 // 48_000
                got_audio.append((dts_90k, bytes(packet)))
        with av.open(str(path)) as container:
            decoded = sum(f.samples for f in container.decode(audio=0))
        assert decoded == 1024 * len(packets)
        # Audio and video start together in each segment (the audio frames are 40 ms apart
        # at most from a keyframe).
        assert packets[0].pts * 90_000 // 48_000 < AAC_90K
    assert got_audio == [(u.dts_90k - clock, u.unit.payloads[0]) for u in sent]
    tracks = stored_tracks(env[0])
    assert tracks[0] == [
        {
            "codec": "H264",
            "width": 320,
            "height": 240,
            "codec_string": tracks[0][0]["codec_string"],
        },
        {"codec": "AAC", "sample_rate": 48000, "channels": 1, "config": config.hex()},
    ]


async def test_audio_units_without_parameters_leave_the_segments_video_only(env):
    config, frames = aac_frames(1.0)
    video = video_units(20)
    writer, segments = await write(env, interleave(video, audio_units(frames)))
    assert len(segments) == 1 and writer.audio_units_written == 0
    assert writer.audio_units_skipped == len(frames)
    data = segment_path(env, segments[0]).read_bytes()
    assert [t.kind for t in read_init(data)] == ["video"]
    assert all(len(f.tracks) == 1 for f in scan_fragments(data).fragments)
    with av.open(str(segment_path(env, segments[0]))) as container:
        assert [s.type for s in container.streams] == ["video"]
    (video_only,) = stored_tracks(env[0])
    assert [track["codec"] for track in video_only] == ["H264"]


async def test_g711_track(env):
    video = video_units(30)
    # 20 ms of PCMU (160 samples at 8 kHz) per unit; any byte is a G.711 sample.
    frames = tuple(bytes((i * 7 + j) % 256 for j in range(160)) for i in range(60))
    audio = audio_units(frames, "PCMU", 1800)
    params = AudioParameters("PCMU", 8000, 1)
    writer, segments = await write(env, interleave(video, audio), lambda: params)
    (segment,) = segments
    path = segment_path(env, segment)
    assert read_init(path.read_bytes())[1].codec == "PCMU"
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_mulaw"
        packets = [p for p in container.demux(stream) if p.size]
    # FFmpeg may regroup raw PCM packets; samples and start times are what count.
    assert b"".join(bytes(p) for p in packets) == b"".join(frames)
    assert packets[0].pts == 0
    assert writer.audio_units_written == 60


async def test_audio_parameter_change_starts_a_segment(env):
    config, frames = aac_frames(2.5)
    first = AudioParameters("AAC", 48000, 1, config)
    current = [first]
    _, index, cam, volume_id, volume = env
    writer = SegmentWriter(cam, volume_id, volume, index, audio_parameters=lambda: current[0])
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    units = interleave(video_units(60), audio_units(frames))
    changed = AudioParameters("AAC", 48000, 2, bytes([config[0], (config[1] & 0x87) | 0x10]))
    for unit in units:
        if unit.track == 0 and unit.dts_90k == 25 * VIDEO_90K:
            current[0] = changed  # the source reconnected with other audio
        await writer.add(unit)
    await writer.finish()
    writer._io.shutdown(wait=True)
    segments = await index.segments(cam)
    assert [s.start_90k for s in segments] == [0, 30 * VIDEO_90K]  # the next keyframe
    specs = [read_init(segment_path(env, s).read_bytes())[1] for s in segments]
    assert [(s.channels, s.sample_entry_config) for s in specs] == [
        (1, first.config),
        (2, changed.config),
    ]


@pytest.mark.parametrize("jump_s", [5.0, -3.0, 1.5])
async def test_wall_clock_jump_starts_a_segment_at_the_next_keyframe(env, jump_s):
    jump_ns = int(jump_s * 1e9)
    units = [
        u if i < 25 else TimedUnit(u.unit, u.track, u.dts_90k, u.wall_ns + jump_ns)
        for i, u in enumerate(video_units(60))
    ]
    writer, segments = await write(env, units, fragment_s=0.2)
    assert writer.units_written == 60
    segments.sort(key=lambda s: s.start_90k)
    assert [s.start_90k for s in segments] == [0, 30 * VIDEO_90K]
    second = segments[1]
    assert second.start_wall_ns == T0 + 30 * VIDEO_90K * 100_000 // 9 + jump_ns
    for segment in segments:  # each segment's fragments lie on its line
        rows = await env[1].fragments(segment.id)
        assert len(rows) > 1
        for row in rows:
            line = segment.start_wall_ns + (row.start_90k - segment.start_90k) * 100_000 // 9
            assert row.start_wall_ns == line


async def test_small_wall_clock_wander_stays_in_the_segment(env):
    units = [
        TimedUnit(u.unit, u.track, u.dts_90k, u.wall_ns + (900_000_000 if i >= 25 else 0))
        for i, u in enumerate(video_units(60))
    ]
    _, segments = await write(env, units)
    assert len(segments) == 1
    rows = await env[1].fragments(segments[0].id)
    assert rows[-1].start_wall_ns == T0 + rows[-1].start_90k * 100_000 // 9 + 900_000_000


async def test_audio_samples_stay_contiguous_across_fragments(env):
    config, frames = aac_frames(2.5)
    params = AudioParameters("AAC", 48000, 1, config)
    video = video_units(60)
    audio = [u for u in audio_units(frames) if u.dts_90k < 60 * VIDEO_90K]
    _, segments = await write(env, interleave(video, audio), lambda: params, fragment_s=0.4)
    (segment,) = segments
    data = segment_path(env, segment).read_bytes()
    samples = [
        s for f in scan_fragments(data).fragments for s in samples_of(data, f) if s.track_id == 2
    ]
    assert [s.decode_time for s in samples] == [i * 1024 for i in range(len(audio))]
    assert all(s.duration == 1024 for s in samples)
