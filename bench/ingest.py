"""Cost of recording N camera channels: our native recorder against FFmpeg and PyAV.

The source is the project's RTSP server (``bench.ingest_worker server``) with N mounts of
one looping 1920x1080 25 fps ~4 Mbit/s H.264 clip, in its own process pinned to core 0
(it is the load generator, not measured; its CPU and the frame rate it sent over the
window are reported, and a cell whose server used >= 95 % of its core or sent less than
98 % of 25 fps per channel is flagged invalid). The recorder under test runs
pinned to core 1:

* ``ours``: ``RtspSource`` → ``Hub`` → ``SegmentWriter`` + ``SegmentIndex`` (SQLite), all
  channels in one process and one event loop (``bench.ingest_worker record``);
* ``ffmpeg``: one ``ffmpeg -c copy -f segment`` process per camera, writing 60 s MP4
  segments fragmented at each keyframe (``movflags=+frag_keyframe+empty_moov``), the
  crash-safe form one would run for recording, like our writer's 1 s fragments;
* ``pyav``: the project's fallback ``PyAVSource`` → same hub and writer, one process.

Per cell (recorder × N): a warm-up once every channel delivers (ours/pyav: every hub has
published; ffmpeg: every output holds a first fragment), then a measured window. CPU is
utime+stime of the recorder process(es) over the window (/proc/<pid>/stat, all threads,
summed over the FFmpeg processes), per channel in % of one core. RSS (and PSS, which
splits shared library pages among the FFmpeg processes) is taken at the end of the
window, summed, per channel. Throughput is the growth of the recorded files over the
window. Lost frames: at the end the server stops sending and reports the units it handed
to each viewer; after a drain the recorder stops (ours/pyav: SIGTERM; ffmpeg: SIGINT, then
the server goes away so that its blocked read ends with EOF and it writes its trailer)
and the frames it recorded (ours/pyav: ``units_written`` after the last segment is
closed; ffmpeg: video packets in its output files, counted with PyAV) are subtracted,
per channel.

    .venv/bin/python -m bench.ingest [--channels 1,8,32,64] [--seconds 20] [--warmup 3]
        [--recorders ours,ffmpeg,pyav] [--no-pin]

Prints a table and writes ``bench/results/ingest.json``. Every cell's processes are
stopped and its temporary directory removed, also when it fails.
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

from bench.common import (
    REPO,
    RESULTS,
    ServerProcess,
    cores_busy_s,
    machine_info,
    pin_prefix,
    proc_cpu_s,
)

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
#: The FFmpeg baseline: stream copy into 60 s MP4 segments, fragmented at each keyframe
#: (1 s here, as our writer's fragments) with the moov up front. This is what one would run
#: for recording: a plain MP4 is unreadable until its trailer (moov) is written, so anything
#: lost on a crash or a kill would lose the whole segment.
FFMPEG_OUTPUT = [
    "-c",
    "copy",
    "-f",
    "segment",
    "-segment_format",
    "mp4",
    "-segment_format_options",
    "movflags=+frag_keyframe+empty_moov+default_base_moof",
    "-segment_time",
    "60",
    "-reset_timestamps",
    "1",
]
#: A source core busier than this over the window means the load generator may not have kept
#: up: the cell is flagged invalid.
SERVER_CPU_VALID_MAX = 95.0
#: The server must send at least this share of the clip's frame rate over the window.
SERVER_FPS_VALID_MIN = 0.98
#: An FFmpeg output has its first fragment once it is this large (the header is ~1 kB).
FFMPEG_READY_BYTES = 64 * 1024


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


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (libraries) split among the processes mapping
    them, so that summing it over N FFmpeg processes does not count libavcodec N times."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
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


def server_snapshot(server: ServerProcess, path: Path) -> dict:
    """The server's counts so far (and its loop time), without stopping it."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.kill(server.pid, signal.SIGUSR2)
    return wait_file(path, [server], 10)


def count_packets(files: list[Path]) -> int:
    """Video packets (frames) in the files; an unreadable file counts 0 (and is reported)."""
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


def loss_summary(sent: list[int], recorded: list[int]) -> dict:
    lost = [s - r for s, r in zip(sent, recorded, strict=True)]
    return {
        "frames_sent": sum(sent),
        "frames_recorded": sum(recorded),
        "frames_lost": sum(lost),
        "channels_with_loss": sum(1 for x in lost if x),
        "frames_lost_max_per_channel": max(lost, default=0),
        "frames_lost_min_per_channel": min(lost, default=0),
    }


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
        n = self.n
        server = self.spawn(
            [PY, "-m", "bench.ingest_worker", "server", "--clip", str(clip)]
            + ["--channels", str(n), "--ready", str(t / "server.ready")]
            + ["--counts", str(t / "counts.json"), "--snapshot", str(t / "snapshot.json")],
            SOURCE_CORE,
            "server.log",
        )
        port = wait_file(t / "server.ready", [server], 60)["port"]
        base = f"rtsp://127.0.0.1:{port}/sim/"
        out = t / "out"
        out.mkdir()
        started = time.perf_counter()
        if self.recorder == "ffmpeg":
            recorders = []
            for i in range(1, n + 1):
                (out / str(i)).mkdir()
                recorders.append(
                    self.spawn(
                        ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"]
                        + ["-i", f"{base}{i}"]
                        + FFMPEG_OUTPUT
                        + [str(out / str(i) / "OUT_%05d.mp4")],
                        RECORDER_CORE,
                        f"ffmpeg-{i}.log",
                    )
                )
            # Ready once every camera's output holds a first fragment (not just a header).
            deadline = time.monotonic() + 30 + n
            waiting = set(range(1, n + 1))
            while waiting:
                waiting = {i for i in waiting if dir_bytes(out / str(i)) < FFMPEG_READY_BYTES}
                dead = [r for r in recorders if not r.alive()]
                if dead or time.monotonic() > deadline:
                    log = (dead or recorders)[0].log_tail()
                    raise RuntimeError(
                        f"ffmpeg did not start ({len(waiting)} of {n} not writing):\n{log}"
                    )
                time.sleep(0.2)
        else:
            backend = "native" if self.recorder == "ours" else "pyav"
            recorders = [
                self.spawn(
                    [PY, "-m", "bench.ingest_worker", "record", "--backend", backend]
                    + ["--base", base, "--channels", str(n), "--dir", str(out)]
                    + ["--ready", str(t / "rec.ready"), "--stats", str(t / "stats.json")]
                    + ["--fsync", self.args.fsync],
                    RECORDER_CORE,
                    "recorder.log",
                )
            ]
            wait_file(t / "rec.ready", [recorders[0], server], 60 + n)
        ready_s = time.perf_counter() - started
        time.sleep(self.args.warmup)

        pids = [r.pid for r in recorders]
        snap0 = server_snapshot(server, t / "snapshot.json")
        cores0 = cores_busy_s()
        server0 = proc_cpu_s(server.pid)
        cpu0, bytes0, wall0 = sum(map(proc_cpu_s, pids)), dir_bytes(out), time.perf_counter()
        time.sleep(self.args.seconds)
        cpu1, bytes1, wall1 = sum(map(proc_cpu_s, pids)), dir_bytes(out), time.perf_counter()
        server1 = proc_cpu_s(server.pid)
        cores1 = cores_busy_s()
        snap1 = server_snapshot(server, t / "snapshot.json")
        rss = sum(map(rss_bytes, pids))
        pss = sum(map(pss_bytes, pids))
        window = wall1 - wall0
        if not all(r.alive() for r in recorders):
            raise RuntimeError("a recorder died:\n" + recorders[0].log_tail())
        if not server.alive():
            raise RuntimeError("the server died:\n" + server.log_tail())

        # Stop the source first, so that everything sent can be drained and counted.
        os.kill(server.pid, signal.SIGUSR1)
        counts = wait_file(t / "counts.json", [server], 10)
        time.sleep(self.args.drain)
        stop0 = time.perf_counter()
        for r in recorders:
            os.kill(r.pid, signal.SIGINT if self.recorder == "ffmpeg" else signal.SIGTERM)
        forced = 0
        if self.recorder == "ffmpeg":
            # FFmpeg's SIGINT ends its main loop once the current read returns, but a read
            # blocked on the silent source would wait forever. A second SIGINT would end it
            # but also aborts all further I/O, output included: the trailer (the last
            # fragment, ~1 s) would be cut. So the source goes away instead: the read sees
            # EOF, FFmpeg flushes its parser (the last frame) and writes the trailer.
            time.sleep(0.5)
            server.stop()
            deadline = time.monotonic() + 10 + n / 4
            while time.monotonic() < deadline and any(r.alive() for r in recorders):
                time.sleep(0.1)
            for r in recorders:
                if r.alive():
                    forced += 1
                    os.kill(r.pid, signal.SIGINT)
        not_stopped = 0
        for r in recorders:
            try:
                r.proc.wait(30 + n)
            except subprocess.TimeoutExpired:
                not_stopped += 1
        if not_stopped:
            # Its files would be incomplete: the counts are not trustworthy.
            raise RuntimeError(f"{self.recorder}: {not_stopped} recorder(s) did not stop")
        stop_s = time.perf_counter() - stop0
        sent = [counts[str(i)]["sent"] for i in range(1, n + 1)]
        extra: dict = {}
        if self.recorder == "ffmpeg":
            recorded = [
                count_packets(sorted((out / str(i)).glob("*.mp4"))) for i in range(1, n + 1)
            ]
            extra["exit_codes"] = sorted({r.proc.returncode for r in recorders})
            extra["forced_stops"] = forced
        else:
            stats = wait_file(t / "stats.json", [server], 1)
            recorded = [c["units_written"] for c in stats["channels"]]
            extra = {
                "published": sum(c["published"] for c in stats["channels"]),
                "hub_dropped": sum(c["hub_dropped"] for c in stats["channels"]),
                "units_skipped": sum(c["units_skipped"] for c in stats["channels"]),
                "storage_errors": sum(c["storage_errors"] for c in stats["channels"]),
                "source_errors": len(stats["source_errors"]),
                "source_error_kinds": sorted({e.split("(", 1)[0] for e in stats["source_errors"]}),
            }
            if self.recorder == "ours":
                extra["rtp_packets_lost"] = sum(c["source_lost_packets"] for c in stats["channels"])
                extra["rtp_packets_dropped"] = sum(c["source_dropped"] for c in stats["channels"])
        self.stop_all()
        server_cpu = round(100 * (server1 - server0) / window, 1)
        core_busy = {
            str(c): round(100 * (cores1[c] - cores0[c]) / window, 1)
            for c in (SOURCE_CORE, RECORDER_CORE)
            if c in cores0 and c in cores1
        }
        sent_in_window = sum(
            snap1["counts"][k]["sent"] - snap0["counts"][k]["sent"] for k in snap1["counts"]
        )
        server_fps = sent_in_window / (snap1["monotonic"] - snap0["monotonic"]) / n
        invalid = []
        if server_fps < SERVER_FPS_VALID_MIN * CLIP["fps"]:
            invalid.append(
                f"server sent {server_fps:.2f} fps per channel, not {CLIP['fps']}: it fell behind"
            )
        if server_cpu >= SERVER_CPU_VALID_MAX:
            invalid.append(f"server CPU {server_cpu} % >= {SERVER_CPU_VALID_MAX} %")
        sessions = sum(c["subscriptions"] for c in counts.values())
        if sessions != n:
            invalid.append(f"{sessions} viewer sessions for {n} channels (reconnects)")
        return {
            "recorder": self.recorder,
            "channels": n,
            "processes": len(pids),
            "ready_s": round(ready_s, 2),
            "window_s": round(window, 3),
            "stop_s": round(stop_s, 2),
            "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_pct_total": round(100 * (cpu1 - cpu0) / window, 2),
            "cpu_pct_per_channel": round(100 * (cpu1 - cpu0) / window / n, 3),
            "rss_mb_per_channel": round(rss / 1e6 / n, 2),
            "rss_mb_total": round(rss / 1e6, 1),
            "pss_mb_per_channel": round(pss / 1e6 / n, 2),
            "mbit_s_written": round((bytes1 - bytes0) * 8 / window / 1e6, 2),
            "server_cpu_pct": server_cpu,
            "server_fps_per_channel": round(server_fps, 2),
            "core_busy_pct": core_busy,
            **loss_summary(sent, recorded),
            "viewer_sessions": sessions,
            "valid": not invalid,
            "invalid_reasons": invalid,
            **extra,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def growth(cells: list[dict], recorders: list[str]) -> dict:
    """How the cost grows with N, per recorder: the smallest and largest N measured and the
    marginal cost of one more channel between them (CPU % of one core, RSS MB)."""
    out: dict = {}
    for rec in recorders:
        mine = sorted((c for c in cells if c["recorder"] == rec), key=lambda c: c["channels"])
        if not mine:
            continue
        lo, hi = mine[0], mine[-1]
        row = {
            "channels": [c["channels"] for c in mine],
            "cpu_pct_total": [c["cpu_pct_total"] for c in mine],
            "cpu_pct_per_channel": [c["cpu_pct_per_channel"] for c in mine],
            "rss_mb_total": [c["rss_mb_total"] for c in mine],
        }
        dn = hi["channels"] - lo["channels"]
        if dn > 0:
            row["marginal_cpu_pct_per_channel"] = round(
                (hi["cpu_pct_total"] - lo["cpu_pct_total"]) / dn, 3
            )
            row["marginal_rss_mb_per_channel"] = round(
                (hi["rss_mb_total"] - lo["rss_mb_total"]) / dn, 2
            )
        out[rec] = row
    return out


def summarize(cells: list[dict], channels: list[int]) -> dict:
    by = {(c["recorder"], c["channels"]): c for c in cells}
    out: dict = {}
    for n in channels:
        ours = by.get(("ours", n))
        row: dict = {}
        for peer in ("ffmpeg", "pyav"):
            other = by.get((peer, n))
            if ours and other:
                for key, short in (
                    ("cpu_pct_per_channel", "cpu"),
                    ("rss_mb_per_channel", "rss"),
                    ("pss_mb_per_channel", "pss"),
                ):
                    row[f"{short}_ours_over_{peer}"] = ratio(ours.get(key), other.get(key))
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
        row["all_cells_valid"] = all(
            c["valid"] for (_, cn), c in by.items() if cn == n and "valid" in c
        )
        out[str(n)] = row
    return out


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return fmt.format(value)


def print_report(report: dict) -> None:
    channels = report["parameters"]["channels"]
    by = {(c["recorder"], c["channels"]): c for c in report["cells"]}
    metrics = [
        ("cpu %/ch", "cpu_pct_per_channel", "{:.3f}"),
        ("cpu % total", "cpu_pct_total", "{:.1f}"),
        ("RSS MB/ch", "rss_mb_per_channel", "{:.1f}"),
        ("PSS MB/ch", "pss_mb_per_channel", "{:.1f}"),
        ("Mbit/s", "mbit_s_written", "{:.1f}"),
        ("frames sent", "frames_sent", "{:d}"),
        ("frames rec", "frames_recorded", "{:d}"),
        ("frames lost", "frames_lost", "{:d}"),
        ("lost max/ch", "frames_lost_max_per_channel", "{:d}"),
        ("server cpu %", "server_cpu_pct", "{:.1f}"),
        ("server fps/ch", "server_fps_per_channel", "{:.2f}"),
        ("rec core %", "recorder_core_busy_pct", "{:.1f}"),
        ("valid", "valid", "{}"),
    ]
    head = f"{'recorder':<8} {'metric':<12}" + "".join(f"{'N=' + str(n):>10}" for n in channels)
    print(head)
    print("-" * len(head))
    for rec in report["parameters"]["recorders"]:
        for label, key, fmt in metrics:
            cols = []
            for n in channels:
                c = by.get((rec, n))
                if c and key == "recorder_core_busy_pct":
                    value = c.get("core_busy_pct", {}).get(str(RECORDER_CORE))
                else:
                    value = c.get(key) if c else None
                cols.append(_fmt(value, fmt))
            print(f"{rec:<8} {label:<12}" + "".join(f"{v:>10}" for v in cols))
        print()
    for key in (
        "cpu_ours_over_ffmpeg",
        "cpu_ours_over_pyav",
        "rss_ours_over_ffmpeg",
        "pss_ours_over_ffmpeg",
    ):
        vals = [report["summary"][str(n)].get(key) for n in channels]
        print(
            f"{'ratio':<8} {key[:12]:<12}"
            + "".join(f"{'-' if v is None else v:>10}" for v in vals),
            end="",
        )
        print(f"  ({key})")
    print("growth (CPU % of one core, total; marginal = per added channel, smallest→largest N):")
    for rec, g in report.get("growth", {}).items():
        steps = ", ".join(
            f"N={n}: {cpu:.1f} %" for n, cpu in zip(g["channels"], g["cpu_pct_total"], strict=True)
        )
        marginal = g.get("marginal_cpu_pct_per_channel")
        tail = (
            f"; marginal {marginal} %/ch, {g['marginal_rss_mb_per_channel']} MB/ch"
            if marginal is not None
            else ""
        )
        print(f"  {rec:<7} {steps}{tail}")
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
    for c in report["cells"]:
        if not c.get("valid", True):
            print(f"INVALID {c['recorder']} N={c['channels']}: {'; '.join(c['invalid_reasons'])}")
    for name, err in report.get("errors", {}).items():
        print(f"error {name}: {err.splitlines()[0] if err else ''}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--channels", default="1,8,32,64", help="channel counts, comma-separated")
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
                except Exception as exc:  # noqa: BLE001 - one failed cell must not end the run
                    errors[f"{rec}-{n}"] = f"{type(exc).__name__}: {exc}"
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
            "ffmpeg_argv": " ".join(
                ["ffmpeg -nostdin -loglevel error -rtsp_transport tcp -i URL"]
                + FFMPEG_OUTPUT
                + ["OUT_%05d.mp4"]
            ),
            "ffmpeg_stop": "SIGINT, after 1 s a second SIGINT, then wait for exit",
            "ffmpeg_version": _ffmpeg_version(),
        },
        "targets": TARGETS,
        "machine": machine,
        "cells": cells,
        "summary": summarize(cells, args.channels),
        "growth": growth(cells, args.recorders),
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
