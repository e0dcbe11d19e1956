"""`onvif-nvr demo`: simulated cameras served over RTSP by the box itself and recorded."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import av

from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT, NvrProcess


def test_demo_records_simulated_cameras(tmp_path):
    data = tmp_path / "data"
    nvr = NvrProcess(
        data, ADMIN_PASSWORD, extra_args=["--cameras", "2", "--rtsp-port", "0"], command="demo"
    )
    nvr.start(timeout_s=60)  # the clip is made once, on the first start
    time.sleep(4.0)
    nvr.stop()
    assert not nvr.blocking_calls(), nvr.blocking_calls()
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        cameras = db.execute("SELECT id, name, origin FROM cameras ORDER BY name").fetchall()
        segments = db.execute(
            "SELECT id, camera_id, state, fragment_count FROM segments"
        ).fetchall()
    assert [(name, origin) for _, name, origin in cameras] == [
        ("demo-1", "demo"),
        ("demo-2", "demo"),
    ]
    assert {camera for _, camera, _, _ in segments} == {cid for cid, _, _ in cameras}
    assert all(state == "closed" and count >= 2 for _, _, state, count in segments)
    for segment_id, camera_id, _, _ in segments:
        with av.open(str(data / "recordings" / str(camera_id) / f"{segment_id}.mp4")) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames >= 50
    check = subprocess.run(
        [sys.executable, "-m", "onvif_nvr", "check", "--data-dir", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "0 problems" in check.stdout, check.stdout
    assert "recording spans: 0 recordings differ" in check.stdout, check.stdout
    # The timeline's summary no longer matching the segments is found, then rebuilt.
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        assert db.execute("UPDATE recording_spans SET end_ns = end_ns + 5000000000").rowcount

    def run_check(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "onvif_nvr", "check", "--data-dir", str(data), *extra]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)

    damaged = run_check()
    assert damaged.returncode == 1 and "recording spans: 2 recordings differ" in damaged.stdout
    repaired = run_check("--repair")
    assert "recording_spans rebuilt" in repaired.stdout, repaired.stdout
    again = run_check()
    assert again.returncode == 0 and "recording spans: 0 recordings differ" in again.stdout
