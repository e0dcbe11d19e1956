"""The replay reader on real footage: the project's segment writer fed with an H.264 clip and
AAC encoded by PyAV (tests/mediagen.py), recorded into one recording as two sections with a
gap (five segment files), read back through the index; and what a running box recorded from
a GStreamer camera (tests/gstcam.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select

from onvif_nvr.clock import ManualClock, SystemClock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import NoRecording
from onvif_nvr.media.units import AccessUnit, AudioParameters, TimedUnit
from onvif_nvr.mp4.reader import fragment_header
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.retention import delete_segments
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.replay.reader import (
    MAX_CONTIGUOUS_NS,
    EndReason,
    Gap,
    PlayRequest,
    ReplayReader,
    ReplayUnit,
)
from onvif_nvr.rtsp.bits import split_annexb
from onvif_nvr.system.secrets import Sealer
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.mediagen import aac_frames, access_units, h264_annexb, h265_annexb
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client, wait_for
from tests.test_recording_control_service import job_config, recording_client, recording_config

T0 = 1_800_000_000 * 10**9
S = 10**9
MS = 10**6
FRAME_90K = 3600  # 25 fps, a keyframe every 10 frames (0.4 s)
AAC_90K = 1920  # 1024 samples at 48 kHz
#: Section A: frames 0..119 from T0 (4.8 s); section B: frames 120..199 from T0 + 8 s.
B_START_NS = 8 * S
AUDIO_CLOCK_90K = 5_000_000  # the audio's RTP clock is unrelated to the video's


def wall(offset_90k: int) -> int:
    return T0 + offset_90k * 100_000 // 9


def section(frames: list[tuple[bytes, bool]], first: int, count: int, base_ns: int,
            audio: tuple[bytes, ...], audio_first: int) -> list[TimedUnit]:  # fmt: skip
    """Units of ``count`` frames from ``first``, starting ``base_ns`` after T0 (media time
    jumps by the same amount), with the audio of that time; in arrival order."""
    base_90k = base_ns * 9 // 100_000
    units = []
    for i in range(count):
        data, key = frames[first + i]
        dts = base_90k + i * FRAME_90K
        au = AccessUnit("H264", tuple(split_annexb(data)), dts, key)
        units.append(TimedUnit(au, 0, dts, wall(dts)))
    span_90k = count * FRAME_90K
    for n in range(span_90k // AAC_90K if audio else 0):
        t = base_90k + n * AAC_90K
        frame = audio[audio_first + n]
        au = AccessUnit("AAC", (frame,), t, True)
        units.append(TimedUnit(au, 1, AUDIO_CLOCK_90K + t, wall(t)))
    return sorted(units, key=lambda u: (u.wall_ns, u.track))


@dataclasses.dataclass
class Footage:
    db: Database
    index: SegmentIndex
    data: Path
    token: str
    camera_id: int
    volume_id: int
    #: Every unit fed to the writer.
    fed: list[TimedUnit]
    audio: AudioParameters

    def video_walls(self) -> list[int]:
        return [u.wall_ns for u in self.fed if u.track == 0]

    def keyframe_walls(self) -> list[int]:
        return [u.wall_ns for u in self.fed if u.track == 0 and u.unit.keyframe]


async def add_recording(db: Database, token: str) -> int:
    def work() -> int:
        with db.session() as session, session.begin():
            row = models.Recording(token=token, created_wall_ns=T0)
            session.add(row)
            session.flush()
            for track, kind in (
                ("VIDEO001", "Video"),
                ("AUDIO001", "Audio"),
                ("META001", "Metadata"),
            ):
                session.add(models.Track(recording_id=row.id, token=track, track_type=kind))
            return row.id

    return await db.run(work)


def make_writer(index, camera_id, volume_id, volume, recording_id, audio):
    return SegmentWriter(
        camera_id, volume_id, volume, index, segment_s=2.0, fragment_s=1.0,
        audio_parameters=lambda: audio, recording_id=recording_id,
    )  # fmt: skip


async def record(tmp: Path) -> Footage:
    db = Database(f"sqlite:///{tmp / 'nvr.sqlite3'}")
    await db.migrate()
    cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("cam", "rtsp://192.0.2.1/x")
    index = SegmentIndex(db)
    volume = tmp / "vol"
    volume_id = await index.ensure_volume(str(volume))
    recording_id = await add_recording(db, "RECORDING_1")
    config, aac = aac_frames(12.0)
    audio = AudioParameters("AAC", 48000, 1, config)
    frames = access_units(h264_annexb(frames=200, fps=25, gop=10), "h264")
    a = section(frames, 0, 120, 0, aac, 0)
    b = section(frames, 120, 80, B_START_NS, aac, 300)
    writer = make_writer(index, cam.id, volume_id, volume, recording_id, audio)
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    for unit in a:
        await writer.add(unit)
    await writer.finish("camera lost")  # the gap
    for unit in b:
        await writer.add(unit)
    await writer.finish()
    writer._io.shutdown(wait=True)
    await index.flush()
    return Footage(db, index, volume, "RECORDING_1", cam.id, volume_id, a + b, audio)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Footage]:
    recorded = asyncio.run(record(tmp_path_factory.mktemp("replay-reader")))
    yield recorded
    recorded.db.close()


def reader(footage: Footage, **options) -> ReplayReader:
    return ReplayReader(footage.db, SystemClock(), **options)


async def play(footage: Footage, request: PlayRequest, **options) -> tuple[list, EndReason]:
    r = reader(footage, **options)
    playback = r.play(await r.recording(footage.token), request)
    items = [item async for item in playback]
    assert playback.end_reason is not None
    return items, playback.end_reason


def units(items: list, track: int | None = None) -> list[ReplayUnit]:
    return [i for i in items if isinstance(i, ReplayUnit) and track in (None, i.timed.track)]


def nearest(walls: list[int], wall_ns: int) -> int:
    return min(walls, key=lambda w: abs(w - wall_ns))


# -- the footage as the index holds it --------------------------------------------------------
async def test_footage_is_two_sections_of_segments(footage):
    segments = await footage.index.segments(footage.camera_id)
    assert len(segments) == 5 and all(s.state == "closed" for s in segments)
    starts = [s.start_wall_ns - T0 for s in segments]
    assert starts == [0, 2 * S, 4 * S, B_START_NS, B_START_NS + 2 * S]


async def test_unknown_recording(footage):
    with pytest.raises(NoRecording):
        await reader(footage).recording("RECORDING_404")


async def test_recording_media_describes_the_tracks(footage):
    media = await reader(footage).recording(footage.token)
    assert (media.video_track, media.audio_track) == ("VIDEO001", "AUDIO001")
    assert media.video is not None and media.video.codec == "H264"
    assert (media.video.width, media.video.height) == (320, 240)
    assert media.video.parameter_sets  # SPS and PPS from the avcC, for the SDP
    assert media.audio == footage.audio


# -- forward -------------------------------------------------------------------------------------
async def test_forward_from_inside_a_gop_starts_at_its_keyframe(footage):
    start = T0 + 1 * S + 250 * MS  # the GOP that starts at 1.2 s
    items, reason = await play(footage, PlayRequest(start))
    assert reason is EndReason.FOOTAGE_END
    first = items[0]
    assert isinstance(first, ReplayUnit) and first.timed.track == 0 and first.clean_point
    assert first.timed.wall_ns == T0 + 1200 * MS <= start
    # Every video unit from there, each at its recorded wall time (the writer's, exactly).
    video = units(items, 0)
    fed = [w for w in footage.video_walls() if w >= first.timed.wall_ns]
    assert [u.timed.wall_ns for u in video] == fed
    keys = set(footage.keyframe_walls())
    assert all(u.timed.unit.keyframe == (u.timed.wall_ns in keys) for u in video)
    # The payloads are NAL units, as the packetizers take them (SPS/PPS in band at IDRs).
    assert video[0].timed.unit.payloads[0][0] & 0x1F == 7


async def test_wall_times_equal_the_index(footage):
    items, _ = await play(footage, PlayRequest(T0))
    rows = [
        row
        for segment in await footage.index.segments(footage.camera_id)
        for row in await footage.index.fragments(segment.id)
    ]
    firsts = {}
    for u in units(items, 0):
        firsts.setdefault((u.segment_id, u.timed.dts_90k), u.timed.wall_ns)
    by_start = {(r.segment_id, r.start_90k): r.start_wall_ns for r in rows}
    assert len(by_start) == len(rows)
    for key, wall_ns in by_start.items():
        assert firsts[key] == wall_ns  # a fragment's first unit is its row's time exactly
    audio = units(items, 1)
    fed_audio = sorted(u.wall_ns for u in footage.fed if u.track == 1)
    assert len(audio) > 200
    for u in audio:  # audio rides on its own clock: within 1 ms of what was captured
        assert abs(u.timed.wall_ns - nearest(fed_audio, u.timed.wall_ns)) < MS
        assert u.timed.unit.codec == "AAC" and u.clean_point


async def test_tracks_come_in_recorded_order_with_a_gap_marker(footage):
    items, _ = await play(footage, PlayRequest(T0))
    gaps = [i for i in items if isinstance(i, Gap)]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.resume_ns == T0 + B_START_NS and 4800 * MS <= gap.end_ns - T0 <= 4900 * MS
    at = items.index(gap)
    before, after = units(items[:at]), units(items[at + 1 :])
    assert after[0].timed.track == 0 and after[0].clean_point
    assert after[0].timed.wall_ns == T0 + B_START_NS
    for part in (before, after):  # each section in recorded order, audio interleaved
        walls = [u.timed.wall_ns for u in part]
        assert all(b - a > -30 * MS for a, b in zip(walls, walls[1:], strict=False))
        assert {u.timed.track for u in part} == {0, 1}
    # E on the last unit of each track before the gap and at the end; T at the end only.
    for part, terminal in ((before, False), (after, True)):
        for track in (0, 1):
            flagged = [u for u in part if u.section_end and u.timed.track == track]
            assert flagged == [[u for u in part if u.timed.track == track][-1]]
            assert flagged[0].terminal is terminal
    assert sum(u.section_end for u in units(items)) == 4
    assert not any(u.discontinuity for u in units(items))


async def test_start_in_a_gap_goes_to_the_next_section(footage):
    items, _ = await play(footage, PlayRequest(T0 + 6 * S))
    assert isinstance(items[0], ReplayUnit) and items[0].clean_point
    assert items[0].timed.wall_ns == T0 + B_START_NS
    assert not any(isinstance(i, Gap) for i in items)


async def test_start_before_the_first_recording(footage):
    items, _ = await play(footage, PlayRequest(T0 - 3600 * S))
    assert isinstance(items[0], ReplayUnit) and items[0].timed.wall_ns == T0
    assert items[0].clean_point


async def test_start_after_the_last_recording_gives_nothing(footage):
    items, reason = await play(footage, PlayRequest(T0 + 3600 * S))
    assert items == [] and reason is EndReason.FOOTAGE_END


async def test_closed_range(footage):
    items, reason = await play(footage, PlayRequest(T0 + 1 * S, end_ns=T0 + 2500 * MS))
    assert reason is EndReason.RANGE_END
    walls = [u.timed.wall_ns for u in units(items)]
    assert walls[0] == T0 + 800 * MS and max(walls) <= T0 + 2500 * MS
    assert max(walls) >= T0 + 2450 * MS  # ... and nothing before the end left out


async def test_closed_range_ending_in_a_gap(footage):
    items, reason = await play(footage, PlayRequest(T0 + 4 * S, end_ns=T0 + 6 * S))
    assert reason is EndReason.RANGE_END
    assert not any(isinstance(i, Gap) for i in items)
    assert max(u.timed.wall_ns for u in units(items)) < T0 + 5 * S


async def test_video_only(footage):
    items, _ = await play(footage, PlayRequest(T0, tracks=frozenset({0})))
    assert {u.timed.track for u in units(items)} == {0}
    assert len(units(items)) == 200


async def test_small_chunks_read_the_same(footage):
    whole, _ = await play(footage, PlayRequest(T0))
    chunked, _ = await play(footage, PlayRequest(T0), chunk_bytes=1)
    assert chunked == whole


# -- intra only ----------------------------------------------------------------------------------
async def test_intra_only(footage):
    items, reason = await play(footage, PlayRequest(T0, intra_only=True))
    assert reason is EndReason.FOOTAGE_END
    video = units(items)
    assert all(u.timed.track == 0 and u.clean_point for u in video)
    assert [u.timed.wall_ns for u in video] == footage.keyframe_walls()
    fed = {u.wall_ns: u for u in footage.fed if u.track == 0}
    assert all(u.timed.unit.payloads == fed[u.timed.wall_ns].unit.payloads for u in video)
    assert sum(isinstance(i, Gap) for i in items) == 1


async def test_intra_with_a_minimum_interval(footage):
    items, _ = await play(footage, PlayRequest(T0, intra_only=True, intra_spacing_ns=1000 * MS))
    walls = [u.timed.wall_ns for u in units(items)]
    assert walls[0] == T0 and len(walls) >= 7
    assert all(b - a >= 1000 * MS for a, b in zip(walls, walls[1:], strict=False))


# -- reverse -------------------------------------------------------------------------------------
def gops(items: list) -> list[list[ReplayUnit]]:
    out: list[list[ReplayUnit]] = []
    for u in units(items):
        if u.discontinuity:
            out.append([])
        out[-1].append(u)
    return out


async def test_reverse_sends_gops_backward_units_forward(footage):
    start = T0 + B_START_NS + 1 * S + 100 * MS  # 9.1 s, inside the GOP from 8.8 s
    items, reason = await play(footage, PlayRequest(start, reverse=True))
    assert reason is EndReason.FOOTAGE_END
    assert all(u.timed.track == 0 for u in units(items))  # audio is not played backward
    groups = gops(items)
    firsts = [g[0].timed.wall_ns for g in groups]
    assert firsts == sorted((w for w in footage.keyframe_walls() if w <= start), reverse=True)
    for g in groups:
        walls = [u.timed.wall_ns for u in g]
        assert walls == sorted(walls) and g[0].clean_point
        assert not any(u.clean_point for u in g[1:])
    assert groups[0][-1].timed.wall_ns <= start < groups[0][-1].timed.wall_ns + 40 * MS
    assert len(groups[1]) == 10
    # E on the last frame of the GOP that follows a gap (and the first of all), T at the end.
    flagged = [g for g in groups if g[-1].section_end]
    assert [g[0].timed.wall_ns for g in flagged] == [T0 + B_START_NS, T0]
    assert groups[-1][-1].terminal and not any(u.terminal for g in groups[:-1] for u in g)
    assert sum(isinstance(i, Gap) for i in items) == 1


async def test_reverse_from_a_gap_starts_at_the_last_clean_point_before_it(footage):
    items, _ = await play(footage, PlayRequest(T0 + 6 * S, reverse=True))
    groups = gops(items)
    assert groups[0][0].timed.wall_ns == max(w for w in footage.keyframe_walls() if w < 5 * S + T0)
    assert len(groups[0]) == 10  # the last GOP of section A: 4.4 s .. 4.76 s


async def test_reverse_closed_range_and_intra(footage):
    items, reason = await play(
        footage, PlayRequest(T0 + 3 * S, end_ns=T0 + 1 * S, reverse=True, intra_only=True)
    )
    assert reason is EndReason.RANGE_END
    walls = [u.timed.wall_ns for u in units(items)]
    assert walls == [T0 + n * 400 * MS for n in (7, 6, 5, 4, 3, 2)]
    assert all(u.discontinuity and u.clean_point for u in units(items))


async def test_reverse_before_the_first_recording_gives_nothing(footage):
    items, reason = await play(footage, PlayRequest(T0 - S, reverse=True))
    assert items == [] and reason is EndReason.FOOTAGE_END


# -- near-live and deletion ----------------------------------------------------------------------
async def test_near_live_follows_the_segment_being_written(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    try:
        cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("c", "rtsp://192.0.2.1/x")
        index = SegmentIndex(db)
        volume = tmp_path / "vol"
        volume_id = await index.ensure_volume(str(volume))
        recording_id = await add_recording(db, "RECORDING_LIVE")
        frames = access_units(h264_annexb(frames=200, fps=25, gop=10), "h264")
        fed = [u for u in section(frames, 0, 200, 0, (), 0) if u.track == 0]
        writer = SegmentWriter(cam.id, volume_id, volume, index, segment_s=60.0,
                               recording_id=recording_id)  # fmt: skip
        await writer._in_io(os.makedirs, writer.directory, 0o755, True)
        for unit in fed[:41]:  # four GOPs written, the fifth gathered
            await writer.add(unit)
        await index.flush()
        r = ReplayReader(db, SystemClock(), poll_s=0.005)
        playback = r.play(await r.recording("RECORDING_LIVE"), PlayRequest(T0))
        got: list[ReplayUnit] = []

        async def take(count: int) -> None:
            while len(got) < count:
                item = await anext(playback)
                assert isinstance(item, ReplayUnit)
                got.append(item)

        await asyncio.wait_for(take(40), 10)
        assert [u.timed.wall_ns for u in got] == [u.wall_ns for u in fed[:40]]
        for unit in fed[41:120]:  # the writer goes on; the playback waits for the rows
            await writer.add(unit)
        await index.flush()
        await asyncio.wait_for(take(110), 10)
        assert not any(u.section_end for u in got)  # still being written: no E
        for unit in fed[120:]:
            await writer.add(unit)
        await writer.finish()
        writer._io.shutdown(wait=True)
        rest = [item async for item in playback]
        got += [i for i in rest if isinstance(i, ReplayUnit)]
        assert [u.timed.wall_ns for u in got] == [u.wall_ns for u in fed]
        assert playback.end_reason is EndReason.FOOTAGE_END
        assert got[-1].section_end and got[-1].terminal
    finally:
        db.close()


async def test_segment_deleted_while_read_ends_cleanly(tmp_path):
    footage = await record(tmp_path)
    try:
        r = reader(footage, chunk_bytes=1)  # a read per fragment
        playback = r.play(await r.recording(footage.token), PlayRequest(T0))
        first = await anext(playback)
        assert isinstance(first, ReplayUnit)
        [segment] = [s for s in await footage.index.segments(footage.camera_id)
                     if s.id == first.segment_id]  # fmt: skip
        await delete_segments(footage.index, [segment], {footage.volume_id: footage.data})
        rest = [item async for item in playback]
        assert playback.end_reason is EndReason.DELETED
        assert all(isinstance(i, ReplayUnit) and i.segment_id == segment.id for i in rest)
        assert len(rest) < 80  # it stopped inside the segment, at the next read
    finally:
        footage.db.close()


async def test_closing_a_playback(footage):
    r = reader(footage)
    playback = r.play(await r.recording(footage.token), PlayRequest(T0))
    assert isinstance(await anext(playback), ReplayUnit)
    await playback.aclose()
    assert playback.end_reason is EndReason.CLOSED


def test_the_recording_has_no_segment_rows_of_other_recordings(footage):
    with footage.db.session() as session:
        ids = set(session.scalars(select(models.Segment.recording_id)))
    assert len(ids) == 1


class PollCounter(SystemClock):
    """The system clock, telling when a playback has waited for new rows three times."""

    def __init__(self) -> None:
        self.polls = 0
        self.polled = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.polls += 1
        if self.polls >= 3:
            self.polled.set()
        await super().sleep(seconds)


async def test_h265_footage_and_follow(tmp_path):
    """An H.265 recording (hvcC parameter sets, 4-byte NAL lengths) read back as written;
    with ``follow`` the end of the data waits for the recording to resume."""
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    try:
        cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("c", "rtsp://192.0.2.1/x")
        index = SegmentIndex(db)
        volume = tmp_path / "vol"
        volume_id = await index.ensure_volume(str(volume))
        recording_id = await add_recording(db, "RECORDING_HEVC")
        clip = access_units(h265_annexb(frames=40, fps=25, gop=10), "hevc")
        fed = []
        for i, (data, key) in enumerate(clip):
            dts = i * FRAME_90K + (B_START_NS * 9 // 100_000 if i >= 20 else 0)
            fed.append(TimedUnit(AccessUnit("H265", tuple(split_annexb(data)), dts, key), 0, dts,
                                 wall(dts)))  # fmt: skip
        writer = SegmentWriter(cam.id, volume_id, volume, index, recording_id=recording_id)
        await writer._in_io(os.makedirs, writer.directory, 0o755, True)
        for unit in fed[:20]:
            await writer.add(unit)
        await writer.finish()
        await index.flush()
        clock = PollCounter()
        r = ReplayReader(db, clock, poll_s=0.005)
        media = await r.recording("RECORDING_HEVC")
        assert media.video is not None and media.video.codec == "H265"
        assert len(media.video.parameter_sets) == 3 and media.audio_track == "AUDIO001"
        playback = r.play(media, PlayRequest(T0, follow=True))
        got = [await anext(playback) for _ in range(20)]
        assert [u.timed.wall_ns for u in got] == [u.wall_ns for u in fed[:20]]
        assert [u.timed.unit.payloads for u in got] == [u.unit.payloads for u in fed[:20]]
        assert got[-1].section_end and got[-1].terminal  # no more data, for now
        waiting = asyncio.ensure_future(anext(playback))
        await asyncio.wait_for(clock.polled.wait(), 10)  # it asked the index again and again
        assert not waiting.done()
        for unit in fed[20:]:
            await writer.add(unit)
        await writer.finish()
        writer._io.shutdown(wait=True)
        gap = await asyncio.wait_for(waiting, 10)
        # The writer starts the new section at its first keyframe.
        resumed = next(i for i in range(20, 40) if fed[i].unit.keyframe)
        assert isinstance(gap, Gap) and gap.resume_ns == fed[resumed].wall_ns
        rest = [await asyncio.wait_for(anext(playback), 10) for _ in range(40 - resumed)]
        assert [u.timed.wall_ns for u in rest] == [u.wall_ns for u in fed[resumed:]]
        await playback.aclose()
        assert playback.end_reason is EndReason.CLOSED
    finally:
        db.close()


def test_fragment_header_errors():
    cases = [
        (b"\x00\x00\x00\x10mdat" + bytes(8), "expected a 'moof' box, found 'mdat'"),
        (b"\x00\x00\x00\x10moof" + bytes(8), "'moof' and the 'mdat' header need 24 bytes, have 16"),
        (b"\x00\x00\x00\x08moof\x00\x00\x00\x08free", "moof is followed by 'free', not 'mdat'"),
        (b"\x00\x00\x00\x08moof\x00\x00\x00\x04mdat", "box 'mdat' at offset 8 has invalid size 4"),
        (b"\x00\x00\x00\x08moof\x00\x00\x00\x08mdat", "no 'mfhd' box"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError) as info:
            fragment_header(data)
        assert str(info.value) == message


async def test_every_statement_reads_by_an_index(footage):
    """Invariant 1 of docs/design/replay.md: no statement of a playback scans segments or
    fragments (EXPLAIN QUERY PLAN of what forward, backward and intra playbacks ran)."""
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(footage.db.engine, "before_cursor_execute", capture)
    try:
        for request in (
            PlayRequest(T0 + 1 * S),
            PlayRequest(T0 + 6 * S),
            PlayRequest(T0 + 9 * S, reverse=True),
            PlayRequest(T0, intra_only=True, intra_spacing_ns=S),
        ):
            await play(footage, request)
    finally:
        event.remove(footage.db.engine, "before_cursor_execute", capture)
    seen = {s for s, _ in statements if "fragments" in s or "segments" in s}
    assert len(seen) >= 8
    with footage.db.engine.connect() as conn:
        for statement, parameters in statements:
            plan = [
                row[3]
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
            for step in plan:
                assert not step.startswith(("SCAN segments", "SCAN fragments")), (statement, plan)


# -- footage a running box recorded from a GStreamer camera ---------------------------------------
def fragments_of(data: Path, token: str) -> list[tuple[int, int, bool, int]]:
    """(segment id, start_wall_ns, first_is_sync, sample_count) of the recording's rows."""
    with sqlite3.connect(data / "nvr.sqlite3") as conn:
        return conn.execute(
            "SELECT f.segment_id, f.start_wall_ns, f.first_is_sync, f.sample_count "
            "FROM fragments f JOIN segments s ON s.id = f.segment_id JOIN recordings r "
            "ON r.id = s.recording_id WHERE r.token = ? ORDER BY s.start_wall_ns, f.seq",
            (token,),
        ).fetchall()


@pytest.fixture(scope="module")
def camera_footage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A box that recorded a GStreamer camera (H.264 + AAC, RTCP-mapped wall times) into one
    recording, with a gap (the job Idle for a while); stopped before it is read."""
    gstcam.require()
    data = tmp_path_factory.mktemp("replay-camera") / "data"
    camera = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25", "--audio")
    with gstcam.camera(*camera) as url:
        box = NvrProcess(data, ADMIN_PASSWORD, extra_env={"ONVIF_NVR_STORAGE_SEGMENT_S": "2"})
        box.start()
        try:
            receiver = receiver_client(box).CreateReceiver(receiver_config(url)).Token
            trc = recording_client(box)
            token = trc.CreateRecording(recording_config("replayed"))
            job = trc.CreateRecordingJob(job_config(token, receiver)).JobToken
            wait_for(lambda: len(fragments_of(data, token)) >= 4)
            trc.SetRecordingJobMode(job, "Idle")
            time.sleep(1.5)  # the gap: wall time has to pass for it
            trc.SetRecordingJobMode(job, "Active")
            count = len(fragments_of(data, token))
            wait_for(lambda: len(fragments_of(data, token)) >= count + 4)
        finally:
            box.stop()
        assert not box.blocking_calls(), box.blocking_calls()
    yield data, token


async def test_camera_footage_reads_back_as_indexed(camera_footage):
    data, token = camera_footage
    rows = fragments_of(data, token)
    db = Database(f"sqlite:///{data / 'nvr.sqlite3'}")
    try:
        r = ReplayReader(db, SystemClock())
        media = await r.recording(token)
        assert media.video is not None and (media.video.width, media.video.height) == (320, 240)
        assert media.audio is not None and media.audio.codec == "AAC"
        playback = r.play(media, PlayRequest(rows[0][1] - S, end_ns=rows[-1][1] + 10 * S))
        items = [item async for item in playback]
        assert playback.end_reason is EndReason.FOOTAGE_END
        video = units(items, 0)
        # Every fragment's first picture at its row's time; all pictures of the index read.
        row_times = {(sid, start) for sid, start, _, _ in rows}
        assert {(u.segment_id, u.timed.wall_ns) for u in video} >= row_times
        assert len(video) == sum(count for *_, count in rows)
        assert video[0].clean_point and video[0].timed.wall_ns == rows[0][1]
        gaps = [i for i in items if isinstance(i, Gap)]
        assert len(gaps) >= 1 and all(g.resume_ns - g.end_ns > MAX_CONTIGUOUS_NS for g in gaps)
        video_walls = [u.timed.wall_ns for u in video]
        assert video_walls == sorted(video_walls)  # pictures go forward
        audio = units(items, 1)
        assert len(audio) > 50
        for a, b in zip(audio, audio[1:], strict=False):
            # Audio goes forward within a segment; the writer relates the audio clock to the
            # video's anew for each segment (through one unit's arrival-based wall time), so
            # at a segment boundary it may step back by up to about a frame.
            limit = 0 if a.segment_id == b.segment_id else -25 * MS
            assert b.timed.wall_ns - a.timed.wall_ns >= limit, (a, b)
        assert sorted(u.timed.track for u in units(items) if u.terminal) == [0, 1]
        # Backward: GOPs in reverse order, down to the first keyframe recorded.
        back = [u async for u in r.play(media, PlayRequest(rows[-1][1] + 10 * S, reverse=True))
                if isinstance(u, ReplayUnit) and u.discontinuity]  # fmt: skip
        keyframes = sorted(u.timed.wall_ns for u in video if u.clean_point)
        assert [u.timed.wall_ns for u in back] == keyframes[::-1]
    finally:
        db.close()
