"""Home Assistant's ONVIF library (onvif-zeep-async) sets the NVR up as HA would.

The client runs in its own interpreter (.venv-peers, see tests/peers/ha_setup.py) and
reports what it got as JSON; the expectations come from plain zeep in this process.

onvif-zeep-async signs SOAP requests with WS-UsernameToken only: its HTTP Digest support
(aiohttp ``DigestAuthMiddleware``) is used for snapshot downloads, never for the services,
so there is no HTTP Digest variant of this run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT, NvrProcess

PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
HA_SETUP = Path(__file__).parent / "peers" / "ha_setup.py"
DEVICE_NS = "http://www.onvif.org/ver10/device/wsdl"
NOT_AUTHORIZED = "{http://www.onvif.org/ver10/error}NotAuthorized"

pytestmark = pytest.mark.peer


def peer_python() -> Path:
    if not PEER_PYTHON.exists():
        reason = "run ./scripts/test to create .venv-peers"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return PEER_PYTHON


def run_ha_setup(nvr: NvrProcess, user: str, password: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(peer_python()), str(HA_SETUP), "127.0.0.1", str(nvr.port), user, password],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def ha_setup(nvr: NvrProcess) -> dict[str, Any]:
    return run_ha_setup(nvr, "admin", ADMIN_PASSWORD)


def test_identity_matches_get_device_information(ha_setup, admin):
    info = admin.GetDeviceInformation()
    assert (ha_setup["manufacturer"], ha_setup["model"], ha_setup["serial_number"]) == (
        info.Manufacturer,
        info.Model,
        info.SerialNumber,
    )
    assert (ha_setup["firmware_version"], ha_setup["hardware_id"]) == (
        info.FirmwareVersion,
        info.HardwareId,
    )


def test_xaddrs_come_from_get_services(ha_setup, nvr):
    # update_xaddrs keys the service addresses by namespace; HA finds every later
    # service (media, events, ...) there, so the device's own must be exact.
    assert ha_setup["xaddrs"][DEVICE_NS] == nvr.device_url
    assert ha_setup["xaddrs"] == ha_setup["services"]
    assert "Device" in ha_setup["capability_categories"]


def test_unique_id_is_the_first_enabled_mac(ha_setup, admin):
    enabled = [i for i in admin.GetNetworkInterfaces() if i.Enabled]
    assert enabled, "HA falls back to the serial number, then aborts with no_mac"
    assert ha_setup["hw_address"] == enabled[0].Info.HwAddress


def test_clock_handshake_sees_no_skew(ha_setup):
    # adjust_time compares the device's UTCDateTime (whole seconds) with the host clock;
    # HA warns from 5 s on. Same machine, so well under a second plus truncation.
    assert ha_setup["dt_diff_s"] is not None
    assert abs(ha_setup["dt_diff_s"]) < 2
    assert ha_setup["date_time_type"] in ("Manual", "NTP")


def test_scopes_hostname_and_users(ha_setup, admin):
    assert ha_setup["scopes"] == [s.ScopeItem for s in admin.GetScopes()]
    assert "onvif://www.onvif.org/Profile/Streaming" in ha_setup["scopes"]
    assert ha_setup["hostname"] == admin.GetHostname().Name
    assert ha_setup["users"]["admin"] == "Administrator"


def test_wrong_password_is_an_auth_error(ha_setup):
    wrong = ha_setup["wrong_password"]
    assert wrong["raised"] == "Fault", wrong
    assert wrong["subcodes"] == [NOT_AUTHORIZED]
    assert wrong["is_auth_error"] is True
