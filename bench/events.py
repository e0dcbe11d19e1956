"""Event delivery under load: 64 pull-point subscribers (long-poll PullMessages, as
Core §9.1 and onvif-zeep-async/Home Assistant do) and 8 Basic Notification consumers
while the box publishes at a steady rate and records ``--channels`` cameras; then the same
64 pull points polled the way naive clients do (PullMessages with a zero Timeout once a
second). Prints delivery latency (UtcTime of the event to its arrival) p50/p99 and the
CPU of the box, its cameras and the clients.

The subscribers are spread over ``--clients`` processes (bench/events_client.py); the
cameras are the project's RTSP server with N looping mounts (``bench.ingest_worker
server``, the ingest bench's 1080p 4 Mbit/s clip), in a process of its own.

    python -m bench.events --seconds 20 --rate 20 --channels 64 --clients 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, free_port, machine_info, proc_cpu_s

PULLS, PUSHES = 64, 8


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def phase(port: int, args: argparse.Namespace, long_poll: bool, watched: dict[str, int]):
    """One measurement: the client processes start together; CPU is taken over the window."""
    start_at = time.time() + 3 + 0.05 * PULLS
    pushes = PUSHES if long_poll else 0
    clients = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.events_client",
            str(port),
            str(pulls),
            str(push),
            str(args.seconds),
            "long" if long_poll else "short",
            str(start_at),
            stdout=subprocess.PIPE,
            limit=2**28,  # the latencies come back as one JSON line
        )
        for pulls, push in zip(split(PULLS, args.clients), split(pushes, args.clients), strict=True)
    ]
    for client in clients:
        assert client.stdout is not None
        line = await client.stdout.readline()
        assert line.startswith(b"ready"), line
    await asyncio.sleep(max(0.0, start_at - time.time()))
    pids = {**watched, **{f"client{i}": c.pid for i, c in enumerate(clients)}}
    cpu0, t0 = {k: proc_cpu_s(v) for k, v in pids.items()}, time.monotonic()
    await asyncio.sleep(args.seconds)
    elapsed = time.monotonic() - t0
    cpu = {k: round((proc_cpu_s(v) - cpu0[k]) / elapsed, 3) for k, v in pids.items()}
    pull_ms: list[float] = []
    push_ms: list[float] = []
    for client in clients:
        assert client.stdout is not None
        out = json.loads(await client.stdout.readline())
        pull_ms += out["pull"]
        push_ms += out["push"]
        await client.wait()
    return pull_ms, push_ms, cpu


async def run(args: argparse.Namespace) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        watched: dict[str, int] = {}
        cameras = None
        box_argv = [sys.executable, "-m", "bench.events_box", tmp, str(port), str(args.rate)]
        if args.channels:
            from bench.ingest import clip_path

            ready = Path(tmp) / "cameras.ready"
            cameras = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "bench.ingest_worker", "server", "--clip", str(clip_path())]
                + ["--channels", str(args.channels), "--ready", str(ready)]
                + ["--counts", str(Path(tmp) / "cameras.counts")],
                stdout=subprocess.DEVNULL,
            )
            while not ready.exists() or not ready.read_text().strip():
                assert cameras.poll() is None, "the camera server died"
                await asyncio.sleep(0.2)
            camera_port = json.loads(ready.read_text())["port"]
            box_argv += [f"rtsp://127.0.0.1:{camera_port}/sim/", str(args.channels)]
            watched["cameras"] = cameras.pid
        box_env = dict(os.environ)
        if args.probe:
            box_env["BENCH_LOOP_PROBE"] = args.probe
        box = await asyncio.to_thread(
            subprocess.Popen,
            box_argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=box_env,
        )
        watched["box"] = box.pid
        try:
            assert box.stdout is not None
            line = await asyncio.to_thread(box.stdout.readline)
            assert line.startswith("ready"), line
            pulls, pushes, cpu = await phase(port, args, True, watched)
            naive, naive_cpu = [], {}
            if not args.skip_naive:
                naive, _, naive_cpu = await phase(port, args, False, watched)
        finally:
            box.terminate()
            await asyncio.to_thread(box.wait, 30)
            if cameras is not None:
                cameras.terminate()
                await asyncio.to_thread(cameras.wait, 10)
    return {
        "params": {
            "seconds": args.seconds,
            "rate_per_s": args.rate,
            "pull": PULLS,
            "push": PUSHES,
            "channels_recording": args.channels,
            "client_processes": args.clients,
        },
        "long_poll": {**summary(pulls), "cpu": cpu},
        "push": summary(pushes),
        "naive_1s_poll": {**summary(naive), "cpu": naive_cpu},
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20, help="events published per second")
    parser.add_argument("--channels", type=int, default=64, help="cameras recorded meanwhile")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--out", default="events.json", help="file name in bench/results")
    parser.add_argument(
        "--probe",
        help="file the box writes its loop lag and slowest callbacks to, every second",
    )
    parser.add_argument(
        "--skip-naive", action="store_true", help="only the long-poll and push measurement"
    )
    args = parser.parse_args()
    if args.probe:
        args.probe = os.path.abspath(args.probe)  # the box runs in a temporary directory
    result = asyncio.run(run(args))
    lp, push, naive = result["long_poll"], result["push"], result["naive_1s_poll"]
    long_ratio = naive.get("p50_ms", 0) / lp["p50_ms"] if lp.get("p50_ms") else None
    result["ratio_naive_over_long_poll_p50"] = round(long_ratio, 1) if long_ratio else None
    print(f"{args.channels} channels recording, {args.clients} client processes")
    print(f"{'pattern':<32}{'msgs':>9}{'p50 ms':>10}{'p99 ms':>10}{'box CPU':>10}")
    rows = [
        ("64 pull points, long-poll", lp, lp["cpu"]["box"]),
        ("8 push (Notify) consumers", push, None),
        ("64 pull points, 1 s short poll", naive, naive["cpu"].get("box")),
    ]
    for name, figures, box_cpu in rows:
        cpu_text = f"{box_cpu:.1%}" if box_cpu is not None else "(same run)"
        print(
            f"{name:<32}{figures['count']:>9}{figures.get('p50_ms', '-'):>10}"
            f"{figures.get('p99_ms', '-'):>10}{cpu_text:>10}"
        )
    print("CPU (share of one core) during the long-poll run:", lp["cpu"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
