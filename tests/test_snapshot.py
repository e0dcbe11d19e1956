"""JPEG snapshots over HTTP: a running box records a GStreamer camera and answers
GET /snapshot/<token> with the latest keyframe as JPEG, with the ONVIF users' HTTP Digest
credentials (requests' HTTPDigestAuth as the client)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import av
import pytest
import requests
from requests.auth import HTTPDigestAuth

from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import job_config, recording_client, recording_config

CAMERA = ("--codec", "h264", "--size", "640x360", "--fps", "25", "--gop", "25")
AUTH = HTTPDigestAuth("admin", ADMIN_PASSWORD)


class Box:
    def __init__(self, nvr: NvrProcess, receiver: str, recording: str) -> None:
        self.nvr, self.receiver, self.recording = nvr, receiver, recording

    def url(self, token: str) -> str:
        return f"{self.nvr.base}/snapshot/{token}"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    gstcam.require()
    with gstcam.camera(*CAMERA) as camera_url:
        nvr = NvrProcess(tmp_path_factory.mktemp("snapshot") / "data", ADMIN_PASSWORD)
        nvr.start()
        try:
            receiver = receiver_client(nvr).CreateReceiver(receiver_config(camera_url)).Token
            trc = recording_client(nvr)
            recording = trc.CreateRecording(recording_config("snap"))
            trc.CreateRecordingJob(job_config(recording, receiver))
            box = Box(nvr, receiver, recording)
            deadline = time.monotonic() + 20
            while requests.get(box.url(receiver), auth=AUTH, timeout=10).status_code == 503:
                assert time.monotonic() < deadline, "no snapshot within 20 s"
                time.sleep(0.3)
            yield box
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def _decode(jpeg: bytes) -> av.VideoFrame:
    context = av.CodecContext.create("mjpeg", "r")
    frames = context.decode(av.Packet(jpeg))
    assert len(frames) == 1
    return frames[0]


@pytest.mark.parametrize("which", ["receiver", "recording"])
def test_snapshot_is_a_jpeg_of_the_camera(box: Box, which: str) -> None:
    token = box.receiver if which == "receiver" else box.recording
    response = requests.get(box.url(token), auth=AUTH, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8" and response.content[-2:] == b"\xff\xd9"
    frame = _decode(response.content)
    assert (frame.width, frame.height) == (640, 360)


def test_credentials_required(box: Box) -> None:
    bare = requests.get(box.url(box.receiver), timeout=10)
    assert bare.status_code == 401
    challenges = bare.headers["WWW-Authenticate"]
    assert challenges.startswith("Digest ") and 'qop="auth"' in challenges
    wrong = requests.get(
        box.url(box.receiver), auth=HTTPDigestAuth("admin", "wrong-password"), timeout=10
    )
    assert wrong.status_code == 401
    basic = requests.get(box.url(box.receiver), auth=("admin", ADMIN_PASSWORD), timeout=10)
    assert basic.status_code == 401  # no Basic: the password never crosses in clear
    # An unknown token needs credentials too (tokens do not leak), then is 404.
    assert requests.get(box.url("nope"), timeout=10).status_code == 401
    assert requests.get(box.url("nope"), auth=AUTH, timeout=10).status_code == 404


def test_cached_then_renewed(box: Box) -> None:
    first = requests.get(box.url(box.receiver), auth=AUTH, timeout=10).content
    again = requests.get(box.url(box.receiver), auth=AUTH, timeout=10).content
    assert again == first  # within a second: the same picture
    time.sleep(2.2)  # the camera's GOP is 1 s: a newer keyframe by now
    later = requests.get(box.url(box.receiver), auth=AUTH, timeout=10).content
    assert later != first
    assert (_decode(later).width, _decode(later).height) == (640, 360)


def test_concurrent_requests(box: Box) -> None:
    time.sleep(1.2)  # the cached picture has expired: the requests share one new decode

    def fetch(_: int) -> tuple[int, bytes]:
        with requests.Session() as session:
            response = session.get(box.url(box.recording), auth=AUTH, timeout=15)
            return response.status_code, response.content

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(fetch, range(32)))
    assert {status for status, _ in results} == {200}
    pictures = {body for _, body in results}
    assert len(pictures) <= 2  # at most one renewal while the requests ran
    for body in pictures:
        assert (_decode(body).width, _decode(body).height) == (640, 360)
