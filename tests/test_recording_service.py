"""`onvif-nvr serve` records its cameras; a `kill -9` loses at most about a second, and the
next start recovers the open segment so that `check` finds nothing wrong."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT, NvrProcess


def segments(data_dir):
    with sqlite3.connect(data_dir / "nvr.sqlite3") as db:
        rows = db.execute(
            "SELECT id, state, fragment_count, size FROM segments ORDER BY id"
        ).fetchall()
        last_end = db.execute(
            "SELECT MAX(start_wall_ns + duration_90k * 100000 / 9) FROM fragments"
        ).fetchone()[0]
    return rows, last_end


@pytest.mark.parametrize("backend", ["native", "pyav"])
def test_records_and_survives_kill_9(tmp_path, backend):
    with gstcam.camera("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25") as url:
        config = tmp_path / "nvr.toml"
        config.write_text(
            f'[storage]\nsegment_s = 3\n\n[[camera]]\nname = "cam"\nurl = "{url}"\nbackend = "{backend}"\n'
        )
        data = tmp_path / "data"
        nvr = NvrProcess(data, ADMIN_PASSWORD, extra_args=["--config", str(config)])
        nvr.start()
        time.sleep(5.0)
        assert nvr.proc is not None
        os.killpg(nvr.proc.pid, signal.SIGKILL)
        killed_ns = time.time_ns()
        nvr.proc.wait(10)
        nvr.stop()
        before, _ = segments(data)
        assert any(state == "writing" for _, state, _, _ in before), before

        nvr = NvrProcess(data, ADMIN_PASSWORD, extra_args=["--config", str(config)])
        nvr.start()  # recovery runs before the recorders start
        nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()
    rows, last_end = segments(data)
    assert all(state == "closed" for _, state, _, _ in rows), rows
    assert sum(count for _, _, count, _ in rows) >= 4
    # Everything up to about a second before the kill is on disk and indexed.
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        first_run_end = db.execute(
            "SELECT MAX(f.start_wall_ns + f.duration_90k * 100000 / 9) FROM fragments f "
            "JOIN segments s ON s.id = f.segment_id WHERE f.start_wall_ns < ?",
            (killed_ns,),
        ).fetchone()[0]
    assert killed_ns - first_run_end < 1.6e9, (killed_ns - first_run_end) / 1e9
    assert last_end is not None
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "onvif_nvr",
            "check",
            "--data-dir",
            str(data),
            "--config",
            str(config),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 problems" in check.stdout


def wait_until(check, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s"
        time.sleep(0.1)


def query(data_dir, sql: str) -> list[tuple]:
    db = sqlite3.connect(data_dir / "nvr.sqlite3")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_camera_outage_is_a_gap_and_recording_resumes(tmp_path):
    port = gstcam.free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    config = tmp_path / "nvr.toml"
    config.write_text(f'[storage]\nsegment_s = 60\n\n[[camera]]\nname = "cam"\nurl = "{url}"\n')
    data = tmp_path / "data"
    nvr = NvrProcess(data, ADMIN_PASSWORD, extra_args=["--config", str(config)])
    with gstcam.camera("--size", "320x240", "--gop", "25", port=port):
        nvr.start()
        wait_until(lambda: query(data, "SELECT COUNT(*) FROM fragments")[0][0] >= 2)
    down_ns = time.time_ns()
    # The camera is gone: the recorder notes an open gap.
    wait_until(lambda: query(data, "SELECT COUNT(*) FROM gaps")[0][0] >= 1)
    with gstcam.camera("--size", "320x240", "--gop", "25", port=port):
        # Backoff (1 s, 2 s, ...), then recording again: the gap closes and a new segment
        # gets fragments.
        wait_until(
            lambda: (
                query(
                    data,
                    "SELECT COUNT(*) FROM fragments f JOIN segments s ON s.id = f.segment_id"
                    " WHERE s.start_wall_ns >= (SELECT MAX(end_wall_ns) FROM gaps) - 1000000000",
                )[0][0]
                >= 2
            )
        )
        nvr.stop()
    assert not nvr.blocking_calls(), nvr.blocking_calls()
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        gaps = db.execute("SELECT start_wall_ns, end_wall_ns, reason FROM gaps").fetchall()
        segs = db.execute(
            "SELECT start_wall_ns, state, fragment_count FROM segments ORDER BY id"
        ).fetchall()
    assert len(gaps) == 1, gaps
    start, end, reason = gaps[0]
    assert reason == "offline" and end is not None and start >= down_ns - 2e9 and end > start
    # The media clock restarted with the camera, so a new segment began after the outage.
    assert len(segs) >= 2 and all(state == "closed" for _, state, _ in segs)
    assert segs[-1][0] >= end - 1e9 and segs[-1][2] >= 2
