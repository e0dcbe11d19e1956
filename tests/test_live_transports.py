"""Live streams over every transport, played by clients that are not ours.

One box records a GStreamer camera (H.264 640x360 + AAC) in a network namespace whose only
interface is loopback (tests/loopns.py), so that multicast cannot leave the machine; this
test process enters the namespace too. GStreamer's ``rtspsrc`` plays the live URI over TCP,
UDP, the HTTP tunnel on the SOAP port and multicast; FFmpeg (PyAV) over the tunnel and
multicast; a raw reader checks 30 s of TCP continuity and sender reports while keeping its
session alive with OPTIONS and SET_PARAMETER, beside a silent session that expires. In
process (same namespace): StartMulticastStreaming without RTSP, one group shared by several
sessions, SetSynchronizationPoint, and hostile tunnel input against the box.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvif_nvr.clock import SystemClock
from onvif_nvr.config import ConfigError, load_settings
from onvif_nvr.recording.simulator import LoopingClip, load_clip, make_clip
from onvif_nvr.replay.http_tunnel import Base64Stream
from onvif_nvr.replay.multicast import MulticastTarget
from onvif_nvr.replay.rtsp_server import RtspServer
from onvif_nvr.rtsp import sdp
from onvif_nvr.rtsp.headers import parse_transport
from onvif_nvr.rtsp.message import Headers, MessageParser, Request, Response
from onvif_nvr.rtsp.rtp import SenderReport, parse_rtcp
from tests import gstcam, loopns
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_live import CAMERA, Box, RawViewer, _check_continuity, _play
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import job_config, recording_client, recording_config

SESSION_TIMEOUT_S = 5
_NO_NETNS = loopns.available()
needs_netns = pytest.mark.skipif(_NO_NETNS is not None, reason=f"multicast: {_NO_NETNS}")


@contextlib.contextmanager
def _namespace(tag: str) -> Iterator[None]:
    """The loopback-only namespace when it can be had (multicast tests need it)."""
    if _NO_NETNS is None:
        with loopns.loopback_namespace(tag):
            yield
    else:
        yield


def start_box(tmp: Path, camera_url: str, *, name: str = "live") -> Box:
    nvr = NvrProcess(
        tmp / "data",
        ADMIN_PASSWORD,
        {"ONVIF_NVR_RTSP_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)},
    )
    nvr.start()
    try:
        receiver = receiver_client(nvr).CreateReceiver(receiver_config(camera_url)).Token
        trc = recording_client(nvr)
        recording = trc.CreateRecording(recording_config(name))
        trc.CreateRecordingJob(job_config(recording, receiver))
    except BaseException:
        nvr.stop()
        raise
    return Box(nvr, receiver, recording)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with _namespace("tr"), gstcam.camera(*CAMERA) as camera_url:
        box = start_box(tmp_path_factory.mktemp("transports"), camera_url)
        try:
            _wait_playable(box)
            yield box
        finally:
            box.nvr.stop()
        assert not box.nvr.blocking_calls(), box.nvr.blocking_calls()
        errors = [line for line in box.nvr.output if " ERROR " in line or "Traceback" in line]
        assert not errors, "".join(errors)


def _wait_playable(box: Box) -> None:
    deadline = time.monotonic() + 20
    while True:
        viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
        try:
            if viewer.request("DESCRIBE", box.url(user="")).status == 200:
                return
        finally:
            viewer.close()
        if time.monotonic() > deadline:
            raise RuntimeError("the live stream did not come up")
        time.sleep(0.3)


def tunnel_url(box: Box, scheme: str = "rtsp", auth: bool = True) -> str:
    credentials = f"admin:{ADMIN_PASSWORD}@" if auth else ""
    return f"{scheme}://{credentials}127.0.0.1:{box.nvr.port}/rtsp-tunnel/live/{box.receiver}"


# -- GStreamer -------------------------------------------------------------------------------


def gst_play(location: str, protocols: str, frames: int = 30) -> str:
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gstreamer1.0-tools is not installed")
    argv = [
        "gst-launch-1.0",
        "-v",
        "rtspsrc",
        f"location={location}",
        f"protocols={protocols}",
        "user-id=admin",
        f"user-pw={ADMIN_PASSWORD}",
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "avdec_h264",
        "!",
        "fakesink",
        f"num-buffers={frames}",
        "sync=false",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "Got EOS" in result.stdout, result.stdout[-3000:]
    if result.returncode != 0:
        # Once in CI (HTTP tunnel on the SOAP port): the frames played and EOS came, then
        # rtspsrc's PAUSE while shutting down read end-of-file. Named in the closing note to
        # be found; only that teardown error is let through here.
        assert "gst_rtspsrc_pause" in result.stdout + result.stderr, result.stdout[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    "protocols",
    ["tcp", "udp", "http", "http@rtsp_port", pytest.param("udp-mcast", marks=needs_netns)],
)
def test_gstreamer_plays(box: Box, protocols: str) -> None:
    if protocols == "http":
        location = tunnel_url(box, "rtsph", auth=False)
    elif protocols == "http@rtsp_port":
        location = box.url(user="").replace("rtsp://", "rtsph://")
    else:
        location = box.url(user="")
    out = gst_play(location, "tcp" if protocols.startswith("http") else protocols)
    assert re.search(r"encoding-name=\(string\)H264", out)
    decoded = re.findall(
        r"video/x-raw, format=\(string\)\w+, width=\(int\)(\d+), height=\(int\)(\d+)", out
    )
    assert decoded and set(decoded) == {("640", "360")}


# -- FFmpeg ----------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["http", "rtsp"])
def test_ffmpeg_through_the_http_tunnel(box: Box, port: str) -> None:
    """On the SOAP port (the URI GetStreamUri gives) and on the RTSP port itself."""
    url = tunnel_url(box) if port == "http" else box.url()
    codec, size, kinds = _play(url, "http", 40)
    assert (codec, size) == ("h264", (640, 360))
    assert "audio:aac" in kinds


@needs_netns
def test_ffmpeg_udp_multicast(box: Box) -> None:
    codec, size, kinds = _play(box.url(), "udp_multicast", 40)
    assert (codec, size) == ("h264", (640, 360))
    assert "audio:aac" in kinds


# -- 30 s of TCP, keep-alives ----------------------------------------------------------------


def test_tcp_continuity_30s_with_keepalives(box: Box) -> None:
    """No missing sequence number in 30 s on either track, a sender report every 5 s; the
    session lives on OPTIONS and SET_PARAMETER (RTSS-1-1-32/33) far beyond its 5 s timeout,
    while a silent session beside it is closed."""
    url = box.url(user="")
    kept, silent = (
        RawViewer("127.0.0.1", box.nvr.rtsp_port),
        RawViewer("127.0.0.1", box.nvr.rtsp_port),
    )
    try:
        seqs, session = _play_session(kept, url)
        silent.play(url, tracks=1)
        silent.sock.settimeout(0.05)
        silent_closed_after = None
        started = time.monotonic()
        methods = ["OPTIONS", "SET_PARAMETER"]
        answers: list[tuple[str, int]] = []
        while time.monotonic() - started < 30:
            kept.read(2.0)
            method = methods[len(answers) % 2]
            answers.append((method, kept.request(method, url, Session=session).status))
            if silent_closed_after is None:
                # Drain the silent viewer a little at a time: the kept one must go on
                # sending keep-alives meanwhile (a drain until the close could outlast them).
                drain_until = time.monotonic() + 0.5
                with contextlib.suppress(TimeoutError):
                    while time.monotonic() < drain_until:
                        if not silent.sock.recv(262144):
                            silent_closed_after = time.monotonic() - started
                            break
    finally:
        kept.close()
        silent.close()
    assert set(answers) == {("OPTIONS", 200), ("SET_PARAMETER", 200)}
    assert silent_closed_after is not None and silent_closed_after < SESSION_TIMEOUT_S + 4
    assert _check_continuity(kept.frames, 0, seqs[0]) > 600
    assert _check_continuity(kept.frames, 2, seqs[1]) > 600
    for channel in (1, 3):
        reports = [
            r
            for c, p in kept.frames
            if c == channel
            for r in parse_rtcp(p)
            if isinstance(r, SenderReport)
        ]
        assert len(reports) >= 6


def _play_session(viewer: RawViewer, url: str) -> tuple[list[int], str]:
    """RawViewer.play of both tracks, keeping the session id for keep-alives."""
    session = ""
    real = viewer.request

    def spy(method: str, uri: str, **fields: str) -> Response:
        nonlocal session
        response = real(method, uri, **fields)
        if method == "SETUP":
            session = response.headers.get("Session", "").split(";")[0]
        return response

    viewer.request = spy  # type: ignore[method-assign]
    try:
        seqs = viewer.play(url)
    finally:
        del viewer.request
    return seqs, session


# -- /metrics: per viewer, per camera -------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of ``name`` whose labels include ``labels``."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            out.append(float(value))
    return out


def test_metrics_per_viewer_and_camera(box: Box) -> None:
    url = box.url(user="")
    auth = httpx.DigestAuth("admin", ADMIN_PASSWORD)
    system = f"{box.nvr.base}/api/v1/system"
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        _, session = _play_session(viewer, url)
        httpx.get(system, auth=auth, timeout=10)  # egress is measured from call to call
        viewer.read(1.0)
        received = sum(len(p) + 4 for _, p in viewer.frames)
        text = httpx.get(f"{box.nvr.base}/metrics", auth=auth, timeout=10).text
        status = httpx.get(system, auth=auth, timeout=10).json()
    finally:
        viewer.close()
    assert status["egress_mbit_s"] > 0
    # This machine's kernel tells either way (containers often run without an NTP daemon).
    assert isinstance(status["clock_synchronized"], bool)
    assert status["clock_max_error_ms"] >= 0
    stream = f"/live/{box.receiver}"
    (sent,) = _metric(
        text, "nvr_rtsp_viewer_bytes_sent_total", session=session, stream=stream, transport="tcp"
    )
    assert sent >= received > 0
    assert "# TYPE nvr_rtsp_viewer_packets_sent_total counter" in text
    assert "# TYPE nvr_rtsp_multicast_bytes_sent_total counter" in text
    assert "nvr_rtsp_slow_viewers_dropped_total " in text
    # One camera, one recording: one sample, labelled with both.
    (camera_bytes,) = _metric(text, "nvr_camera_bytes_total", recording=box.recording)
    assert camera_bytes > 0
    assert _metric(text, "nvr_camera_packets_lost_total") == [0.0]  # loopback loses nothing
    assert len(_metric(text, "nvr_camera_packets_dropped_total")) == 1
    assert "# TYPE nvr_event_subscription_queued gauge" in text
    # The session is gone from the figures once it ends.
    for _ in range(50):
        text = httpx.get(f"{box.nvr.base}/metrics", auth=auth, timeout=10).text
        if not _metric(text, "nvr_rtsp_viewer_bytes_sent_total", session=session):
            break
        time.sleep(0.1)
    assert not _metric(text, "nvr_rtsp_viewer_bytes_sent_total", session=session)


# -- tunnel: hostile input -------------------------------------------------------------------


def _http(port: int, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                data += chunk
        return data


def _status(answer: bytes) -> int:
    """The status of an HTTP answer ("HTTP/1.x NNN ...")."""
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def _get(path: str, cookie: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.0", "Accept: application/x-rtsp-tunnelled"]
    if cookie is not None:
        lines.append(f"x-sessioncookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _post(path: str, cookie: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n"
        "Content-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\n"
    )
    return head.encode() + body


def test_tunnel_hostile_input(box: Box) -> None:
    path = f"/rtsp-tunnel/live/{box.receiver}"
    port = box.nvr.port
    assert _status(_http(port, _get(path, None))) == 400
    # A POST with no GET of its cookie.
    options = base64.b64encode(b"OPTIONS * RTSP/1.0\r\n\r\n")
    assert _status(_http(port, _post(path, "nobody", options), 2)) == 400
    with socket.create_connection(("127.0.0.1", port), timeout=5) as get:
        get.sendall(_get(path, "c00kie"))
        head = get.recv(4096)
        assert head.startswith(b"HTTP/1.0 200") and b"application/x-rtsp-tunnelled" in head
        # The same cookie twice.
        assert _status(_http(port, _get(path, "c00kie"))) == 409
        # Not base64: 400 on the POST, the tunnel stays.
        assert _status(_http(port, _post(path, "c00kie", b"***not base64***"), 2)) == 400
        # Base64 with line breaks (RTSS-1-1-45), the request split across two POSTs.
        request = b"OPTIONS rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 7\r\n\r\n"
        encoded = base64.encodebytes(request)  # 76-column lines
        with socket.create_connection(("127.0.0.1", port), timeout=5) as post:
            post.sendall(_post(path, "c00kie", encoded[:10]))
            time.sleep(0.1)
            post.sendall(encoded[10:])
            parser = MessageParser("client")
            (answer,) = parser.feed(get.recv(4096))
            assert isinstance(answer, Response) and answer.status == 200
            assert answer.headers.get("CSeq") == "7"
            # Garbage after the hand-over: that POST is refused and closed, the GET stays.
            post.sendall(b"!!!!")
            assert post.recv(4096).startswith(b"HTTP/1.0 400")
        # An oversized RTSP request inside the tunnel: RTSP 400, then the tunnel closes.
        huge = b"OPTIONS * RTSP/1.0\r\nCSeq: 8\r\nX-Junk: " + b"a" * 70_000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as post:
            post.sendall(_post(path, "c00kie", b""))
            time.sleep(0.1)  # after the hand-over the body is not bound by Content-Length
            post.sendall(base64.b64encode(huge))
            data = b""
            while chunk := get.recv(65536):
                data += chunk
            assert data.startswith(b"RTSP/1.0 400")
    # The server goes on: a new tunnel works.
    _, size, _ = _play(tunnel_url(box), "http", 5)
    assert size == (640, 360)


@pytest.mark.parametrize("port", ["http", "rtsp"])
def test_tunnel_post_head_before_its_body(box: Box, port: str) -> None:
    """A client may send the POST's head and its first request in two writes (FFmpeg does
    on a loaded machine): the tunnel waits for the body instead of closing the POST."""
    if port == "http":
        path, number = f"/rtsp-tunnel/live/{box.receiver}", box.nvr.port
    else:
        path, number = f"/live/{box.receiver}", box.nvr.rtsp_port
    cookie = f"split-{port}"
    with socket.create_connection(("127.0.0.1", number), timeout=5) as get:
        get.sendall(_get(path, cookie))
        assert get.recv(4096).startswith(b"HTTP/1.0 200")
        with socket.create_connection(("127.0.0.1", number), timeout=5) as post:
            post.sendall(_post(path, cookie, b""))
            time.sleep(0.3)  # the head is read and handed over alone
            request = b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n"
            post.sendall(base64.b64encode(request))
            (answer,) = MessageParser("client").feed(get.recv(4096))
            assert isinstance(answer, Response) and answer.status == 200
            assert answer.headers.get("CSeq") == "3"


# -- in process: StartMulticastStreaming, shared group, synchronization point -----------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "sim.h264"
    make_clip(path, width=320, height=240, fps=25, seconds=2, gop=25)
    return path


def _listener(group: str, port: int) -> socket.socket:
    """A socket receiving ``group:port`` on the loopback interface only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock


async def _receive(sock: socket.socket, seconds: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        with contextlib.suppress(TimeoutError):
            out.append(await asyncio.wait_for(loop.sock_recv(sock, 65536), left))
    return out


@pytest.fixture
async def sim(clip: Path):
    params, units = await asyncio.to_thread(load_clip, clip)
    with _namespace("sim"):
        clock = SystemClock()
        server = RtspServer("127.0.0.1", 0, clock)
        server.add_mount("/live/sim", LoopingClip(params, units, clock))
        await server.start()
        try:
            yield server
        finally:
            await server.close()


@needs_netns
async def test_start_multicast_without_rtsp(sim: RtspServer) -> None:
    group, port = "239.192.10.10", 41000
    rtp, rtcp = _listener(group, port), _listener(group, port + 1)
    try:
        sim.start_multicast("/live/sim", group, port, 1)
        packets = await _receive(rtp, 1.5)
        assert len(packets) > 20 and all(p[1] & 0x7F == 96 for p in packets)
        seqs = [struct.unpack_from("!H", p, 2)[0] for p in packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
        reports = [r for p in await _receive(rtcp, 0.2) for r in parse_rtcp(p)]
        assert any(isinstance(r, SenderReport) for r in reports)
        ((path, address, datagrams, size),) = sim.multicast_stats()
        assert (path, address) == ("/live/sim", group)
        assert datagrams >= len(packets) and size >= sum(len(p) for p in packets)
        assert sim.synchronization_point("/live/sim") == 1
        sim.stop_multicast("/live/sim")
        await asyncio.sleep(0.1)
        while True:  # what was in flight
            try:
                rtp.recv(65536)
            except BlockingIOError:
                break
        assert await _receive(rtp, 0.5) == []
        assert sim.synchronization_point("/live/sim") == 0
    finally:
        rtp.close()
        rtcp.close()
    with pytest.raises(LookupError):
        sim.start_multicast("/live/none", group, port, 1)
    with pytest.raises(ValueError, match="not an IPv4 multicast group"):
        sim.start_multicast("/live/sim", "127.0.0.1", port, 1)


class AsyncRtsp:
    """A minimal asyncio RTSP client (no credentials: the in-process server has no gate)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = MessageParser("client")
        self.cseq = 0

    @classmethod
    async def connect(cls, port: int) -> AsyncRtsp:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, uri: str, **fields: str) -> Response:
        self.cseq += 1
        headers = Headers(
            {"CSeq": str(self.cseq), **{k.replace("_", "-"): v for k, v in fields.items()}}
        )
        self.writer.write(bytes(Request(method, uri, headers)))
        while True:
            for message in self.parser.feed(await asyncio.wait_for(self.reader.read(65536), 5)):
                if isinstance(message, Response):
                    return message

    def close(self) -> None:
        self.writer.close()


@needs_netns
async def test_multicast_sessions_share_one_group(sim: RtspServer) -> None:
    url = f"rtsp://127.0.0.1:{sim.bound_port}/live/sim"
    clients = [await AsyncRtsp.connect(sim.bound_port) for _ in range(3)]
    try:
        setups = []
        for client in clients:
            reply = await client.request("SETUP", url + "/trackID=0", Transport="RTP/AVP;multicast")
            assert reply.status == 200
            setups.append(parse_transport(reply.headers.get("Transport", ""))[0])
            session = reply.headers.get("Session", "").split(";")[0]
            assert (await client.request("PLAY", url, Session=session)).status == 200
        # Every session got the same group and port: one stream on the wire.
        assert len({(t.destination, t.port, t.ttl) for t in setups}) == 1
        group, port = setups[0].destination, setups[0].port
        assert group is not None and port is not None
        assert group.startswith("239.192.") and port == (40000, 40001)
        assert sim.viewers == 1  # the group is the fan-out's only viewer
        listener = _listener(group, port[0])
        try:
            assert len(await _receive(listener, 0.5)) > 5
        finally:
            listener.close()
        assert sim.synchronization_point(url) == 1
        clients[0].close()
        await asyncio.sleep(0.2)
        assert sim.viewers == 1  # two sessions left
        for client in clients[1:]:
            client.close()
        await asyncio.sleep(0.2)
        assert sim.viewers == 0 and sim.multicast_groups == []
        # A SETUP without PLAY holds a group until its connection goes: nothing is left.
        idle = await AsyncRtsp.connect(sim.bound_port)
        reply = await idle.request("SETUP", url + "/trackID=0", Transport="RTP/AVP;multicast")
        assert reply.status == 200 and sim.multicast_groups == [("/live/sim", group, False)]
        idle.close()
        await asyncio.sleep(0.2)
        assert sim.multicast_groups == []
    finally:
        for client in clients:
            client.close()


@needs_netns
async def test_configured_group_in_describe_and_setup(sim: RtspServer) -> None:
    """A multicast SETUP without a destination, and DESCRIBE of the ``?multicast`` URI, use
    the group the composition root configures for the stream (the Media service's encoder
    configuration), with its per-track ports."""
    asked: list[str] = []

    async def lookup(path: str) -> MulticastTarget | None:
        asked.append(path)
        return MulticastTarget("239.192.99.1", {0: 45000, 1: 45004}, 3)

    sim.multicast_lookup = lookup
    url = f"rtsp://127.0.0.1:{sim.bound_port}/live/sim"
    client = await AsyncRtsp.connect(sim.bound_port)
    try:
        described = await client.request("DESCRIBE", url + "?multicast")
        assert described.status == 200
        description = sdp.SessionDescription.parse(described.body)
        assert str(description.connection) == "IN IP4 239.192.99.1/3"
        assert [m.port for m in description.media] == [45000]
        assert described.headers.get("Content-Base") == url + "/"
        reply = await client.request("SETUP", url + "/trackID=0", Transport="RTP/AVP;multicast")
        (transport,) = parse_transport(reply.headers.get("Transport", ""))
        assert (transport.destination, transport.port, transport.ttl) == (
            "239.192.99.1",
            (45000, 45001),
            3,
        )
        assert asked == ["/live/sim", "/live/sim"]
        # A unicast client of the same connection's kind is refused: one transport a session.
        mixed = await client.request(
            "SETUP",
            url + "/trackID=0",
            Transport="RTP/AVP/TCP;unicast;interleaved=0-1",
            Session=reply.headers.get("Session", "").split(";")[0],
        )
        assert mixed.status == 461
    finally:
        client.close()


def test_tunnel_base64_stream() -> None:
    stream = Base64Stream()
    parts = [base64.b64encode(b"OPTIONS"), base64.encodebytes(b"* RTSP/1.0\r\n\r\n")]
    text = b"".join(parts)  # two encodings, padding in the middle, line breaks
    decoded = b"".join(stream.feed(text[i : i + 3]) for i in range(0, len(text), 3))
    assert decoded == b"OPTIONS* RTSP/1.0\r\n\r\n"
    # Cut between the two padding characters, after whole groups.
    cut = Base64Stream()
    assert cut.feed(b"QUJDQQ=") + cut.feed(b"=") == b"ABCA"
    with pytest.raises(ValueError, match="tunnel POST body is not base64"):
        Base64Stream().feed(b"QUJD*")
    with pytest.raises(ValueError, match="tunnel POST body is not base64"):
        Base64Stream().feed(b"Q===")


def test_rtsp_settings() -> None:
    settings = load_settings(
        environ={"ONVIF_NVR_RTSP_PORT": "9554", "ONVIF_NVR_RTSP_MULTICAST_TTL": "4"}
    )
    assert settings.rtsp_port == 9554 and settings.rtsp.multicast_ttl == 4
    for key, value, message in [
        ("MULTICAST_NETWORK", "10.0.0.0/8", "rtsp.multicast_network"),
        ("MULTICAST_PORT", "40001", "rtsp.multicast_port"),
        ("MULTICAST_TTL", "0", "rtsp.multicast_ttl"),
        ("MULTICAST_INTERFACE", "eth0", "rtsp.multicast_interface"),
        ("SESSION_TIMEOUT_S", "1", "rtsp.session_timeout_s"),
        ("MAX_WRITE_BUFFER_BYTES", "10", "rtsp.max_write_buffer_bytes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(environ={f"ONVIF_NVR_RTSP_{key}": value})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=30),
    st.booleans(),
)
def test_tunnel_base64_stream_any_cut(
    messages: list[bytes], cuts: list[int], line_breaks: bool
) -> None:
    """Messages encoded one by one (with or without line breaks), cut anywhere, decode to
    the same bytes."""
    encode = base64.encodebytes if line_breaks else base64.b64encode
    text = b"".join(encode(m) for m in messages)
    stream, out, at = Base64Stream(), b"", 0
    for size in cuts * (len(text) // sum(cuts) + 1):
        out += stream.feed(text[at : at + size])
        at += size
        if at >= len(text):
            break
    assert out == b"".join(messages)
