"""Home Assistant's camera set-up on the Media service, with onvif-zeep-async.

Runs under the peer interpreter (.venv-peers/bin/python):

    python tests/peers/ha_media.py HOST PORT USER PASSWORD

Like HA's ``ONVIFDevice.async_get_profiles``: GetProfiles, keep the profiles with a video
encoder configuration, GetStreamUri (RTP-Unicast over RTSP) for each, then one snapshot per
profile through GetSnapshotUri and an HTTP Digest download. Prints JSON.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from typing import Any

import onvif
from onvif import ONVIFCamera

WSDL_DIR = os.path.dirname(onvif.__file__) + "/wsdl/"


async def main(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    cam = ONVIFCamera(host, port, user, password, WSDL_DIR, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        media = await cam.create_media_service()
        capabilities = await media.GetServiceCapabilities()
        profiles = []
        for profile in await media.GetProfiles():
            encoder = profile.VideoEncoderConfiguration
            if encoder is None:
                continue
            request = media.create_type("GetStreamUri")
            request.ProfileToken = profile.token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            uri = await media.GetStreamUri(request)
            snapshot = await cam.get_snapshot(profile.token)
            profiles.append(
                {
                    "token": profile.token,
                    "encoding": encoder.Encoding,
                    "width": encoder.Resolution.Width,
                    "height": encoder.Resolution.Height,
                    "stream_uri": uri.Uri,
                    "snapshot_uri": await cam.get_snapshot_uri(profile.token),
                    "snapshot": base64.b64encode(snapshot).decode() if snapshot else None,
                }
            )
    finally:
        await cam.close()
    return {"snapshot_capability": bool(capabilities.SnapshotUri), "profiles": profiles}


if __name__ == "__main__":
    host_arg, port_arg, user_arg, password_arg = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(host_arg, int(port_arg), user_arg, password_arg))))
