"""Live fan-out: one ~4 Mbit/s camera to 1..N viewers over TCP and over UDP through the box,
and through GStreamer's RTSP server (shared media) re-serving the same camera, in the same run.

* camera: ``bench.live_worker camera`` — the project's RTSP server looping the 1920x1080
  25 fps ~4 Mbit/s clip of ``bench.ingest``, stamping each frame (its slice's first bytes,
  ``CLOCK_MONOTONIC``) as it hands it to its packetizer; pinned with the viewers.
* ``ours``: ``bench.live_worker box`` — ``RtspSource`` → ``Hub`` → ``SegmentWriter``
  (recording) and the live ``RtspServer`` fanning the hub out at ``/live``; pinned alone.
* ``gstreamer``: ``bench/gst_relay.py`` under /usr/bin/python3 — ``rtspsrc ! rtph264depay !
  rtph264pay`` in a shared ``RTSPMediaFactory``; pinned alone (it does not record).
* ``direct``: one viewer on the camera itself, per transport — the latency of the path
  without a relay.

Viewers: ``bench.live_worker viewers``, plain RTSP clients (DESCRIBE, SETUP interleaved or
UDP unicast, PLAY) spread over 1-4 processes, niced below the camera. CPU: utime+stime of the
server process over the window (/proc), in % of one core; ``per_viewer`` is the cost of an
extra viewer, (cpu(N) - cpu(1)) / (N - 1), and for ours also (cpu(N) - cpu(0)) / N from the
recording-only box. Latency, per frame a viewer receives: the kernel's receive time of the
packet (SO_TIMESTAMPNS, converted to the monotonic clock) minus the camera's stamp of that
frame (same machine): camera → relay → viewer's socket, without the viewers' own
scheduling. ``first`` is a frame's first packet (the figure of the targets), ``last`` its
last (the whole frame has arrived), ``read`` when the viewer process read the first packet
(with the viewers' scheduling on their shared core). ``added`` = p99 minus ``direct``'s p50.

    .venv/bin/python -m bench.live [--viewers 1,10,50] [--seconds 10] [--servers ours,gstreamer]
        [--transports tcp,udp] [--no-pin]

Prints a table and writes ``bench/results/live.json``. Limitation: on a 2-core machine the
camera and the viewers share one core.
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
TARGETS = {
    "cpu_pct_per_tcp_viewer_max": 0.1,
    "cpu_pct_per_udp_viewer_max": 0.3,
    "p99_added_latency_ms_max": 20.0,
}


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

    def run_cell(
        self,
        camera: ServerProcess,
        server: ServerProcess | None,
        url: str,
        n: int,
        transport: str = "tcp",
    ):
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
            argv += ["--transport", transport]
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
        cell = summarize(n, results, stamps, 100 * (c1 - c0) / seconds, late, seconds)
        cell["transport"] = transport
        return cell


def summarize(
    n: int,
    results: list[dict],
    stamps: dict[str, list[int]],
    cpu: float,
    late: bool,
    seconds: float,
):
    first: list[float] = []
    last: list[float] = []
    read: list[float] = []
    per_viewer_p99: list[float] = []
    unmatched = 0
    #: per stamped frame, its first packet's latency at each viewer
    by_frame: dict[int, list[float]] = {}
    for r in results:
        lat = []
        for key, first_ns, read_ns, last_ns in r["frames"]:
            times = stamps.get(key)
            i = bisect.bisect_right(times, first_ns) if times else 0
            if not i:
                unmatched += 1
                continue
            stamp = times[i - 1]
            lat.append((first_ns - stamp) / 1e6)
            by_frame.setdefault(stamp, []).append(lat[-1])
            read.append((read_ns - stamp) / 1e6)
            if last_ns is not None:
                last.append((last_ns - stamp) / 1e6)
        first += lat
        if lat:
            per_viewer_p99.append(percentile(lat, 0.99))
    return {
        "viewers": n,
        "cpu_pct": cpu,
        "latency_ms_p50": percentile(first, 0.5),
        "latency_ms_p99": percentile(first, 0.99),
        "latency_ms_max": max(first, default=None),
        "worst_viewer_p99_ms": max(per_viewer_p99, default=None),
        "frame_last_packet_ms_p50": percentile(last, 0.5),
        "frame_last_packet_ms_p99": percentile(last, 0.99),
        "read_by_viewer_ms_p50": percentile(read, 0.5),
        "read_by_viewer_ms_p99": percentile(read, 0.99),
        # Where the time goes: a frame's delay to its first viewer (camera, ingest, hub,
        # packetizing: shared by all) and from its first to its last viewer (the fan-out).
        "frame_to_first_viewer_ms_p99": percentile([min(v) for v in by_frame.values()], 0.99),
        "first_to_last_viewer_ms_p99": percentile(
            [max(v) - min(v) for v in by_frame.values()], 0.99
        ),
        "frames_measured": len(first),
        # a frame of several slices: only its first slice is stamped by the camera
        "other_slices_unmatched": unmatched,
        "mbit_s_per_viewer": sum(r["bytes"] for r in results)
        * 8
        / 1e6
        / seconds
        / max(1, len(results)),
        "seq_gaps": sum(r["gaps"] for r in results),
        "packets_lost": sum(r["lost"] for r in results),
        "viewers_closed_early": sum(1 for r in results if r["closed_early"]),
        "viewers_reporting": len(results),
        "connected_late": late,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", default="1,10,50")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--servers", default="ours,gstreamer")
    p.add_argument("--transports", default="tcp,udp", help="viewers' RTP transports")
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--output", default=str(RESULTS / "live.json"))
    args = p.parse_args(argv)
    counts = [int(x) for x in args.viewers.split(",")]
    servers = args.servers.split(",")
    transports = args.transports.split(",")
    if not set(transports) <= {"tcp", "udp"}:
        p.error("--transports: tcp, udp")
    clip = clip_path()
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    bench = Bench(args, tmp)
    out: dict = {
        "machine": machine_info(),
        "seconds": args.seconds,
        "transports": transports,
        "targets": TARGETS,
        "limitations": [
            "camera and viewers share one core (viewers niced; latency from kernel receive times)"
        ],
        "direct": {},
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
        for transport in transports:
            direct = out["direct"][transport] = bench.run_cell(
                camera, None, camera_url, 1, transport
            )
            print(f"direct {transport}: p50 {direct['latency_ms_p50']:.2f} ms", file=sys.stderr)
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
            entry: dict = {"idle": bench.run_cell(camera, server, url, 0)}
            print(f"{name} 0: {entry['idle']}", file=sys.stderr)
            for transport in transports:
                cells = entry[transport] = []
                for n in counts:
                    cell = bench.run_cell(camera, server, url, n, transport)
                    cells.append(cell)
                    print(f"{name} {transport} {n}: {cell}", file=sys.stderr)
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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(out: dict) -> None:
    """Print the table; adds the derived figures (per viewer, added latency) to ``out``."""
    for transport, direct_cell in out["direct"].items():
        print(
            f"direct camera -> viewer {transport}: first packet p50"
            f" {_ms(direct_cell['latency_ms_p50'])} ms (subtracted as 'added'),"
            f" p99 {_ms(direct_cell['latency_ms_p99'])} ms"
        )
    print(
        "server     trans viewers  cpu%  per-viewer%  first p50/p99 ms  added-p99"
        "  last p99  read p99  Mbit/s/v  lost"
    )
    for name, entry in out["servers"].items():
        idle = entry["idle"]["cpu_pct"]
        print(f"{name:<10} {'-':<5} {0:>7}  {idle:5.1f}")
        for transport in out["transports"]:
            cells = entry[transport]
            direct = out["direct"][transport]["latency_ms_p50"] or 0.0
            one = next((c for c in cells if c["viewers"] == 1), None)
            for c in cells:
                n = c["viewers"]
                extra = ""
                if one is not None and n > 1:
                    c["cpu_pct_per_extra_viewer"] = (c["cpu_pct"] - one["cpu_pct"]) / (n - 1)
                    extra = f"{c['cpu_pct_per_extra_viewer']:.3f}"
                if name == "ours":
                    c["cpu_pct_per_viewer_from_0"] = (c["cpu_pct"] - idle) / n
                p99 = c["latency_ms_p99"]
                c["added_latency_ms_p99"] = p99 - direct if p99 is not None else None
                print(
                    f"{name:<10} {transport:<5} {n:>7}  {c['cpu_pct']:5.1f}  {extra:>11}"
                    f"  {_ms(c['latency_ms_p50']):>7}/{_ms(p99):<7}"
                    f"  {_ms(c['added_latency_ms_p99']):>9}"
                    f"  {_ms(c['frame_last_packet_ms_p99']):>8}"
                    f"  {_ms(c['read_by_viewer_ms_p99']):>8}"
                    f"  {c['mbit_s_per_viewer']:8.2f}  {c['packets_lost']:4}"
                )
                if n > 1:
                    print(
                        f"{'':<24}p99: frame to its first viewer"
                        f" {_ms(c['frame_to_first_viewer_ms_p99'])} ms, first to last viewer"
                        f" {_ms(c['first_to_last_viewer_ms_p99'])} ms"
                    )
        if "recorder" in entry:
            print(f"{name} recorder: {entry['recorder']}")
    for item in out["limitations"]:
        print(f"limitation: {item}")


if __name__ == "__main__":
    sys.exit(main())
