"""onvif-python's own discovery helper (ONVIFDiscovery) as an independent client.

Runs under .venv/bin/python (onvif-python is a dependency of the NVR); argv: the local IPv4
address to probe from, the timeout. Prints the devices it found as JSON.
"""

import json
import sys

from onvif.utils.discovery import ONVIFDiscovery

devices = ONVIFDiscovery(timeout=int(sys.argv[2]), interface=sys.argv[1]).discover()
print(
    json.dumps(
        [
            {k: d.get(k) for k in ("epr", "host", "port", "types", "scopes", "xaddrs")}
            for d in devices
        ]
    )
)
