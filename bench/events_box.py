"""The box under test for bench/events.py: the real NvrApp plus a publisher task that
emits ``tns1:RecordingConfig/CreateRecording`` at a steady rate (in-process only: nothing
on the network can make it publish); with CAMERA_BASE and N, it also records N cameras
``CAMERA_BASE1`` .. ``CAMERA_BASEN`` (the cameras the bench serves).

    python -m bench.events_box DATA_DIR PORT RATE_PER_S [CAMERA_BASE N]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from onvif_nvr.app import NvrApp
from onvif_nvr.config import load_settings
from onvif_nvr.events.message import SimpleItem
from onvif_nvr.events.topics import Topic

TOPIC = Topic.onvif("RecordingConfig/CreateRecording")


async def main(data_dir: Path, port: int, rate: float, base: str = "", cameras: int = 0) -> None:
    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "bind": "127.0.0.1",
            "http_port": port,
            "admin_password": "benchpw",
        },
        environ={
            "ONVIF_NVR_DISCOVERY_ENABLED": "false",
            "ONVIF_NVR_STORAGE_RECORD": "true" if cameras else "false",
            "ONVIF_NVR_EVENTS_MAX_PULL_POINTS": "256",
        },
    )
    app = NvrApp(settings)
    await app.start()
    for i in range(1, cameras + 1):
        await app.camera_setup.add(f"bench-{i}", f"{base}{i}", origin="cli")
    if cameras:  # every recorder writing before the measurement starts
        assert app.recording is not None
        recorders = app.recording.recorders.values()
        while sum(r.state == "recording" for r in recorders) < cameras:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    print(f"ready {app.bound_port}", flush=True)
    n = 0
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    try:
        while True:
            n += 1
            app.events.publish(TOPIC, source=[SimpleItem("RecordingToken", f"bench{n}")])
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    finally:
        await app.close()


if __name__ == "__main__":
    extra = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else ("", 0)
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), *extra))
