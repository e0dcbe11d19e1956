"""Live fan-out: one ~4 Mbit/s camera to 1..N TCP viewers through the box, and through
GStreamer's RTSP server (shared media) re-serving the same camera, in the same run.

* camera: ``bench.live_worker camera`` — the project's RTSP server looping the 1920x1080
  25 fps ~4 Mbit/s clip of ``bench.ingest``, stamping each frame (its slice's first bytes,
  ``CLOCK_MONOTONIC``) as it hands it to its packetizer; pinned with the viewers.
* ``ours``: ``bench.live_worker box`` — ``RtspSource`` → ``Hub`` → ``SegmentWriter``
  (recording) and the live ``RtspServer`` fanning the hub out at ``/live``; pinned alone.
* ``gstreamer``: ``bench/gst_relay.py`` under /usr/bin/python3 — ``rtspsrc ! rtph264depay !
  rtph264pay`` in a shared ``RTSPMediaFactory``; pinned alone (it does not record).
* ``direct``: one viewer on the camera itself — the latency of the path without a relay.

Viewers: ``bench.live_worker viewers``, plain asyncio clients (DESCRIBE, SETUP interleaved,
PLAY) spread over 1-4 processes. CPU: utime+stime of the server process over the window
(/proc), in % of one core; ``per_viewer`` is the cost of an extra viewer, (cpu(N) -
cpu(1)) / (N - 1), and for ours also (cpu(N) - cpu(0)) / N from the recording-only box.
Latency: for the first packet of each frame a viewer receives, its arrival minus the
camera's stamp of that frame (same machine, same monotonic clock): camera → relay →
viewer, including the viewer process's own scheduling. ``added`` = that minus ``direct``.

    .venv/bin/python -m bench.live [--viewers 1,10,50] [--seconds 10] [--servers ours,gstreamer]
        [--no-pin]

Prints a table and writes ``bench/results/live.json``. Limitations: TCP interleaved only (no
UDP viewers yet); on a 2-core machine the camera and the viewers share one core.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ServerProcess, free_port, machine_info, pin_prefix, proc_cpu_s
from bench.ingest import clip_path

PY = sys.executable
SYSTEM_PY = "/usr/bin/python3"
SERVER_CORE = 1
CLIENT_CORE = 0
CONNECT_S = 4.0
TARGETS = {"cpu_pct_per_tcp_viewer_max": 0.1, "p99_added_latency_ms_max": 20.0}


def wait_for(check, procs: list[ServerProcess], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.argv[:4]} exited:\n{p.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}:\n{procs[0].log_tail()}")


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.procs: list[ServerProcess] = []
        self.seq = 0

    def spawn(self, argv: list[str], core: int, name: str) -> ServerProcess:
        p = ServerProcess(pin_prefix(core, self.args.pin) + argv, self.tmp / f"{name}.log")
        self.procs.append(p)
        return p

    def stop(self, p: ServerProcess) -> None:
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    def stamps(self, camera: ServerProcess) -> dict[str, list[int]]:
        path = self.tmp / "stamps.json"
        path.unlink(missing_ok=True)
        os.kill(camera.pid, signal.SIGUSR2)
        data = wait_for(lambda: read_json(path), [camera], 10, "the camera's stamps")
        out: dict[str, list[int]] = {}
        for key, t in data:
            out.setdefault(key, []).append(t)
        for times in out.values():
            times.sort()
        return out

    def run_cell(self, camera: ServerProcess, server: ServerProcess | None, url: str, n: int):
        """n viewers on url for --seconds; CPU of server (None: none) and the arrivals."""
        self.seq += 1
        seconds = self.args.seconds
        if n == 0:
            time.sleep(1.0)
            window = min(seconds, 5.0)
            c0 = proc_cpu_s(server.pid)
            time.sleep(window)
            return {"viewers": 0, "cpu_pct": 100 * (proc_cpu_s(server.pid) - c0) / window}
        nproc = 1 if n == 1 else (2 if n <= 10 else 4)
        start = time.monotonic() + CONNECT_S + n * 0.01
        end = start + seconds
        workers = []
        for i in range(nproc):
            count = n // nproc + (1 if i < n % nproc else 0)
            tag = f"v{self.seq}-{i}"
            argv = [PY, "-m", "bench.live_worker", "viewers", "--url", url, "--count", str(count)]
            argv += ["--start", str(start), "--end", str(end)]
            argv += [
                "--ready",
                str(self.tmp / f"{tag}.ready"),
                "--out",
                str(self.tmp / f"{tag}.json"),
            ]
            workers.append((self.spawn(argv, CLIENT_CORE, tag), self.tmp / f"{tag}.ready", tag))
        wait_for(
            lambda: all(r.exists() for _, r, _ in workers),
            [w for w, _, _ in workers],
            start - time.monotonic() + 10,
            "the viewers to play",
        )
        late = time.monotonic() > start
        time.sleep(max(0.0, start - time.monotonic()))
        c0 = proc_cpu_s(server.pid) if server else 0.0
        time.sleep(max(0.0, end - time.monotonic()))
        c1 = proc_cpu_s(server.pid) if server else 0.0
        results = []
        for w, _, tag in workers:
            out = self.tmp / f"{tag}.json"
            results += wait_for(lambda out=out: read_json(out), [w], 30, "the viewers' results")
            self.stop(w)
        stamps = self.stamps(camera)
        return summarize(n, results, stamps, 100 * (c1 - c0) / seconds, late, seconds)


def summarize(
    n: int,
    results: list[dict],
    stamps: dict[str, list[int]],
    cpu: float,
    late: bool,
    seconds: float,
):
    pooled: list[float] = []
    per_viewer_p99: list[float] = []
    unmatched = 0
    for r in results:
        lat = []
        for key, t in r["arrivals"]:
            times = stamps.get(key)
            i = bisect.bisect_right(times, t) if times else 0
            if not i:
                unmatched += 1
                continue
            lat.append((t - times[i - 1]) / 1e6)
        pooled += lat
        if lat:
            per_viewer_p99.append(percentile(lat, 0.99))
    return {
        "viewers": n,
        "cpu_pct": cpu,
        "latency_ms_p50": percentile(pooled, 0.5),
        "latency_ms_p99": percentile(pooled, 0.99),
        "latency_ms_max": max(pooled, default=None),
        "worst_viewer_p99_ms": max(per_viewer_p99, default=None),
        "frames_measured": len(pooled),
        # a frame of several slices: only its first slice is stamped by the camera
        "other_slices_unmatched": unmatched,
        "mbit_s_per_viewer": sum(r["bytes"] for r in results)
        * 8
        / 1e6
        / seconds
        / max(1, len(results)),
        "seq_gaps": sum(r["gaps"] for r in results),
        "viewers_closed_early": sum(1 for r in results if r["closed_early"]),
        "viewers_reporting": len(results),
        "connected_late": late,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", default="1,10,50")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--servers", default="ours,gstreamer")
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--output", default=str(RESULTS / "live.json"))
    args = p.parse_args(argv)
    counts = [int(x) for x in args.viewers.split(",")]
    servers = args.servers.split(",")
    clip = clip_path()
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    bench = Bench(args, tmp)
    out: dict = {
        "machine": machine_info(),
        "seconds": args.seconds,
        "transport": "tcp-interleaved",
        "targets": TARGETS,
        "limitations": ["UDP viewers not measured", "camera and viewers share one core"],
        "servers": {},
    }
    try:
        camera = bench.spawn(
            [PY, "-m", "bench.live_worker", "camera", "--clip", str(clip)]
            + ["--ready", str(tmp / "camera.json"), "--stamps", str(tmp / "stamps.json")],
            CLIENT_CORE,
            "camera",
        )
        port = wait_for(lambda: read_json(tmp / "camera.json"), [camera], 30, "camera")["port"]
        camera_url = f"rtsp://127.0.0.1:{port}/sim/1"
        out["direct"] = bench.run_cell(camera, None, camera_url, 1)
        print(f"direct: p50 {out['direct']['latency_ms_p50']:.2f} ms", file=sys.stderr)
        for name in servers:
            if name == "ours":
                (tmp / "box").mkdir()
                server = bench.spawn(
                    [PY, "-m", "bench.live_worker", "box", "--camera", camera_url]
                    + ["--dir", str(tmp / "box"), "--ready", str(tmp / "box.json")]
                    + ["--stats", str(tmp / "box-stats.json")],
                    SERVER_CORE,
                    "box",
                )
                sport = wait_for(lambda: read_json(tmp / "box.json"), [server], 30, "box")["port"]
            else:
                sport = free_port()
                server = bench.spawn(
                    [SYSTEM_PY, "bench/gst_relay.py", camera_url, str(sport)], SERVER_CORE, "gst"
                )
                wait_for(lambda s=server: "READY" in s.log_tail(), [server], 30, "gst relay")
            url = f"rtsp://127.0.0.1:{sport}/live"
            cells = []
            for n in [0, *counts]:
                cell = bench.run_cell(camera, server, url, n)
                cells.append(cell)
                print(f"{name} {n}: {cell}", file=sys.stderr)
            entry: dict = {"cells": cells}
            if name == "ours":
                server.proc.send_signal(signal.SIGTERM)
                entry["recorder"] = wait_for(
                    lambda: read_json(tmp / "box-stats.json"), [server], 20, "box stats"
                )
            bench.stop(server)
            out["servers"][name] = entry
    finally:
        for proc in list(bench.procs):
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(out)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def report(out: dict) -> None:
    direct = out["direct"]["latency_ms_p50"] or 0.0
    print(f"direct camera -> viewer latency p50 {direct:.2f} ms (subtracted as 'added')")
    head = "server     viewers  cpu%   per-viewer%  p50ms  p99ms  added-p99  Mbit/s/v  gaps"
    print(head)
    for name, entry in out["servers"].items():
        cells = entry["cells"]
        one = next((c for c in cells if c["viewers"] == 1), None)
        for c in cells:
            n = c["viewers"]
            extra = ""
            if one is not None and n > 1:
                c["cpu_pct_per_extra_viewer"] = (c["cpu_pct"] - one["cpu_pct"]) / (n - 1)
                extra = f"{c['cpu_pct_per_extra_viewer']:.3f}"
            if name == "ours" and n > 0:
                c["cpu_pct_per_viewer_from_0"] = (c["cpu_pct"] - cells[0]["cpu_pct"]) / n
            if n == 0:
                print(f"{name:<10} {n:>7}  {c['cpu_pct']:5.1f}")
                continue
            c["added_latency_ms_p99"] = (
                c["latency_ms_p99"] - direct if c["latency_ms_p99"] else None
            )
            print(
                f"{name:<10} {n:>7}  {c['cpu_pct']:5.1f}  {extra:>11}  {c['latency_ms_p50']:5.2f}"
                f"  {c['latency_ms_p99']:5.2f}  {c['added_latency_ms_p99']:9.2f}"
                f"  {c['mbit_s_per_viewer']:8.2f}  {c['seq_gaps']:4}"
            )
        if "recorder" in entry:
            print(f"{name} recorder: {entry['recorder']}")
    for item in out["limitations"]:
        print(f"limitation: {item}")


if __name__ == "__main__":
    sys.exit(main())
