"""GStreamer's RTSP server (tests/peers/gst_rtsp_server.py) as a test camera on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.nvrproc import ROOT

SYSTEM_PYTHON = "/usr/bin/python3"


def available() -> str | None:
    if not os.path.exists(SYSTEM_PYTHON):
        return "no /usr/bin/python3"
    check = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ],
        capture_output=True,
    )
    if check.returncode != 0:
        return "GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) is not installed"
    if shutil.which("gst-inspect-1.0") is None:
        return "gstreamer1.0-tools is not installed"
    return None


def require() -> None:
    reason = available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: ./scripts/test installs it")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def camera(*args: str, port: int | None = None) -> Iterator[str]:
    """Start a GStreamer RTSP camera (on ``port``, or a free one); yields its URL."""
    require()
    port = port or free_port()
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(ROOT / "tests/peers/gst_rtsp_server.py"), str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError("GStreamer RTSP server did not start")
        yield f"rtsp://127.0.0.1:{port}/live"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
