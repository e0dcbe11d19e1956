"""WebRTC live view against the running box: an aiortc peer (the browser's part) posts its
offer to the REST API, receives the GStreamer camera's H.264 and decodes it.

Passthrough proof: the client's H.264 decoder is wrapped (``aiortc.rtcrtpreceiver.
get_decoder`` patched for the client — the one seam aiortc has between its depacketizer and
its decoder) so that it keeps every encoded frame it is given, read-only; the bitstream must
carry the camera's own SPS, as the camera's SDP (sprop-parameter-sets) gives it. aiortc's
encoder would have written its own Baseline SPS.

ICE over loopback only: the box offers 127.0.0.1 (``webrtc.host_addresses``), and the
client's aioice, which never gathers loopback, is given 127.0.0.1 the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.g711 import PcmuDecoder
from aiortc.codecs.h264 import H264Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from onvif_nvr.clock import SystemClock
from onvif_nvr.config import ConfigError, WebRtcSettings, load_settings
from onvif_nvr.media.units import AccessUnit, AudioParameters, TimedUnit, VideoParameters
from onvif_nvr.recording.hub import Hub
from onvif_nvr.replay.live import HubFeed
from onvif_nvr.replay.webrtc import BadOffer, Counters, PassthroughTrack, WebRtcSessions
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_api import _token

CAMERA = ("--codec", "h264", "--size", "640x360", "--fps", "25", "--gop", "25", "--audio")
ENV = {
    "ONVIF_NVR_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
    "ONVIF_NVR_WEBRTC_MAX_SESSIONS": "3",
    "ONVIF_NVR_WEBRTC_CONNECT_TIMEOUT_S": "8",
}


class Box:
    def __init__(self, nvr: NvrProcess, token: str, camera_url: str, h265: str) -> None:
        self.nvr, self.camera, self.camera_url, self.h265 = nvr, token, camera_url, h265
        self.bearer = _token(nvr.base, "admin", ADMIN_PASSWORD)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.nvr.base, headers={"Authorization": f"Bearer {self.bearer}"}, timeout=20
        )


def _add_camera(nvr: NvrProcess, bearer: str, url: str, name: str, **extra: Any) -> str:
    with httpx.Client(
        base_url=nvr.base, headers={"Authorization": f"Bearer {bearer}"}, timeout=20
    ) as c:
        r = c.post("/api/v1/cameras", json={"url": url, "name": name, **extra})
        assert r.status_code == 201, r.text
        token = str(r.json()["token"])
        if extra.get("mode") == "NeverConnect":
            return token
        deadline = time.monotonic() + 30
        while c.get(f"/api/v1/cameras/{token}").json()["stats"]["fps"] is None:
            assert time.monotonic() < deadline, f"{name} did not stream"
            time.sleep(0.2)
        return token


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with (
        gstcam.camera(*CAMERA) as url,
        gstcam.camera("--codec", "h265", "--size", "320x240") as h265_url,
    ):
        nvr = NvrProcess(tmp_path_factory.mktemp("webrtc") / "data", ADMIN_PASSWORD, ENV)
        nvr.start()
        try:
            bearer = _token(nvr.base, "admin", ADMIN_PASSWORD)
            token = _add_camera(nvr, bearer, url, "door")
            h265 = _add_camera(nvr, bearer, h265_url, "yard")
            yield Box(nvr, token, url, h265)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    # aioice excludes loopback when it gathers; the tests may use nothing else.
    with mock.patch("aioice.ice.get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"]):
        yield


class Peer:
    """The browser's side: a receive-only video transceiver; the offer is posted once ICE
    gathering is complete (aiortc's ``setLocalDescription`` gathers before it returns)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self.pc.on("track", self.tracks.put_nowait)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str, kind: str = "video") -> MediaStreamTrack:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        while (track := await self.tracks.get()).kind != kind:
            pass
        return track


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[Peer]:
    p = Peer()
    try:
        yield p
    finally:
        await p.pc.close()


class KeepingDecoder(H264Decoder):
    """aiortc's own H.264 decoder, keeping a copy of each encoded frame it decodes."""

    def __init__(self, kept: list[bytes]) -> None:
        super().__init__()
        self.kept = kept

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        self.kept.append(bytes(encoded_frame.data))
        return super().decode(encoded_frame)


def _nals(annexb: bytes) -> list[bytes]:
    parts = (n.rstrip(b"\x00") for n in re.split(b"\x00\x00\x01", annexb))
    return [n for n in parts if n]


def _camera_sps(url: str) -> bytes:
    """The SPS of the camera's own SDP (DESCRIBE to the camera, not to the box)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode())
        data = b""
        while b"sprop-parameter-sets=" not in data or not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    sprop = re.search(rb"sprop-parameter-sets=([A-Za-z0-9+/=]+)", data)
    assert sprop is not None, data
    return base64.b64decode(sprop.group(1))


async def _metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


async def _consumers(http: httpx.AsyncClient, camera: str = "door") -> float:
    """The hub subscriptions of ``camera`` (its recorder's, RTSP's, WebRTC sessions')."""
    text = (await http.get("/metrics")).text
    found = re.search(rf'^nvr_camera_consumers\{{camera="{camera}",[^}}]*\}} (\S+)$', text, re.M)
    assert found is not None, text
    return float(found.group(1))


async def _until_sessions(http: httpx.AsyncClient, count: int) -> None:
    async with asyncio.timeout(30):
        # Another process's state: polled (the box's /metrics is where it shows).
        while await _metric(http, "nvr_webrtc_sessions") != count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def _post(http: httpx.AsyncClient, token: str, sdp: str) -> httpx.Response:
    return await http.post(f"/api/v1/cameras/{token}/webrtc", json={"type": "offer", "sdp": sdp})


# -- the stream ---------------------------------------------------------------------------
async def test_camera_h264_passes_through_and_decodes(box: Box) -> None:
    kept: list[bytes] = []
    with mock.patch("aiortc.rtcrtpreceiver.get_decoder", lambda codec: KeepingDecoder(kept)):
        async with box.http() as http, peer() as p:
            r = await _post(http, box.camera, await p.offer())
            assert r.status_code == 201, r.text
            body = r.json()
            assert set(body) == {"type", "sdp", "session"} and body["type"] == "answer"
            assert "H264/90000" in body["sdp"] and " 127.0.0.1 " in body["sdp"]
            track = await p.answer(body["sdp"])
            async with asyncio.timeout(30):
                first = await track.recv()
                assert (first.width, first.height) == (640, 360)
                last = first
                while last.pts - first.pts < 3 * 90_000:  # frames keep coming: 3 s of them
                    last = await track.recv()
                    assert (last.width, last.height) == (640, 360)
            assert await _metric(http, "nvr_webrtc_sessions") == 1
            assert await _metric(http, "nvr_webrtc_bytes_total") > 0

            camera_sps = _camera_sps(box.camera_url)
            received = [n for frame in kept for n in _nals(frame) if n[0] & 0x1F == 7]
            assert received and all(sps == camera_sps for sps in received)

            r = await http.delete(f"/api/v1/webrtc/{body['session']}")
            assert r.status_code == 204, r.text
            assert await _metric(http, "nvr_webrtc_sessions") == 0
            async with asyncio.timeout(30):  # the box closed: the client's track ends
                with pytest.raises(MediaStreamError):
                    while True:
                        await track.recv()
            r = await http.delete(f"/api/v1/webrtc/{body['session']}")
            assert r.status_code == 404


async def test_closing_the_peer_ends_the_session(box: Box) -> None:
    async with box.http() as http:
        consumers = await _consumers(http)
        async with peer() as p:
            p.pc.addTransceiver("audio", direction="recvonly")
            r = await _post(http, box.camera, await p.offer())
            assert r.status_code == 201, r.text
            answer = r.json()["sdp"]
            assert "a=inactive" in answer[answer.find("m=audio") :]  # AAC: not passed
            track = await p.answer(answer)
            async with asyncio.timeout(30):
                await track.recv()
            assert await _metric(http, "nvr_webrtc_sessions") == 1
            assert await _consumers(http) == consumers + 1  # its hub subscription
        await _until_sessions(http, 0)
        async with asyncio.timeout(10):  # and the subscription is gone with it
            while await _consumers(http) != consumers:  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.05)


async def test_removing_the_camera_ends_its_sessions(box: Box) -> None:
    token = await asyncio.to_thread(_add_camera, box.nvr, box.bearer, box.camera_url, "porch")
    async with box.http() as http, peer() as p:
        r = await _post(http, token, await p.offer())
        assert r.status_code == 201, r.text
        track = await p.answer(r.json()["sdp"])
        async with asyncio.timeout(30):
            await track.recv()
        assert (await http.delete(f"/api/v1/cameras/{token}")).status_code == 204
        await _until_sessions(http, 0)


async def test_a_peer_that_never_connects_is_dropped(box: Box) -> None:
    async with box.http() as http, peer() as p:
        r = await _post(http, box.camera, await p.offer())  # the answer is never applied
        assert r.status_code == 201, r.text
        assert await _metric(http, "nvr_webrtc_sessions") == 1
        await _until_sessions(http, 0)  # webrtc.connect_timeout_s


# -- refusals -----------------------------------------------------------------------------
def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == code, error
    return dict(error)


async def test_bad_offers_are_422(box: Box) -> None:
    async with box.http() as http:
        error = _error(await _post(http, box.camera, "v=0\r\nnonsense\r\n"), 422, "InvalidArgVal")
        assert error["fields"][0]["field"] == "body.sdp"
        r = await http.post(
            f"/api/v1/cameras/{box.camera}/webrtc", json={"type": "answer", "sdp": "v=0"}
        )
        _error(r, 422, "InvalidArgVal")
        async with peer() as p:  # an offer without video
            p.pc.getTransceivers()[0].direction = "inactive"
            p.pc.addTransceiver("audio", direction="recvonly")
            _error(await _post(http, box.camera, await p.offer()), 422, "InvalidArgVal")
        assert await _metric(http, "nvr_webrtc_sessions") == 0


async def test_unknown_camera_no_stream_h265_and_credentials(box: Box) -> None:
    async with box.http() as http, peer() as p:
        offer = await p.offer()
        _error(await _post(http, "nosuchcamera", offer), 404, "UnknownToken")
        idle = await asyncio.to_thread(
            _add_camera,
            box.nvr,
            box.bearer,
            "rtsp://127.0.0.1:9/none",
            "idle",
            mode="NeverConnect",
        )
        _error(await _post(http, idle, offer), 503, "NoLiveStream")
        assert (await http.delete(f"/api/v1/cameras/{idle}")).status_code == 204
        _error(await _post(http, box.h265, offer), 501, "CodecNotSupported")
        async with httpx.AsyncClient(base_url=box.nvr.base, timeout=20) as anonymous:
            r = await anonymous.post(
                f"/api/v1/cameras/{box.camera}/webrtc", json={"type": "offer", "sdp": offer}
            )
            _error(r, 401, "NotAuthorized")
            _error(await anonymous.delete("/api/v1/webrtc/x"), 401, "NotAuthorized")
        assert await _metric(http, "nvr_webrtc_sessions") == 0


async def test_session_limit_is_503(box: Box) -> None:
    async with box.http() as http:
        sessions = []
        for _ in range(3):  # webrtc.max_sessions; sessions count from the answer on
            async with peer() as p:
                r = await _post(http, box.camera, await p.offer())
                assert r.status_code == 201, r.text
                sessions.append(r.json()["session"])
        async with peer() as p:
            _error(await _post(http, box.camera, await p.offer()), 503, "MaxWebRtcSessions")
        for session in sessions:
            assert (await http.delete(f"/api/v1/webrtc/{session}")).status_code == 204
        assert await _metric(http, "nvr_webrtc_sessions") == 0


# -- the track on a real hub (in process) ---------------------------------------------------
SPS = bytes([0x67, 0x42, 0x00, 0x1F, 0xE9, 0x02, 0x80])  # seq_parameter_set_id 0
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])  # pic_parameter_set_id 0
NEW_SPS = bytes([0x67, 0x4D, 0x00, 0x1F, 0xE9, 0x02, 0x80])  # id 0 again, another profile


def _unit(dts_90k: int, keyframe: bool, *nals: bytes) -> TimedUnit:
    slice_nal = bytes([0x65 if keyframe else 0x41, 0x88, dts_90k & 0xFF, 0x10])
    unit = AccessUnit("H264", (*nals, slice_nal), dts_90k, keyframe)
    return TimedUnit(unit, 0, dts_90k, 0)


class TrackOnHub:
    def __init__(self, max_queued_frames: int = 4) -> None:
        self.hub = Hub("cam")
        params = VideoParameters("H264", 640, 360, (SPS, PPS))
        feed = HubFeed(
            lambda: self.hub.subscribe("webrtc", maxsize=3000, lossy=True),
            lambda: (params, None),
        )
        self.ended: list[str] = []
        self.track = PassthroughTrack(
            feed, params.parameter_sets, max_queued_frames, Counters(), self.ended.append
        )


def _starts_with(packet: Any, *nals: bytes) -> bool:
    return bytes(packet).startswith(b"".join(b"\x00\x00\x00\x01" + n for n in nals))


async def test_catch_up_burst_lands_on_the_live_timeline() -> None:
    t = TrackOnHub(max_queued_frames=60)
    for n in range(5):  # the cached GOP: a keyframe without parameter sets, 4 P pictures
        t.hub.publish(_unit(n * 3600, n == 0))
    burst = [await t.track.recv() for _ in range(5)]
    assert [p.pts for p in burst] == [1, 2, 3, 4, 5]  # one tick apart, at once
    assert _starts_with(burst[0], SPS, PPS, bytes([0x65]))  # parameter sets put in front
    assert not any(_starts_with(p, SPS) for p in burst[1:])
    t.hub.publish(_unit(5 * 3600, False))
    t.hub.publish(_unit(6 * 3600, True, NEW_SPS, PPS))
    t.hub.publish(_unit(7 * 3600, True))
    live = [await t.track.recv() for _ in range(3)]
    assert [p.pts for p in live] == [5 + 3600, 5 + 7200, 5 + 10800]  # the camera's pace
    assert _starts_with(live[1], NEW_SPS, PPS)  # in band: passed as it came
    assert _starts_with(live[2], NEW_SPS, PPS)  # and remembered for the next keyframe
    t.track.stop()


async def test_a_gop_longer_than_the_queue_still_starts_at_once() -> None:
    t = TrackOnHub(max_queued_frames=4)
    for n in range(10):
        t.hub.publish(_unit(n * 3600, n == 0))
    assert [(await t.track.recv()).pts for _ in range(10)] == list(range(1, 11))
    assert t.track.counters.dropped == 0
    t.track.stop()


async def test_a_slow_peer_skips_to_the_next_keyframe() -> None:
    t = TrackOnHub(max_queued_frames=4)
    t.hub.publish(_unit(0, True))
    assert (await t.track.recv()).pts == 1
    for n in range(1, 7):  # the peer reads nothing meanwhile: the queue overflows
        t.hub.publish(_unit(n * 3600, False))
    t.hub.publish(_unit(7 * 3600, True))
    packet = await t.track.recv()
    assert packet.pts == 1 + 7 * 3600 and _starts_with(packet, SPS, PPS, bytes([0x65]))
    assert t.track.counters.dropped == 6
    t.track.stop()


async def test_the_track_ends_with_the_stream() -> None:
    t = TrackOnHub()
    t.hub.publish(_unit(0, True))
    await t.track.recv()
    t.hub.end("camera removed")
    with pytest.raises(MediaStreamError):
        await t.track.recv()
    assert t.ended == ["stream ended"]


class KeepingPcmu(PcmuDecoder):
    def __init__(self, kept: list[bytes]) -> None:
        super().__init__()
        self.kept = kept

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        self.kept.append(bytes(encoded_frame.data))
        return super().decode(encoded_frame)


async def test_g711_audio_passes_through() -> None:
    hub = Hub("cam")
    video = VideoParameters("H264", 640, 360, (SPS, PPS))
    audio = AudioParameters("PCMU", 8000, 1)
    feed = HubFeed(lambda: hub.subscribe("webrtc", lossy=True), lambda: (video, audio))
    sessions = WebRtcSessions(lambda token: feed, WebRtcSettings(), SystemClock())
    sent: set[bytes] = set()

    async def camera() -> None:  # 20 ms G.711 frames, in real time
        for n in range(10_000):
            payload = bytes([n % 251]) * 160
            sent.add(payload)
            hub.publish(TimedUnit(AccessUnit("PCMU", (payload,), n * 160, True), 1, n * 1800, 0))
            await asyncio.sleep(0.02)

    kept: list[bytes] = []
    pcmu = mock.patch(
        "aiortc.rtcrtpreceiver.get_decoder",
        lambda codec: KeepingPcmu(kept) if codec.name == "PCMU" else H264Decoder(),
    )
    publisher = asyncio.create_task(camera())
    try:
        with pcmu:
            async with peer() as p:
                p.pc.addTransceiver("audio", direction="recvonly")
                _, answer = await sessions.open("cam", await p.offer())
                assert "PCMU/8000" in answer[answer.find("m=audio") :]
                track = await p.answer(answer, "audio")
                async with asyncio.timeout(30):
                    for _ in range(10):
                        frame = await track.recv()
                        assert frame.sample_rate == 8000
        assert len(kept) >= 10 and set(kept) <= sent  # the camera's bytes, unchanged
    finally:
        publisher.cancel()
        await sessions.close()


async def test_mangled_offers_are_refused_as_bad_offers() -> None:
    """Whatever aiortc's SDP parser or negotiation raises on a mangled offer must come out
    as BadOffer (the API's 422), never as another exception (a 500)."""
    t = TrackOnHub()
    params = VideoParameters("H264", 640, 360, (SPS, PPS))
    feed = HubFeed(lambda: t.hub.subscribe("webrtc", lossy=True), lambda: (params, None))
    sessions = WebRtcSessions(lambda token: feed, WebRtcSettings(), SystemClock())
    async with peer() as p:
        p.pc.addTransceiver("audio", direction="recvonly")
        lines = (await p.offer()).split("\r\n")
    mangle = random.Random(0x5D9)
    refused = 0
    try:
        for _ in range(600):
            mangled = list(lines)
            for _ in range(mangle.randint(1, 4)):
                at = mangle.randrange(len(mangled))
                line = mangled[at]
                match mangle.randint(0, 4):
                    case 0:
                        del mangled[at]
                    case 1:
                        mangled[at] = line[: mangle.randrange(len(line) + 1)]
                    case 2:
                        mangled.insert(at, mangled[mangle.randrange(len(mangled))])
                    case 3 if line:
                        k = mangle.randrange(len(line))
                        mangled[at] = line[:k] + mangle.choice("x0:= /-9") + line[k + 1 :]
                    case _:
                        mangled[at] = line.replace(
                            "recvonly", mangle.choice(("sendonly", "inactive"))
                        )
            try:
                session, _ = await sessions.open("cam", "\r\n".join(mangled))
            except BadOffer:
                refused += 1
            else:
                await sessions.close_session(session)
    finally:
        await sessions.close()
    assert refused > 200


def test_webrtc_settings_are_checked() -> None:
    env = {"ONVIF_NVR_WEBRTC_HOST_ADDRESSES": "127.0.0.1, ::1"}
    assert load_settings(environ=env).webrtc.host_addresses == ("127.0.0.1", "::1")
    for key, value, message in (
        ("HOST_ADDRESSES", "box.local", "is not an IP address"),
        ("STUN_SERVER", "stun.example", "host:port"),
        ("MAX_SESSIONS", "-1", "max_sessions"),
        ("MAX_QUEUED_FRAMES", "1", "max_queued_frames"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(environ={f"ONVIF_NVR_WEBRTC_{key}": value})
