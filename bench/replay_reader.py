"""The replay reader (replay/reader.py) on its own, before RTSP: how long a seek takes inside
a month of index, how fast a playback drains, and what 32 paced sessions cost — against
FFmpeg's MP4 demuxer (PyAV, in process) doing the same on the same files.

* footage: the 1080p 25 fps ~4 Mbit/s clip of bench/ingest (a keyframe a second), written by
  the project's segment writer for ``--minutes`` of media (60 s segments, 1 s fragments),
  then ``--days`` of one-minute segments in front of it in the same recording: index rows
  copied from the real ones with their times moved, each file a hard link to a real one (the
  index is a month's; the bytes are the real segments' again).
* seek: ``reader.play(PlayRequest(T))`` to its first unit for random T over the whole index,
  p50/p99. Peer: PyAV opening the segment file that holds T (given for free: it has no index
  across files), ``seek`` to T and its first packet.
* drain: one forward playback of the real footage as fast as it goes (Rate-Control: no),
  Mbit/s and × real time. Peer: PyAV demuxing the same files packet by packet.
* sessions: ``--sessions`` playbacks paced in real time by ``ReplaySender.due_ns`` and
  packetized with the live packetizers for ``--seconds``: CPU of this process in % of one
  core (no peer: FFmpeg has no multi-session replay server to compare in process).

    .venv/bin/python -m bench.replay_reader [--minutes 5] [--days 30] [--seeks 200]
        [--sessions 32] [--seconds 10]

Prints a table and writes ``bench/results/replay_reader.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import av

from bench.common import RESULTS, machine_info
from bench.ingest import clip_path
from onvif_nvr.clock import ManualClock, SystemClock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.recording.simulator import load_clip
from onvif_nvr.recording.writer import SegmentWriter
from onvif_nvr.replay.reader import PlayRequest, ReplayReader, ReplayUnit
from onvif_nvr.replay.sender import PlayOptions, ReplaySender, replay_tracks
from onvif_nvr.system.secrets import Sealer

T0 = 1_780_000_000 * 10**9
S = 10**9
TOKEN = "RECORDING_BENCH"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def record(data: Path, minutes: float, days: int) -> tuple[Database, int, int, list[Path]]:
    """(db, first real segment start, real footage end, real segment files)."""
    db = Database(f"sqlite:///{data / 'nvr.sqlite3'}")
    await db.migrate()
    cam = await CameraStore(db, Sealer(b"k" * 32), ManualClock()).add("cam", "rtsp://192.0.2.1/x")
    index = SegmentIndex(db)
    volume = data / "vol"
    volume_id = await index.ensure_volume(str(volume))

    def add_recording() -> int:
        with db.session() as session, session.begin():
            row = models.Recording(token=TOKEN, created_wall_ns=T0)
            session.add(row)
            session.flush()
            session.add(models.Track(recording_id=row.id, token="VIDEO001", track_type="Video"))
            return row.id

    recording_id = await db.run(add_recording)
    _, clip = await asyncio.to_thread(load_clip, clip_path())
    span_90k = clip[-1][1] + (clip[-1][1] - clip[-2][1])
    real_start = T0 + days * 86_400 * S
    writer = SegmentWriter(cam.id, volume_id, volume, index, fsync="none",
                           recording_id=recording_id)  # fmt: skip
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    loops = int(minutes * 60 * 90_000 / span_90k)
    for n in range(loops):
        for unit, dts in clip:
            t = n * span_90k + dts
            await writer.add(TimedUnit(unit, 0, t, real_start + t * 100_000 // 9))
    await writer.finish()
    writer._io.shutdown(wait=True)
    await index.flush()
    real = await index.segments(cam.id)
    files = [volume / str(cam.id) / f"{s.id}.mp4" for s in real]
    rows = {s.id: await index.fragments(s.id) for s in real}
    full = [s for s in real if s.end_wall_ns - s.start_wall_ns >= 59 * S]

    def inflate() -> None:
        """``days`` of one-minute segments before the real footage, rows copied."""
        with db.engine.begin() as conn:
            for day in range(days):
                segments, fragments, links = [], [], []
                first_id = conn.exec_driver_sql("SELECT max(id) FROM segments").scalar() + 1
                for m in range(1440):
                    sid = first_id + m
                    src = full[(day * 1440 + m) % len(full)]
                    start = T0 + (day * 1440 + m) * 60 * S
                    shift = start - src.start_wall_ns
                    segments.append((sid, cam.id, recording_id, volume_id, "closed", start,
                                     src.end_wall_ns + shift, src.start_90k, src.duration_90k,
                                     src.size, src.init_size, src.fragment_count))  # fmt: skip
                    fragments += [
                        (sid, f.seq, f.start_wall_ns + shift, f.start_90k, f.duration_90k,
                         f.offset, f.size, f.first_is_sync, f.sample_count)
                        for f in rows[src.id]
                    ]  # fmt: skip
                    links.append((volume / str(cam.id) / f"{src.id}.mp4", sid))
                conn.exec_driver_sql(
                    "INSERT INTO segments (id, camera_id, recording_id, volume_id, state, "
                    "start_wall_ns, end_wall_ns, start_90k, duration_90k, size, init_size, "
                    "fragment_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    segments,
                )
                conn.exec_driver_sql(
                    "INSERT INTO fragments (segment_id, seq, start_wall_ns, start_90k, "
                    "duration_90k, offset, size, first_is_sync, sample_count) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    fragments,
                )
                for path, sid in links:
                    os.link(path, path.with_name(f"{sid}.mp4"))

    await db.run(inflate)
    return db, real_start, real[-1].end_wall_ns, files


async def seeks(reader: ReplayReader, count: int, lo: int, hi: int) -> list[float]:
    media = await reader.recording(TOKEN)
    rng = random.Random(7)
    out = []
    for _ in range(count):
        t = rng.randrange(lo, hi)
        began = time.perf_counter()
        playback = reader.play(media, PlayRequest(t))
        first = await anext(playback)
        out.append((time.perf_counter() - began) * 1000)
        assert isinstance(first, ReplayUnit) and first.timed.wall_ns <= t
        await playback.aclose()
    return out


def peer_seeks(files: list[Path], count: int) -> list[float]:
    rng = random.Random(7)
    out = []
    for _ in range(count):
        path = rng.choice(files)
        offset_s = rng.uniform(0, 59)
        began = time.perf_counter()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(offset_s / stream.time_base), stream=stream, backward=True)
            next(p for p in container.demux(stream) if p.size)
        out.append((time.perf_counter() - began) * 1000)
    return out


async def drain(reader: ReplayReader, start: int, end: int) -> tuple[float, int, int]:
    """(seconds, media bytes, media ns) of one playback of the real footage."""
    media = await reader.recording(TOKEN)
    began = time.perf_counter()
    size = 0
    first = last = None
    async for item in reader.play(media, PlayRequest(start, end)):
        if isinstance(item, ReplayUnit):
            size += item.timed.unit.size
            first = first if first is not None else item.timed.wall_ns
            last = item.timed.wall_ns
    assert first is not None and last is not None
    return time.perf_counter() - began, size, last - first


def peer_drain(files: list[Path]) -> tuple[float, int]:
    began = time.perf_counter()
    size = 0
    for path in files:
        with av.open(str(path)) as container:
            for packet in container.demux(video=0):
                size += packet.size
    return time.perf_counter() - began, size


async def sessions(reader: ReplayReader, count: int, seconds: float, start: int) -> float:
    """CPU % of one core of ``count`` paced playbacks with packetization."""
    media = await reader.recording(TOKEN)
    clock = SystemClock()

    async def one(n: int) -> int:
        sender = ReplaySender(replay_tracks(media))
        request = PlayRequest(start + n * 7 * S, follow=False)
        sender.play(PlayOptions(request, True, 1.0, False, 1), clock.monotonic_ns())
        packets = 0
        async for item in reader.play(media, request):
            if not isinstance(item, ReplayUnit):
                continue
            due = sender.due_ns(item)
            assert due is not None
            wait = (due - clock.monotonic_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            packets += len(sender.packets(item))
        return packets

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    began = time.perf_counter()
    tasks = [asyncio.ensure_future(one(n)) for n in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.perf_counter() - began
    return 100 * (usage.ru_utime + usage.ru_stime - cpu0) / elapsed


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        began = time.perf_counter()
        db, real_start, real_end, files = await record(Path(tmp), args.minutes, args.days)
        print(f"footage and index: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        reader = ReplayReader(db, SystemClock())
        try:
            await seeks(reader, 10, T0, real_end)  # warm
            ours_seek = await seeks(reader, args.seeks, T0, real_end)
            peer_seek = await asyncio.to_thread(peer_seeks, files, args.seeks)
            drain_s, drain_bytes, media_ns = await drain(reader, real_start, real_end)
            peer_s, peer_bytes = await asyncio.to_thread(peer_drain, files)
            cpu = await sessions(reader, args.sessions, args.seconds, real_start)
        finally:
            db.close()
    media_s = media_ns / 1e9
    figures = {
        "seek_to_first_unit_ms": {
            "p50": round(percentile(ours_seek, 50), 2),
            "p99": round(percentile(ours_seek, 99), 2),
            "peer_pyav_p50": round(percentile(peer_seek, 50), 2),
            "peer_pyav_p99": round(percentile(peer_seek, 99), 2),
        },
        "drain": {
            "mbit_s": round(drain_bytes * 8 / drain_s / 1e6, 1),
            "x_real_time": round(media_s / drain_s, 1),
            "peer_pyav_mbit_s": round(peer_bytes * 8 / peer_s / 1e6, 1),
            "peer_pyav_x_real_time": round(media_s / peer_s, 1),
            "ours_over_peer": round((drain_bytes / drain_s) / (peer_bytes / peer_s), 2),
        },
        "paced_sessions": {"count": args.sessions, "cpu_pct_of_one_core": round(cpu, 1)},
    }
    return {
        "parameters": vars(args),
        "index": {"days": args.days, "segments": args.days * 1440 + len(files)},
        "footage": {"files": len(files), "media_s": round(media_s, 1), "bytes": drain_bytes},
        "figures": figures,
        "targets": {"first_packet_p99_ms": 30, "x_real_time_min": 100, "sessions_cpu_pct": 20},
        "machine": machine_info(),
        # The machines are shared: what else ran shows here (1-minute load average).
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seeks", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    f = result["figures"]
    print(f"{'figure':34} {'ours':>10} {'PyAV':>10}")
    s = f["seek_to_first_unit_ms"]
    print(f"{'seek p50 ms':34} {s['p50']:10.2f} {s['peer_pyav_p50']:10.2f}")
    print(f"{'seek p99 ms':34} {s['p99']:10.2f} {s['peer_pyav_p99']:10.2f}")
    d = f["drain"]
    print(f"{'drain Mbit/s':34} {d['mbit_s']:10.1f} {d['peer_pyav_mbit_s']:10.1f}")
    print(f"{'drain x real time':34} {d['x_real_time']:10.1f} {d['peer_pyav_x_real_time']:10.1f}")
    p = f["paced_sessions"]
    print(f"{p['count']} paced sessions, % of one core    {p['cpu_pct_of_one_core']:10.1f}")
    print(f"load average after the run: {result['load_average_after']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay_reader.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
