"""Camera to disk: GStreamer's RTSP server → PyAV ingest → hub → segment writer → fMP4 files
and index rows, checked by reopening the files with FFmpeg (PyAV) and the project's reader."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import pytest

from onvif_nvr.clock import ManualClock, SystemClock
from onvif_nvr.db.engine import Database
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.mp4.reader import read_init, scan_fragments
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.hub import Hub
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.pyav_source import PyAVSource
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.system.secrets import Sealer
from tests import gstcam


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_recorded_segments_play_and_match_the_index(tmp_path, codec):
    """H.264/H.265 video with AAC audio (GStreamer's camera serves both)."""
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    try:
        cameras = CameraStore(db, Sealer(b"k" * 32), ManualClock())
        index = SegmentIndex(db)
        with gstcam.camera(
            "--codec", codec, "--size", "320x240", "--fps", "25", "--gop", "10", "--audio"
        ) as url:
            cam = await cameras.add("cam", url)
            volume_path = tmp_path / "volume"
            volume_id = await index.ensure_volume(str(volume_path))
            hub = Hub("cam")
            sent_audio: list[TimedUnit] = []

            def publish(units: list[TimedUnit]) -> None:
                sent_audio.extend(u for u in units if u.track == 1)
                hub.publish_many(units)

            source = PyAVSource(url, clock=SystemClock(), on_units=publish)
            writer = SegmentWriter(
                cam.id, volume_id, volume_path, index, segment_s=2.0, fragment_s=1.0,
                audio_parameters=lambda: source.info.audio,
            )  # fmt: skip
            writing = asyncio.ensure_future(
                writer.run(hub.subscribe("recorder", maxsize=10_000, lossy=True))
            )
            reading = asyncio.ensure_future(source.run())
            await asyncio.sleep(5.0)
            source.stop()
            await asyncio.wait_for(reading, 15)
            hub.end()
            await asyncio.wait_for(writing, 15)

        segments = await index.segments(cam.id)
        assert len(segments) >= 2, "segments rotate every 2 s"
        assert all(s.state == "closed" for s in segments)
        total = audio_total = 0
        audio = source.info.audio
        assert audio is not None and audio.codec == "AAC"
        for segment in segments:
            path = volume_path / str(cam.id) / f"{segment.id}.mp4"
            data = path.read_bytes()
            assert len(data) == segment.size
            tracks = read_init(data)
            assert (tracks[0].codec, tracks[0].width, tracks[0].height) == (codec.upper(), 320, 240)
            assert (tracks[1].codec, tracks[1].timescale) == ("AAC", audio.sample_rate)
            scan = scan_fragments(data)
            assert scan.complete_until == len(data) and scan.stop_reason is None
            rows = await index.fragments(segment.id)
            assert [(r.offset, r.size) for r in rows] == [
                (f.offset, f.size) for f in scan.fragments
            ]
            assert rows[0].first_is_sync
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                packets = [p for p in container.demux(stream) if p.size]
                keys = [i for i, p in enumerate(packets) if p.is_keyframe]
                frames = sum(1 for _ in av.open(str(path)).decode(video=0))
            with av.open(str(path)) as container:
                sound = container.streams.audio[0]
                assert sound.codec_context.name == "aac"
                audio_packets = [p for p in container.demux(sound) if p.size]
                audio_tb = sound.time_base
            video_start = packets[0]
            with av.open(str(path)) as container:
                decoded = list(container.decode(audio=0))
            assert len(decoded) == len(audio_packets) > 0
            assert decoded[0].sample_rate == audio.sample_rate
            # Audio and video start together, and the audio lasts as long as the video.
            assert audio_packets[0].pts is not None and video_start.pts is not None
            assert abs(audio_packets[0].pts * audio_tb - Fraction(video_start.pts, 90_000)) < 0.1
            audio_end = audio_packets[-1].pts + audio_packets[-1].duration
            video_end = sum(r.duration_90k for r in rows)
            assert abs(audio_end * audio_tb - Fraction(video_end, 90_000)) < 0.1
            audio_total += len(audio_packets)
            assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
            assert len(packets) == sum(r.sample_count for r in rows)
            if codec == "h264":
                assert frames == len(packets)
            else:
                # x265 makes open GOPs: a segment starting at a CRA cannot decode the
                # leading (RASL) pictures that refer to the previous GOP.
                assert len(packets) - 10 <= frames <= len(packets)
            # Each segment starts at a keyframe and every keyframe starts a fragment.
            starts, n = set(), 0
            for r in rows:
                starts.add(n)
                n += r.sample_count
            assert keys[0] == 0 and set(keys) <= starts
            if codec == "h264":
                assert all(b - a == 10 for a, b in zip(keys, keys[1:], strict=False))
            # Fragment wall times advance with media time (25 fps); the source rounds each
            # unit's wall time down to the nanosecond.
            for a, b in zip(rows, rows[1:], strict=False):
                step_ns = (b.start_90k - a.start_90k) * 100_000 // 9
                assert abs(b.start_wall_ns - a.start_wall_ns - step_ns) <= 1
            total += len(packets)
        assert writer.units_written == total
        assert total >= 80  # ~5 s at 25 fps, after the first keyframe
        assert writer.audio_units_written == audio_total
        # All the audio but what came before the first keyframe (a GOP is 0.4 s) and
        # after the last video unit.
        frame_s = 1024 / audio.sample_rate
        assert len(sent_audio) - 0.6 / frame_s <= audio_total <= len(sent_audio)
    finally:
        db.close()


async def test_native_client_records_aligned_audio(tmp_path):
    """The native client's streams each have their own media clock (RTP timestamps start at
    random values): the writer relates audio to video through wall time."""
    from onvif_nvr.rtsp.client import RtspSource

    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    try:
        index = SegmentIndex(db)
        with gstcam.camera("--size", "320x240", "--fps", "25", "--gop", "10", "--audio") as url:
            cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("cam", url)
            volume_path = tmp_path / "volume"
            volume_id = await index.ensure_volume(str(volume_path))
            hub = Hub("cam")
            received: list[TimedUnit] = []

            def publish(units: list[TimedUnit]) -> None:
                received.extend(u for u in units if u.track == 1)
                hub.publish_many(units)

            source = RtspSource(url, clock=SystemClock(), on_units=publish)
            writer = SegmentWriter(
                cam.id, volume_id, volume_path, index, segment_s=2.0,
                audio_parameters=lambda: source.info.audio,
            )  # fmt: skip
            writing = asyncio.ensure_future(
                writer.run(hub.subscribe("recorder", maxsize=10_000, lossy=True))
            )
            reading = asyncio.ensure_future(source.run())
            await asyncio.sleep(4.0)
            source.stop()
            await asyncio.wait_for(reading, 15)
            hub.end()
            await asyncio.wait_for(writing, 15)
        segments = await index.segments(cam.id)
        assert len(segments) >= 2
        audio_total = 0
        for segment in segments:
            path = volume_path / str(cam.id) / f"{segment.id}.mp4"
            with av.open(str(path)) as container:
                video = [p for p in container.demux(video=0) if p.size]
            with av.open(str(path)) as container:
                sound = container.streams.audio[0]
                assert sound.codec_context.name == "aac"
                audio = [p for p in container.demux(sound) if p.size]
                audio_tb = sound.time_base
            with av.open(str(path)) as container:
                assert sum(1 for _ in container.decode(audio=0)) == len(audio) > 0
            assert video[0].pts == 0
            assert audio[0].pts * audio_tb < 0.1
            video_end = Fraction(video[-1].pts + video[-1].duration, 90_000)
            assert abs((audio[-1].pts + audio[-1].duration) * audio_tb - video_end) < 0.1
            audio_total += len(audio)
        assert writer.audio_units_written == audio_total
        assert len(received) - 0.6 * 44100 / 1024 <= audio_total <= len(received)
    finally:
        db.close()
