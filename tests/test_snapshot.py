"""JPEG snapshots over HTTP: a running box records a GStreamer camera and answers
GET /snapshot/<token> with the latest keyframe as JPEG, with the ONVIF users' HTTP Digest
credentials (requests' HTTPDigestAuth as the client). In process: one decode per keyframe
however many ask at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import requests
from requests.auth import HTTPDigestAuth

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.recording.simulator import load_clip, make_clip
from onvif_nvr.replay.snapshot import NoPicture, Snapshots
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


# -- in process: the cache and the shared decode -------------------------------------------


async def test_one_decode_per_keyframe(tmp_path: Path) -> None:
    path = tmp_path / "clip.h264"
    await asyncio.to_thread(make_clip, path, width=320, height=240, fps=25, seconds=2, gop=25)
    params, units = await asyncio.to_thread(load_clip, path)
    keyframes = [TimedUnit(u, 0, dts, 0) for u, dts in units if u.keyframe]
    assert len(keyframes) == 2
    snapshots = Snapshots(SystemClock(), max_age_s=0.2)
    current: list[TimedUnit | None] = [keyframes[0]]

    async def source():
        return (params, current[0]) if current[0] is not None else None

    pictures = await asyncio.gather(*(snapshots.jpeg("cam", source) for _ in range(20)))
    assert len(set(pictures)) == 1 and snapshots.decodes == 1
    assert (_decode(pictures[0]).width, _decode(pictures[0]).height) == (320, 240)
    await asyncio.sleep(0.3)  # expired, but the keyframe is the same: no decode
    assert await snapshots.jpeg("cam", source) == pictures[0]
    assert snapshots.decodes == 1
    current[0] = keyframes[1]
    assert await snapshots.jpeg("cam", source) == pictures[0]  # within max_age: kept
    await asyncio.sleep(0.3)
    renewed = await snapshots.jpeg("cam", source)
    assert renewed != pictures[0] and snapshots.decodes == 2
    current[0] = None
    with pytest.raises(NoPicture):
        await snapshots.jpeg("other", source)
