"""JPEG over RTP (RFC 2435) and the MJPEG live stream.

Unit: pictures from two real encoders (FFmpeg's mjpeg through PyAV: 4:2:0 with restart
intervals and one shared quantization table; GStreamer's jpegenc: 4:2:0 and 4:2:2, two
tables, no restart intervals) go through the packetizer and the depacketizer and decode to
the same pixels; pictures RFC 2435 cannot carry are refused with exact messages; the
depacketizer is fuzzed.

End to end: a box records a GStreamer camera (H.264) and serves /live/<token>/jpeg; FFmpeg
(PyAV) and GStreamer (rtspsrc ! rtpjpegdepay ! jpegdec) play it. In process, on a real hub:
the transcoder runs only while a viewer watches.
"""

from __future__ import annotations

import asyncio
import fractions
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import AccessUnit, TimedUnit
from onvif_nvr.recording.hub import Hub
from onvif_nvr.recording.simulator import LoopingClip, load_clip, make_clip
from onvif_nvr.replay.live import HubFeed
from onvif_nvr.replay.mjpeg import MjpegFeed, jpeg_size
from onvif_nvr.replay.rtsp_server import RtspServer
from onvif_nvr.rtsp import jpeg
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import job_config, recording_client, recording_config

# -- pictures from real encoders -------------------------------------------------------------


def _pattern(frame: av.VideoFrame, seed: int) -> av.VideoFrame:
    for n, plane in enumerate(frame.planes):
        row = bytes((x * 7 + seed * 13 + n * 51) & 0xFF for x in range(plane.line_size))
        plane.update(row * plane.height)
    return frame


def ffmpeg_jpeg(width: int, height: int, fmt: str = "yuvj420p") -> bytes:
    context = av.CodecContext.create("mjpeg", "w")
    context.width, context.height, context.pix_fmt = width, height, fmt
    context.time_base = fractions.Fraction(1, 25)
    context.options = {"huffman": "default"}
    frame = _pattern(av.VideoFrame(width, height, fmt), width + height)
    frame.pts = 0
    return b"".join(bytes(p) for p in context.encode(frame))


def gst_jpeg(tmp_path: Path, width: int, height: int, fmt: str) -> bytes:
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gstreamer1.0-tools is not installed")
    out = tmp_path / f"{fmt}-{width}x{height}.jpg"
    subprocess.run(
        [
            "gst-launch-1.0",
            "-q",
            "videotestsrc",
            "num-buffers=1",
            "pattern=smpte",
            "!",
            f"video/x-raw,format={fmt},width={width},height={height}",
            "!",
            "jpegenc",
            "!",
            "filesink",
            f"location={out}",
        ],
        check=True,
        timeout=30,
    )
    return out.read_bytes()


def _decode(data: bytes) -> av.VideoFrame:
    frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(data))
    assert len(frames) == 1
    return frames[0]


def _planes(frame: av.VideoFrame) -> list[bytes]:
    return [bytes(p) for p in frame.planes]


def _round_trip(picture: bytes, mtu: int) -> tuple[bytes, list[tuple[bytes, bool]]]:
    unit = AccessUnit("JPEG", (picture,), 0, True)
    packets = jpeg.JpegPacketizer(mtu).packetize(unit, 1234)
    depacketizer = jpeg.JpegDepacketizer()
    results = [depacketizer.push(p, m, 1234) for p, m in packets]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None
    return results[-1], packets


def _check_packets(packets: list[tuple[bytes, bool]], picture: jpeg.JpegFrame, mtu: int) -> None:
    offset = 0
    for i, (payload, marker) in enumerate(packets):
        assert len(payload) <= mtu
        assert marker == (i == len(packets) - 1)
        spec, off_hi, off_lo, kind, q, w8, h8 = struct.unpack_from("!BBHBBBB", payload)
        assert (spec, off_hi << 16 | off_lo) == (0, offset)
        assert (kind, q) == (picture.rtp_type, 255)
        assert (w8, h8) == ((picture.width + 7) // 8, (picture.height + 7) // 8)
        header = 8
        if picture.restart_interval:
            interval, flags = struct.unpack_from("!HH", payload, 8)
            assert (interval, flags) == (picture.restart_interval, 0xFFFF)
            header += 4
        if offset == 0:  # the tables only on the first packet of the frame
            assert struct.unpack_from("!BBH", payload, header) == (0, 0, 128)
            header += 4 + 128
        offset += len(payload) - header
    assert offset == len(picture.scan)


def test_standard_huffman_tables_are_ffmpegs_defaults() -> None:
    data = ffmpeg_jpeg(64, 64)
    start = data.index(b"\xff\xc4")
    length = struct.unpack_from("!H", data, start + 2)[0]
    body = data[start + 4 : start + 2 + length]
    tables, pos = {}, 0
    while pos < len(body):
        count = sum(body[pos + 1 : pos + 17])
        tables[body[pos]] = (body[pos + 1 : pos + 17], body[pos + 17 : pos + 17 + count])
        pos += 17 + count
    assert tables == jpeg.STANDARD_HUFFMAN


@pytest.mark.parametrize("mtu", [1400, 300])
@pytest.mark.parametrize("size", [(16, 16), (320, 240), (640, 360), (1920, 1080), (2040, 64)])
def test_ffmpeg_pictures_round_trip(size: tuple[int, int], mtu: int) -> None:
    picture = ffmpeg_jpeg(*size)
    parsed = jpeg.parse_jpeg(picture)
    assert parsed.type == 1 and (parsed.width, parsed.height) == size
    assert parsed.tables[0] == parsed.tables[1]  # FFmpeg shares one table: sent twice
    rebuilt, packets = _round_trip(picture, mtu)
    _check_packets(packets, parsed, mtu)
    original, decoded = _decode(picture), _decode(rebuilt)
    assert (decoded.width, decoded.height, decoded.format.name) == (*size, "yuvj420p")
    assert _planes(decoded) == _planes(original)


def test_ffmpeg_pictures_have_restart_intervals() -> None:
    parsed = jpeg.parse_jpeg(ffmpeg_jpeg(640, 360))
    assert parsed.restart_interval == 40 and parsed.rtp_type == 65  # one MCU row each


@pytest.mark.parametrize(("fmt", "kind"), [("I420", 1), ("Y42B", 0)])
@pytest.mark.parametrize("size", [(320, 240), (640, 480)])
def test_gstreamer_pictures_round_trip(
    tmp_path: Path, fmt: str, kind: int, size: tuple[int, int]
) -> None:
    picture = gst_jpeg(tmp_path, *size, fmt)
    parsed = jpeg.parse_jpeg(picture)
    assert (parsed.type, parsed.restart_interval, parsed.rtp_type) == (kind, 0, kind)
    assert parsed.tables[0] != parsed.tables[1]
    rebuilt, packets = _round_trip(picture, 1000)
    _check_packets(packets, parsed, 1000)
    original, decoded = _decode(picture), _decode(rebuilt)
    assert (decoded.width, decoded.height) == size
    assert decoded.format.name == original.format.name
    assert _planes(decoded) == _planes(original)


def _other_huffman() -> bytes:
    """A picture whose luma DC table codes its categories in another order."""
    data = bytearray(ffmpeg_jpeg(64, 64))
    values = data.index(b"\xff\xc4") + 5 + 16  # the first table's values (0..11)
    data[values], data[values + 1] = data[values + 1], data[values]
    return bytes(data)


def test_refused_pictures() -> None:
    cases = [
        (b"GIF89a", "not a JPEG picture (no SOI marker)"),
        (ffmpeg_jpeg(64, 64)[:40], "JPEG segment 0xDB at byte 20 is truncated"),
        (_other_huffman(), "JPEG Huffman tables are not the standard ones (RFC 2435 sends none)"),
        (ffmpeg_jpeg(64, 64, "yuvj444p"), "JPEG luma sampling 0x12 is not 4:2:2 or 4:2:0"),
        (
            ffmpeg_jpeg(64, 64, "yuvj422p"),  # FFmpeg's 4:2:2 is 2x2/1x2: not RFC 2435's type 0
            "JPEG chroma components must both be sampled 1x1 with one table",
        ),
        (ffmpeg_jpeg(2048, 16), "JPEG size 2048x16 cannot be sent (at most 2040x2040)"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError) as info:
            jpeg.parse_jpeg(data)
        assert str(info.value) == message


def test_depacketizer_drops_a_frame_with_a_lost_fragment() -> None:
    picture = ffmpeg_jpeg(320, 240)
    packets = jpeg.JpegPacketizer(400).packetize(AccessUnit("JPEG", (picture,), 0, True), 0)
    depacketizer = jpeg.JpegDepacketizer()
    depacketizer.push(*packets[0], 100)
    with pytest.raises(ValueError, match="lost its predecessor"):
        depacketizer.push(*packets[2], 100)
    # The next frame is whole again.
    results = [depacketizer.push(p, m, 200) for p, m in packets]
    assert results[-1] is not None and _decode(results[-1]).width == 320


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(max_size=200),
            st.booleans(),
            st.integers(0, 3),
            st.sampled_from([0, 1, 64, 65, 255]),
            st.sampled_from([0, 255, 200, 50]),
        ),
        max_size=8,
    )
)
def test_depacketizer_fuzz(packets: list[tuple[bytes, bool, int, int, int]]) -> None:
    depacketizer = jpeg.JpegDepacketizer()
    for body, marker, timestamp, kind, q in packets:
        # Half the packets start with a plausible main header, the rest are raw bytes.
        payload = bytes([0, 0, 0, 0, kind, q, 4, 4]) + body if timestamp % 2 else body
        try:
            result = depacketizer.push(payload, marker, timestamp)
        except ValueError:
            continue
        assert result is None or result.startswith(b"\xff\xd8")


def test_jpeg_size() -> None:
    assert jpeg_size(640, 360) == (640, 360)
    assert jpeg_size(1920, 1080) == (1920, 1080)
    assert jpeg_size(3840, 2160) == (2040, 1144)
    assert jpeg_size(642, 363) == (640, 360)


# -- end to end: a box, FFmpeg and GStreamer -------------------------------------------------

CAMERA = ("--codec", "h264", "--size", "640x360", "--fps", "25", "--gop", "50", "--audio")


class Box:
    def __init__(self, nvr: NvrProcess, receiver: str) -> None:
        self.nvr, self.receiver = nvr, receiver

    def url(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"rtsp://{auth}127.0.0.1:{self.nvr.rtsp_port}/live/{self.receiver}/jpeg"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with gstcam.camera(*CAMERA) as camera_url:
        nvr = NvrProcess(tmp_path_factory.mktemp("mjpeg") / "data", ADMIN_PASSWORD)
        nvr.start()
        try:
            receiver = receiver_client(nvr).CreateReceiver(receiver_config(camera_url)).Token
            trc = recording_client(nvr)
            recording = trc.CreateRecording(recording_config("mjpeg"))
            trc.CreateRecordingJob(job_config(recording, receiver))
            time.sleep(2)
            yield Box(nvr, receiver)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffmpeg_plays_mjpeg(box: Box, transport: str) -> None:
    options = {"rtsp_transport": transport, "timeout": "10000000"}
    with av.open(box.url(), options=options, timeout=15) as container:
        assert [s.type for s in container.streams] == ["video"]  # no audio in the JPEG stream
        assert container.streams.video[0].codec_context.name == "mjpeg"
        times, sizes = [], set()
        started = time.monotonic()
        for frame in container.decode(video=0):
            sizes.add((frame.width, frame.height))
            times.append(frame.time)
            if time.monotonic() - started > 4:
                break
    assert sizes == {(640, 360)}
    span = times[-1] - times[0]
    rate = (len(times) - 1) / span
    assert 4.0 <= rate <= 6.0, (rate, len(times), span)


def test_gstreamer_plays_mjpeg(box: Box, tmp_path: Path) -> None:
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gstreamer1.0-tools is not installed")
    result = subprocess.run(
        [
            "gst-launch-1.0",
            "-v",
            "rtspsrc",
            f"location={box.url(user='')}",
            "protocols=tcp",
            "user-id=admin",
            f"user-pw={ADMIN_PASSWORD}",
            "!",
            "rtpjpegdepay",
            "!",
            "jpegdec",
            "!",
            "identity",
            "eos-after=10",
            "!",
            "fakesink",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    decoded_caps = [
        line for line in result.stdout.splitlines() if "jpegdec0.GstPad:src: caps" in line
    ]
    assert decoded_caps, result.stdout[-2000:]
    assert "width=(int)640, height=(int)360" in decoded_caps[0]
    assert "Got EOS" in result.stdout


def test_describe_offers_jpeg(box: Box) -> None:
    from tests.test_live import RawViewer

    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        reply = viewer.request("DESCRIBE", box.url(user=""), Accept="application/sdp")
    finally:
        viewer.close()
    assert reply.status == 200
    sdp = reply.body.decode()
    assert "m=video 0 RTP/AVP 26" in sdp
    assert "a=rtpmap:26 JPEG/90000" in sdp
    assert "a=framesize:26 640-360" in sdp and "a=framerate:5" in sdp


# -- in process: the transcoder runs only while someone watches --------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "sim.h264"
    make_clip(path, width=320, height=240, fps=25, seconds=4, gop=25)
    return path


async def test_transcoder_only_while_watched(clip: Path) -> None:
    clock = SystemClock()
    params, units = await asyncio.to_thread(load_clip, clip)
    source = LoopingClip(params, units, clock)
    hub = Hub("cam")
    recorder = hub.subscribe("recorder", maxsize=3000, lossy=True)

    async def camera() -> None:
        async for unit, dts in source.subscribe():
            hub.publish(TimedUnit(unit, 0, dts, clock.wall_ns()))

    feeding = asyncio.create_task(camera())
    feed = MjpegFeed(
        HubFeed(lambda: hub.subscribe("live", maxsize=3000, lossy=True), lambda: (params, None))
    )
    server = RtspServer("127.0.0.1", 0, clock)
    server.add_mount("/live/cam/jpeg", feed)
    await server.start()
    url = f"rtsp://127.0.0.1:{server.bound_port}/live/cam/jpeg"
    try:
        await asyncio.sleep(0.5)
        assert (feed.active, feed.decoded, hub.subscriber_count) == (0, 0, 1)

        def watch() -> list[tuple[int, int]]:
            sizes = []
            with av.open(url, options={"rtsp_transport": "tcp"}, timeout=10) as container:
                for frame in container.decode(video=0):
                    sizes.append((frame.width, frame.height))
                    if len(sizes) >= 10:
                        break
            return sizes

        sizes = await asyncio.to_thread(watch)
        assert set(sizes) == {(320, 240)}
        assert feed.decoded > 0 and feed.encoded >= 10
        # The viewer left: the transcoder and its hub subscription are gone.
        for _ in range(50):
            if feed.active == 0 and hub.subscriber_count == 1:
                break
            await asyncio.sleep(0.1)
        assert (feed.active, hub.subscriber_count, server.viewers) == (0, 1, 0)
        decoded = feed.decoded
        await asyncio.sleep(1)
        assert feed.decoded == decoded  # idle: nothing decoded
        assert recorder.lost == 0
    finally:
        feeding.cancel()
        await server.close()


@pytest.mark.parametrize(("gop", "keyframes_only"), [(25, False), (4, True)])
def test_transcoder_decodes_what_it_needs(tmp_path: Path, gop: int, keyframes_only: bool) -> None:
    """5 pictures a second from 25: every unit is decoded while keyframes are rarer than
    the output rate, only keyframes once they come as often."""
    from onvif_nvr.replay.mjpeg import _Transcoder

    path = tmp_path / "clip.h264"
    make_clip(path, width=160, height=120, fps=25, seconds=4, gop=gop)
    params, units = load_clip(path)
    transcoder = _Transcoder(params, jpeg_size(160, 120), 5.0, 5)
    pictures = []
    for start in range(0, len(units), 10):  # batches as the hub hands them over
        batch = [TimedUnit(u, 0, dts, dts * 11_111) for u, dts in units[start : start + 10]]
        pictures += transcoder.run(batch)
    assert transcoder.keyframes_suffice is keyframes_only
    keyframes = sum(u.keyframe for u, _ in units)
    if keyframes_only:
        assert transcoder.decoded <= keyframes + 2 * gop  # full decoding until it knew
    else:
        assert transcoder.decoded == len(units)
    times = [p.dts_90k for p in pictures]
    assert times == sorted(times)
    assert abs(len(pictures) - 20) <= 3  # 4 s at 5 a second
    for picture in pictures:
        assert _decode(picture.unit.payloads[0]).width == 160
