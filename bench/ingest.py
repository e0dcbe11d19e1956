"""Cost of recording N camera channels: our native recorder against FFmpeg and PyAV.

The source is the project's RTSP server (``bench.ingest_worker server``) with N mounts of
one looping 1920x1080 25 fps ~4 Mbit/s H.264 clip, in its own process pinned to core 0
(it is the load generator, not measured). The recorder under test runs pinned to core 1:

* ``ours``: ``RtspSource`` → ``Hub`` → ``SegmentWriter`` + ``SegmentIndex`` (SQLite), all
  channels in one process and one event loop (``bench.ingest_worker record``);
* ``ffmpeg``: one ``ffmpeg -c copy -f segment`` process per camera;
* ``pyav``: the project's fallback ``PyAVSource`` → same hub and writer, one process.

Per cell (recorder × N): a warm-up once every channel delivers, then a measured window.
CPU is utime+stime of the recorder process(es) over the window (/proc/<pid>/stat, all
threads, summed over the FFmpeg processes), per channel in % of one core. RSS is VmRSS at
the end of the window, summed, per channel. Throughput is the growth of the recorded
files over the window. Lost frames: at the end the server stops sending and reports the
units it handed to each viewer; the recorder then drains and stops, and the frames it
recorded (ours/pyav: ``units_written`` after the last segment is closed; ffmpeg: video
packets in its output files, counted with PyAV) are subtracted.

    .venv/bin/python -m bench.ingest [--channels 1,8,32] [--seconds 20] [--warmup 3]
        [--recorders ours,ffmpeg,pyav] [--no-pin]

Prints a table and writes ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, RESULTS, ServerProcess, machine_info, pin_prefix, proc_cpu_s

SOURCE_CORE = 0
RECORDER_CORE = 1
CACHE = Path("/tmp/onvif-nvr-bench")
CLIP = {"width": 1920, "height": 1080, "fps": 25, "seconds": 10, "gop": 25, "bitrate_kbps": 4000}
RECORDERS = ("ours", "ffmpeg", "pyav")
TARGETS = {
    "cpu_pct_per_channel_max": 0.3,
    "cpu_ratio_to_ffmpeg_max": 0.4,
    "rss_mb_per_channel_max": 10.0,
    "lost_frames_max": 0,
}
PY = sys.executable


def clip_path() -> Path:
    c = CLIP
    name = (
        f"clip-{c['width']}x{c['height']}-{c['fps']}fps-{c['bitrate_kbps']}k"
        f"-g{c['gop']}-{c['seconds']}s.h264"
    )
    path = CACHE / name
    if not path.exists():
        from onvif_nvr.recording.simulator import make_clip

        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"making {path} (once)", file=sys.stderr)
        make_clip(path, **c)
    return path


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith((".mp4", ".m4s")):
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(root, name)).st_size
    return total


def wait_file(path: Path, procs: list[ServerProcess], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.argv[:4]} exited:\n{p.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {path.name}:\n{procs[0].log_tail()}")


def count_packets(files: list[Path]) -> int:
    import av

    total = 0
    for path in files:
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                total += sum(1 for p in container.demux(stream) if p.size)
        except (av.FFmpegError, IndexError) as exc:
            print(f"cannot read {path}: {exc}", file=sys.stderr)
    return total


class Cell:
    """One recorder × N measurement; every child is stopped by ``stop_all``."""

    def __init__(self, args: argparse.Namespace, recorder: str, n: int, tmp: Path) -> None:
        self.args, self.recorder, self.n = args, recorder, n
        self.tmp = tmp / f"{recorder}-{n}"
        self.tmp.mkdir()
        self.children: list[ServerProcess] = []

    def spawn(self, argv: list[str], core: int, log: str) -> ServerProcess:
        proc = ServerProcess(pin_prefix(core, not self.args.no_pin) + argv, self.tmp / log)
        self.children.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.children:
            p.stop()

    def run(self, clip: Path) -> dict:
        t = self.tmp
        server = self.spawn(
            [PY, "-m", "bench.ingest_worker", "server", "--clip", str(clip)]
            + ["--channels", str(self.n), "--ready", str(t / "server.ready")]
            + ["--counts", str(t / "counts.json")],
            SOURCE_CORE,
            "server.log",
        )
        port = wait_file(t / "server.ready", [server], 60)["port"]
        base = f"rtsp://127.0.0.1:{port}/sim/"
        out = t / "out"
        out.mkdir()
        if self.recorder == "ffmpeg":
            recorders = []
            for i in range(1, self.n + 1):
                (out / str(i)).mkdir()
                recorders.append(
                    self.spawn(
                        ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"]
                        + ["-i", f"{base}{i}", "-c", "copy", "-f", "segment"]
                        + ["-segment_time", "60", "-reset_timestamps", "1"]
                        + [str(out / str(i) / "OUT_%05d.mp4")],
                        RECORDER_CORE,
                        f"ffmpeg-{i}.log",
                    )
                )
            deadline = time.monotonic() + 30
            while dir_bytes(out) == 0 or any(
                not any((out / str(i)).iterdir()) for i in range(1, self.n + 1)
            ):
                if time.monotonic() > deadline or not all(r.alive() for r in recorders):
                    raise RuntimeError("ffmpeg did not start:\n" + recorders[0].log_tail())
                time.sleep(0.1)
        else:
            backend = "native" if self.recorder == "ours" else "pyav"
            recorders = [
                self.spawn(
                    [PY, "-m", "bench.ingest_worker", "record", "--backend", backend]
                    + ["--base", base, "--channels", str(self.n), "--dir", str(out)]
                    + ["--ready", str(t / "rec.ready"), "--stats", str(t / "stats.json")]
                    + ["--fsync", self.args.fsync],
                    RECORDER_CORE,
                    "recorder.log",
                )
            ]
            wait_file(t / "rec.ready", [recorders[0], server], 60 + self.n)
        time.sleep(self.args.warmup)

        pids = [r.pid for r in recorders]
        cpu0, bytes0, wall0 = sum(map(proc_cpu_s, pids)), dir_bytes(out), time.perf_counter()
        time.sleep(self.args.seconds)
        cpu1, bytes1, wall1 = sum(map(proc_cpu_s, pids)), dir_bytes(out), time.perf_counter()
        rss = sum(map(rss_bytes, pids))
        window = wall1 - wall0
        if not all(r.alive() for r in recorders):
            raise RuntimeError("a recorder died:\n" + recorders[0].log_tail())

        # Stop the source first, so that everything sent can be drained and counted.
        os.kill(server.pid, signal.SIGUSR1)
        counts = wait_file(t / "counts.json", [server], 10)
        time.sleep(self.args.drain)
        stats = None
        for r in recorders:
            os.kill(r.pid, signal.SIGINT if self.recorder == "ffmpeg" else signal.SIGTERM)
        if self.recorder == "ffmpeg":
            # FFmpeg's first SIGINT only ends its main loop; a read blocked on the silent
            # source is interrupted by the second (it still writes the trailer).
            time.sleep(1.0)
            for r in recorders:
                if r.alive():
                    os.kill(r.pid, signal.SIGINT)
        for r in recorders:
            try:
                r.proc.wait(30 + self.n)
            except subprocess.TimeoutExpired:
                print(f"{self.recorder}: a recorder did not stop in time", file=sys.stderr)
        if self.recorder == "ffmpeg":
            recorded = count_packets(sorted(out.rglob("*.mp4")))
            extra: dict = {}
        else:
            stats = wait_file(t / "stats.json", [server], 1)
            recorded = sum(c["units_written"] for c in stats["channels"])
            extra = {
                "hub_dropped": sum(c["hub_dropped"] for c in stats["channels"]),
                "units_skipped": sum(c["units_skipped"] for c in stats["channels"]),
                "storage_errors": sum(c["storage_errors"] for c in stats["channels"]),
                "source_errors": stats["source_errors"],
            }
            if self.recorder == "ours":
                extra["rtp_packets_lost"] = sum(c["source_lost_packets"] for c in stats["channels"])
                extra["rtp_packets_dropped"] = sum(c["source_dropped"] for c in stats["channels"])
        sent = sum(c["sent"] for c in counts.values())
        self.stop_all()
        return {
            "recorder": self.recorder,
            "channels": self.n,
            "processes": len(pids),
            "window_s": round(window, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_pct_per_channel": round(100 * (cpu1 - cpu0) / window / self.n, 3),
            "rss_mb_per_channel": round(rss / 1e6 / self.n, 2),
            "rss_mb_total": round(rss / 1e6, 1),
            "mbit_s_written": round((bytes1 - bytes0) * 8 / window / 1e6, 2),
            "frames_sent": sent,
            "frames_recorded": recorded,
            "frames_lost": sent - recorded,
            "viewer_sessions": sum(c["subscriptions"] for c in counts.values()),
            **extra,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize(cells: list[dict], channels: list[int]) -> dict:
    by = {(c["recorder"], c["channels"]): c for c in cells}
    out: dict = {}
    for n in channels:
        ours = by.get(("ours", n))
        row: dict = {}
        for peer in ("ffmpeg", "pyav"):
            other = by.get((peer, n))
            if ours and other:
                row[f"cpu_ours_over_{peer}"] = ratio(
                    ours["cpu_pct_per_channel"], other["cpu_pct_per_channel"]
                )
                row[f"rss_ours_over_{peer}"] = ratio(
                    ours["rss_mb_per_channel"], other["rss_mb_per_channel"]
                )
        if ours:
            t = TARGETS
            row["targets_met"] = {
                "cpu_pct_per_channel": ours["cpu_pct_per_channel"] <= t["cpu_pct_per_channel_max"],
                "cpu_ratio_to_ffmpeg": (
                    row.get("cpu_ours_over_ffmpeg") is not None
                    and row["cpu_ours_over_ffmpeg"] <= t["cpu_ratio_to_ffmpeg_max"]
                ),
                "rss_mb_per_channel": ours["rss_mb_per_channel"] <= t["rss_mb_per_channel_max"],
                "lost_frames": ours["frames_lost"] <= t["lost_frames_max"],
            }
        out[str(n)] = row
    return out


def print_report(report: dict) -> None:
    channels = report["parameters"]["channels"]
    by = {(c["recorder"], c["channels"]): c for c in report["cells"]}
    metrics = [
        ("cpu %/ch", "cpu_pct_per_channel", "{:.3f}"),
        ("RSS MB/ch", "rss_mb_per_channel", "{:.1f}"),
        ("lost frames", "frames_lost", "{:d}"),
        ("Mbit/s", "mbit_s_written", "{:.1f}"),
    ]
    head = f"{'recorder':<8} {'metric':<12}" + "".join(f"{'N=' + str(n):>10}" for n in channels)
    print(head)
    print("-" * len(head))
    for rec in report["parameters"]["recorders"]:
        for label, key, fmt in metrics:
            cols = []
            for n in channels:
                c = by.get((rec, n))
                cols.append(fmt.format(c[key]) if c and key in c else "-")
            print(f"{rec:<8} {label:<12}" + "".join(f"{v:>10}" for v in cols))
    for key in ("cpu_ours_over_ffmpeg", "cpu_ours_over_pyav", "rss_ours_over_ffmpeg"):
        vals = [report["summary"][str(n)].get(key) for n in channels]
        print(
            f"{'ratio':<8} {key[:12]:<12}"
            + "".join(f"{'-' if v is None else v:>10}" for v in vals),
            end="",
        )
        print(f"  ({key})")
    t = TARGETS
    print(
        f"targets (ours): cpu <= {t['cpu_pct_per_channel_max']} %/ch, "
        f"<= {t['cpu_ratio_to_ffmpeg_max']}x ffmpeg, RSS <= {t['rss_mb_per_channel_max']} MB/ch, "
        f"0 lost"
    )
    for n in channels:
        met = report["summary"][str(n)].get("targets_met")
        if met:
            print(
                f"  N={n}: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in met.items())
            )
    for name, err in report.get("errors", {}).items():
        print(f"error {name}: {err.splitlines()[0] if err else ''}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--channels", default="1,8,32", help="channel counts, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per cell")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up once all channels deliver")
    p.add_argument("--drain", type=float, default=2.0, help="after the source stops, before stop")
    p.add_argument("--recorders", default=",".join(RECORDERS))
    p.add_argument("--fsync", default="fragment", help="SegmentWriter fsync policy (ours, pyav)")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--output", type=Path, default=RESULTS / "ingest.json")
    p.add_argument("--show", action="store_true", help="print the table of --output and exit")
    args = p.parse_args(argv)
    args.channels = [int(x) for x in args.channels.split(",") if x]
    args.recorders = [r for r in args.recorders.split(",") if r]
    for r in args.recorders:
        if r not in RECORDERS:
            p.error(f"unknown recorder {r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        print_report(json.loads(args.output.read_text()))
        return 0

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    if shutil.which("ffmpeg") is None and "ffmpeg" in args.recorders:
        print("ffmpeg is not installed: skipping it", file=sys.stderr)
        args.recorders.remove("ffmpeg")
    machine = machine_info()
    if not args.no_pin:
        # Keep this process's polling and file scans off the recorder's core.
        os.sched_setaffinity(0, {SOURCE_CORE})
    clip = clip_path()
    cells, errors = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        # N outer, recorders inner: the three take turns, so drift hits them alike.
        for n in args.channels:
            for rec in args.recorders:
                print(f"{rec} N={n}", file=sys.stderr)
                cell = Cell(args, rec, n, Path(tmp))
                try:
                    result = cell.run(clip)
                    cells.append(result)
                    print(
                        f"  cpu {result['cpu_pct_per_channel']} %/ch, "
                        f"rss {result['rss_mb_per_channel']} MB/ch, "
                        f"lost {result['frames_lost']}/{result['frames_sent']}",
                        file=sys.stderr,
                    )
                except RuntimeError as exc:
                    errors[f"{rec}-{n}"] = str(exc)
                    print(f"  failed: {exc}", file=sys.stderr)
                finally:
                    cell.stop_all()
                    shutil.rmtree(cell.tmp, ignore_errors=True)
    report = {
        "benchmark": "ingest",
        "description": (
            "Cost of recording N channels of a looping 1920x1080 25 fps ~4 Mbit/s H.264 RTSP "
            "stream (TCP, loopback). cpu_pct_per_channel = 100 * (utime+stime of the "
            "recorder processes over the window) / window / N. rss_mb_per_channel = summed "
            "VmRSS / N at the end of the window. mbit_s_written = growth of the recorded files "
            "over the window (stands in for received throughput: recv() is not in "
            "/proc/pid/io). frames_lost = units the server handed to the viewers (counted "
            "server side, sending stopped before the recorder) - frames recorded (ours, "
            "pyav: SegmentWriter.units_written after the last segment closed; ffmpeg: video "
            "packets in its output files)."
        ),
        "parameters": {
            "channels": args.channels,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "drain_s": args.drain,
            "recorders": args.recorders,
            "pinned": not args.no_pin,
            "source_core": SOURCE_CORE,
            "recorder_core": RECORDER_CORE,
            "clip": CLIP,
            "clip_bytes": clip.stat().st_size,
            "writer": {"segment_s": 60.0, "fragment_s": 1.0, "fsync": args.fsync},
            "ffmpeg_argv": (
                "ffmpeg -nostdin -loglevel error -rtsp_transport tcp -i URL -c copy "
                "-f segment -segment_time 60 -reset_timestamps 1 OUT_%05d.mp4"
            ),
            "ffmpeg_version": _ffmpeg_version(),
        },
        "targets": TARGETS,
        "machine": machine,
        "cells": cells,
        "summary": summarize(cells, args.channels),
        "errors": errors,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=1) + "\n")
    tmp_out.replace(args.output)
    print_report(report)
    shown = args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output
    print(f"wrote {shown}")
    return 1 if errors else 0


def _ffmpeg_version() -> str | None:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.splitlines()[0] if out.stdout else None


if __name__ == "__main__":
    sys.exit(main())
