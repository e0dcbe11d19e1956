"""Cameras: the domain API, the CLI and the config file, all through the same store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.config import CameraSettings
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import InvalidArgument, OperationProhibited
from onvif_nvr.recording.camera_setup import CameraSetup, sync_from_config
from onvif_nvr.recording.cameras import CameraStore, display_url, split_credentials
from onvif_nvr.recording.control import RecordingControl
from onvif_nvr.system.secrets import Sealer
from tests.nvrproc import ROOT


@pytest.fixture
async def store(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    yield CameraStore(db, Sealer(b"k" * 32), ManualClock())
    db.close()


def test_credentials_are_split_from_urls():
    assert split_credentials("rtsp://admin:p%40ss@192.0.2.10:554/Streaming/Channels/101") == (
        "rtsp://192.0.2.10:554/Streaming/Channels/101",
        "admin",
        "p@ss",
    )
    assert split_credentials("RTSP://[2001:db8::1]/x") == ("rtsp://[2001:db8::1]/x", None, None)
    assert display_url("rtsp://u:secret@h/x") == "rtsp://h/x"
    for bad, message in [
        ("http://h/x", "must be rtsp://"),
        ("rtsp:///x", "must be rtsp://"),
        ("rtsp://h:99999/x", "invalid port"),
    ]:
        with pytest.raises(ValueError, match=message):
            split_credentials(bad)


async def test_add_update_remove(store):
    cam = await store.add("Front door", "rtsp://admin:pw@192.0.2.10/live", transport="udp")
    assert (cam.url, cam.username, cam.password) == ("rtsp://192.0.2.10/live", "admin", "pw")
    assert cam.url_with_credentials == "rtsp://admin:pw@192.0.2.10/live"
    assert "pw" not in repr(cam)
    with pytest.raises(OperationProhibited, match="exists already"):
        await store.add("Front door", "rtsp://192.0.2.11/live")
    with pytest.raises(InvalidArgument, match="transport must be one of tcp, udp, http"):
        await store.add("x", "rtsp://192.0.2.11/live", transport="carrier-pigeon")
    with pytest.raises(InvalidArgument, match="camera names are"):
        await store.add("../etc", "rtsp://192.0.2.11/live")
    changed = await store.update(
        "Front door", enabled=False, url="rtsp://192.0.2.12/main", retention_s=3600
    )
    assert (changed.enabled, changed.url, changed.username, changed.retention_s) == (
        False,
        "rtsp://192.0.2.12/main",
        "admin",
        3600,
    )
    assert [c.name for c in await store.list()] == ["Front door"]
    await store.remove("Front door")
    assert await store.list() == []
    with pytest.raises(InvalidArgument, match="no camera named"):
        await store.remove("Front door")


@pytest.fixture
async def setup(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    yield CameraSetup(RecordingControl(db, Sealer(b"k" * 32), ManualClock()))
    db.close()


async def test_config_cameras_are_kept_in_step(setup):
    store = setup
    await store.add("manual", "rtsp://192.0.2.20/x")
    await sync_from_config(
        store,
        [
            CameraSettings(name="a", url="rtsp://192.0.2.1/s"),
            CameraSettings(name="b", url="rtsp://192.0.2.2/s"),
        ],
    )
    assert {c.name: c.origin for c in await store.list()} == {
        "a": "config",
        "b": "config",
        "manual": "cli",
    }
    await sync_from_config(
        store, [CameraSettings(name="a", url="rtsp://192.0.2.9/s", retention_s=60)]
    )
    cams = {c.name: c for c in await store.list()}
    assert set(cams) == {"a", "manual"}
    assert (cams["a"].url, cams["a"].retention_s) == ("rtsp://192.0.2.9/s", 60)
    with pytest.raises(OperationProhibited, match="clashes"):
        await sync_from_config(store, [CameraSettings(name="manual", url="rtsp://192.0.2.1/s")])


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onvif_nvr", "camera", "--data-dir", str(data_dir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli(tmp_path):
    data = tmp_path / "data"
    assert run_cli(data, "add", "yard", "rtsp://cam:Sup3r-Secret@192.0.2.30/h264").returncode == 0
    assert (
        run_cli(
            data,
            "add",
            "gate",
            "rtsp://192.0.2.31/live",
            "--user",
            "u",
            "--password",
            "Another-Secret",
            "--transport",
            "http",
        ).returncode
        == 0
    )
    clash = run_cli(data, "add", "gate", "rtsp://192.0.2.32/live")
    assert clash.returncode == 1 and "exists already" in clash.stderr
    assert run_cli(data, "set", "gate", "--enabled", "no").returncode == 0
    listed = json.loads(run_cli(data, "list", "--json").stdout)
    assert [(c["name"], c["url"], c["username"], c["transport"], c["enabled"]) for c in listed] == [
        ("gate", "rtsp://192.0.2.31/live", "u", "http", False),
        ("yard", "rtsp://192.0.2.30/h264", "cam", "tcp", True),
    ]
    plain = run_cli(data, "list").stdout
    assert "Sup3r-Secret" not in plain and "yard  rtsp://192.0.2.30/h264 as cam" in plain
    rows = (
        sqlite3.connect(data / "nvr.sqlite3")
        .execute("SELECT url, password_enc FROM cameras")
        .fetchall()
    )
    assert all("Secret" not in url + (enc or "") for url, enc in rows)
    assert run_cli(data, "remove", "yard").returncode == 0
    assert [c["name"] for c in json.loads(run_cli(data, "list", "--json").stdout)] == ["gate"]
