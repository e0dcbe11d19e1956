"""Real Time Streaming test cases (RTSS-*, MEDIA2_RTSS-*) that can be checked at the RTSP
level, against a box recording a GStreamer camera (H.264 640x360 25 fps, GOP 25, AAC).

The box, the camera and this test run in a loopback-only network namespace
(tests/loopns.py) so that multicast never leaves the machine; the multicast cases are skipped
where no namespace can be made. The session timeout is 5 s so that the keep-alive cases
outlive it several times. The stream URIs are the ones the Media/Media2 services' GetStreamUri
return (``rtsp://box:rtsp_port/live/<token>``, ``http://box:http_port/rtsp-tunnel/live/<token>``
for RTP-Unicast/RTSP/HTTP/TCP, ``/live/<token>/jpeg`` for the JPEG profile); here they are
built from the receiver token, as the services build them. Each transport is played once
by FFmpeg and the result checked by every case that plays it.

Cases not here, and why:

* MPEG4 (RTSS-1-1-25, 37-40, 47, 57-59, 1-2-14, 1-2-17): the box serves what cameras send,
  H.264/H.265 (and JPEG re-encoded); no MPEG-4 Part 2.
* IPv6 (RTSS-1-1-54-62, 1-2-16-18, 1-2-22, 2-1-37-54, 3-1-19-27, 3-2-17/19/21, MEDIA2 …IPv6):
  the test network is IPv4 loopback; multicast groups are IPv4 only.
* G.711/G.726 (RTSS-2-1-19-24, 28-33, 2-2-11-14, 3-1-10-15, 3-2-16-19, MEDIA2_RTSS-2-1-1-6,
  5-1-1-6, 5-2-1/2): the box re-serves the camera's audio as it is and the test camera sends
  AAC; G.711 packetization is unit-tested (tests/test_rtp.py), G.726 is not served.
* Media service configuration cases (RTSS-1-1-24/26/46/48 resolutions, 1-1-27-30/49-52,
  1-2-12/23 guaranteed encoder instances, 5-1-* Start/Stop MulticastStreaming of JPEG and
  audio-only profiles): they drive Media operations (conformance/test_media*.py); the RTSP
  side they rely on (StartMulticastStreaming without a session) is in
  tests/test_live_transports.py.
* RTSS-2-2-10 and 3-2-23 (audio in another group than the video): a stream has one group,
  with a port per track; 3-2-22 (different ports) is what 2-2-9 checks.
* RTSS-1-1-53 (JPEG RTP header extension): only needed above 2040 pixels; not sent.
* H.265 (MEDIA2_RTSS-1-1-8-11): in conformance/test_rtss_h265.py, against a box recording an
  H.265 camera.
* Metadata (RTSS-4-1-3, MEDIA2_RTSS-4-*), backchannel (RTSS-6-*, MEDIA2_RTSS-3-*, 6-*),
  HTTPS and WebSocket tunnels (MEDIA2_RTSS-1-1-15-22, 2-1-13-20): not offered.
"""

from __future__ import annotations

import base64
import dataclasses
import socket
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import av
import pytest

from onvif_nvr.rtsp.headers import parse_transport
from onvif_nvr.rtsp.message import Headers, Request, Response
from onvif_nvr.rtsp.rtp import SenderReport, parse_rtcp
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.mediautil import NO_NETNS, media_client
from tests.test_live import CAMERA, Box, RawViewer
from tests.test_live_transports import (
    SESSION_TIMEOUT_S,
    _listener,
    _namespace,
    _wait_playable,
    needs_netns,
    start_box,
)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with _namespace("rtss"), gstcam.camera(*CAMERA) as camera_url:
        box = start_box(tmp_path_factory.mktemp("rtss"), camera_url, name="rtss")
        try:
            _wait_playable(box)
            yield box
        finally:
            box.nvr.stop()
        assert not box.nvr.blocking_calls(), box.nvr.blocking_calls()


# -- one play per transport ------------------------------------------------------------------


@dataclasses.dataclass
class Played:
    video: str
    size: tuple[int, int]
    video_frames: int
    audio: str | None
    audio_frames: int


_PLAYS = [
    (transport, variant)
    for transport in ("udp", "tcp", "http", "udp_multicast")
    for variant in ("", "/jpeg")
    if transport != "udp_multicast" or NO_NETNS is None
]


@pytest.fixture(scope="module")
def plays(box: Box) -> Iterator[dict[tuple[str, str], Future[Played]]]:
    """Every play at once (each takes seconds, mostly waiting for frames); the worker
    threads start in this thread's network namespace."""
    with ThreadPoolExecutor(len(_PLAYS)) as pool:
        yield {key: pool.submit(_play, box, *key) for key in _PLAYS}


def _play(box: Box, transport: str, variant: str) -> Played:
    """FFmpeg decodes 25 video frames (and the audio meanwhile) of the live stream."""
    if transport == "http":
        port, prefix = box.nvr.port, "/rtsp-tunnel"
    else:
        port, prefix = box.nvr.rtsp_port, ""
    url = f"rtsp://admin:{ADMIN_PASSWORD}@127.0.0.1:{port}{prefix}/live/{box.receiver}{variant}"
    options = {"rtsp_transport": transport, "timeout": "10000000"}
    with av.open(url, options=options, timeout=15) as container:
        video = container.streams.video[0]
        streams = [video, *container.streams.audio[:1]]
        sizes, counts = set(), {"video": 0, "audio": 0}
        want = 3 if variant else 25  # the JPEG profile runs at 5 frames a second
        for packet in container.demux(streams):
            for frame in packet.decode():
                counts[packet.stream.type] += 1
                if packet.stream.type == "video":
                    sizes.add((frame.width, frame.height))  # type: ignore[union-attr]
            if counts["video"] >= want:
                break
        audio = container.streams.audio[0].codec_context.name if streams[1:] else None
        return Played(
            video.codec_context.name, sizes.pop(), counts["video"], audio, counts["audio"]
        )


def play(plays: dict[tuple[str, str], Future[Played]], transport: str, variant: str = "") -> Played:
    return plays[(transport, variant)].result(timeout=60)


def check_h264(played: Played) -> None:
    assert (played.video, played.size) == ("h264", (640, 360))
    assert played.video_frames >= 25


def check_aac(played: Played) -> None:
    assert played.audio == "aac" and played.audio_frames > 10


def check_jpeg(played: Played) -> None:
    assert (played.video, played.size) == ("mjpeg", (640, 360))


def test_RTSS_1_1_34_jpeg_udp(plays):
    check_jpeg(play(plays, "udp", "/jpeg"))


def test_RTSS_1_1_35_jpeg_http(plays):
    check_jpeg(play(plays, "http", "/jpeg"))


def test_RTSS_1_1_36_jpeg_tcp(plays):
    check_jpeg(play(plays, "tcp", "/jpeg"))


@needs_netns
def test_RTSS_1_2_13_jpeg_multicast(plays):
    check_jpeg(play(plays, "udp_multicast", "/jpeg"))


def test_RTSS_1_1_41_h264_udp(plays):
    check_h264(play(plays, "udp"))


def test_RTSS_1_1_42_h264_http(plays):
    check_h264(play(plays, "http"))


def test_RTSS_1_1_43_h264_tcp(plays):
    check_h264(play(plays, "tcp"))


@needs_netns
def test_RTSS_1_2_15_h264_multicast(plays):
    check_h264(play(plays, "udp_multicast"))


def test_RTSS_2_1_25_aac_udp(plays):
    check_aac(play(plays, "udp"))


def test_RTSS_2_1_26_aac_http(plays):
    check_aac(play(plays, "http"))


def test_RTSS_2_1_27_aac_tcp(plays):
    check_aac(play(plays, "tcp"))


@needs_netns
def test_RTSS_2_2_15_aac_multicast(plays):
    check_aac(play(plays, "udp_multicast"))


@pytest.mark.parametrize(
    "case,transport",
    [
        ("RTSS-3-1-16", "udp"),
        ("RTSS-3-1-17", "http"),
        ("RTSS-3-1-18", "tcp"),
        ("MEDIA2_RTSS-5-1-7", "udp"),
        ("MEDIA2_RTSS-5-1-8", "http"),
        ("MEDIA2_RTSS-5-1-9", "tcp"),
    ],
)
def test_RTSS_3_1_16_17_18_video_and_aac(plays, case, transport):
    played = play(plays, transport)
    check_h264(played)
    check_aac(played)


@needs_netns
@pytest.mark.parametrize("case", ["RTSS-3-2-20", "MEDIA2_RTSS-5-2-3"])
def test_RTSS_3_2_20_video_and_aac_multicast(plays, case):
    played = play(plays, "udp_multicast")
    check_h264(played)
    check_aac(played)


@pytest.mark.parametrize(
    "case,transport",
    [
        ("MEDIA2_RTSS-1-1-1", "udp"),
        ("MEDIA2_RTSS-1-1-2", "http"),
        ("MEDIA2_RTSS-1-1-3", "tcp"),
        ("MEDIA2_RTSS-2-1-7", "udp"),
        ("MEDIA2_RTSS-2-1-8", "http"),
        ("MEDIA2_RTSS-2-1-9", "tcp"),
    ],
)
def test_MEDIA2_RTSS_1_1_1_2_3_and_2_1_7_8_9(plays, case, transport):
    played = play(plays, transport)
    if case.startswith("MEDIA2_RTSS-2"):
        check_aac(played)
    else:
        check_h264(played)


@needs_netns
@pytest.mark.parametrize("case", ["MEDIA2_RTSS-1-2-1", "MEDIA2_RTSS-2-2-3"])
def test_MEDIA2_RTSS_1_2_1_and_2_2_3_multicast(plays, case):
    played = play(plays, "udp_multicast")
    if case.endswith("2-2-3"):
        check_aac(played)
    else:
        check_h264(played)


# -- RTSP control and keep-alive ---------------------------------------------------------------


def _setup(viewer: RawViewer, url: str, **transport: str) -> str:
    reply = viewer.request("SETUP", f"{url}/trackID=0", **transport)
    assert reply.status == 200, reply
    return reply.headers.get("Session", "").split(";")[0]


def test_RTSS_1_1_31_media_control_rtsp_tcp(box):
    url = box.url(user="")
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        options = viewer.request("OPTIONS", url)
        assert options.status == 200
        public = {m.strip() for m in options.headers.get("Public", "").split(",")}
        assert {"DESCRIBE", "SETUP", "PLAY", "TEARDOWN"} <= public
        described = viewer.request("DESCRIBE", url, Accept="application/sdp")
        assert described.status == 200
        assert described.headers.get("Content-Type") == "application/sdp"
        assert b"m=video" in described.body and b"H264/90000" in described.body
        session = _setup(viewer, url, Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        play = viewer.request("PLAY", url, Session=session, Range="npt=0-")
        assert play.status == 200 and play.headers.get("CSeq") == str(viewer.cseq)
        assert "rtptime=" in play.headers.get("RTP-Info", "")
        viewer.read(1.0)
        assert [c for c, _ in viewer.frames if c == 0]
        assert viewer.request("TEARDOWN", url, Session=session).status == 200
        # The session is gone.
        assert viewer.request("PLAY", url, Session=session).status == 454
    finally:
        viewer.close()


def _keepalive(box: Box, method: str) -> None:
    """Play over TCP, send ``method`` every timeout/2 for 1.3 timeouts: the stream goes on
    (a silent session is closed after one timeout: tests/test_live_transports.py)."""
    url = box.url(user="")
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        session = _setup(viewer, url, Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        reply = viewer.request("PLAY", url, Session=session)
        assert reply.status == 200
        assert f"timeout={SESSION_TIMEOUT_S}" in reply.headers.get("Session", "")
        end = time.monotonic() + SESSION_TIMEOUT_S * 1.3
        while time.monotonic() < end:
            viewer.read(SESSION_TIMEOUT_S / 2)
            assert viewer.request(method, url, Session=session).status == 200
        viewer.frames.clear()
        viewer.read(0.5)
        assert [c for c, _ in viewer.frames if c == 0], "the stream stopped"
    finally:
        viewer.close()


def test_RTSS_1_1_32_keepalive_set_parameter(box):
    _keepalive(box, "SET_PARAMETER")


def test_RTSS_1_1_33_keepalive_options(box):
    _keepalive(box, "OPTIONS")


# -- synchronization point ---------------------------------------------------------------------


def _has_idr(payload: bytes) -> bool:
    """An RTP H.264 payload (RFC 6184) holding an IDR slice or its first FU-A fragment."""
    kind = payload[0] & 0x1F
    if kind == 5:
        return True
    if kind == 28:  # FU-A: start bit and the original type
        return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
    if kind == 24:  # STAP-A: 16-bit sizes
        offset = 1
        while offset + 2 < len(payload):
            size = struct.unpack_from("!H", payload, offset)[0]
            if payload[offset + 2] & 0x1F == 5:
                return True
            offset += 2 + size
    return False


@pytest.mark.parametrize("case", ["RTSS-1-1-44", "MEDIA2_RTSS-1-1-4"])
def test_RTSS_1_1_44_set_synchronization_point_h264(box, case):
    """SetSynchronizationPoint (Media service): an IDR follows within the camera's GOP (1 s
    here; the box cannot make one sooner, ADR 0006), and a sender report at once."""
    trt = media_client(box.nvr)
    profile = next(
        p
        for p in trt.GetProfiles()
        if p.VideoEncoderConfiguration is not None
        and p.VideoEncoderConfiguration.Encoding == "H264"
    )
    keyframe_after, report_after = synchronization_point_effect(
        box, lambda: trt.SetSynchronizationPoint(profile.token), _has_idr
    )
    assert keyframe_after is not None and keyframe_after < 2.5
    assert report_after is not None and report_after < 1


def synchronization_point_effect(
    box: Box, ask: Callable[[], object], is_keyframe: Callable[[bytes], bool]
) -> tuple[float | None, float | None]:
    """Seconds from asking for a synchronization point (``ask``) to the first keyframe
    packet (``is_keyframe`` of its RTP payload) and to the first video sender report, as a
    TCP viewer of the stream sees them (None: not within 3 s)."""
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        viewer.play(box.url(user=""), tracks=1)
        viewer.read(0.3)
        viewer.frames.clear()
        ask()
        asked = time.monotonic()
        keyframe_after = report_after = None
        while time.monotonic() - asked < 3 and (keyframe_after is None or report_after is None):
            viewer.read(0.05)
            for channel, packet in viewer.frames:
                if channel == 0 and keyframe_after is None and is_keyframe(packet[12:]):
                    keyframe_after = time.monotonic() - asked
                if (
                    channel == 1
                    and report_after is None
                    and any(isinstance(r, SenderReport) for r in parse_rtcp(packet))
                ):
                    report_after = time.monotonic() - asked
            viewer.frames.clear()
    finally:
        viewer.close()
    return keyframe_after, report_after


# -- RTP-Unicast/RTSP/HTTP/TCP with line breaks in the base64 ------------------------------------


class TunnelViewer(RawViewer):
    """RTSP inside an HTTP tunnel: requests base64-encoded with line breaks every 76
    characters on a POST, answers and media read from the GET."""

    def __init__(self, box: Box) -> None:
        super().__init__("127.0.0.1", box.nvr.port)
        self.path = f"/rtsp-tunnel/live/{box.receiver}"
        self.sock.sendall(
            f"GET {self.path} HTTP/1.0\r\nx-sessioncookie: rtss45\r\n"
            "Accept: application/x-rtsp-tunnelled\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.0 200")
        self.post = socket.create_connection(("127.0.0.1", box.nvr.port), timeout=10)
        self.post.sendall(
            f"POST {self.path} HTTP/1.0\r\nx-sessioncookie: rtss45\r\n"
            "Content-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\n".encode()
        )

    def request(self, method: str, uri: str, **fields: str) -> Response:
        for _ in range(2):
            self.cseq += 1
            headers = Headers(
                {"CSeq": str(self.cseq), **{k.replace("_", "-"): v for k, v in fields.items()}}
            )
            authorization = self.auth.authorization(method, uri)
            if authorization:
                headers.add("Authorization", authorization)
            self.post.sendall(base64.encodebytes(bytes(Request(method, uri, headers))))
            response = self._response()
            if response.status != 401 or not self.auth.challenge(
                response.headers.get_all("WWW-Authenticate")
            ):
                return response
        return response

    def close(self) -> None:
        self.post.close()
        super().close()


def test_RTSS_1_1_45_http_tunnel_line_breaks(box):
    viewer = TunnelViewer(box)
    try:
        url = f"rtsp://127.0.0.1:{box.nvr.port}{viewer.path}"
        first = viewer.play(url)
        viewer.read(1.5)
    finally:
        viewer.close()
    video = [p for c, p in viewer.frames if c == 0]
    assert len(video) > 20 and struct.unpack_from("!H", video[0], 2)[0] == first[0]
    assert [p for c, p in viewer.frames if c == 2]  # the audio track too


# -- multicast address and port in SETUP -------------------------------------------------------


@needs_netns
def test_RTSS_1_2_21_multicast_address_and_port_in_setup(box):
    """The client names group, port and TTL in SETUP: the answer repeats them and the
    stream (RTP, and RTCP sender reports one port up) arrives there."""
    group, port = "239.1.2.3", 51000
    url = box.url(user="")
    rtp, rtcp = _listener(group, port), _listener(group, port + 1)
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        reply = viewer.request(
            "SETUP",
            f"{url}/trackID=0",
            Transport=f"RTP/AVP;multicast;destination={group};port={port}-{port + 1};ttl=1",
        )
        assert reply.status == 200
        (transport,) = parse_transport(reply.headers.get("Transport", ""))
        assert (transport.delivery, transport.destination) == ("multicast", group)
        assert (transport.port, transport.ttl) == ((port, port + 1), 1)
        session = reply.headers.get("Session", "").split(";")[0]
        assert viewer.request("PLAY", url, Session=session).status == 200
        rtp.setblocking(True)
        rtp.settimeout(5)
        packets = [rtp.recv(65536) for _ in range(20)]
        assert all(p[0] >> 6 == 2 and p[1] & 0x7F == 96 for p in packets)
        assert transport.ssrc in {struct.unpack_from("!I", p, 8)[0] for p in packets}
        rtcp.setblocking(True)
        rtcp.settimeout(6)
        assert any(isinstance(r, SenderReport) for r in parse_rtcp(rtcp.recv(65536)))
        assert viewer.request("TEARDOWN", url, Session=session).status == 200
    finally:
        viewer.close()
        rtp.close()
        rtcp.close()


# -- multicast settings of the encoder configurations (Media service + RTSP) ---------------------


def _set_multicast(trt, kind: str, token: str, address: str, port: int) -> None:
    get, set_ = f"Get{kind}EncoderConfiguration", f"Set{kind}EncoderConfiguration"
    config = getattr(trt, get)(token)
    config.Multicast.Address.Type = "IPv4"
    config.Multicast.Address.IPv4Address = address
    config.Multicast.Port = port
    config.Multicast.TTL = 1
    getattr(trt, set_)(Configuration=config, ForcePersistence=True)


def _multicast_setup(box: Box, track: int) -> tuple[str | None, tuple[int, ...] | None]:
    """SETUP of ``track`` with a plain multicast Transport and PLAY: where the box says it
    goes, once its RTP packets arrived there."""
    url = box.url(user="")
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        reply = viewer.request("SETUP", f"{url}/trackID={track}", Transport="RTP/AVP;multicast")
        assert reply.status == 200
        (transport,) = parse_transport(reply.headers.get("Transport", ""))
        assert transport.destination is not None and transport.port is not None
        listener = _listener(transport.destination, transport.port[0])
        try:
            session = reply.headers.get("Session", "").split(";")[0]
            assert viewer.request("PLAY", url, Session=session).status == 200
            listener.setblocking(True)
            listener.settimeout(5)
            packets = [listener.recv(65536) for _ in range(5)]
            assert {struct.unpack_from("!I", p, 8)[0] for p in packets} == {transport.ssrc}
        finally:
            listener.close()
        return transport.destination, transport.port
    finally:
        viewer.close()


@needs_netns
@pytest.mark.parametrize(
    "case,kind,address,port",
    [
        ("RTSS-1-2-19", "Video", "239.192.50.1", 52000),
        ("RTSS-1-2-20", "Video", "239.192.51.7", 52000),
        ("RTSS-2-2-9", "Audio", "239.192.51.7", 52010),
    ],
)
def test_RTSS_1_2_19_20_and_2_2_9_encoder_multicast_settings(box, case, kind, address, port):
    """The group and port set in an encoder configuration are where a multicast SETUP of
    that stream's track goes (the video's group carries the audio when they share it)."""
    trt = media_client(box.nvr)
    profile = next(
        p
        for p in trt.GetProfiles()
        if p.VideoEncoderConfiguration is not None
        and p.VideoEncoderConfiguration.Encoding == "H264"
        and p.AudioEncoderConfiguration is not None
    )
    video, audio = profile.VideoEncoderConfiguration, profile.AudioEncoderConfiguration
    if kind == "Video":
        _set_multicast(trt, "Video", video.token, address, port)
        assert _multicast_setup(box, 0) == (address, (port, port + 1))
    else:
        _set_multicast(trt, "Video", video.token, address, 52000)
        _set_multicast(trt, "Audio", audio.token, address, port)
        assert _multicast_setup(box, 1) == (address, (port, port + 1))
