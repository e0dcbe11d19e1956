"""The MSE media endpoints (docs/design/mse.md) against a running box with GStreamer cameras:
live fMP4 and recorded windows decoded by FFmpeg (PyAV), their time mapping checked against
the index frame by frame, successive windows, gaps, an init segment change, the errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import httpx
import pytest

from onvif_nvr.media.units import TimedUnit, VideoParameters
from onvif_nvr.mp4.boxes import Sample, media_fragment
from onvif_nvr.mp4.reader import fragment_header, iter_boxes, scan_fragments
from onvif_nvr.recording.hub import Hub
from onvif_nvr.recording.simulator import load_clip, make_clip
from onvif_nvr.replay.fmp4_live import SLOW, STALLED, LiveMp4
from onvif_nvr.replay.live import HubFeed
from onvif_nvr.replay.mp4_playback import retime
from tests import gstcam, webui
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.searchutil import recorded_until
from tests.test_recording_control_service import job_config, recording_client, recording_config

CAMERA = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25")
#: A camera changing its picture size after 4 s: the recording gets a new init segment.
SWITCHING = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25",
             "--switch-size", "480x272", "--switch-after", "4")  # fmt: skip
ENV = {"ONVIF_NVR_STORAGE_SEGMENT_S": "2"}
CODECS = re.compile(r'^video/mp4; codecs="avc1\.[0-9a-f]{6}"$')
NS = 10**9


@dataclasses.dataclass
class Box:
    nvr: NvrProcess
    camera: str
    recording: str
    switching_camera: str
    switching_recording: str
    token: str
    #: A camera with AAC audio: its segments have a second track.
    audio_recording: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.nvr.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )


def _token(base: str) -> str:
    with httpx.Client(base_url=base, timeout=20) as c:
        r = c.post("/api/v1/session", json={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        csrf = c.get("/api/v1/session").json()["csrf_token"]
        r = c.post("/api/v1/tokens", json={}, headers={"X-CSRF-Token": csrf})
        r.raise_for_status()
        return str(r.json()["token"])


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with (
        gstcam.camera(*CAMERA) as url,
        gstcam.camera(*SWITCHING) as switching_url,
        gstcam.camera(*CAMERA, "--audio") as audio_url,
    ):
        nvr = NvrProcess(tmp_path_factory.mktemp("mse") / "data", ADMIN_PASSWORD, extra_env=ENV)
        nvr.start()
        try:
            token = _token(nvr.base)
            with httpx.Client(
                base_url=nvr.base, headers={"Authorization": f"Bearer {token}"}, timeout=20
            ) as c:
                cams = []
                for u, name in ((url, "door"), (switching_url, "yard"), (audio_url, "hall")):
                    r = c.post("/api/v1/cameras", json={"url": u, "name": name})
                    assert r.status_code == 201, r.text
                    cams.append(r.json()["token"])
            trc = recording_client(nvr)
            recording = trc.CreateRecording(recording_config("door"))
            job = trc.CreateRecordingJob(job_config(recording, cams[0])).JobToken
            yard = trc.CreateRecording(recording_config("yard"))
            trc.CreateRecordingJob(job_config(yard, cams[1]))
            hall = trc.CreateRecording(recording_config("hall"))
            trc.CreateRecordingJob(job_config(hall, cams[2]))
            recorded_until(nvr, recording, 5)
            trc.SetRecordingJobMode(job, "Idle")
            time.sleep(2.5)  # a gap in the recording
            trc.SetRecordingJobMode(job, "Active")
            recorded_until(nvr, yard, 9)
            time.sleep(3)
            recorded_until(nvr, hall, 4)
            yield Box(nvr, cams[0], recording, cams[1], yard, token, hall)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


# -- the index, read directly ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Row:
    segment: int
    path: Path
    start_wall_ns: int
    duration_90k: int
    offset: int
    size: int
    sync: bool

    @property
    def end_wall_ns(self) -> int:
        return self.start_wall_ns + self.duration_90k * NS // 90_000

    def frame_walls(self) -> list[int]:
        """The wall time the index gives each picture of the fragment."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        run = next(r for r in fragment_header(data).tracks if r.track_id == 1)
        walls, t = [], 0
        for duration in run.sample_durations:
            walls.append(self.start_wall_ns + t * NS // 90_000)
            t += duration
        return walls


def index(box: Box, recording: str) -> list[Row]:
    db = sqlite3.connect(f"file:{box.nvr.data_dir / 'nvr.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT s.id, v.path, s.camera_id, f.start_wall_ns, f.duration_90k, f.offset, f.size,"
            " f.first_is_sync FROM fragments f JOIN segments s ON s.id = f.segment_id"
            " JOIN volumes v ON v.id = s.volume_id JOIN recordings r ON r.id = s.recording_id"
            " WHERE r.token = ? ORDER BY s.start_wall_ns, s.id, f.seq",
            (recording,),
        ).fetchall()
    finally:
        db.close()
    return [
        Row(sid, Path(vol) / str(cam) / f"{sid}.mp4", start, dur, off, size, bool(sync))
        for sid, vol, cam, start, dur, off, size, sync in rows
    ]


def window(rows: list[Row], asked: int, seconds: int) -> list[Row]:
    """The fragments docs/design/mse.md says a window holds, asked at ``asked`` (as
    :func:`rfc3339` sends it: rounded up to the microsecond) for ``seconds``."""
    start = -(-asked // 1000) * 1000
    end = start + seconds * NS
    at = max((i for i, row in enumerate(rows) if row.start_wall_ns <= start), default=-1)
    if at < 0 or rows[at].end_wall_ns <= start:
        at += 1
    first = at
    while not rows[first].sync and first > 0 and rows[first - 1].segment == rows[first].segment:
        first -= 1
    last = max(i for i, row in enumerate(rows) if row.start_wall_ns < end)
    return rows[first : last + 1]


def rfc3339(wall_ns: int) -> str:
    """RFC 3339 at or just after ``wall_ns`` (microseconds, rounded up: a start asked at a
    fragment's indexed start must not fall before it)."""
    seconds, rest = divmod(wall_ns, NS)
    micros = -(-rest // 1000)
    moment = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds")


@dataclasses.dataclass
class Frame:
    pts: int  # 90 kHz
    keyframe: bool
    width: int
    height: int


def decode(body: bytes) -> list[Frame]:
    """Every picture FFmpeg decodes from an fMP4 body (the decoder flushed at the end), in
    decoding order (the cameras send no B-frames)."""
    frames = []
    with av.open(io.BytesIO(body), format="mp4") as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None and stream.time_base.denominator == 90_000
        pictures = []
        for packet in container.demux(stream):
            pictures += packet.decode()  # the empty packet at the end flushes the decoder
        for picture in pictures:
            assert picture.pts is not None
            frames.append(Frame(picture.pts, picture.key_frame, picture.width, picture.height))
    return frames


def media(c: httpx.Client, recording: str, **params: str) -> httpx.Response:
    return c.get(f"/api/v1/recordings/{recording}/media.mp4", params=params)


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    error = dict(r.json()["error"])
    if code is not None:
        assert error["code"] == code, error
    return error


# -- live -------------------------------------------------------------------------------------
def test_live_mp4_is_one_fragment_per_picture_from_a_keyframe(box: Box) -> None:
    with box.client() as c:
        r = c.get(f"/api/v1/cameras/{box.camera}/live.mp4", params={"max_s": "3"})
    assert r.status_code == 200, r.text
    assert CODECS.match(r.headers["content-type"]), r.headers["content-type"]
    assert r.headers["cache-control"] == "no-store"
    assert r.headers.get("transfer-encoding") == "chunked"
    body = r.content
    kinds = [b.type for b in iter_boxes(body)]
    assert kinds[:2] == ["ftyp", "moov"]
    scan = scan_fragments(body, sum(b.size for b in list(iter_boxes(body))[:2]))
    assert scan.stop_reason is None
    assert all(len(f.tracks) == 1 and f.tracks[0].sample_count == 1 for f in scan.fragments)
    frames = decode(body)
    assert frames[0].keyframe
    assert (frames[0].width, frames[0].height) == (320, 240)
    # 3 s of 25 fps media, ended by max_s.
    assert 70 <= len(frames) <= 76, len(frames)
    pts = [f.pts for f in frames]
    assert pts[0] == 0 and pts == sorted(pts)


def test_live_mp4_by_recording_token_and_errors(box: Box) -> None:
    with box.client() as c:
        r = c.get(f"/api/v1/cameras/{box.recording}/live.mp4", params={"max_s": "1"})
        assert r.status_code == 200 and decode(r.content)[0].keyframe
        _error(c.get("/api/v1/cameras/nope/live.mp4"), 404, "UnknownToken")
        _error(c.get(f"/api/v1/cameras/{box.camera}/live.mp4", params={"max_s": "0"}), 422)
    _error(httpx.get(f"{box.nvr.base}/api/v1/cameras/{box.camera}/live.mp4"), 401)


# -- tfdt rewriting (sans-IO) ---------------------------------------------------------------------
def test_retime_moves_every_track_by_the_video_shift_and_nothing_else() -> None:
    video = [
        Sample(b"\x00\x00\x00\x01\x65", 3600, True),
        Sample(b"\x00\x00\x00\x01\x41", 3600, False),
    ]
    audio = [Sample(b"\x21" * 10, 1024, True)] * 3
    stored = media_fragment(7, [(1, 900_000, video), (2, 480_000, audio)])
    moved = bytearray(stored)
    retime(moved, 1, 90_000 * 3, {1: 90_000, 2: 48_000})
    runs = {r.track_id: r for r in fragment_header(moved).tracks}
    assert runs[1].base_decode_time == 270_000
    # The video moved by -630000 ticks (-7 s): the audio by -7 s of 48 kHz.
    assert runs[2].base_decode_time == 480_000 - 7 * 48_000
    assert len(moved) == len(stored)
    differing = [i for i in range(len(stored)) if stored[i] != moved[i]]
    tfdts = [i for i in range(len(stored)) if stored[i : i + 4] == b"tfdt"]
    assert all(any(t + 8 <= i < t + 16 for t in tfdts) for i in differing)
    # Back to 0: the audio follows to 0 too (below 0 it would be clamped, never wrapped).
    retime(moved, 1, 0, {1: 90_000, 2: 48_000})
    assert {r.track_id: r.base_decode_time for r in fragment_header(moved).tracks} == {1: 0, 2: 0}


# -- the live muxer in process, on a real hub ---------------------------------------------------
Clip = tuple[VideoParameters, list[tuple]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    """Two 2 s H.264 clips of different picture sizes (PyAV)."""
    out = []
    for width, height in ((320, 240), (480, 272)):
        path = tmp_path_factory.mktemp("clip") / f"{width}.h264"
        make_clip(path, width=width, height=height, seconds=2, gop=25)
        out.append(load_clip(path))
    return out


def _units(clips: list[Clip]) -> list[TimedUnit]:
    """The clips one after the other on one media clock (a camera changing its size)."""
    units, base = [], 0
    for _, clip in clips:
        for unit, dts in clip:
            units.append(TimedUnit(unit, 0, base + dts, 0))
        base += clip[-1][1] + 3600
    return units


def _feed(hub: Hub, params: VideoParameters) -> HubFeed:
    return HubFeed(lambda: hub.subscribe("live", maxsize=3000, lossy=True), lambda: (params, None))


async def test_live_muxer_follows_a_size_change_and_ends_with_the_hub(clips: list[Clip]) -> None:
    hub = Hub("cam")
    stream = LiveMp4(_feed(hub, clips[0][0]))
    units = _units(clips)
    hub.publish(units[0])  # the cached GOP a viewer starts from
    await stream.start(5)
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    running = asyncio.create_task(stream.run(write, lambda: False))
    for unit in units[1:]:
        hub.publish(unit)
        await asyncio.sleep(0)
    hub.end("camera removed")
    assert await asyncio.wait_for(running, 10) == "stream ended"
    assert hub.subscriber_count == 0
    starts = [b.offset for b in iter_boxes(out) if b.type == "ftyp"]
    assert len(starts) == 2
    sizes = [
        {(f.width, f.height) for f in decode(bytes(out[a:b]))}
        for a, b in zip(starts, [*starts[1:], len(out)], strict=True)
    ]
    assert sizes == [{(320, 240)}, {(480, 272)}]


async def test_live_slow_viewer_is_dropped_without_slowing_the_hub(clips: list[Clip]) -> None:
    hub = Hub("cam")
    stream = LiveMp4(_feed(hub, clips[0][0]), max_pending_bytes=20_000)
    units = _units(clips[:1])
    hub.publish(units[0])
    await stream.start(5)
    stuck = asyncio.Event()  # a viewer whose socket never drains

    async def write(data: bytes) -> None:
        await stuck.wait()

    running = asyncio.create_task(stream.run(write, lambda: False))
    for unit in units[1:]:
        hub.publish(unit)  # never waits, whatever the viewer does
        await asyncio.sleep(0)
        if running.done():
            break
    assert await asyncio.wait_for(running, 10) == SLOW
    assert hub.subscriber_count == 0


async def test_live_viewer_leaving_frees_its_subscription(clips: list[Clip]) -> None:
    """The viewer's connection goes (the write fails, as aiohttp's does on a closed
    transport): the stream ends and its hub subscription with it."""
    hub = Hub("cam")
    stream = LiveMp4(_feed(hub, clips[0][0]))
    units = _units(clips[:1])
    hub.publish(units[0])
    await stream.start(5)
    writes = 0

    async def write(data: bytes) -> None:
        nonlocal writes
        writes += 1
        if writes > 3:
            raise ConnectionResetError("Cannot write to closing transport")

    running = asyncio.create_task(stream.run(write, lambda: False))
    for unit in units[1:]:
        hub.publish(unit)
        await asyncio.sleep(0)
        if running.done():
            break
    assert (await asyncio.wait_for(running, 10)).startswith("viewer left")
    assert hub.subscriber_count == 0


async def test_live_viewer_leaving_a_silent_camera_is_noticed(clips: list[Clip]) -> None:
    """No picture to write, so no write fails: the closed connection is noticed anyway."""
    hub = Hub("cam")
    stream = LiveMp4(_feed(hub, clips[0][0]))
    hub.publish(_units(clips[:1])[0])
    await stream.start(5)
    left = asyncio.Event()

    async def write(data: bytes) -> None:
        left.set()  # the keyframe went out; then the viewer goes and the camera is silent

    assert await asyncio.wait_for(stream.run(write, left.is_set), 10) == "viewer left"
    assert hub.subscriber_count == 0


async def test_live_stalled_viewer_is_let_go_when_the_stream_ends(clips: list[Clip]) -> None:
    """The camera goes away while the viewer's socket is stuck under the byte bound: the
    stream does not wait on that socket for ever."""
    hub = Hub("cam")
    stream = LiveMp4(_feed(hub, clips[0][0]), write_stall_s=0.5)
    units = _units(clips[:1])
    hub.publish(units[0])
    await stream.start(5)
    stuck = asyncio.Event()

    async def write(data: bytes) -> None:
        await stuck.wait()

    running = asyncio.create_task(stream.run(write, lambda: False))
    for unit in units[1:5]:
        hub.publish(unit)
    hub.end("camera removed")
    assert await asyncio.wait_for(running, 10) == STALLED
    assert hub.subscriber_count == 0


# -- playback ---------------------------------------------------------------------------------
def _check_mapping(body: bytes, origin_ms: int, served: list[Row]) -> list[Frame]:
    """Every decoded picture sits at origin + pts = the wall time the index has for it."""
    frames = decode(body)
    walls = [w for row in served for w in row.frame_walls()]
    assert len(frames) == len(walls)
    for frame, wall in zip(frames, walls, strict=True):
        mapped_ns = origin_ms * 1_000_000 + frame.pts * NS // 90_000
        assert abs(mapped_ns - wall) <= 1_000_000, (frame, wall)
    return frames


def test_media_mp4_window_maps_to_wall_clock(box: Box) -> None:
    rows = index(box, box.recording)
    middle = rows[len(rows) // 3]
    start = middle.start_wall_ns + 300_000_000  # inside the fragment, after its keyframe
    with box.client() as c:
        r = media(c, box.recording, start=rfc3339(start), duration_s="3")
    assert r.status_code == 200, r.text
    assert CODECS.match(r.headers["content-type"]), r.headers["content-type"]
    assert r.headers["cache-control"] == "no-store"
    origin_ms = int(r.headers["x-wall-origin-ms"])
    first_ms = int(r.headers["x-first-frame-ms"])
    end_ms = int(r.headers["x-end-ms"])
    # The first fragment is the sync one holding start; the served ones start before start + 3 s.
    first = max((i for i, row in enumerate(rows) if row.start_wall_ns <= start and row.sync))
    last = max(i for i, row in enumerate(rows) if row.start_wall_ns < start + 3 * NS)
    served = rows[first : last + 1]
    assert served == window(rows, start, 3)
    assert origin_ms == first_ms == served[0].start_wall_ns // 1_000_000
    assert end_ms == -(-served[-1].end_wall_ns // 1_000_000)
    frames = _check_mapping(r.content, origin_ms, served)
    assert frames[0].keyframe
    assert origin_ms * 1_000_000 + frames[0].pts * NS // 90_000 <= start
    # The stored fragments, as stored but for tfdt.
    body = r.content
    init_size = sum(b.size for b in list(iter_boxes(body))[:2])
    with served[0].path.open("rb") as f:
        f.seek(served[0].offset)
        stored = f.read(served[0].size)
    sent = body[init_size : init_size + served[0].size]
    tfdt = stored.index(b"tfdt")
    assert sent[: tfdt + 8] == stored[: tfdt + 8] and sent[tfdt + 16 :] == stored[tfdt + 16 :]


def test_media_mp4_successive_windows_share_one_timeline(box: Box) -> None:
    rows = index(box, box.recording)
    start = rows[2].start_wall_ns + 100_000_000
    with box.client() as c:
        one = media(c, box.recording, start=rfc3339(start), duration_s="2")
        assert one.status_code == 200, one.text
        origin_ms = int(one.headers["x-wall-origin-ms"])
        two = media(
            c,
            box.recording,
            start=rfc3339(int(one.headers["x-end-ms"]) * 1_000_000),
            duration_s="2",
            origin=rfc3339(origin_ms * 1_000_000),
        )
        assert two.status_code == 200, two.text
    assert int(two.headers["x-wall-origin-ms"]) == origin_ms
    first = decode(one.content)
    second = decode(two.content)
    assert second[0].keyframe
    # No picture twice, none skipped: the second window starts with the fragment after the
    # first window's last one.
    walls_one = [origin_ms * 1_000_000 + f.pts * NS // 90_000 for f in first]
    walls_two = [origin_ms * 1_000_000 + f.pts * NS // 90_000 for f in second]
    assert walls_two[0] > walls_one[-1]
    all_walls = [w for row in rows for w in row.frame_walls()]
    at = next(i for i, w in enumerate(all_walls) if abs(w - walls_one[0]) <= 1_000_000)
    together = walls_one + walls_two
    expected = all_walls[at : at + len(together)]
    assert all(abs(a - b) <= 1_000_000 for a, b in zip(together, expected, strict=True))


def test_media_mp4_gap_stays_a_gap_and_start_in_a_gap(box: Box) -> None:
    rows = index(box, box.recording)
    gaps = [
        (a, b) for a, b in zip(rows, rows[1:], strict=False) if b.start_wall_ns - a.end_wall_ns > NS
    ]
    assert gaps, "the fixture's Idle period left no gap"
    before, after = gaps[0]
    with box.client() as c:
        # A window across the gap: the pictures jump by the gap in media time too.
        r = media(c, box.recording, start=rfc3339(before.start_wall_ns), duration_s="6")
        assert r.status_code == 200, r.text
        origin_ms = int(r.headers["x-wall-origin-ms"])
        served = window(rows, before.start_wall_ns, 6)
        frames = _check_mapping(r.content, origin_ms, served)
        steps = [b.pts - a.pts for a, b in zip(frames, frames[1:], strict=False)]
        assert max(steps) >= (after.start_wall_ns - before.end_wall_ns) * 90_000 // NS
        # Start inside the gap: the answer starts at the next recorded fragment.
        in_gap = (before.end_wall_ns + after.start_wall_ns) // 2
        r = media(c, box.recording, start=rfc3339(in_gap), duration_s="2")
        assert r.status_code == 200, r.text
        assert int(r.headers["x-first-frame-ms"]) == after.start_wall_ns // 1_000_000
        assert decode(r.content)[0].keyframe
        # A window wholly inside the gap holds nothing.
        gap_ms = (after.start_wall_ns - before.end_wall_ns) // 1_000_000
        if gap_ms > 1500:
            r = media(
                c, box.recording, start=rfc3339(before.end_wall_ns + 100_000_000), duration_s="1"
            )
            _error(r, 404, "NoData")


def test_media_mp4_new_init_segment_where_the_picture_size_changes(box: Box) -> None:
    rows = index(box, box.switching_recording)
    with box.client() as c:
        r = media(c, box.switching_recording, start=rfc3339(rows[0].start_wall_ns), duration_s="30")
    assert r.status_code == 200, r.text
    body = r.content
    starts = [b.offset for b in iter_boxes(body) if b.type == "ftyp"]
    assert len(starts) >= 2, "no init segment change in the answer"
    sizes = []
    for a, b in zip(starts, [*starts[1:], len(body)], strict=False):
        frames = decode(body[a:b])
        assert frames[0].keyframe
        sizes.append({(f.width, f.height) for f in frames})
    assert sizes[0] == {(320, 240)} and {(480, 272)} in sizes[1:]


def test_media_mp4_errors(box: Box) -> None:
    rows = index(box, box.recording)
    start = rfc3339(rows[3].start_wall_ns)
    with box.client() as c:
        _error(media(c, "nope", start=start), 404, "NoRecording")
        _error(media(c, box.recording, start="2001-01-01T00:00:00Z"), 404, "NoData")
        for params in (
            {},
            {"start": "2026-01-01T00:00:00"},  # no offset
            {"start": start, "duration_s": "0"},
            {"start": start, "duration_s": "901"},
            {"start": start, "origin": "yesterday"},
        ):
            _error(media(c, box.recording, **params), 422, "InvalidArgVal")
        later = rfc3339(rows[3].start_wall_ns + 500_000_000)
        error = _error(media(c, box.recording, start=start, origin=later), 422, "InvalidArgVal")
        assert [f["field"] for f in error["fields"]] == ["query.origin"]
    _error(httpx.get(f"{box.nvr.base}/api/v1/recordings/{box.recording}/media.mp4"), 401)


def test_media_mp4_file_deleted_under_it_ends_the_body_at_a_fragment(box: Box) -> None:
    """What retention does to a segment being served (unlink): the answer ends cleanly with
    the fragments before it. Runs last: it removes a file of the switching camera."""
    rows = index(box, box.switching_recording)
    # The first segment of a recording can overlap the next by a frame in wall time (the
    # camera's clock mapping settling as the job starts, seen once in CI); served with
    # wall-clock tfdt, FFmpeg's demuxer then keeps only the later samples. Start where
    # each segment ends before the next begins, as every later one does.
    while True:
        first = [row for row in rows if row.segment == rows[0].segment]
        later = [row for row in rows if row.segment != rows[0].segment]
        if not later or first[-1].end_wall_ns <= later[0].start_wall_ns:
            break
        rows = later
    segments = list(dict.fromkeys(row.segment for row in rows))
    doomed = next(row for row in rows if row.segment == segments[2])
    doomed.path.unlink()
    with box.client() as c:
        r = media(c, box.switching_recording, start=rfc3339(rows[0].start_wall_ns), duration_s="60")
    assert r.status_code == 200, r.text
    body = r.content
    served = [row for row in rows if row.segment in segments[:2]]
    frames_expected = sum(len(row.frame_walls()) for row in served)
    boxes = list(iter_boxes(body))  # whole boxes only: no torn fragment
    assert [b.type for b in boxes].count("moof") == len(served)
    first_init = [i for i, b in enumerate(boxes) if b.type == "ftyp"]
    total = 0
    for a, b in zip(first_init, [*first_init[1:], len(boxes)], strict=False):
        total += len(decode(body[boxes[a].offset : boxes[b - 1].end]))
    assert total == frames_expected


# -- a browser plays what is served -------------------------------------------------------------
browser = webui.browser

#: Fetch an fMP4 answer into a MediaSource (the UI's way), then play it: what Chromium
#: reports (the codec string accepted, picture size, buffered ranges, time played).
PLAY_JS = """
async ([url, token]) => {
  const video = document.createElement("video");
  video.muted = true;
  document.body.appendChild(video);
  const source = new MediaSource();
  video.src = URL.createObjectURL(source);
  await new Promise((ok) => source.addEventListener("sourceopen", ok, { once: true }));
  const answer = await fetch(url, { headers: { Authorization: "Bearer " + token } });
  const type = answer.headers.get("content-type");
  if (answer.status !== 200) return { status: answer.status, text: await answer.text() };
  const buffer = source.addSourceBuffer(type);
  const errors = [];
  video.addEventListener("error", () => errors.push(String(video.error && video.error.message)));
  const reader = answer.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer.appendBuffer(value);
    await new Promise((ok) => buffer.addEventListener("updateend", ok, { once: true }));
  }
  source.endOfStream();
  const ranges = [];
  for (let i = 0; i < video.buffered.length; i++)
    ranges.push([video.buffered.start(i), video.buffered.end(i)]);
  video.currentTime = ranges.length ? ranges[0][0] : 0;
  await video.play();
  const from = video.currentTime;
  await new Promise((ok) => setTimeout(ok, 1500));
  return { type, supported: MediaSource.isTypeSupported(type), width: video.videoWidth,
           height: video.videoHeight, ranges, played: video.currentTime - from, errors };
}
"""


def _play(browser: object, box: Box, path: str) -> dict:
    context = browser.new_context(base_url=box.nvr.base)  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        page.goto("/api/openapi.json")
        return dict(page.evaluate(PLAY_JS, [box.nvr.base + path, box.token]))
    finally:
        context.close()


def test_chromium_plays_live_and_recorded_mp4(browser: object, box: Box) -> None:
    live = _play(browser, box, f"/api/v1/cameras/{box.camera}/live.mp4?max_s=3")
    assert "status" not in live, live
    assert live["supported"] and not live["errors"], live
    assert (live["width"], live["height"]) == (320, 240)
    assert live["played"] > 0.5, live
    rows = index(box, box.recording)
    start = urllib.parse.quote(rfc3339(rows[2].start_wall_ns))  # "+" must not become " "
    recorded = _play(
        browser, box, f"/api/v1/recordings/{box.recording}/media.mp4?start={start}&duration_s=4"
    )
    assert "status" not in recorded, recorded
    assert recorded["supported"] and not recorded["errors"], recorded
    assert recorded["played"] > 0.5, recorded
    # Media time is wall time since the origin: the first range starts near 0.
    assert recorded["ranges"][0][0] < 0.1, recorded


def test_recording_with_audio_keeps_its_audio_track_and_plays(browser: object, box: Box) -> None:
    rows = index(box, box.audio_recording)
    start = rows[1].start_wall_ns
    with box.client() as c:
        r = media(c, box.audio_recording, start=rfc3339(start), duration_s="3")
    assert r.status_code == 200, r.text
    assert re.match(
        r'^video/mp4; codecs="avc1\.[0-9a-f]{6}, mp4a\.40\.2"$', r.headers["content-type"]
    )
    origin_ms = int(r.headers["x-wall-origin-ms"])
    # The default origin is early enough for audio recorded just before the first picture.
    assert origin_ms <= int(r.headers["x-first-frame-ms"])
    served = window(rows, start, 3)
    frames = _check_mapping(r.content, origin_ms, served)
    with av.open(io.BytesIO(r.content), format="mp4") as container:
        audio = container.streams.audio[0]
        packets = [p for p in container.demux(audio) if p.size]
    assert packets and packets[0].pts is not None and audio.time_base is not None
    # The audio keeps the offset from the video the writer stored (the tfdt MSE reads).
    with served[0].path.open("rb") as f:
        f.seek(served[0].offset)
        stored = {run.track_id: run for run in fragment_header(f.read(served[0].size)).tracks}
    body = r.content
    moof = next(b for b in iter_boxes(body) if b.type == "moof")
    sent = {run.track_id: run for run in fragment_header(body[moof.offset :]).tracks}
    rate = audio.time_base.denominator
    assert sent[1].base_decode_time == frames[0].pts
    stored_offset = stored[2].base_decode_time / rate - stored[1].base_decode_time / 90_000
    sent_offset = sent[2].base_decode_time / rate - sent[1].base_decode_time / 90_000
    assert abs(sent_offset - stored_offset) <= 1 / rate, (sent_offset, stored_offset)
    assert packets[0].pts <= sent[2].base_decode_time + rate // 10
    played = _play(
        browser,
        box,
        f"/api/v1/recordings/{box.audio_recording}/media.mp4"
        f"?start={urllib.parse.quote(rfc3339(start))}&duration_s=3",
    )
    assert "status" not in played and played["supported"] and not played["errors"], played
    assert played["played"] > 0.5, played
