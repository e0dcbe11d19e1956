"""Home Assistant's event path with onvif-zeep-async: its PullPoint manager (as HA's
``EventManager`` starts it), then PullMessages until a message on the topic asked for,
read the way HA's event parsers read it (``Topic._value_1``, ``Message._value_1``).

Runs under the peer interpreter (.venv-peers/bin/python):

    python tests/peers/ha_events.py HOST PORT USER PASSWORD TOPIC

Prints ``READY`` once the pull point exists, then one JSON object: the message's topic,
UtcTime, PropertyOperation, Source and Data SimpleItems.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from typing import Any

import onvif
from onvif import ONVIFCamera

WSDL_DIR = os.path.dirname(onvif.__file__) + "/wsdl/"


def _items(group: Any) -> dict[str, str]:
    if group is None or not group.SimpleItem:
        return {}
    return {item.Name: item.Value for item in group.SimpleItem}


async def main(host: str, port: int, user: str, password: str, topic: str) -> dict[str, Any]:
    cam = ONVIFCamera(host, port, user, password, WSDL_DIR, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        manager = await cam.create_pullpoint_manager(dt.timedelta(seconds=60), lambda: None)
        try:
            service = manager.get_service()
            print("READY", flush=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # HA's PULLPOINT_POLL_TIME and PULLPOINT_MESSAGE_LIMIT.
                response = await service.PullMessages(
                    {"MessageLimit": 100, "Timeout": dt.timedelta(seconds=5)}
                )
                for msg in response.NotificationMessage or []:
                    if msg.Topic._value_1.rstrip("/.") != topic:
                        continue
                    message = msg.Message._value_1
                    return {
                        "topic": msg.Topic._value_1,
                        "utc_time": message.UtcTime.isoformat(),
                        "operation": message.PropertyOperation,
                        "source": _items(message.Source),
                        "data": _items(message.Data),
                    }
            return {"topic": None}
        finally:
            await manager.shutdown()
    finally:
        await cam.close()


if __name__ == "__main__":
    host_arg, port_arg, user_arg, password_arg, topic_arg = sys.argv[1:6]
    result = asyncio.run(main(host_arg, int(port_arg), user_arg, password_arg, topic_arg))
    print(json.dumps(result), flush=True)
