"""The process stops promptly on SIGTERM, even in the moment it starts answering."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests

from tests.nvrproc import ROOT
from tests.soaputil import envelope, op


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_as_soon_as_it_answers_is_not_lost(tmp_path):
    body = envelope(op("GetSystemDateAndTime"))
    for attempt in range(3):
        port = free_port()
        env = {
            **os.environ,
            "ONVIF_NVR_DISCOVERY_PORT": str(free_port()),
            "ONVIF_NVR_RTSP_PORT": "0",  # never the fixed default: other boxes may hold it
        }
        log = tmp_path / f"serve{attempt}.log"
        with log.open("w") as output:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "onvif_nvr",
                    "serve",
                    "--data-dir",
                    str(tmp_path / f"d{attempt}"),
                    "--bind",
                    "127.0.0.1",
                    "--http-port",
                    str(port),
                    "--admin-password",
                    "pw",
                ],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if (
                        requests.post(
                            f"http://127.0.0.1:{port}/onvif/device_service", data=body, timeout=1
                        ).status_code
                        == 200
                    ):
                        break
                except requests.ConnectionError:
                    time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGTERM)  # the very moment it answers
            assert proc.wait(8) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
