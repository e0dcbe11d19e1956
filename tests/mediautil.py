"""A running box re-streaming one GStreamer camera, and zeep clients of its media services
(shared by the Media/Media2 tests and conformance cases)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import av
import requests
import zeep
from zeep.wsse.username import UsernameToken

from onvif_nvr.wsdl.catalog import MEDIA, MEDIA2, ServiceDef, wsdl_root
from tests import gstcam, loopns
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config, receiver_client

#: H.264 640x360 at 25 frames/s, a keyframe every 25 frames, with AAC audio.
CAMERA = ("--codec", "h264", "--size", "640x360", "--fps", "25", "--gop", "25", "--audio")


def service(
    nvr: NvrProcess, definition: ServiceDef, user: str = "admin", password: str = ADMIN_PASSWORD
):
    """A zeep proxy for one of the box's services."""
    client = zeep.Client(
        str(wsdl_root() / definition.wsdl),
        wsse=UsernameToken(user, password, use_digest=True),
        transport=zeep.Transport(session=requests.Session(), timeout=20, operation_timeout=20),
        settings=zeep.Settings(strict=False),
    )
    return client.create_service(definition.binding_qname, nvr.base + definition.path)


def media_client(nvr: NvrProcess, **kwargs: str):
    return service(nvr, MEDIA, **kwargs)


def media2_client(nvr: NvrProcess, **kwargs: str):
    return service(nvr, MEDIA2, **kwargs)


class MediaBox:
    def __init__(self, nvr: NvrProcess, receiver: str) -> None:
        self.nvr, self.receiver = nvr, receiver
        self.index = int(receiver.rsplit("_", 1)[1])

    @property
    def main(self) -> str:
        """The token of the receiver's ready-to-use profile."""
        return f"PROFILE_{self.index}"


#: Why multicast cannot be tested here (None: it can, in a loopback-only namespace).
NO_NETNS = loopns.available()


@contextlib.contextmanager
def media_box(data_dir: Path, *, namespace: str | None = None) -> Iterator[MediaBox]:
    """A box receiving the test camera (AlwaysConnect), once its stream's encoder
    configuration is measured (frame rate, bit rate and keyframe interval known). With
    ``namespace``, camera, box and test run in a loopback-only network namespace (when one
    can be made) so that multicast stays on this host."""
    gstcam.require()
    isolated = (
        loopns.loopback_namespace(namespace)
        if namespace and NO_NETNS is None
        else contextlib.nullcontext()
    )
    with isolated, gstcam.camera(*CAMERA) as camera_url:
        nvr = NvrProcess(data_dir, ADMIN_PASSWORD)
        nvr.start()
        try:
            token = receiver_client(nvr).CreateReceiver(config(camera_url, "AlwaysConnect")).Token
            box = MediaBox(nvr, token)
            trt = media_client(nvr)
            deadline = time.monotonic() + 30
            while True:
                encoder = (
                    trt.GetVideoEncoderConfiguration(f"VEC_{box.index}") if _has(trt, box) else None
                )
                if (
                    encoder is not None
                    and encoder.RateControl.BitrateLimit
                    and encoder.H264.GovLength > 1
                ):
                    break
                assert time.monotonic() < deadline, "the stream's encoder was never measured"
                time.sleep(0.5)
            yield box
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def _has(trt, box: MediaBox) -> bool:
    return any(c.token == f"VEC_{box.index}" for c in trt.GetVideoEncoderConfigurations())


def play(url: str, transport: str = "tcp", frames: int = 10) -> tuple[str, tuple[int, int]]:
    """Decode ``frames`` video frames of ``url`` with FFmpeg: (codec, size)."""
    options = {"rtsp_transport": transport, "timeout": "10000000"}
    with av.open(url, options=options, timeout=15) as container:
        video = container.streams.video[0]
        sizes = set()
        for count, frame in enumerate(container.decode(video=0), 1):
            sizes.add((frame.width, frame.height))
            if count >= frames:
                break
        assert len(sizes) == 1
        return video.codec_context.name, sizes.pop()


def with_credentials(uri: str, user: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


def multicast_listener(group: str, port: int) -> socket.socket:
    """A socket receiving ``group:port`` on the loopback interface (blocking, 5 s timeout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.settimeout(5)
    return sock


def rtp_packets(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` RTP packets (version 2) from ``sock``; TimeoutError when they stop."""
    out = []
    while len(out) < count:
        data = sock.recv(65536)
        if len(data) >= 12 and data[0] >> 6 == 2:
            out.append(data)
    return out
