"""JPEG from a recorded camera: snapshot latency and MJPEG transcoding CPU, ours vs the FFmpeg
command line users would otherwise run, in the same run.

* camera: GStreamer's RTSP server (tests/peers/gst_rtsp_server.py under /usr/bin/python3),
  H.264 1920x1080 25 fps ~4 Mbit/s, a keyframe every ``--gop`` frames; pinned with the clients.
* box: ``onvif-nvr serve`` recording that camera (added with ``onvif-nvr camera add``); pinned
  alone.
* snapshots, ours: ``GET /snapshot/<token>`` with HTTP Digest (requests' HTTPDigestAuth on
  one keep-alive session, so each request is one round trip after the first). ``cached``:
  back-to-back requests (the picture kept for 1 s); ``cold``: one request after each new
  keyframe and the cache's expiry (a decode and an encode each). Box CPU per cold snapshot is
  its CPU over the cold phase minus its recording-only rate.
* snapshots, peer: ``ffmpeg -rtsp_transport tcp -i CAMERA -frames:v 1 out.jpg`` per picture
  (connect, wait for a keyframe, decode, encode), wall time and CPU (rusage of the child).
* MJPEG: the box's CPU with 0, 1 and 3 FFmpeg viewers of ``/live/<token>/jpeg`` (5 fps;
  viewers share one transcoder) minus recording only, in % of one core; peer: ``ffmpeg -i
  CAMERA -vf fps=5 -c:v mjpeg -q:v 5 -f null -``, the transcode users would run per stream.

    .venv/bin/python -m bench.snapshot [--cold 15] [--cached 300] [--seconds 10] [--gop 25]
        [--size 1920x1080] [--no-pin]

Prints a table and writes ``bench/results/snapshot.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from requests.auth import HTTPDigestAuth

from bench.common import RESULTS, ServerProcess, free_port, machine_info, pin_prefix, proc_cpu_s

PY = sys.executable
SYSTEM_PY = "/usr/bin/python3"
SERVER_CORE = 1
CLIENT_CORE = 0
PASSWORD = "bench-Secret-1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def wait_log(process: ServerProcess, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in process.log_path.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        if not process.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"{needle!r} not seen; log tail:\n{process.log_tail()}")


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary_ms(values_s: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values_s),
        "p50_ms": round(percentile(values_s, 50) * 1000, 2),
        "p99_ms": round(percentile(values_s, 99) * 1000, 2),
    }


def box_cpu_pct(box: ServerProcess, seconds: float) -> float:
    start_cpu, start = proc_cpu_s(box.pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (proc_cpu_s(box.pid) - start_cpu) / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=15, help="cold snapshots (one per GOP)")
    parser.add_argument("--cached", type=int, default=300, help="cached snapshots")
    parser.add_argument("--grabs", type=int, default=10, help="ffmpeg one-frame grabs")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU window per MJPEG cell")
    parser.add_argument("--gop", type=int, default=25, help="camera keyframe interval, frames")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    pin = not args.no_pin
    gop_s = args.gop / 25
    out: dict = {
        "parameters": {**vars(args), "camera": f"H.264 {args.size} 25 fps 4 Mbit/s"},
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp_name:
        tmp = Path(tmp_name)
        camera_port, http_port, rtsp_port = free_port(), free_port(), free_port()
        camera = ServerProcess(
            [
                *pin_prefix(CLIENT_CORE, pin),
                SYSTEM_PY,
                "tests/peers/gst_rtsp_server.py",
                str(camera_port),
                "--size",
                args.size,
                "--fps",
                "25",
                "--gop",
                str(args.gop),
                "--bitrate",
                "4000",
            ],
            tmp / "camera.log",
        )
        camera_url = f"rtsp://127.0.0.1:{camera_port}/live"
        box: ServerProcess | None = None
        try:
            wait_log(camera, "READY", 20)
            data = tmp / "data"
            subprocess.run(
                [
                    PY,
                    "-m",
                    "onvif_nvr",
                    "camera",
                    "--data-dir",
                    str(data),
                    "add",
                    "cam",
                    camera_url,
                ],
                check=True,
                capture_output=True,
            )
            box = ServerProcess(
                [
                    *pin_prefix(SERVER_CORE, pin),
                    PY,
                    "-m",
                    "onvif_nvr",
                    "serve",
                    "--data-dir",
                    str(data),
                    "--bind",
                    "127.0.0.1",
                    "--http-port",
                    str(http_port),
                    "--rtsp-port",
                    str(rtsp_port),
                    "--admin-password",
                    PASSWORD,
                ],
                tmp / "box.log",
                env={
                    **os.environ,
                    "ONVIF_NVR_DISCOVERY_ENABLED": "false",
                    "PYTHONUNBUFFERED": "1",
                },
            )
            live = wait_log(box, "onvif-nvr: live rtsp://", 60).split("onvif-nvr: live ", 1)[1]
            token = live.rstrip("/").rpartition("/")[2]
            snapshot_url = f"http://127.0.0.1:{http_port}/snapshot/{token}"
            session = requests.Session()
            session.auth = HTTPDigestAuth("admin", PASSWORD)
            deadline = time.monotonic() + 30
            while session.get(snapshot_url, timeout=10).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("no snapshot within 30 s:\n" + box.log_tail())
                time.sleep(0.2)
            time.sleep(3)
            idle_pct = box_cpu_pct(box, args.seconds)

            # -- snapshots, ours ------------------------------------------------------------
            cached = []
            for _ in range(args.cached):
                t0 = time.perf_counter()
                reply = session.get(snapshot_url, timeout=10)
                cached.append(time.perf_counter() - t0)
                assert reply.status_code == 200
            cold, previous, new_pictures = [], b"", 0
            cpu0, wall0 = proc_cpu_s(box.pid), time.monotonic()
            for _ in range(args.cold):
                time.sleep(max(1.05, gop_s + 0.05))
                t0 = time.perf_counter()
                reply = session.get(snapshot_url, timeout=10)
                cold.append(time.perf_counter() - t0)
                new_pictures += reply.content != previous
                previous = reply.content
            cold_cpu_s = proc_cpu_s(box.pid) - cpu0
            cold_wall_s = time.monotonic() - wall0
            per_cold_ms = 1000 * (cold_cpu_s - idle_pct / 100 * cold_wall_s) / args.cold
            ours_snap = {
                "cached": summary_ms(cached),
                "cold": {**summary_ms(cold), "new_pictures": new_pictures},
                "cpu_ms_per_cold_snapshot": round(per_cold_ms, 1),
                "jpeg_bytes": len(previous),
            }

            # -- snapshots, ffmpeg CLI ------------------------------------------------------
            grabs, grab_cpu = [], []
            for i in range(args.grabs):
                target = tmp / f"grab{i}.jpg"
                cpu_before, t0 = child_cpu_s(), time.perf_counter()
                subprocess.run(
                    [
                        *pin_prefix(SERVER_CORE, pin),
                        "ffmpeg",
                        "-loglevel",
                        "error",
                        "-rtsp_transport",
                        "tcp",
                        "-i",
                        camera_url,
                        "-frames:v",
                        "1",
                        "-y",
                        str(target),
                    ],
                    check=True,
                    timeout=60,
                )
                grabs.append(time.perf_counter() - t0)
                grab_cpu.append(child_cpu_s() - cpu_before)
            peer_snap = {
                **summary_ms(grabs),
                "cpu_ms_per_snapshot": round(1000 * sum(grab_cpu) / len(grab_cpu), 1),
            }

            # -- MJPEG transcoding ----------------------------------------------------------
            mjpeg_url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{rtsp_port}/live/{token}/jpeg"
            cells = {}
            for viewers in (1, 3):
                procs = [
                    subprocess.Popen(
                        [
                            *pin_prefix(CLIENT_CORE, pin),
                            "ffmpeg",
                            "-loglevel",
                            "error",
                            "-rtsp_transport",
                            "tcp",
                            "-i",
                            mjpeg_url,
                            "-f",
                            "null",
                            "-",
                        ],
                        stdin=subprocess.DEVNULL,
                    )
                    for _ in range(viewers)
                ]
                try:
                    time.sleep(3)
                    cells[viewers] = box_cpu_pct(box, args.seconds)
                finally:
                    for p in procs:
                        p.terminate()
                        p.wait(10)
            time.sleep(3)
            after_pct = box_cpu_pct(box, args.seconds)
            peer = subprocess.Popen(
                [
                    *pin_prefix(SERVER_CORE, pin),
                    "ffmpeg",
                    "-loglevel",
                    "error",
                    "-rtsp_transport",
                    "tcp",
                    "-i",
                    camera_url,
                    "-an",
                    "-vf",
                    "fps=5",
                    "-c:v",
                    "mjpeg",
                    "-q:v",
                    "5",
                    "-f",
                    "null",
                    "-",
                ],
                stdin=subprocess.DEVNULL,
            )
            try:
                time.sleep(3)
                start_cpu, start = proc_cpu_s(peer.pid), time.monotonic()
                time.sleep(args.seconds)
                peer_pct = 100 * (proc_cpu_s(peer.pid) - start_cpu) / (time.monotonic() - start)
            finally:
                peer.terminate()
                peer.wait(10)
            ours_mjpeg = {
                "cpu_pct_recording_only": round(idle_pct, 2),
                "cpu_pct_1_viewer": round(cells[1], 2),
                "cpu_pct_3_viewers": round(cells[3], 2),
                "cpu_pct_after_viewers_left": round(after_pct, 2),
                "cpu_pct_per_stream": round(cells[1] - idle_pct, 2),
                "cpu_pct_per_extra_viewer": round((cells[3] - cells[1]) / 2, 2),
            }
            out["snapshot"] = {
                "ours": ours_snap,
                "ffmpeg_cli": peer_snap,
                "cold_p50_ratio": round(
                    ours_snap["cold"]["p50_ms"] / peer_snap["p50_ms"],
                    4,  # type: ignore[operator]
                ),
            }
            out["mjpeg"] = {
                "ours": ours_mjpeg,
                "ffmpeg_cli": {"cpu_pct_per_stream": round(peer_pct, 2)},
                "per_stream_ratio": round((cells[1] - idle_pct) / peer_pct, 3),
            }
        finally:
            if box is not None:
                box.stop()
            camera.stop()
    report(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "snapshot.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


def report(out: dict) -> None:
    snap, mjpeg = out["snapshot"], out["mjpeg"]
    ours, peer = snap["ours"], snap["ffmpeg_cli"]
    print(f"snapshot of {out['parameters']['camera']}")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms':>10}")
    print(f"{'ours, cached':28}{ours['cached']['p50_ms']:>10}{ours['cached']['p99_ms']:>10}")
    print(
        f"{'ours, cold (new keyframe)':28}{ours['cold']['p50_ms']:>10}{ours['cold']['p99_ms']:>10}"
        f"{ours['cpu_ms_per_cold_snapshot']:>10}"
    )
    print(
        f"{'ffmpeg -frames:v 1':28}{peer['p50_ms']:>10}{peer['p99_ms']:>10}"
        f"{peer['cpu_ms_per_snapshot']:>10}"
    )
    m = mjpeg["ours"]
    print("MJPEG 5 fps, % of one core")
    print(f"  box recording only            {m['cpu_pct_recording_only']}")
    print(f"  ours per stream (1 viewer)    {m['cpu_pct_per_stream']}")
    print(f"  ours per extra viewer         {m['cpu_pct_per_extra_viewer']}")
    print(f"  after the viewers left        {m['cpu_pct_after_viewers_left']}")
    print(f"  ffmpeg per stream             {mjpeg['ffmpeg_cli']['cpu_pct_per_stream']}")


if __name__ == "__main__":
    sys.exit(main())
