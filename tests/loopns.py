"""A network namespace with only a loopback interface, for multicast tests.

Multicast must never leave the test host, and players (FFmpeg, GStreamer) join groups on the
interface the routing table picks: in a namespace of our own whose only interface is ``lo``
(multicast on, 224.0.0.0/4 routed to it) every group stays on that loopback. The calling
thread enters the namespace (``setns``; Python 3.11 has no ``os.setns``, so through libc):
sockets it opens and processes it starts live there until the context ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def available() -> str | None:
    """None when a namespace can be made and entered here, else why not."""
    if os.geteuid() != 0:
        return "not root (network namespaces)"
    try:
        with loopback_namespace("probe"):
            pass
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no network namespace: {exc}"
    return None


@contextlib.contextmanager
def loopback_namespace(tag: str) -> Iterator[str]:
    """Make a namespace with ``lo`` only (up, multicast, 224.0.0.0/4 on it) and run the
    calling thread in it; yields its name."""
    name = f"onvt-lo-{os.getpid()}-{tag}"[:40]
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _ip("netns", "add", name)
        try:
            _ip("-n", name, "link", "set", "lo", "up", "multicast", "on")
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lo")
            target = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield name
            finally:
                _setns(home)
        finally:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _ip("netns", "delete", name)
    finally:
        os.close(home)
