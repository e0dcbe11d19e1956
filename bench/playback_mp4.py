"""Recorded playback for MSE (``GET /api/v1/recordings/{token}/media.mp4``,
replay/mp4_playback.py) over HTTP on loopback, against FFmpeg cutting the same range out
of the stored segment file.

* footage and index: bench/replay_reader's builder (``record``): ``--minutes`` of the 1080p
  25 fps ~4 Mbit/s clip written by the segment writer, behind ``--days`` of one-minute
  segments (rows copied, files hard links).
* first bytes: ``--requests`` windows of ``--window`` s at random T over the whole index:
  time to the first body byte and to the first decodable keyframe (init segment and the
  first whole ``moof`` + ``mdat`` received), p50/p99. The server is a separate process
  (aiohttp, the endpoint's code without authentication); the client is aiohttp's.
* throughput: one window over the real footage (at most 900 s, the endpoint's limit),
  read as fast as it comes: Mbit/s and x real time.

The alternative measured in the same run, at the same T: what a user without this
endpoint runs, ``ffmpeg -ss <offset> -i <segment file holding T> -t <window> -c copy -f mp4
-movflags frag_keyframe+empty_moov pipe:`` (the file given for free: FFmpeg has no index
across files), timed to its first stdout byte and its first whole fragment; for throughput
the same command over each real segment file in turn.

    .venv/bin/python -m bench.playback_mp4 [--minutes 5] [--days 30] [--requests 100]
        [--window 60]

Prints a table and writes ``bench/results/playback_mp4.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import av
from aiohttp import web

from bench.common import RESULTS, machine_info
from bench.replay_reader import T0, TOKEN, percentile, record
from onvif_nvr.api.media import MediaQuery, playback
from onvif_nvr.db.engine import Database

S = 10**9
FFMPEG = "ffmpeg"


async def serve(data: Path) -> None:
    """The server process: the media.mp4 handler on a free loopback port."""
    db = Database(f"sqlite:///{data / 'nvr.sqlite3'}")

    async def handle(request: web.Request) -> web.StreamResponse:
        query = MediaQuery.model_validate(dict(request.query))
        return await playback(request, db, request.match_info["token"], query)

    app = web.Application()
    app.router.add_get("/media/{token}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await runner.cleanup()
    db.close()


def first_fragment_end(buf: bytes | bytearray) -> int | None:
    """Where the first ``moof`` + ``mdat`` after the init segment ends, once it is whole."""
    offset, seen = 0, []
    while offset + 8 <= len(buf):
        size = int.from_bytes(buf[offset : offset + 4], "big")
        kind = bytes(buf[offset + 4 : offset + 8])
        if size < 8:
            return None
        if offset + size > len(buf):
            return None
        seen.append(kind)
        offset += size
        if kind == b"mdat" and b"moof" in seen:
            return offset
    return None


def rfc3339(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / S, UTC).isoformat(timespec="microseconds")


async def ours_first(
    session: aiohttp.ClientSession, port: int, t: int, window: int
) -> tuple[float, float, bytes]:
    """(ms to first byte, ms to first whole fragment, those bytes) of one window at ``t``."""
    url = f"http://127.0.0.1:{port}/media/{TOKEN}"
    params = {"start": rfc3339(t), "duration_s": str(window)}
    began = time.perf_counter()
    first_byte = 0.0
    buf = bytearray()
    async with session.get(url, params=params) as r:
        assert r.status == 200, await r.text()
        async for chunk in r.content.iter_any():
            if not buf:
                first_byte = time.perf_counter() - began
            buf += chunk
            end = first_fragment_end(buf)
            if end is not None:
                return first_byte * 1000, (time.perf_counter() - began) * 1000, bytes(buf[:end])
    raise AssertionError("no whole fragment in the answer")


async def peer_first(path: Path, offset_s: float, window: int) -> tuple[float, float, bytes]:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        FFMPEG, "-v", "error", "-ss", f"{offset_s:.3f}", "-i", str(path), "-t", str(window),
        "-c", "copy", "-f", "mp4", "-movflags", "frag_keyframe+empty_moov", "pipe:",
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    buf = bytearray()
    first_byte = 0.0
    result = None
    while True:
        chunk = await proc.stdout.read(1 << 16)
        if not chunk:
            break
        if not buf:
            first_byte = time.perf_counter() - began
        buf += chunk
        end = first_fragment_end(buf)
        if end is not None:
            result = (first_byte * 1000, (time.perf_counter() - began) * 1000, bytes(buf[:end]))
            break
    proc.kill()
    await proc.wait()
    assert result is not None, "ffmpeg wrote no whole fragment"
    return result


def keyframe_first(data: bytes) -> bool:
    """FFmpeg decodes a picture from the bytes, and the first packet is a keyframe."""
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                return bool(packet.is_keyframe and packet.decode())
    return False


async def ours_drain(port: int, start: int, seconds: int) -> tuple[float, int]:
    url = f"http://127.0.0.1:{port}/media/{TOKEN}"
    params = {"start": rfc3339(start), "duration_s": str(seconds)}
    size = 0
    async with aiohttp.ClientSession() as session:
        began = time.perf_counter()
        async with session.get(url, params=params) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                size += len(chunk)
        return time.perf_counter() - began, size


async def peer_drain(files: list[Path]) -> tuple[float, int]:
    size = 0
    began = time.perf_counter()
    for path in files:
        proc = await asyncio.create_subprocess_exec(
            FFMPEG, "-v", "error", "-i", str(path), "-c", "copy", "-f", "mp4",
            "-movflags", "frag_keyframe+empty_moov", "pipe:",
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(1 << 20):
            size += len(chunk)
        await proc.wait()
    return time.perf_counter() - began, size


def segment_at(data: Path, t: int) -> tuple[Path, float]:
    """The segment file holding ``t`` and the offset of ``t`` in it (what FFmpeg is given)."""
    db = Database(f"sqlite:///{data / 'nvr.sqlite3'}")
    try:
        with db.engine.connect() as conn:
            sid, start, cam, volume = conn.exec_driver_sql(
                "SELECT s.id, s.start_wall_ns, s.camera_id, v.path FROM segments s "
                "JOIN volumes v ON v.id = s.volume_id WHERE s.start_wall_ns <= ? "
                "ORDER BY s.start_wall_ns DESC LIMIT 1",
                (t,),
            ).one()
    finally:
        db.close()
    return Path(volume) / str(cam) / f"{sid}.mp4", (t - start) / S


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-playback-mp4-") as tmp:
        began = time.perf_counter()
        db, real_start, real_end, files = await record(Path(tmp), args.minutes, args.days)
        db.close()
        print(f"footage and index: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        rng = random.Random(7)
        times = [rng.randrange(T0, real_end - args.window * S) for _ in range(args.requests)]
        targets = [segment_at(Path(tmp), t) for t in times]
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.playback_mp4", "--serve", tmp,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        ours: list[tuple[float, float]] = []
        peer: list[tuple[float, float]] = []
        try:
            assert server.stdout is not None
            port = int(await server.stdout.readline())
            async with aiohttp.ClientSession() as session:
                for t in times[:5]:  # warm
                    await ours_first(session, port, t, args.window)
                for n, (t, (path, offset_s)) in enumerate(zip(times, targets, strict=True)):
                    # Alternate who goes first so that neither always meets a warm cache.
                    order = ("ours", "peer") if n % 2 else ("peer", "ours")
                    for who in order:
                        if who == "ours":
                            a, b, data = await ours_first(session, port, t, args.window)
                            ours.append((a, b))
                        else:
                            a, b, data = await peer_first(path, offset_s, args.window)
                            peer.append((a, b))
                        if n == 0:
                            assert keyframe_first(data), f"{who}: first fragment not decodable"
            seconds = min(900, int((real_end - real_start) // S))
            drain_s, drain_bytes = await ours_drain(port, real_start, seconds)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            await asyncio.wait_for(server.wait(), 10)
        real_files = files[: -(-seconds // 60)]
        peer_s, peer_bytes = await peer_drain(real_files)
    media_s = float(seconds)
    peer_media_s = min(len(real_files) * 60.0, (real_end - real_start) / S)

    def pct(values: list[float], q: float) -> float:
        return round(percentile(values, q), 2)

    ttfb = [a for a, _ in ours]
    key = [b for _, b in ours]
    p_ttfb = [a for a, _ in peer]
    p_key = [b for _, b in peer]
    figures = {
        "first_byte_ms": {
            "p50": pct(ttfb, 50),
            "p99": pct(ttfb, 99),
            "peer_ffmpeg_p50": pct(p_ttfb, 50),
            "peer_ffmpeg_p99": pct(p_ttfb, 99),
            "peer_over_ours_p50": round(percentile(p_ttfb, 50) / percentile(ttfb, 50), 1),
        },
        "first_keyframe_ms": {
            "p50": pct(key, 50),
            "p99": pct(key, 99),
            "peer_ffmpeg_p50": pct(p_key, 50),
            "peer_ffmpeg_p99": pct(p_key, 99),
            "peer_over_ours_p50": round(percentile(p_key, 50) / percentile(key, 50), 1),
        },
        "throughput": {
            "media_s": media_s,
            "mbit_s": round(drain_bytes * 8 / drain_s / 1e6, 1),
            "x_real_time": round(media_s / drain_s, 1),
            "peer_ffmpeg_mbit_s": round(peer_bytes * 8 / peer_s / 1e6, 1),
            "peer_ffmpeg_x_real_time": round(peer_media_s / peer_s, 1),
            "ours_over_peer_x_real_time": round((media_s / drain_s) / (peer_media_s / peer_s), 2),
        },
    }
    return {
        "parameters": vars(args),
        "index": {"days": args.days, "segments": args.days * 1440 + len(files)},
        "footage": {"files": len(files), "media_s": round((real_end - real_start) / S, 1)},
        "peer": "ffmpeg -ss <offset> -i <segment file holding T> -t <window> -c copy -f mp4 "
        "-movflags frag_keyframe+empty_moov pipe: (a new process per window, the file given "
        "for free); throughput: the same over each real segment file in turn",
        "figures": figures,
        "machine": machine_info(),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--out", default=str(RESULTS / "playback_mp4.json"))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(Path(args.serve)))
        return 0
    del args.serve
    out = Path(args.out)
    del args.out
    result = asyncio.run(run(args))
    f = result["figures"]
    b, k, d = f["first_byte_ms"], f["first_keyframe_ms"], f["throughput"]
    print(f"{'figure':34} {'ours':>10} {'ffmpeg':>10}")
    print(f"{'first byte p50 ms':34} {b['p50']:10.2f} {b['peer_ffmpeg_p50']:10.2f}")
    print(f"{'first byte p99 ms':34} {b['p99']:10.2f} {b['peer_ffmpeg_p99']:10.2f}")
    print(f"{'first decodable keyframe p50 ms':34} {k['p50']:10.2f} {k['peer_ffmpeg_p50']:10.2f}")
    print(f"{'first decodable keyframe p99 ms':34} {k['p99']:10.2f} {k['peer_ffmpeg_p99']:10.2f}")
    print(f"{'throughput Mbit/s':34} {d['mbit_s']:10.1f} {d['peer_ffmpeg_mbit_s']:10.1f}")
    print(f"{'throughput x real time':34} {d['x_real_time']:10.1f} "
          f"{d['peer_ffmpeg_x_real_time']:10.1f}")  # fmt: skip
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
