"""A WS-Discovery answerer whose device service address leads nowhere (for the
"unreachable" case of camera discovery). Uses the NVR's own target service with a
made-up endpoint; argv: IFNAME IP INDEX. Runs until killed."""

import asyncio
import socket
import sys

from onvif_nvr.discovery.target import DiscoveryTarget, LocalAddress, TargetState


async def main() -> None:
    ifname, ip, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    state = TargetState(
        "urn:uuid:00000000-dead-4bad-8bad-000000000001",
        ("onvif://www.onvif.org/name/Ghost",),
        True,
        1,
        1,
    )
    target = DiscoveryTarget(state, [LocalAddress(ifname, index, ip, socket.AF_INET)], http_port=9)
    await target.start()
    print("READY", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
