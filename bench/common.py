"""Helpers shared by the benchmarks: processes, pinning, readiness, machine description."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
DEVICE_PATH = "/onvif/device_service"
#: Core the server under test is pinned to; the load generator gets the other one.
SERVER_CORE = 0
LOADGEN_CORE = 1
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on loopback right now (another process could still take it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pin_prefix(core: int, pin: bool) -> list[str]:
    return ["taskset", "-c", str(core)] if pin else []


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may contain spaces; fields resume after its closing parenthesis.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cores_busy_s() -> dict[int, float]:
    """Non-idle CPU seconds of each core since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *ticks = line.split()
            t = [int(x) for x in ticks]
            # user nice system idle iowait irq softirq steal ...; idle and iowait are idle.
            out[int(name[3:])] = (sum(t[:8]) - t[3] - t[4]) / _CLK_TCK
    return out


def machine_info() -> dict:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "server_source_sha256": source_digest(),
    }


def source_digest(package: str = "onvif_nvr") -> str:
    """SHA-256 over the package's Python sources, naming the code state measured
    (the working tree may be uncommitted)."""
    h = hashlib.sha256()
    for path in sorted((REPO / package).rglob("*.py")):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


class ServerProcess:
    """A server child in its own process group, killed with the whole group on stop()."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        self._log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 5.0) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout)
            # Children that outlived the leader would still be in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        finally:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def http_exchange(port: int, request: bytes, timeout: float = 2.0) -> tuple[int, bytes]:
    """Send one request on a new connection; return (status, body). Blocking, for probes."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a full response")
            buf += chunk
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                continue
            head = buf[:i].lower()
            j = head.find(b"\r\ncontent-length:")
            if j < 0:
                # Not expected from the servers we probe; take what came with the head.
                return int(buf[9:12]), buf[i + 4 :]
            k = head.find(b"\r\n", j + 17)
            end = i + 4 + int(head[j + 17 : k if k >= 0 else len(head)])
            if len(buf) >= end:
                return int(buf[9:12]), buf[i + 4 : end]


def wait_until_answers(
    server: ServerProcess,
    port: int,
    request: bytes,
    expected: bytes,
    timeout: float = 60.0,
) -> float:
    """Poll until ``request`` gets a 200 whose body has ``expected``.

    Returns seconds since the server process was spawned.
    """
    deadline = server.started_at + timeout
    last = ""
    while True:
        if not server.alive():
            raise RuntimeError(
                f"server exited with {server.proc.returncode} before answering; log tail:\n"
                + server.log_tail()
            )
        try:
            status, body = http_exchange(port, request, timeout=2.0)
        except OSError as e:
            last = repr(e)
        else:
            if status == 200 and expected in body:
                return time.perf_counter() - server.started_at
            last = f"HTTP {status}: {body[:200]!r}"
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"server did not answer within {timeout} s (last: {last}); log tail:\n"
                + server.log_tail()
            )
        time.sleep(0.002)
