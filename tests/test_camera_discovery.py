"""`onvif-nvr discover` finds an independent simulated ONVIF camera (the `ipycam` package)
on a test host of its own, questions it with the operator's credentials and reports its
streams; a wrong password and a device that cannot be reached are reported with the reason.

The camera and the NVR side run in two network namespaces joined by a veth pair (multicast
really crosses a network); without the rights to make namespaces these tests are skipped,
because ipycam binds the wildcard address and multicasts at start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests import netns
from tests.nvrproc import ROOT

NETNS_UNAVAILABLE = netns.available()
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    NETNS_UNAVAILABLE is not None, reason=f"needs network namespaces: {NETNS_UNAVAILABLE}"
)


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode}")
        if line.strip() == "READY":
            return
    raise RuntimeError("peer did not become ready")


@pytest.fixture
def camera_net(tmp_path) -> Iterator[netns.NetPair]:
    if not PEER_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("run ./scripts/test to create .venv-peers")
        pytest.skip("run ./scripts/test to create .venv-peers")
    with netns.netpair("cam") as pair:
        workdir = tmp_path / "cam"
        workdir.mkdir()
        camera = subprocess.Popen(
            pair.argv(
                pair.nvr_ns,
                str(PEER_PYTHON),
                str(ROOT / "tests/peers/ipycam_camera.py"),
                pair.nvr_ip,
                "8080",
                "8554",
                "admin",
                "cam-secret",
                "LobbyCam",
                str(workdir),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            wait_ready(camera)
            yield pair
        finally:
            camera.terminate()
            try:
                camera.wait(15)
            except subprocess.TimeoutExpired:
                camera.kill()
                camera.wait(5)
            if camera.stdout is not None:
                camera.stdout.close()


def discover(pair: netns.NetPair, *args: str) -> list[dict]:
    out = subprocess.run(
        pair.argv(
            pair.client_ns,
            sys.executable,
            "-m",
            "onvif_nvr",
            "discover",
            "--interface",
            pair.client_dev,
            "--timeout",
            "2",
            "--json",
            *args,
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_finds_the_camera_and_its_streams(camera_net, tmp_path):
    reports = discover(
        camera_net,
        "--user",
        "admin",
        "--password",
        "cam-secret",
        "--data-dir",
        str(tmp_path / "nvr"),
    )
    assert len(reports) == 1, reports
    cam = reports[0]
    assert cam["status"] == "ok", cam
    assert (cam["manufacturer"], cam["model"]) == ("PythonCam", "VirtualCam-1")
    assert cam["xaddr"] == f"http://{camera_net.nvr_ip}:8080/onvif/device_service"
    assert cam["name"]
    streams = {p["token"]: p for p in cam["profiles"]}
    assert len(streams) == 2
    main = max(streams.values(), key=lambda p: p["width"] or 0)
    assert (main["encoding"], main["width"], main["height"]) == ("H264", 640, 360)
    assert all(
        p["uri"] and p["uri"].startswith(f"rtsp://{camera_net.nvr_ip}:8554/")
        for p in streams.values()
    )
    # The results are kept for the camera set-up.
    saved = subprocess.run(
        [
            sys.executable,
            "-m",
            "onvif_nvr",
            "discover",
            "--saved",
            "--json",
            "--data-dir",
            str(tmp_path / "nvr"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(saved.stdout)[0]["profiles"] == cam["profiles"]


def test_wrong_password_and_unreachable_devices_are_listed_with_the_reason(camera_net):
    index = camera_net.ifindex(camera_net.client_ns, camera_net.client_dev)
    ghost = subprocess.Popen(
        camera_net.argv(
            camera_net.client_ns,
            sys.executable,
            "tests/peers/fake_announcer.py",
            camera_net.client_dev,
            camera_net.client_ip,
            str(index),
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_ready(ghost)
        reports = {
            r["model"] or r["name"]: r
            for r in discover(camera_net, "--user", "admin", "--password", "wrong", "--no-save")
        }
    finally:
        ghost.terminate()
        ghost.wait(10)
        if ghost.stdout is not None:
            ghost.stdout.close()
    assert set(reports) == {"LobbyCam", "Ghost"}, reports
    assert reports["LobbyCam"]["status"] == "unauthorized"
    assert "refused the credentials" in reports["LobbyCam"]["reason"]
    assert reports["Ghost"]["status"] == "unreachable"
    assert reports["Ghost"]["reason"]
