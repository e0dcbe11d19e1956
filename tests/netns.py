"""Two isolated test hosts joined by a veth pair, in network namespaces made for the test.

Nothing here touches the host's own interfaces: both ends of the veth live in namespaces
created (and always deleted) by the test, with TEST-NET-1 addresses (192.0.2.0/24) and a
multicast route, so WS-Discovery multicast really crosses a (virtual) network.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class NetPair:
    nvr_ns: str
    client_ns: str
    nvr_dev: str = ""
    client_dev: str = ""
    nvr_ip: str = "192.0.2.1"
    client_ip: str = "192.0.2.2"

    def ifindex(self, ns: str, dev: str) -> int:
        out = subprocess.run(
            ["ip", "-n", ns, "-j", "link", "show", "dev", dev],
            check=True,
            capture_output=True,
            text=True,
        )
        return int(json.loads(out.stdout)[0]["ifindex"])

    def argv(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"onvt-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns add failed: {exc}"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _ip("netns", "delete", probe)
    return None


@contextlib.contextmanager
def netpair(tag: str) -> Iterator[NetPair]:
    suffix = f"{os.getpid()}-{tag}"[:20]
    veth_n, veth_c = f"vn{os.getpid() % 100000}{tag[:2]}", f"vc{os.getpid() % 100000}{tag[:2]}"
    pair = NetPair(f"onvt-n-{suffix}", f"onvt-c-{suffix}", veth_n, veth_c)
    try:
        _ip("netns", "add", pair.nvr_ns)
        _ip("netns", "add", pair.client_ns)
        _ip(
            "link",
            "add",
            veth_n,
            "netns",
            pair.nvr_ns,
            "type",
            "veth",
            "peer",
            "name",
            veth_c,
            "netns",
            pair.client_ns,
        )
        for ns, dev, addr in (
            (pair.nvr_ns, veth_n, pair.nvr_ip),
            (pair.client_ns, veth_c, pair.client_ip),
        ):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        yield pair
    finally:
        for ns in (pair.nvr_ns, pair.client_ns):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _ip("netns", "delete", ns)
