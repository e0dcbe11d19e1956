"""MEDIA2 Real Time Streaming cases for H.265 (MEDIA2_RTSS-1-1-8 to 1-1-11) against a box
recording an H.265 GStreamer camera (x265, 640x360, 25 fps, GOP 25): the profile the Media2
service gives for it names H265, and its GetStreamUri URIs play over RTP-Unicast/UDP, the
RTSP-over-HTTP tunnel and RTP/RTSP/TCP (FFmpeg, and GStreamer's rtspsrc for TCP); the
synchronization point case checks the IRAP picture and the sender report that follow.
The IPv6 twins (1-1-12 to 1-1-14) do not apply: the test network is IPv4 loopback."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Iterator

import av
import pytest

from conformance.test_rtss import synchronization_point_effect
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.mediautil import media2_client
from tests.test_live import Box
from tests.test_live_transports import _wait_playable, start_box

CAMERA = ("--codec", "h265", "--size", "640x360", "--fps", "25", "--gop", "25")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with gstcam.camera(*CAMERA) as camera_url:
        box = start_box(tmp_path_factory.mktemp("rtss265"), camera_url, name="hevc")
        try:
            _wait_playable(box)
            yield box
        finally:
            box.nvr.stop()
        assert not box.nvr.blocking_calls(), box.nvr.blocking_calls()


@pytest.fixture(scope="module")
def profile(box: Box):
    """The Media2 profile of the camera's own stream (not the JPEG one)."""
    tr2 = media2_client(box.nvr)
    for p in tr2.GetProfiles(Type=["All"]):
        encoder = p.Configurations.VideoEncoder
        if encoder is not None and encoder.Encoding == "H265":
            assert (encoder.Resolution.Width, encoder.Resolution.Height) == (640, 360)
            return p
    raise AssertionError("no H265 profile")


def _stream_uri(box: Box, profile, protocol: str) -> str:
    uri = media2_client(box.nvr).GetStreamUri(protocol, profile.token)
    assert uri.startswith(("rtsp://", "http://"))
    return uri


def _ffmpeg_play(uri: str, transport: str) -> tuple[str, tuple[int, int], int]:
    """FFmpeg decodes 25 pictures; the codec, size and count of what it decoded."""
    if uri.startswith("http://"):  # FFmpeg names the tunnel rtsp:// + rtsp_transport=http
        uri = "rtsp://" + uri.removeprefix("http://")
    uri = uri.replace("rtsp://", f"rtsp://admin:{ADMIN_PASSWORD}@", 1)
    options = {"rtsp_transport": transport, "timeout": "10000000"}
    with av.open(uri, options=options, timeout=15) as container:
        video = container.streams.video[0]
        sizes, frames = set(), 0
        for packet in container.demux(video):
            for frame in packet.decode():
                sizes.add((frame.width, frame.height))
                frames += 1
            if frames >= 25:
                break
        assert len(sizes) == 1, sizes
        return video.codec_context.name, sizes.pop(), frames


def test_MEDIA2_RTSS_1_1_8_h265_rtp_unicast_udp(box, profile):
    uri = _stream_uri(box, profile, "RtspUnicast")
    assert _ffmpeg_play(uri, "udp") == ("hevc", (640, 360), 25)


def test_MEDIA2_RTSS_1_1_9_h265_rtp_unicast_rtsp_http_tcp(box, profile):
    uri = _stream_uri(box, profile, "RtspOverHttp")
    assert uri == f"{box.nvr.base}/rtsp-tunnel/live/{box.receiver}"
    assert _ffmpeg_play(uri, "http") == ("hevc", (640, 360), 25)


def test_MEDIA2_RTSS_1_1_10_h265_rtp_rtsp_tcp(box, profile):
    uri = _stream_uri(box, profile, "RTSP")
    assert _ffmpeg_play(uri, "tcp") == ("hevc", (640, 360), 25)
    # A second client that is not FFmpeg: GStreamer's rtspsrc, depayloader and decoder.
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gstreamer1.0-tools is not installed")
    argv = [
        "gst-launch-1.0", "-v", "rtspsrc", f"location={uri}", "protocols=tcp",
        "user-id=admin", f"user-pw={ADMIN_PASSWORD}", "!", "rtph265depay", "!", "h265parse",
        "!", "avdec_h265", "!", "fakesink", "num-buffers=30", "sync=false",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Got EOS" in result.stdout, result.stdout[-3000:]
    assert re.search(r"encoding-name=\(string\)H265", result.stdout)
    assert re.search(r"video/x-raw, format=\(string\)\w+, width=\(int\)640, height=\(int\)360",
                     result.stdout)  # fmt: skip


def _has_irap(payload: bytes) -> bool:
    """An RTP H.265 payload (RFC 7798) holding an IRAP picture's NAL unit (types 16-23) or
    the first fragment of one; aggregation packets are looked through."""

    def irap(nal_type: int) -> bool:
        return 16 <= nal_type <= 23

    kind = (payload[0] >> 1) & 0x3F
    if kind == 49:  # FU: start bit and the original type in the FU header
        return bool(payload[2] & 0x80) and irap(payload[2] & 0x3F)
    if kind == 48:  # AP: 16-bit sizes after the 2-byte payload header
        offset = 2
        while offset + 2 < len(payload):
            size = struct.unpack_from("!H", payload, offset)[0]
            if irap((payload[offset + 2] >> 1) & 0x3F):
                return True
            offset += 2 + size
        return False
    return irap(kind)


def test_MEDIA2_RTSS_1_1_11_set_synchronization_point_h265(box, profile):
    """SetSynchronizationPoint on the H.265 profile: a sender report at once and an IRAP
    picture within the camera's GOP (1 s; the box relays, it cannot make one: ADR 0006)."""
    tr2 = media2_client(box.nvr)
    irap_after, report_after = synchronization_point_effect(
        box, lambda: tr2.SetSynchronizationPoint(profile.token), _has_irap
    )
    assert irap_after is not None and irap_after < 2.5
    assert report_after is not None and report_after < 1
