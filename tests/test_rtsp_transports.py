"""The native RTSP client's other transports against GStreamer's RTSP server: RTP over UDP
(reordering, receiver reports, foreign datagrams, the fallback to TCP when UDP is blocked)
and RTSP over HTTP (tunnel, RTSP- and HTTP-level authentication). Real peers over loopback;
the misbehaving network is a relay in the test process between the camera and the client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.rtsp import client as rtsp_client
from onvif_nvr.rtsp import tunnel, udp
from onvif_nvr.rtsp.client import (
    RtspAuthError,
    RtspSource,
    RtspUdpError,
    SourceInfo,
    _split_userinfo,
)
from onvif_nvr.rtsp.rtp import (
    ReceiverReport,
    RtpPacket,
    SourceDescription,
    parse_rtcp,
)
from tests import gstcam

CAMERA = ("--size", "320x240", "--fps", "25", "--gop", "10", "--audio")


async def _until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s"
        await asyncio.sleep(0.05)


def _enough(units: list[TimedUnit]) -> bool:
    """What ``_check_stream`` needs, with a keyframe interval to spare."""
    video = sum(1 for u in units if u.track == 0)
    return video >= 72 and len(units) - video >= 64


async def _ingest(
    url: str,
    seconds: float,
    *,
    until: Callable[[list[TimedUnit]], bool] | None = None,
    **kwargs: Any,
) -> tuple[RtspSource, SourceInfo, list[TimedUnit]]:
    """Ingest for ``seconds``, or with ``until`` until it holds (at most ``seconds``)."""
    units: list[TimedUnit] = []
    source = RtspSource(url, clock=SystemClock(), on_units=units.extend, **kwargs)
    task = asyncio.ensure_future(source.run())
    if until is None:
        await asyncio.sleep(seconds)
    else:
        await _until(lambda: until(units) or task.done(), seconds)
    assert not task.done(), task.exception()
    source.stop()
    started = time.monotonic()
    info = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2, "stop() ends run() promptly"
    return source, info, units


def _check_stream(info: SourceInfo, units: list[TimedUnit], *, audio: bool = True) -> None:
    video = [u for u in units if u.track == 0]
    assert info.video is not None and (info.video.width, info.video.height) == (320, 240)
    assert len(video) >= 60
    keys = [i for i, u in enumerate(video) if u.unit.keyframe]
    assert len(keys) >= 4 and all(b - a == 10 for a, b in zip(keys[1:], keys[2:], strict=False))
    dts = [u.dts_90k for u in video]
    assert {b - a for a, b in zip(dts, dts[1:], strict=False)} == {3600}
    walls = [u.wall_ns for u in video]
    assert walls == sorted(walls) and abs(walls[-1] - time.time_ns()) < 2e9
    if audio:
        sound = [u for u in units if u.track == 1]
        assert info.audio is not None and info.audio.codec == "AAC"
        assert len(sound) >= 60 and all(u.unit.payloads[0] for u in sound)
        sound_dts = [u.dts_90k for u in sound]
        assert sound_dts == sorted(sound_dts)
        steps = {b - a for a, b in zip(sound_dts, sound_dts[1:], strict=False)}
        assert max(steps) - min(steps) <= 1  # one AAC frame each (rounded to 90 kHz): no hole


# -- UDP ------------------------------------------------------------------------------------


async def test_udp_ingests_video_and_audio_without_loss():
    with gstcam.camera("--codec", "h264", *CAMERA) as url:
        source, info, units = await _ingest(url, 20.0, transport="udp", until=_enough)
    assert source.transport == "udp"
    _check_stream(info, units)
    assert source.lost == 0 and source.dropped == 0 and source.foreign_datagrams == 0
    assert source.units == len(units) and source.packets >= len(units)


async def test_udp_ingests_h265():
    with gstcam.camera("--codec", "h265", *CAMERA) as url:
        source, info, units = await _ingest(url, 20.0, transport="udp", until=_enough)
    assert info.video is not None and info.video.codec == "H265"
    _check_stream(info, units)
    assert source.lost == 0 and source.dropped == 0


async def test_udp_drops_datagrams_from_other_hosts():
    with gstcam.camera("--codec", "h264", *CAMERA) as url:
        units: list[TimedUnit] = []
        source = RtspSource(url, transport="udp", clock=SystemClock(), on_units=units.extend)
        task = asyncio.ensure_future(source.run())
        await asyncio.sleep(1.5)
        endpoint = source._tracks[0].rtp_endpoint
        assert endpoint is not None
        port = endpoint.get_extra_info("sockname")[1]
        before = source.packets
        forged = bytes(RtpPacket(payload_type=96, sequence_number=1, timestamp=0, ssrc=1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            intruder.bind(("127.0.0.2", 0))
            for _ in range(5):
                intruder.sendto(forged + b"\x65junk", ("127.0.0.1", port))
                intruder.sendto(b"junk", ("127.0.0.1", port + 1))
        await asyncio.sleep(1.5)
        source.stop()
        info = await asyncio.wait_for(task, 5)
    assert source.foreign_datagrams == 10 and source.dropped == 10
    assert source.packets > before and source.lost == 0
    _check_stream(info, units)


class _Relay:
    """An RTSP proxy that routes each UDP stream through itself: it rewrites SETUP's
    client_port (towards the camera) and server_port (towards the client) to its own
    socket pairs, then forwards datagrams both ways: ``swap_every`` N-th RTP packet of the
    camera is sent after its successor, every ``drop_every`` N-th is dropped, ``block`` drops everything the camera sends over
    UDP, and what the client sends to the RTCP port is kept in ``client_rtcp``."""

    def __init__(
        self, upstream_port: int, *, swap_every: int = 0, drop_every: int = 0, block: bool = False
    ) -> None:
        self.upstream_port = upstream_port
        self.swap_every = swap_every
        self.drop_every = drop_every
        self.dropped = 0
        self.block = block
        self.client_rtcp: list[bytes] = []
        self.client_rtp: list[bytes] = []
        self.swapped = 0
        self.camera_rtp = 0
        self.ssrcs: set[int] = set()
        self._endpoints: list[asyncio.DatagramTransport] = []
        self._pending: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.close()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0.05)  # the pumps see the ends

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(await (self._request(data) if up else self._reply(data)))
            dst.close()

        self._writers += [writer, up_writer]
        with contextlib.suppress(asyncio.CancelledError):  # the loop ends with the test
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    async def _request(self, data: bytes) -> bytes:
        match = re.search(rb"client_port=(\d+)-(\d+)", data)
        if match is None:
            return data
        loop = asyncio.get_running_loop()
        leg: dict[str, Any] = {"client": (int(match[1]), int(match[2]))}
        for i, name in enumerate(("rtp", "rtcp")):
            endpoint, _ = await loop.create_datagram_endpoint(
                lambda i=i: _Leg(self, leg, i), local_addr=("127.0.0.1", 0)
            )
            leg[name] = endpoint
            self._endpoints.append(endpoint)
        self._pending.append(leg)
        ports = f"client_port={_port(leg['rtp'])}-{_port(leg['rtcp'])}".encode()
        return data[: match.start()] + ports + data[match.end() :]

    async def _reply(self, data: bytes) -> bytes:
        match = re.search(rb"server_port=(\d+)-(\d+)", data)
        if match is None or not self._pending:
            return data
        leg = self._pending.pop(0)
        leg["server"] = (int(match[1]), int(match[2]))
        ports = f"server_port={_port(leg['rtp'])}-{_port(leg['rtcp'])}".encode()
        return data[: match.start()] + ports + data[match.end() :]


def _port(endpoint: asyncio.DatagramTransport) -> int:
    return int(endpoint.get_extra_info("sockname")[1])


class _Leg(asyncio.DatagramProtocol):
    def __init__(self, relay: _Relay, leg: dict[str, Any], index: int) -> None:
        self.relay, self.leg, self.index = relay, leg, index
        self.held: bytes | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        relay, leg = self.relay, self.leg
        endpoint = leg["rtp" if self.index == 0 else "rtcp"]
        if addr[1] == leg["client"][self.index]:  # from the client
            if "server" in leg:
                (relay.client_rtcp if self.index else relay.client_rtp).append(data)
                endpoint.sendto(data, ("127.0.0.1", leg["server"][self.index]))
            return
        if relay.block:
            return
        to_client = ("127.0.0.1", leg["client"][self.index])
        if self.index == 1:
            endpoint.sendto(data, to_client)
            return
        relay.camera_rtp += 1
        relay.ssrcs.add(int.from_bytes(data[8:12], "big"))
        if relay.drop_every and relay.camera_rtp % relay.drop_every == 0:
            relay.dropped += 1
            return
        if self.held is not None:
            endpoint.sendto(data, to_client)
            endpoint.sendto(self.held, to_client)
            self.held = None
            relay.swapped += 1
        elif relay.swap_every and relay.camera_rtp % relay.swap_every == 0:
            self.held = data
        else:
            endpoint.sendto(data, to_client)


@contextlib.asynccontextmanager
async def _relayed(url: str, **kwargs: Any) -> AsyncIterator[tuple[_Relay, str]]:
    upstream = int(url.split(":")[2].split("/")[0])
    relay = _Relay(upstream, **kwargs)
    port = await relay.start()
    try:
        yield relay, f"rtsp://127.0.0.1:{port}/live"
    finally:
        await relay.close()


async def test_udp_puts_reordered_packets_back_in_order_and_reports(monkeypatch):
    monkeypatch.setattr(rtsp_client, "RECEIVER_REPORT_S", 1.0)
    with gstcam.camera("--codec", "h264", *CAMERA) as camera_url:
        async with _relayed(camera_url, swap_every=7) as (relay, url):
            source, info, units = await _ingest(url, 4.0, transport="udp")
    assert relay.swapped >= 50
    _check_stream(info, units)
    video = source._tracks[0]
    # Every swapped packet was held back and released in order: nothing lost or late.
    assert source.lost == 0 and source.dropped == 0
    assert video.sequence.reordered == 0 and video.reorder is not None
    assert video.reorder.lost == 0 and video.reorder.late == 0
    # Punch packets: an empty RTP packet per track from the RTP port.
    assert len(relay.client_rtp) >= 2 and all(len(p) == 12 for p in relay.client_rtp)
    reports = []
    for datagram in relay.client_rtcp:
        packets = parse_rtcp(datagram)  # well-formed compound packets, or this raises
        assert isinstance(packets[0], ReceiverReport) and isinstance(packets[1], SourceDescription)
        assert packets[1].cname(packets[0].ssrc) == b"onvif-nvr"
        reports += [b for b in packets[0].reports]
    # Punches are empty RRs; the periodic ones name the camera's streams.
    assert len(reports) >= 4 and {r.ssrc for r in reports} <= relay.ssrcs
    assert len({r.ssrc for r in reports}) == 2
    assert all(r.packets_lost == 0 and r.fraction_lost == 0 for r in reports)
    assert any(r.lsr != 0 for r in reports)  # the camera's sender reports came through


async def test_udp_skips_a_gap_after_a_bounded_wait():
    """Packets that never come (the relay drops every 40th) cost a bounded wait: the gap is
    skipped and counted as lost, the stream goes on, in order."""
    with gstcam.camera("--codec", "h264", *CAMERA) as camera_url:
        async with _relayed(camera_url, drop_every=40) as (relay, url):
            units: list[TimedUnit] = []
            source = RtspSource(url, transport="udp", clock=SystemClock(), on_units=units.extend)
            task = asyncio.ensure_future(source.run())
            await _until(
                lambda: (
                    relay.dropped >= 5 and sum(u.track == 0 for u in units) >= 55 or task.done()
                ),
                20,
            )
            assert not task.done(), task.exception()
            # No new holes: the last one is skipped within the bounded wait as well.
            relay.drop_every = 0
            # All streams: the audio's losses are gaps too.
            await _until(lambda: source.lost == relay.dropped, 10)
            source.stop()
            await asyncio.wait_for(task, 5)
    assert relay.dropped >= 5 and source.lost == relay.dropped
    video = [u for u in units if u.track == 0]
    assert len(video) >= 50
    dts = [u.dts_90k for u in video]
    assert dts == sorted(dts)
    assert time.time_ns() - video[-1].wall_ns < 2e9  # no stall on the gaps


async def test_udp_blocked_falls_back_to_tcp(caplog):
    caplog.set_level(logging.INFO)
    with gstcam.camera("--codec", "h264", *CAMERA) as camera_url:
        async with _relayed(camera_url, block=True) as (relay, url):
            source, info, units = await _ingest(url, 5.0, transport="udp", stall_timeout_s=1.5)
    assert source.transport == "tcp"
    assert "no RTP over UDP in 1.5 s" in caplog.text
    assert "falling back to RTP over TCP" in caplog.text
    assert relay.camera_rtp == 0
    video = [u for u in units if u.track == 0]
    assert len(video) >= 40 and info.video is not None


async def test_udp_blocked_without_fallback_fails_clearly():
    with gstcam.camera("--codec", "h264", *CAMERA) as camera_url:
        async with _relayed(camera_url, block=True) as (_, url):
            source = RtspSource(
                url,
                transport="udp",
                clock=SystemClock(),
                on_units=lambda _: None,
                stall_timeout_s=1.0,
                udp_fallback=False,
            )
            started = time.monotonic()
            with pytest.raises(RtspUdpError, match=r"no RTP over UDP in 1 s .*firewall or NAT"):
                await asyncio.wait_for(source.run(), 10)
            assert time.monotonic() - started < 4


async def test_camera_refusing_udp_falls_back_to_tcp_at_once(caplog):
    caplog.set_level(logging.INFO)
    with gstcam.camera("--codec", "h264", *CAMERA, "--protocols", "tcp") as url:
        source, info, units = await _ingest(url, 2.5, transport="udp")
    assert source.transport == "tcp"
    assert "camera refused RTP over UDP (461); using RTP over TCP" in caplog.text
    assert len([u for u in units if u.track == 0]) >= 40


# -- RTSP over HTTP -----------------------------------------------------------------------


async def test_http_tunnel_ingests_video_and_audio():
    with gstcam.camera("--codec", "h264", *CAMERA) as url:
        source, info, units = await _ingest(url, 20.0, transport="http", until=_enough)
    assert source.transport == "http"
    _check_stream(info, units)
    assert source.lost == 0 and source.dropped == 0


async def test_http_tunnel_accepts_http_urls():
    with gstcam.camera("--codec", "h264", *CAMERA) as url:
        source, info, units = await _ingest(
            url.replace("rtsp://", "http://"), 2.0, transport="http"
        )
    assert info.video is not None and len(units) > 20


async def test_credentials_are_never_logged(caplog):
    """RTSP Digest over UDP and through the tunnel; the password shows in no log line."""
    caplog.set_level(logging.DEBUG)
    with gstcam.camera("--codec", "h264", *CAMERA, "--user", "u", "--password", "s3cret") as url:
        good = url.replace("rtsp://", "rtsp://u:s3cret@")
        for mode in ("udp", "http"):
            _, info, units = await _ingest(good, 2.0, transport=mode)
            assert info.video is not None and units
            source = RtspSource(
                good.replace("s3cret", "wr0ng"), transport=mode, clock=SystemClock(), on_units=print
            )
            with pytest.raises(RtspAuthError, match="refused the credentials") as caught:
                await asyncio.wait_for(source.run(), 10)
            assert "wr0ng" not in str(caught.value)
    assert caplog.records
    assert (
        "s3cret" not in caplog.text and "wr0ng" not in caplog.text and "u:s3cret" not in caplog.text
    )


class _HttpGate:
    """An HTTP front that wants Basic credentials on the tunnel's GET and POST, then passes
    the connection through to the camera (as a camera's web server in front of its RTSP)."""

    def __init__(self, upstream_port: int, user: str, password: str) -> None:
        self.upstream_port = upstream_port
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.challenged: list[str] = []
        self.passed: list[str] = []
        self.cookies: set[str] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        parsed = tunnel.parse_response_head(b"HTTP/1.0 200 X\r\n" + head.split(b"\r\n", 1)[1])
        assert parsed is not None
        method = head.split(b" ", 1)[0].decode()
        self.cookies.add(parsed[2].get("x-sessioncookie", ""))
        if parsed[2].get("Authorization") != self.expected:
            self.challenged.append(method)
            writer.write(
                b'HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm="cam"\r\n'
                b"Content-Length: 0\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        self.passed.append(method)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(head)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the loop ends with the test
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_http_tunnel_answers_an_http_level_challenge(caplog):
    caplog.set_level(logging.DEBUG)
    with gstcam.camera("--codec", "h264", *CAMERA) as camera_url:
        gate = _HttpGate(int(camera_url.split(":")[2].split("/")[0]), "admin", "pa ss")
        server = await asyncio.start_server(gate.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            url = f"rtsp://admin:pa%20ss@127.0.0.1:{port}/live"
            source, info, units = await _ingest(url, 2.5, transport="http")
            assert info.video is not None and len(units) > 30
            assert gate.challenged == ["GET"] and gate.passed == ["GET", "POST"]
            assert len(gate.cookies) == 1
            anonymous = RtspSource(
                f"rtsp://127.0.0.1:{port}/live",
                transport="http",
                clock=SystemClock(),
                on_units=print,
            )
            with pytest.raises(RtspAuthError, match="HTTP tunnel: camera requires credentials"):
                await asyncio.wait_for(anonymous.run(), 10)
        finally:
            server.close()
    assert "pa ss" not in caplog.text and "pa%20ss" not in caplog.text


# -- pieces ----------------------------------------------------------------------------------


def test_tunnel_requests_and_response_head():
    get = tunnel.get_request("/live", "cam:80", "abc", "ua", "Basic eA==").decode()
    assert get.startswith("GET /live HTTP/1.0\r\nHost: cam:80\r\n") and get.endswith("\r\n\r\n")
    assert "x-sessioncookie: abc\r\n" in get and "Accept: application/x-rtsp-tunnelled" in get
    post = tunnel.post_request("/live", "cam:80", "abc", "ua").decode()
    assert "Content-Type: application/x-rtsp-tunnelled" in post and "Authorization" not in post
    assert "Content-Length: 32767" in post
    assert tunnel.encode(b"OPTIONS * RTSP/1.0\r\n\r\n") == base64.b64encode(
        b"OPTIONS * RTSP/1.0\r\n\r\n"
    )
    assert tunnel.parse_response_head(b"HTTP/1.0 200 OK\r\nServer: x") is None
    status, reason, headers, used = tunnel.parse_response_head(
        b"HTTP/1.0 200 OK\r\nContent-Type: application/x-rtsp-tunnelled\r\n\r\nRTSP"
    ) or (0, "", None, 0)
    assert (status, reason, used) == (200, "OK", 63) and headers is not None
    with pytest.raises(tunnel.TunnelError):
        tunnel.parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ValueError, match="line break"):
        tunnel.get_request("/x\r\nEvil: 1", "cam", "c", "ua")


def test_urls_for_the_tunnel():
    assert _split_userinfo("http://u:p@cam/live?x=1", "http") == (
        "rtsp://cam:80/live?x=1",
        "u",
        "p",
        "cam",
        80,
    )
    assert _split_userinfo("rtsp://cam:8080/live", "http")[4] == 8080
    assert _split_userinfo("rtsp://cam/live", "udp")[4] == 554
    with pytest.raises(ValueError, match="rtsp://"):
        _split_userinfo("http://cam/live", "tcp")
    with pytest.raises(NotImplementedError, match="use backend=pyav"):
        RtspSource("rtsp://cam/x", transport="multicast", clock=SystemClock(), on_units=print)


def test_udp_port_pairs_are_even_and_odd():
    for _ in range(5):
        rtp, rtcp = udp.bind_pair(("127.0.0.1", 0))
        with rtp, rtcp:
            port = rtp.getsockname()[1]
            assert port % 2 == 0 and rtcp.getsockname() == ("127.0.0.1", port + 1)
            assert rtp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 200_000
    punch = parse_rtcp(udp.punch_rtcp(7, b"x"))
    assert isinstance(punch[0], ReceiverReport) and punch[0].reports == []
    assert RtpPacket.parse(udp.punch_rtp(96, 7)).payload == b""


# -- to disk --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "http"])
async def test_recorded_over_udp_and_http_the_files_decode(tmp_path, transport):
    """Camera → native client (UDP / HTTP tunnel) → hub → segment writer → fMP4 files that
    FFmpeg decodes without a damaged picture."""
    import av

    from onvif_nvr.clock import ManualClock
    from onvif_nvr.db.engine import Database
    from onvif_nvr.recording.cameras import CameraStore
    from onvif_nvr.recording.hub import Hub
    from onvif_nvr.recording.index import SegmentIndex
    from onvif_nvr.recording.writer import SegmentWriter
    from onvif_nvr.system.secrets import Sealer

    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    try:
        index = SegmentIndex(db)
        with gstcam.camera("--codec", "h264", *CAMERA) as url:
            cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add(
                "cam", url, transport=transport
            )
            volume_path = tmp_path / "volume"
            volume_id = await index.ensure_volume(str(volume_path))
            hub = Hub("cam")
            source = RtspSource(
                url, transport=cam.transport, clock=SystemClock(), on_units=hub.publish_many
            )
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
        assert source.transport == transport and source.lost == 0
        segments = await index.segments(cam.id)
        assert len(segments) >= 2
        for segment in segments:
            path = volume_path / str(cam.id) / f"{segment.id}.mp4"
            with av.open(str(path)) as container:
                frames = list(container.decode(video=0))
                assert len(frames) >= 20 and all(f.width == 320 for f in frames)
            with av.open(str(path)) as container:
                assert sum(1 for _ in container.decode(audio=0)) > 20
    finally:
        db.close()
