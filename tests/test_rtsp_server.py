"""The RTSP server against real peers over loopback: ffprobe, FFmpeg through PyAV, and the
project's own RTSP client, plus raw-socket robustness checks (bad requests, UDP SETUP, a
viewer that never reads)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.recording.simulator import LoopingClip, load_clip, make_clip
from onvif_nvr.replay.rtsp_server import RtspServer
from onvif_nvr.rtsp.client import RtspSource
from onvif_nvr.rtsp.message import Headers, MessageParser, Request, Response


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "sim.h264"
    make_clip(path, width=320, height=240, fps=25, seconds=4, gop=25)
    return path


async def _server(clip: Path, **options: int) -> RtspServer:
    clock = SystemClock()
    params, units = await asyncio.to_thread(load_clip, clip)
    server = RtspServer("127.0.0.1", 0, clock, **options)
    server.add_mount("/sim", LoopingClip(params, units, clock))
    await server.start()
    return server


@pytest.fixture
async def server(clip: Path) -> AsyncIterator[RtspServer]:
    server = await _server(clip)
    yield server
    await server.close()


def _url(server: RtspServer) -> str:
    return f"rtsp://127.0.0.1:{server.bound_port}/sim"


class RawClient:
    """Requests written by hand, responses read with the client-side parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = MessageParser("client")
        self.pending: list[Response] = []

    @classmethod
    async def connect(cls, server: RtspServer) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        return cls(reader, writer)

    async def request(self, method: str, uri: str, cseq: int, **headers: str) -> Response:
        fields = Headers({"CSeq": str(cseq)})
        for name, value in headers.items():
            fields.add(name.replace("_", "-"), value)
        self.writer.write(bytes(Request(method, uri, fields)))
        return await self.response()

    async def response(self) -> Response:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "server closed the connection"
            self.pending += [m for m in self.parser.feed(data) if isinstance(m, Response)]
        return self.pending.pop(0)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _collect(url: str, count: int, timeout_s: float = 8) -> list[TimedUnit]:
    units: list[TimedUnit] = []
    done = asyncio.Event()

    def on_units(batch: list[TimedUnit]) -> None:
        units.extend(batch)
        if len(units) >= count:
            done.set()

    source = RtspSource(url, clock=SystemClock(), on_units=on_units)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        source.stop()
        await asyncio.wait_for(task, 5)
    assert source.info.video is not None
    assert (source.info.video.width, source.info.video.height) == (320, 240)
    return units


def _check_units(units: list[TimedUnit]) -> None:
    keyframes = [i for i, t in enumerate(units) if t.unit.keyframe]
    assert keyframes[0] == 0  # a viewer starts at a keyframe
    assert all(b - a == 25 for a, b in zip(keyframes, keyframes[1:], strict=False))
    assert len(keyframes) >= 2
    steps = {b.dts_90k - a.dts_90k for a, b in zip(units, units[1:], strict=False)}
    assert steps == {3600}
    assert not any(t.unit.damaged for t in units)


async def test_ffprobe_sees_h264_320x240(server: RtspServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        *("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json"),
        _url(server),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    (stream,) = json.loads(out)["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)


def _decode(url: str, frames: int) -> list[tuple[int, int]]:
    sizes = []
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}) as container:
        for frame in container.decode(video=0):
            sizes.append((frame.width, frame.height))
            if len(sizes) >= frames:
                break
    return sizes


async def test_pyav_decodes_frames(server: RtspServer) -> None:
    sizes = await asyncio.wait_for(asyncio.to_thread(_decode, _url(server), 20), 15)
    assert sizes == [(320, 240)] * 20


async def test_project_client_receives_units(server: RtspServer) -> None:
    _check_units(await _collect(_url(server), 60))


async def test_two_viewers_at_once(server: RtspServer) -> None:
    first, second = await asyncio.gather(_collect(_url(server), 30), _collect(_url(server), 30))
    _check_units(first)
    _check_units(second)


async def test_bad_request_gets_400_and_connection_goes_on(server: RtspServer) -> None:
    client = await RawClient.connect(server)
    try:
        client.writer.write(b"GARBAGE LINE\r\nCSeq: 7\r\n\r\n")
        bad = await client.response()
        assert (bad.status, bad.headers.get("CSeq")) == (400, "7")
        ok = await client.request("OPTIONS", _url(server), 8)
        assert (ok.status, ok.headers.get("CSeq")) == (200, "8")
        assert "DESCRIBE" in ok.headers.get("Public", "")
        unknown = await client.request("RECORD", _url(server), 9)
        assert (unknown.status, unknown.headers.get("CSeq")) == (501, "9")
        missing = await client.request("DESCRIBE", _url(server) + "x", 10)
        assert missing.status == 404
    finally:
        await client.close()


async def test_describe_setup_transports(server: RtspServer) -> None:
    client = await RawClient.connect(server)
    try:
        described = await client.request("DESCRIBE", _url(server), 1, Accept="application/sdp")
        assert described.status == 200
        assert described.headers.get("Content-Base") == _url(server) + "/"
        assert b"a=control:trackID=0" in described.body
        multicast = await client.request(
            "SETUP",
            _url(server) + "/trackID=0",
            2,
            Transport="RTP/AVP;multicast;destination=224.0.0.5;port=5000-5001",
        )
        assert multicast.status == 461  # local network control groups are refused
        udp = await client.request(
            "SETUP",
            _url(server) + "/trackID=0",
            3,
            Transport="RTP/AVP;unicast;client_port=5000-5001",
        )
        assert udp.status == 200
        rtp, rtcp = server.server_ports
        assert f"server_port={rtp}-{rtcp}" in udp.headers.get("Transport", "")
        assert rtp % 2 == 0
        wrong = await client.request("PLAY", _url(server), 4, Session="nope")
        assert wrong.status == 454
        torn = await client.request(
            "TEARDOWN", _url(server), 5, Session=udp.headers.get("Session", "").split(";")[0]
        )
        assert torn.status == 200
        tcp = await client.request(
            "SETUP", _url(server) + "/trackID=0", 6, Transport="RTP/AVP/TCP;unicast;interleaved=4-5"
        )
        assert tcp.status == 200
        assert "interleaved=4-5" in tcp.headers.get("Transport", "")
        assert tcp.headers.get("Session", "").endswith(";timeout=60")
    finally:
        await client.close()


async def test_viewer_that_never_reads_is_dropped(
    clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await _server(clip, max_write_buffer_bytes=64 * 1024, send_buffer_bytes=16 * 1024)
    slow: RawClient | None = None
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.bound_port))
        reader, writer = await asyncio.open_connection(sock=sock)
        slow = RawClient(reader, writer)
        setup = await slow.request(
            "SETUP", _url(server) + "/trackID=0", 1, Transport="RTP/AVP/TCP;interleaved=0-1"
        )
        session = setup.headers.get("Session", "").split(";")[0]
        slow.writer.write(
            bytes(Request("PLAY", _url(server), Headers({"CSeq": "2", "Session": session})))
        )
        # From here on the slow viewer reads nothing; a healthy one keeps getting units.
        _check_units(await _collect(_url(server), 30))
        for _ in range(100):
            if server.connections == 0:
                break
            await asyncio.sleep(0.1)
        assert server.connections == 0
        assert "does not keep up" in caplog.text
    finally:
        if slow is not None:
            await slow.close()
        await server.close()


async def test_idle_connection_is_closed(clip: Path) -> None:
    server = await _server(clip, session_timeout_s=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    finally:
        await server.close()


async def test_pyav_fallback_source_keeps_the_undated_first_picture(server: RtspServer) -> None:
    """FFmpeg hands the first picture over without timestamps, whole (this server sends a
    picture's slices together); the PyAV source must not merge it into the next picture."""
    from onvif_nvr.recording.pyav_source import PyAVSource, has_slice, starts_picture

    got: list[TimedUnit] = []
    enough = asyncio.Event()

    def take(units: list[TimedUnit]) -> None:
        got.extend(units)
        if len(got) >= 40:
            enough.set()

    source = PyAVSource(_url(server), clock=SystemClock(), on_units=take)
    task = asyncio.ensure_future(source.run())
    await asyncio.wait_for(enough.wait(), 15)
    source.stop()
    await asyncio.wait_for(task, 15)
    video = [u for u in got if u.track == 0]
    assert len(video) >= 30
    assert video[0].unit.keyframe
    for unit in video:
        slices = [n for n in unit.unit.payloads if has_slice("H264", [n])]
        assert sum(starts_picture("H264", [n]) for n in slices) == 1, unit.dts_90k
    steps = {b.dts_90k - a.dts_90k for a, b in zip(video, video[1:], strict=False)}
    assert steps == {3600}
