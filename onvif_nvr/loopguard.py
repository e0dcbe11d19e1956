"""A diagnostic guard: report blocking calls made on the event loop thread.

Enabled with the ``loop_guard`` setting (``ONVIF_NVR_LOOP_GUARD=1``) (the test suite sets it for every server it runs).
It uses Python audit hooks, so it sees file opens, sleeps, database connects, process
spawns and name lookups wherever they come from, deterministically, instead of relying on
timing. Each hit is logged once per call site as ``blocking call on the event loop``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from typing import Any

log = logging.getLogger(__name__)

_WATCHED = frozenset(
    {
        "open",
        "time.sleep",
        "sqlite3.connect",
        "subprocess.Popen",
        "os.system",
        "socket.getaddrinfo",
        "os.fsync",
    }
)
# Imports open source and bytecode files; they happen at start-up, before serving.
_IMPORT_SUFFIXES = (".py", ".pyc", ".so", ".pth", ".zip", ".pyi", ".typed")

_state: dict[str, Any] = {"thread": None, "seen": set(), "installed": False}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _WATCHED or threading.get_ident() != _state["thread"]:
        return
    if asyncio._get_running_loop() is None:
        return
    if event == "open":
        path = args[0]
        if (
            isinstance(path, int)
            or str(path).endswith(_IMPORT_SUFFIXES)
            or str(path).startswith("/proc/self/")
        ):
            return
    stack = traceback.extract_stack()[:-1]
    site = next(
        (
            f"{f.filename}:{f.lineno}"
            for f in reversed(stack)
            if "onvif_nvr" in f.filename and "loopguard" not in f.filename
        ),
        "?",
    )
    key = (event, site)
    if key in _state["seen"]:
        return
    _state["seen"].add(key)
    detail = args[0] if args else ""
    log.error("blocking call on the event loop: %s(%r) at %s", event, detail, site)


def install() -> None:
    """Watch the calling thread (the one about to run the event loop)."""
    _state["thread"] = threading.get_ident()
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True
