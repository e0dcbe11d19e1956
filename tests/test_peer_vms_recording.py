"""A VMS built on onvif-zeep-async (Home Assistant's ONVIF library) records a GStreamer
camera through the NVR's Receiver and Recording services (tests/peers/vms_recording.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT, NvrProcess
from tests.test_peer_onvif_zeep_async import peer_python

VMS = Path(__file__).parent / "peers" / "vms_recording.py"

pytestmark = pytest.mark.peer


def test_onvif_zeep_async_records_a_camera(tmp_path):
    python = peer_python()
    with gstcam.camera("--codec", "h264", "--size", "320x240", "--fps", "25") as url:
        nvr = NvrProcess(tmp_path / "data", ADMIN_PASSWORD)
        nvr.start()
        try:
            done = subprocess.run(
                [str(python), str(VMS), "127.0.0.1", str(nvr.port), "admin", ADMIN_PASSWORD, url],
                capture_output=True,
                text=True,
                timeout=90,
                cwd=ROOT,
            )
        finally:
            nvr.stop()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["xaddrs"] == {
        "http://www.onvif.org/ver10/recording/wsdl": nvr.base + "/onvif/recording_service",
        "http://www.onvif.org/ver10/receiver/wsdl": nvr.base + "/onvif/receiver_service",
    }
    assert seen["options"] is True and seen["max_recordings"] == 64
    assert seen["job_receiver"] == seen["receiver"]
    assert seen["states"][-1] == "Active" and seen["idle"] == "Idle"
    assert seen["recordings"] == [seen["recording"]] and seen["after_delete"] == 0
