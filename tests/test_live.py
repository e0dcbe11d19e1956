"""Live streams through the box: a GStreamer camera (H.264 + AAC) recorded by a running box
is played by FFmpeg (PyAV) over TCP and UDP and by a raw interleaved reader (sequence
continuity, RTCP sender reports), with the ONVIF users' Digest credentials; fan-out with a
stalled viewer on a real hub; bad input (fuzzed parser, slow-loris, oversized headers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.recording.hub import Hub
from onvif_nvr.recording.simulator import LoopingClip, load_clip, make_clip
from onvif_nvr.replay.live import HubFeed
from onvif_nvr.replay.rtsp_server import RtspServer
from onvif_nvr.rtsp.auth import ClientAuthenticator
from onvif_nvr.rtsp.headers import parse_rtp_info
from onvif_nvr.rtsp.message import (
    Headers,
    Interleaved,
    MessageParser,
    Request,
    Response,
    RtspParseError,
)
from onvif_nvr.rtsp.rtp import SenderReport, ntp_to_wall_ns, parse_rtcp
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import job_config, recording_client, recording_config

CAMERA = ("--codec", "h264", "--size", "640x360", "--fps", "25", "--gop", "25", "--audio")


class Box:
    def __init__(self, nvr: NvrProcess, receiver: str, recording: str) -> None:
        self.nvr, self.receiver, self.recording = nvr, receiver, recording

    def url(self, token: str | None = None, user: str = "admin", password: str = ADMIN_PASSWORD):
        auth = f"{user}:{password}@" if user else ""
        return f"rtsp://{auth}127.0.0.1:{self.nvr.rtsp_port}/live/{token or self.receiver}"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with gstcam.camera(*CAMERA) as camera_url:
        nvr = NvrProcess(tmp_path_factory.mktemp("live") / "data", ADMIN_PASSWORD)
        nvr.start()
        try:
            receiver = receiver_client(nvr).CreateReceiver(receiver_config(camera_url)).Token
            trc = recording_client(nvr)
            recording = trc.CreateRecording(recording_config("live"))
            trc.CreateRecordingJob(job_config(recording, receiver))
            time.sleep(2)
            yield Box(nvr, receiver, recording)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def _play(url: str, transport: str, frames: int) -> tuple[str, tuple[int, int], list[str]]:
    options = {"rtsp_transport": transport, "timeout": "10000000"}
    with av.open(url, options=options, timeout=15) as container:
        kinds = [f"{s.type}:{s.codec_context.name}" for s in container.streams]
        video = container.streams.video[0]
        sizes = set()
        for count, frame in enumerate(container.decode(video=0), 1):
            sizes.add((frame.width, frame.height))
            if count >= frames:
                break
        assert len(sizes) == 1
        return video.codec_context.name, sizes.pop(), kinds


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("path", ["receiver", "recording"])
def test_ffmpeg_plays_live(box: Box, transport: str, path: str) -> None:
    token = box.receiver if path == "receiver" else box.recording
    codec, size, kinds = _play(box.url(token), transport, 50)
    assert (codec, size) == ("h264", (640, 360))
    assert "audio:aac" in kinds


class RawViewer:
    """RTSP over a blocking socket with the project's client-side Digest."""

    def __init__(self, host: str, port: int, user: str = "admin", password: str = ADMIN_PASSWORD):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.parser = MessageParser("client")
        self.auth = ClientAuthenticator(user, password)
        self.cseq = 0
        self.frames: list[tuple[int, bytes]] = []

    def request(self, method: str, uri: str, **fields: str) -> Response:
        for _ in range(2):
            self.cseq += 1
            headers = Headers(
                {"CSeq": str(self.cseq), **{k.replace("_", "-"): v for k, v in fields.items()}}
            )
            authorization = self.auth.authorization(method, uri)
            if authorization:
                headers.add("Authorization", authorization)
            self.sock.sendall(bytes(Request(method, uri, headers)))
            response = self._response()
            if response.status != 401 or not self.auth.challenge(
                response.headers.get_all("WWW-Authenticate")
            ):
                return response
        return response

    def _response(self) -> Response:
        while True:
            response = None
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for message in self.parser.feed(data):
                if isinstance(message, Response):
                    response = message
                elif isinstance(message, Interleaved):  # media right after PLAY's answer
                    self.frames.append((message.channel, message.payload))
            if response is not None:
                return response

    def play(self, url: str, tracks: int = 2) -> list[int]:
        """SETUP every track interleaved and PLAY; the RTP-Info seq of each."""
        assert self.request("DESCRIBE", url, Accept="application/sdp").status == 200
        session = ""
        for n in range(tracks):
            extra = {"Session": session} if session else {}
            setup = self.request(
                "SETUP",
                f"{url}/trackID={n}",
                Transport=f"RTP/AVP/TCP;unicast;interleaved={2 * n}-{2 * n + 1}",
                **extra,
            )
            assert setup.status == 200, setup
            session = setup.headers.get("Session", "").split(";")[0]
        play = self.request("PLAY", url, Session=session, Range="npt=0-")
        assert play.status == 200
        return [i.seq or 0 for i in parse_rtp_info(play.headers.get("RTP-Info", ""))]

    def read(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            data = self.sock.recv(262144)
            if not data:
                break
            for message in self.parser.feed(data):
                if isinstance(message, Interleaved):
                    self.frames.append((message.channel, message.payload))

    def close(self) -> None:
        self.sock.close()


def _check_continuity(frames: list[tuple[int, bytes]], channel: int, first_seq: int) -> int:
    seqs = [struct.unpack_from("!H", p, 2)[0] for c, p in frames if c == channel]
    assert seqs and seqs[0] == first_seq
    missing = sum((b - a - 1) & 0xFFFF for a, b in zip(seqs, seqs[1:], strict=False))
    assert missing == 0
    return len(seqs)


def test_raw_viewer_continuity_and_sender_reports(box: Box) -> None:
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        url = box.url(user="")
        seqs = viewer.play(url)
        viewer.read(6.5)
    finally:
        viewer.close()
    assert _check_continuity(viewer.frames, 0, seqs[0]) > 100
    assert _check_continuity(viewer.frames, 2, seqs[1]) > 100
    reports = {
        channel: [
            r
            for c, p in viewer.frames
            if c == channel
            for r in parse_rtcp(p)
            if isinstance(r, SenderReport)
        ]
        for channel in (1, 3)
    }
    # One on joining, then one every 5 s per track.
    assert len(reports[1]) >= 2 and len(reports[3]) >= 2
    # The wall clock of the reports is the capture time: within seconds of now.
    for r in reports[1] + reports[3]:
        assert abs(ntp_to_wall_ns(r.ntp_timestamp) - time.time_ns()) < 30e9


def test_digest_required_and_enforced(box: Box) -> None:
    plain = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        plain.sock.sendall(bytes(Request("DESCRIBE", box.url(user=""), Headers({"CSeq": "1"}))))
        refused = plain._response()
        assert refused.status == 401
        assert refused.headers.get("WWW-Authenticate", "").startswith("Digest ")
        options = plain.request("OPTIONS", box.url(user=""))
        assert options.status == 200  # OPTIONS needs no credentials
    finally:
        plain.close()
    wrong = RawViewer("127.0.0.1", box.nvr.rtsp_port, password="wrong-password")
    try:
        assert wrong.request("DESCRIBE", box.url(user="")).status == 401
    finally:
        wrong.close()
    with pytest.raises(av.error.HTTPUnauthorizedError):
        _play(box.url(password="wrong-password"), "tcp", 1)
    right = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        assert right.request("DESCRIBE", box.url(user="")).status == 200
    finally:
        right.close()


def test_twenty_viewers_and_the_recorder(box: Box) -> None:
    viewers = [RawViewer("127.0.0.1", box.nvr.rtsp_port) for _ in range(20)]
    try:
        starts = [v.play(box.url(user=""), tracks=1) for v in viewers]
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for v in viewers:
                v.sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError):
                    v.read(0.01)
    finally:
        for v in viewers:
            v.close()
    for viewer, seqs in zip(viewers, starts, strict=True):
        assert _check_continuity(viewer.frames, 0, seqs[0]) > 50
    assert not [line for line in box.nvr.output if "retrying" in line]


# -- in-process: a real hub, a stalled viewer, bad input -----------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "sim.h264"
    make_clip(path, width=320, height=240, fps=25, seconds=4, gop=25)
    return path


async def test_stalled_viewer_is_dropped_not_the_recorder(clip: Path, caplog) -> None:
    clock = SystemClock()
    params, units = await asyncio.to_thread(load_clip, clip)
    source = LoopingClip(params, units, clock)
    hub = Hub("cam")
    recorder = hub.subscribe("recorder", maxsize=3000, lossy=True)

    async def camera() -> None:
        async for unit, dts in source.subscribe():
            hub.publish(TimedUnit(unit, 0, dts, clock.wall_ns()))

    feeding = asyncio.create_task(camera())
    server = RtspServer(
        "127.0.0.1", 0, clock, max_write_buffer_bytes=64 * 1024, send_buffer_bytes=16 * 1024
    )
    server.add_mount(
        "/live/cam",
        HubFeed(lambda: hub.subscribe("live", maxsize=3000, lossy=True), lambda: (params, None)),
    )
    await server.start()
    url = f"rtsp://127.0.0.1:{server.bound_port}/live/cam"
    try:

        def stall() -> socket.socket:
            """PLAY, then never read (blocking socket: runs in a thread)."""
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.bound_port))
            transport = {"CSeq": "1", "Transport": "RTP/AVP/TCP;interleaved=0-1"}
            sock.sendall(bytes(Request("SETUP", url + "/trackID=0", Headers(transport))))
            reply = sock.recv(4096).decode()
            session = next(
                line.split(":", 1)[1].split(";")[0].strip()
                for line in reply.splitlines()
                if line.startswith("Session")
            )
            sock.sendall(bytes(Request("PLAY", url, Headers({"CSeq": "2", "Session": session}))))
            return sock

        stalled = await asyncio.to_thread(stall)
        viewers = [RawViewer("127.0.0.1", server.bound_port) for _ in range(5)]
        starts = await asyncio.to_thread(lambda: [v.play(url, tracks=1) for v in viewers])
        await asyncio.to_thread(lambda: [v.read(0.5) for v in viewers for _ in range(8)])
        for viewer, seqs in zip(viewers, starts, strict=True):
            _check_continuity(viewer.frames, 0, seqs[0])
            viewer.close()
        assert "does not keep up" in caplog.text
        assert server.viewers == 0 or server.connections <= 5
        assert recorder.lost == 0 and recorder.closed_reason is None
        stalled.close()
    finally:
        feeding.cancel()
        await server.close()


@pytest.fixture
async def sim_server(clip: Path):
    clock = SystemClock()
    params, units = await asyncio.to_thread(load_clip, clip)
    server = RtspServer("127.0.0.1", 0, clock, request_timeout_s=1)
    server.add_mount("/sim", LoopingClip(params, units, clock))
    await server.start()
    yield server
    await server.close()


async def test_slow_loris_is_cut(sim_server: RtspServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim_server.bound_port)
    started = time.monotonic()
    try:
        writer.write(b"OPTIONS rtsp://x/sim RTSP/1.0\r\nCSeq: 1\r\n")
        for _ in range(30):  # one header byte every 0.2 s: never a whole request
            await asyncio.sleep(0.2)
            writer.write(b"X")
            if reader.at_eof():
                break
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                    break
        assert time.monotonic() - started < 3
    finally:
        writer.close()


async def test_oversized_headers_are_cut(sim_server: RtspServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim_server.bound_port)
    try:
        writer.write(b"OPTIONS rtsp://x/sim RTSP/1.0\r\nCSeq: 1\r\nX-Junk: " + b"a" * 70_000)
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"RTSP/1.0 400")
    finally:
        writer.close()


async def test_bad_requests_then_good_one(sim_server: RtspServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim_server.bound_port)
    try:
        writer.write(b"DESCRIBE rtsp://x/sim RTSP/1.0\r\nCSeq: 1\r\nContent-Length: x\r\n\r\n")
        writer.write(b"OPTIONS rtsp://x/sim RTSP/1.0\r\nCSeq: 2\r\n\r\n")
        parser = MessageParser("client")
        got: list[Response] = []
        while len(got) < 2:
            got += [
                m
                for m in parser.feed(await asyncio.wait_for(reader.read(4096), 5))
                if isinstance(m, Response)
            ]
        assert [(r.status, r.headers.get("CSeq")) for r in got] == [(400, "1"), (200, "2")]
    finally:
        writer.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.binary(max_size=200)
        | st.sampled_from(
            [
                b"OPTIONS * RTSP/1.0\r\n",
                b"CSeq: 1\r\n",
                b"\r\n",
                b"$\x00\x00\x04abcd",
                b"Content-Length: 3\r\n",
                b"Content-Length: -1\r\n",
                b"SETUP rtsp://h/a RTSP/9.9\r\n",
                b"\x00\xff",
                b"Transport: RTP/AVP;;;=\r\n",
            ]
        ),
        max_size=20,
    )
)
def test_parser_fuzz_only_raises_parse_errors(chunks: list[bytes]) -> None:
    """Any byte sequence gives messages or RtspParseError; the parser always recovers."""
    parser = MessageParser("server")
    for chunk in chunks:
        try:
            parser.feed(chunk)
        except RtspParseError:
            with contextlib.suppress(RtspParseError):
                parser.skip_to_next_message()
            parser.reset()
    parser.reset()
    (request,) = parser.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n")
    assert isinstance(request, Request) and request.cseq == 5
