"""Run the NVR as a real process on loopback, as a client would meet it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving ONVIF on http://[^:]+:(\d+)/")
_RTSP = re.compile(r"serving live RTSP on rtsp://[^:]+:(\d+)/")
_BLOCKING = re.compile(r"blocking call on the event loop")


class NvrProcess:
    """``onvif-nvr serve`` in a subprocess with the loop guard on (onvif_nvr/loopguard.py):
    a blocking call made on the event loop shows up in its log (see ``blocking_calls``)."""

    def __init__(
        self,
        data_dir: Path,
        admin_password: str = "adminpw",
        extra_env: dict[str, str] | None = None,
        *,
        bind: str = "127.0.0.1",
        prefix: list[str] | None = None,
        extra_args: list[str] | None = None,
        command: str = "serve",
    ):
        self.data_dir = data_dir
        self.admin_password = admin_password
        self.extra_env = extra_env or {}
        self.bind = bind
        #: Prepended to the command, e.g. ``ip netns exec NS`` to run on a test host.
        self.prefix = prefix or []
        self.extra_args = extra_args or []
        self.command = command
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        #: The live RTSP server's port (from the "serving live RTSP" line).
        self.rtsp_port = 0
        self.output: list[str] = []
        self._ports: list[int] = []
        self._lock = threading.Condition()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def device_url(self) -> str:
        return self.base + "/onvif/device_service"

    def start(self, timeout_s: float = 30.0) -> None:
        env = {
            **os.environ,
            "ONVIF_NVR_LOOP_GUARD": "1",
            "PYTHONUNBUFFERED": "1",
            # WS-Discovery only where a test asks for it (tests/test_discovery.py).
            "ONVIF_NVR_DISCOVERY_ENABLED": "false",
            # Any free RTSP port: tests run side by side (live streams: ``rtsp_port``).
            "ONVIF_NVR_RTSP_PORT": "0",
            **self.extra_env,
        }
        env.pop("ONVIF_NVR_ADMIN_PASSWORD", None)
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "onvif_nvr",
                self.command,
                "--data-dir",
                str(self.data_dir),
                "--bind",
                self.bind,
                "--http-port",
                str(self.port or 0),
                "--admin-password",
                self.admin_password,
                *self.extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._reader.start()
        self.wait_serving(timeout_s, count=len(self._ports) + 1)

    def wait_serving(self, timeout_s: float = 30.0, count: int | None = None) -> None:
        """Wait for the ``count``-th "serving" line (a SystemReboot prints another)."""
        want = count if count is not None else len(self._ports) + 1
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self._ports) < want:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    output = "".join(self.output[-50:])
                    self._lock.release()
                    try:
                        self.stop()
                    finally:
                        self._lock.acquire()
                    raise RuntimeError("NVR did not start:\n" + output)
                self._lock.wait(min(remaining, 0.2))
            self.port = self._ports[-1]

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.output.append(line)
                rtsp = _RTSP.search(line)
                if rtsp:
                    self.rtsp_port = int(rtsp.group(1))
                match = _SERVING.search(line)
                if match:
                    self._ports.append(int(match.group(1)))
                self._lock.notify_all()

    def blocking_calls(self) -> list[str]:
        return [line for line in self.output if _BLOCKING.search(line)]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(5)
        if self.proc.stdout is not None:
            self._reader.join(5)
            self.proc.stdout.close()
        self.proc = None
        return code

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running(data_dir: Path, **kwargs: object) -> Iterator[NvrProcess]:
    nvr = NvrProcess(data_dir, **kwargs)  # type: ignore[arg-type]
    nvr.start()
    try:
        yield nvr
    finally:
        nvr.stop()
