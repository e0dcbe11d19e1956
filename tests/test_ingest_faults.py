"""Faults of a camera that is not ours, end to end through the recording core.

GStreamer's RTSP server (tests/peers/gst_rtsp_server.py) is the camera; the NVR side is a
``CameraRecorder`` driven in-process (native RTSP client → hub → ``SegmentWriter`` → fMP4
files and the SQLite index). Some tests put a small TCP proxy between the two that rewrites
or injects interleaved frames of the camera's stream after PLAY. Every recording is checked
the same way afterwards: the index against the files, ``check``, every frame decoded by
FFmpeg (PyAV) at the size the segment's init declares.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import av
import av.logging
import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.db.engine import Database
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.mp4.reader import read_init, scan_fragments
from onvif_nvr.recording.cameras import Camera, CameraStore
from onvif_nvr.recording.index import SegmentIndex, SegmentRow
from onvif_nvr.recording.recovery import check_volume
from onvif_nvr.recording.supervisor import CameraRecorder, Source, default_source_factory
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.system.secrets import Sealer
from tests import gstcam

FPS = 25
GOP = 10
FRAME_90K = 90_000 // FPS
HOUR_90K = 3600 * 90_000
CAMERA = ("--codec", "h264", "--fps", str(FPS), "--gop", str(GOP))


# -- waiting ----------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


# -- the recorder ------------------------------------------------------------------------------


@dataclasses.dataclass
class Rig:
    recorder: CameraRecorder
    index: SegmentIndex
    camera: Camera
    volume_id: int
    volume_path: Path
    db_path: Path
    sources: list[Source] = dataclasses.field(default_factory=list)
    #: Video units the sources delivered (per source), and how many were marked damaged.
    delivered: list[int] = dataclasses.field(default_factory=list)
    damaged: int = 0

    @property
    def writer(self) -> SegmentWriter:
        return self.recorder.writer


_databases: list[Database] = []


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    yield
    while _databases:
        _databases.pop().close()


@contextlib.asynccontextmanager
async def recording(tmp_path: Path, url: str, *, segment_s: float = 60.0) -> AsyncIterator[Rig]:
    """A camera recorder on ``url`` (native backend) until the block ends."""
    db_path = tmp_path / "nvr.sqlite3"
    db = Database(f"sqlite:///{db_path}")
    _databases.append(db)  # closed after the test, once verify() has read the index
    await db.migrate()
    clock = SystemClock()
    camera = await CameraStore(db, Sealer(b"k" * 32), clock).add("cam", url)
    index = SegmentIndex(db)
    volume_path = tmp_path / "volume"
    volume_id = await index.ensure_volume(str(volume_path))
    base = default_source_factory(clock)
    rig: Rig | None = None

    def factory(cam: Camera, backend: str, on_units: Callable[[list[TimedUnit]], None]):
        assert rig is not None
        n = len(rig.sources)
        rig.delivered.append(0)

        def tap(units: list[TimedUnit]) -> None:
            assert rig is not None
            rig.delivered[n] += sum(1 for u in units if u.track == 0)
            rig.damaged += sum(1 for u in units if u.unit.damaged)
            on_units(units)

        source = base(cam, backend, tap)
        rig.sources.append(source)
        return source

    recorder = CameraRecorder(
        camera,
        volume_id=volume_id,
        volume_path=volume_path,
        index=index,
        clock=clock,
        source_factory=factory,
        segment_s=segment_s,
        fragment_s=1.0,
    )
    rig = Rig(recorder, index, camera, volume_id, volume_path, db_path)
    recorder.start()
    try:
        yield rig
    finally:
        await asyncio.wait_for(recorder.stop(), 30)


@dataclasses.dataclass
class Recorded:
    row: SegmentRow
    width: int
    height: int
    frames: int


async def verify(rig: Rig) -> list[Recorded]:
    """Check every segment against the index and decode all of it; ``check`` must be clean."""
    segments = await rig.index.segments(rig.camera.id)
    assert segments, "nothing was recorded"
    assert all(s.state == "closed" for s in segments), [s.state for s in segments]
    out = []
    for segment in segments:
        path = rig.volume_path / str(rig.camera.id) / f"{segment.id}.mp4"
        data = path.read_bytes()
        assert len(data) == segment.size
        (track,) = read_init(data)
        scan = scan_fragments(data)
        assert scan.complete_until == len(data) and scan.stop_reason is None
        rows = await rig.index.fragments(segment.id)
        assert [(r.offset, r.size) for r in rows] == [(f.offset, f.size) for f in scan.fragments]
        assert rows[0].first_is_sync
        frames, packets, errors = decode(path, track.width, track.height)
        assert not errors, f"segment {segment.id}: FFmpeg reported {errors}"
        assert packets == sum(r.sample_count for r in rows)
        assert frames == packets, f"segment {segment.id}: {packets} packets, {frames} frames"
        out.append(Recorded(segment, track.width, track.height, frames))
    report = await check_volume(rig.index, rig.volume_id, rig.volume_path)
    assert report.problems == []
    assert sum(r.frames for r in out) == rig.writer.units_written
    assert rig.writer.storage_errors == 0
    return out


def decode(path: Path, width: int, height: int) -> tuple[int, int, list[str]]:
    """(frames, packets, decoder errors) of a segment file; every frame must have the size
    of the init segment (a segment that mixes resolutions fails here)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
            frames = packets = 0
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                packets += 1
                for frame in packet.decode():
                    assert (frame.width, frame.height) == (width, height), path
                    frames += 1
            for frame in stream.codec_context.decode(None):  # drain
                assert (frame.width, frame.height) == (width, height), path
                frames += 1
    finally:
        av.logging.set_level(level)
    return frames, packets, [f"{name}: {message.strip()}" for _, name, message in logs]


def gaps(rig: Rig) -> list[tuple[int, int | None, str]]:
    with contextlib.closing(sqlite3.connect(rig.db_path)) as db:
        return db.execute(
            "SELECT start_wall_ns, end_wall_ns, reason FROM gaps ORDER BY start_wall_ns"
        ).fetchall()


def end_90k(s: SegmentRow) -> int:
    return s.start_90k + s.duration_90k


# -- the proxy ---------------------------------------------------------------------------------


def frame(channel: int, payload: bytes) -> bytes:
    return b"$" + bytes([channel]) + len(payload).to_bytes(2, "big") + payload


def rtp(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, *, marker: bool = False, version: int = 2
) -> bytes:
    return (
        bytes([version << 6, (marker << 7) | pt])
        + (seq & 0xFFFF).to_bytes(2, "big")
        + (ts & 0xFFFFFFFF).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


class Mangler:
    """Sees every interleaved frame the camera sends (after PLAY) and returns the bytes to
    send on instead. One per connection. This one passes everything through."""

    def down(self, channel: int, payload: bytes) -> list[bytes]:
        return [frame(channel, payload)]


class RtpRewriter(Mangler):
    """Video (channel 0) RTP rewritten at access-unit boundaries: sequence numbers shifted by
    ``seq_offset`` and timestamps by ``ts_offset`` (the RTCP SR's RTP time too, as a camera
    whose clock jumped would send); ``after_unit`` is called after each unit's last packet
    and may return frames to insert there."""

    def __init__(self) -> None:
        self.units = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self.drop_sr = False  # a camera that sends no sender reports
        self.last: bytes = b""  # the last video packet sent (rewritten)
        self.history: collections.deque[bytes] = collections.deque(maxlen=16)

    def down(self, channel: int, payload: bytes) -> list[bytes]:
        if channel == 1 and len(payload) >= 2 and payload[1] == 200 and self.drop_sr:
            return []
        if channel == 1 and len(payload) >= 20 and payload[1] == 200 and self.ts_offset:
            ts = (int.from_bytes(payload[16:20], "big") + self.ts_offset) & 0xFFFFFFFF
            return [frame(1, payload[:16] + ts.to_bytes(4, "big") + payload[20:])]
        if channel != 0 or len(payload) < 12 or payload[0] >> 6 != 2:
            return [frame(channel, payload)]
        seq = (int.from_bytes(payload[2:4], "big") + self.seq_offset) & 0xFFFF
        ts = (int.from_bytes(payload[4:8], "big") + self.ts_offset) & 0xFFFFFFFF
        packet = payload[:2] + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + payload[8:]
        self.last = packet
        self.history.append(packet)
        out = [frame(0, packet)]
        if payload[1] & 0x80:  # marker: the access unit ends here
            self.units += 1
            out += self.after_unit()
        return out

    def after_unit(self) -> list[bytes]:
        return []

    # fields of the last packet
    @property
    def seq(self) -> int:
        return int.from_bytes(self.last[2:4], "big")

    @property
    def ts(self) -> int:
        return int.from_bytes(self.last[4:8], "big")

    @property
    def ssrc(self) -> int:
        return int.from_bytes(self.last[8:12], "big")

    def fresh(self, payload: bytes, *, marker: bool = False) -> bytes:
        """A video packet with the next sequence number (the camera's later packets move up
        one), the last unit's timestamp and SSRC: in sequence, so the depacketizer sees it."""
        self.seq_offset += 1
        packet = rtp(96, self.seq + 1, self.ts, self.ssrc, payload, marker=marker)
        self.last = packet
        return frame(0, packet)


class Junk(RtpRewriter):
    """After ``start`` access units, after every ``every``-th unit: one kind of junk, in turn.
    The ``$`` framing stays intact and no packet of the camera is lost or changed (only
    renumbered), so a correct client drops exactly the junk and damages no picture."""

    KINDS = 16

    def __init__(self, start: int = FPS, every: int = 2) -> None:
        super().__init__()
        self.start, self.every = start, every
        self.rng = random.Random(7)
        self.injected = 0  # frames of junk sent, each one packet a client must drop
        self.kinds = 0

    def noise(self, n: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def after_unit(self) -> list[bytes]:
        if self.units < self.start or (self.units - self.start) % self.every:
            return []
        kinds: list[Callable[[], list[bytes]]] = [
            # interleaved frames on channels no SETUP asked for
            lambda: [frame(5, self.noise(60)), frame(200, rtp(96, 1, 2, 3, self.noise(30)))],
            # not RTP: version 1, a truncated fixed header, an empty frame
            lambda: [
                frame(0, rtp(96, self.seq + 1, self.ts, self.ssrc, self.noise(50), version=1))
            ],
            lambda: [frame(0, self.last[:7]), frame(0, b"")],
            # a CSRC count and header extension reaching past the end of the packet
            lambda: [frame(0, bytes([0x8F, 96]) + self.last[2:12] + b"\x00" * 8)],
            # RTP of another payload type (and SSRC) with noise in it
            lambda: [frame(0, rtp(100, self.rng.getrandbits(16), self.ts, 0xBAD, self.noise(300)))],
            # bogus FU-A: middle fragment without a start, FU of type 0, truncated FU-A
            lambda: [self.fresh(bytes([0x7C, 0x01]) + self.noise(200))],
            lambda: [self.fresh(bytes([0x7C, 0x80]) + self.noise(200))],
            lambda: [self.fresh(bytes([0x7C, 0x81]))],
            # an FU-A that starts and never ends (the next picture's packet cuts it off)
            lambda: [self.fresh(bytes([0x7C, 0x81]) + self.noise(500))],
            # undefined NAL unit type 30; STAP-A holding a packet type
            lambda: [self.fresh(bytes([0x1E]) + self.noise(40))],
            lambda: [self.fresh(bytes([0x18, 0x00, 0x03, 0x1C, 0x81, 0x00]))],
            # the last packet again, and one from several packets back (late)
            lambda: [frame(0, self.last)],
            lambda: [frame(0, self.history[-6])],
            # RTCP junk: noise with version 0, a truncated SR, a bad length
            lambda: [frame(1, bytes([0x00]) + self.noise(27))],
            lambda: [frame(1, bytes([0x80, 200, 0x00, 0x06]) + self.noise(8))],
            lambda: [frame(1, bytes([0x80, 201, 0x00, 0x09, 0, 0, 0, 1]))],
        ]
        assert len(kinds) == self.KINDS
        out = kinds[self.kinds % len(kinds)]()
        self.kinds += 1
        self.injected += len(out)
        return out


class Proxy:
    """A TCP proxy NVR ⇄ camera; the camera's interleaved frames go through a mangler
    (``make(n)`` for the n-th connection), RTSP messages and the NVR's bytes pass as is."""

    def __init__(self, camera_url: str, make: Callable[[int], Mangler]) -> None:
        self.upstream_port = int(camera_url.rsplit(":", 1)[1].split("/", 1)[0])
        self.make = make
        self.manglers: list[Mangler] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{port}/live"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        mangler = self.make(len(self.manglers))
        self.manglers.append(mangler)
        try:
            camera_r, camera_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        up = asyncio.ensure_future(self._copy(client_r, camera_w))
        down = asyncio.ensure_future(self._down(camera_r, client_w, mangler))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for w in (client_w, camera_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
            self._tasks.discard(task)

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _down(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mangler: Mangler
    ) -> None:
        buf = bytearray()
        while data := await reader.read(65536):
            buf += data
            out = bytearray()
            while buf:
                if buf[0] == 0x24:  # $ channel length payload
                    if len(buf) < 4:
                        break
                    end = 4 + int.from_bytes(buf[2:4], "big")
                    if len(buf) < end:
                        break
                    for chunk in mangler.down(buf[1], bytes(buf[4:end])):
                        out += chunk
                    del buf[:end]
                    continue
                head = buf.find(b"\r\n\r\n")
                if head < 0:
                    break
                length = 0
                for line in bytes(buf[:head]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                end = head + 4 + length
                if len(buf) < end:
                    break
                out += buf[:end]
                del buf[:end]
            writer.write(bytes(out))
            await writer.drain()


# -- the tests ---------------------------------------------------------------------------------


async def test_resolution_change_on_the_same_session_starts_a_new_segment(tmp_path):
    with gstcam.camera(
        *CAMERA, "--size", "320x240", "--switch-size", "160x120", "--switch-after", "2.5"
    ) as url:
        async with recording(tmp_path, url) as rig:
            # 2.5 s at 320x240, then at least 1.5 s at the new size after the change.
            await until(lambda: rig.writer.segments_closed >= 1, 15, "the size change")
            closed_at = rig.writer.units_written
            await until(
                lambda: rig.writer.units_written >= closed_at + 1.5 * FPS, 10, "frames after it"
            )
    assert len(rig.sources) == 1 and rig.recorder.reconnects == 0, rig.recorder.last_error
    recorded = await verify(rig)
    assert [(r.width, r.height) for r in recorded] == [(320, 240), (160, 120)]
    before, after = recorded
    assert before.frames >= 2 * FPS and after.frames >= 1.5 * FPS
    # Frames continue across the change: at most a few pictures between the two segments.
    step_90k = after.row.start_90k - end_90k(before.row)
    assert 0 <= step_90k <= 3 * FRAME_90K, step_90k
    # (The wall clock is slewed towards the least-delayed arrivals at up to 1 ms per second,
    # so consecutive segments' lines may overlap by a few ms: docs/design/time.md.)
    step_ns = after.row.start_wall_ns - before.row.end_wall_ns
    assert -10e6 <= step_ns <= 3 * 1e9 / FPS, step_ns
    assert rig.writer.units_skipped <= GOP  # only while waiting for the first keyframe
    assert rig.damaged == 0 and gaps(rig) == []


async def test_camera_restart_with_another_size_is_a_gap_and_a_new_segment(tmp_path):
    port = gstcam.free_port()
    with contextlib.ExitStack() as first:
        url = first.enter_context(gstcam.camera(*CAMERA, "--size", "320x240", port=port))
        async with recording(tmp_path, url) as rig:
            await until(lambda: rig.writer.units_written >= 2 * FPS, 15, "recording")
            first.close()  # the camera goes away...
            down_ns = time.time_ns()
            await until(lambda: rig.recorder.reconnects >= 1, 15, "the outage to be seen")
            # ...and comes back on the same port at another size.
            with gstcam.camera(*CAMERA, "--size", "160x120", port=port):
                await until(
                    lambda: len(rig.delivered) >= 2 and rig.delivered[-1] >= 2 * FPS,
                    20,
                    "recording after the restart",
                )
    recorded = await verify(rig)
    assert [(r.width, r.height) for r in recorded] == [(320, 240), (160, 120)]
    before, after = recorded
    ((start, end, reason),) = gaps(rig)
    assert reason == "offline" and end is not None
    assert before.row.end_wall_ns <= start + 1e9 and start >= down_ns - 2e9
    assert end <= after.row.start_wall_ns + 1e6
    assert after.frames >= 1.5 * FPS
    assert rig.damaged == 0


async def test_junk_in_the_stream_is_dropped_and_recording_goes_on(tmp_path):
    manglers: list[Junk] = []

    def make(n: int) -> Mangler:
        manglers.append(Junk())
        return manglers[-1]

    with gstcam.camera(*CAMERA, "--size", "320x240") as url:
        async with Proxy(url, make) as proxy, recording(tmp_path, proxy.url) as rig:
            kinds = Junk.KINDS
            await until(
                lambda: bool(manglers) and manglers[0].kinds >= 2 * kinds,
                20,
                "two rounds of every kind of junk",
            )
    assert len(rig.sources) == 1 and rig.recorder.reconnects == 0, rig.recorder.last_error
    (source,) = rig.sources
    (junk,) = manglers
    # Every junk frame is counted as dropped (those still in flight at the stop aside), and
    # nothing else: no packet of the camera was lost, no picture damaged.
    assert junk.injected - 2 * 2 <= source.dropped <= junk.injected, (
        source.dropped,
        junk.injected,
    )
    assert source.lost == 0
    assert rig.damaged == 0
    recorded = await verify(rig)
    assert len(recorded) == 1 and (recorded[0].width, recorded[0].height) == (320, 240)
    # Recording went on through the junk: all delivered pictures were written.
    assert rig.writer.units_written + rig.writer.units_skipped == sum(rig.delivered)
    assert rig.writer.units_skipped <= GOP
    assert recorded[0].frames >= 2 * kinds * junk.every


class Desync(Mangler):
    """Breaks the framing once: bytes that are neither a ``$`` frame nor an RTSP message."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.frames = 0
        self.done_ns = 0

    def down(self, channel: int, payload: bytes) -> list[bytes]:
        self.frames += 1
        out = [frame(channel, payload)]
        if self.frames == self.after:
            out.append(b"\x17\x03\x01garbage that is no RTSP message\r\n\r\n" + bytes(range(256)))
            self.done_ns = time.time_ns()
        return out


async def test_broken_framing_reconnects_and_leaves_a_gap(tmp_path):
    manglers: list[Mangler] = []

    def make(n: int) -> Mangler:
        manglers.append(Desync(after=150) if n == 0 else Mangler())
        return manglers[-1]

    with gstcam.camera(*CAMERA, "--size", "320x240") as url:
        async with Proxy(url, make) as proxy, recording(tmp_path, proxy.url) as rig:
            await until(
                lambda: len(rig.delivered) >= 2 and rig.delivered[-1] >= 2 * FPS,
                20,
                "recording after the reconnect",
            )
    desync = manglers[0]
    assert isinstance(desync, Desync) and desync.done_ns
    assert rig.recorder.reconnects == 1, rig.recorder.last_error
    assert "RtspProtocolError" in rig.recorder.last_error, rig.recorder.last_error
    recorded = await verify(rig)
    assert len(recorded) == 2, [r.row for r in recorded]
    before, after = recorded
    ((start, end, reason),) = gaps(rig)
    assert reason == "offline" and end is not None and start < end
    assert before.row.end_wall_ns <= start + 1e9 and abs(start - desync.done_ns) < 1e9
    assert end <= after.row.start_wall_ns + 1e6
    assert after.frames >= 1.5 * FPS
    assert rig.damaged == 0


class ClockJump(RtpRewriter):
    """After ``after`` access units: RTP timestamps (and SR RTP times) jump by ``ts``,
    sequence numbers by ``seq``; with ``drop_sr`` the camera's sender reports are dropped
    (wall time then comes from the arrival clock alone, deterministically)."""

    def __init__(self, after: int, *, ts: int = 0, seq: int = 0, drop_sr: bool = False) -> None:
        super().__init__()
        self.drop_sr = drop_sr
        self.after, self.ts_jump, self.seq_jump = after, ts, seq
        self.jumped_ns = 0

    def after_unit(self) -> list[bytes]:
        if self.units == self.after:
            self.ts_offset += self.ts_jump
            self.seq_offset += self.seq_jump
            self.jumped_ns = time.time_ns()
        return []


async def _record_through_jump(tmp_path: Path, jump: ClockJump) -> tuple[Rig, list[Recorded]]:
    with gstcam.camera(*CAMERA, "--size", "320x240") as url:
        async with Proxy(url, lambda n: jump) as proxy, recording(tmp_path, proxy.url) as rig:
            await until(lambda: jump.units >= jump.after + 2 * FPS, 20, "2 s after the jump")
    assert len(rig.sources) == 1 and rig.recorder.reconnects == 0, rig.recorder.last_error
    return rig, await verify(rig)


def split_at_jump(recorded: list[Recorded]) -> tuple[list[Recorded], list[Recorded]]:
    """The segments before and after the one media-clock step of about an hour; every other
    boundary is continuous in media time."""
    steps = [b.row.start_90k - end_90k(a.row) for a, b in zip(recorded, recorded[1:], strict=False)]
    jumps = [i for i, step in enumerate(steps) if abs(step - HOUR_90K) <= 2 * GOP * FRAME_90K]
    assert len(jumps) == 1, steps
    assert all(0 <= step <= 3 * FRAME_90K for i, step in enumerate(steps) if i != jumps[0]), steps
    return recorded[: jumps[0] + 1], recorded[jumps[0] + 1 :]


# The jump lands inside a GOP (not on a keyframe) on purpose.
JUMP_AFTER_UNITS = 2 * FPS + 3


async def test_rtp_timestamp_jump_starts_a_new_segment(tmp_path):
    rig, recorded = await _record_through_jump(tmp_path, ClockJump(JUMP_AFTER_UNITS, ts=HOUR_90K))
    before, after = split_at_jump(recorded)
    assert before and after
    # Recording continued: the new segment waited for the next keyframe, nothing else was lost.
    assert rig.writer.units_skipped <= 2 * GOP
    assert rig.writer.units_written + rig.writer.units_skipped == sum(rig.delivered)
    assert sum(r.frames for r in after) >= 1.5 * FPS
    assert rig.damaged == 0


@pytest.mark.parametrize("drop_sr", [True, False], ids=["arrival-clock", "sender-reports"])
async def test_rtp_timestamp_jump_keeps_wall_time(tmp_path, drop_sr):
    jump = ClockJump(JUMP_AFTER_UNITS, ts=HOUR_90K, drop_sr=drop_sr)
    rig, recorded = await _record_through_jump(tmp_path, jump)
    _, after = split_at_jump(recorded)
    # The camera's RTP clock jumped, not time: the new segment starts now, not in an hour.
    assert abs(after[0].row.start_wall_ns - jump.jumped_ns) < 2e9, (
        after[0].row.start_wall_ns - jump.jumped_ns
    ) / 1e9
    assert all(r.row.end_wall_ns < time.time_ns() + 1e9 for r in recorded)
    # Wall time goes on after the jump (it neither freezes nor leaps when a report comes).
    starts = [f.start_wall_ns for r in after for f in await rig.index.fragments(r.row.id)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert starts[-1] - starts[0] > 1e9


async def test_rtp_sequence_jump_records_on_in_the_same_segment(tmp_path):
    rig, recorded = await _record_through_jump(tmp_path, ClockJump(2 * FPS, seq=10_000))
    assert len(recorded) == 1
    assert rig.writer.units_written + rig.writer.units_skipped == sum(rig.delivered)
    assert rig.writer.units_skipped <= GOP
    # The media clock did not move: 25 fps on, one segment, no hole.
    assert recorded[0].row.duration_90k == pytest.approx(
        recorded[0].frames * FRAME_90K, abs=FRAME_90K
    )
