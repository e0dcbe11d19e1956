"""RTSP replay (``/replay/<recording token>``, replay/playback.py) end to end: a server
process serving a month of index, played by raw RTSP clients over loopback TCP.

* footage and index: bench/replay_reader's builder (``record``): ``--minutes`` of the 1080p
  25 fps ~4 Mbit/s clip written by the segment writer, behind ``--days`` of one-minute
  segments (rows copied, files hard links).
* first packet: on one session, ``PLAY`` with ``Range: clock=T-`` (random T over the whole
  index, ``Immediate: yes``, rate control on) to the first RTP packet carrying that PLAY's
  CSeq byte, p50/p99.
* throughput: one session ``Rate-Control: no`` over the real footage until the T flag:
  Mbit/s and × real time.
* sessions: ``--sessions`` sessions with rate control (real time) at different places of
  the month for ``--seconds``: the server process's CPU in % of one core.

The alternative measured in the same run is what an FFmpeg-based replay would do to read the
same files: PyAV (FFmpeg's MP4 demuxer, in process) opening the segment file that holds T,
seeking and reading its first packet (the file given for free: FFmpeg has no index across
files), and demuxing the files packet by packet — no RTSP, no network, so a lower bound of
its cost (bench/replay_reader's ``peer_seeks``/``peer_drain``).

    .venv/bin/python -m bench.replay [--minutes 5] [--days 30] [--plays 200]
        [--sessions 32] [--seconds 10]

Prints a table and writes ``bench/results/replay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, machine_info, proc_cpu_s
from bench.replay_reader import T0, TOKEN, peer_drain, peer_seeks, percentile, record
from onvif_nvr.clock import SystemClock
from onvif_nvr.db.engine import Database
from onvif_nvr.replay.playback import Replays
from onvif_nvr.replay.reader import ReplayReader
from onvif_nvr.replay.rtsp_server import RtspServer
from onvif_nvr.rtsp.headers import ClockRange, format_range
from onvif_nvr.rtsp.message import Headers, Interleaved, MessageParser, Request, Response

S = 10**9


async def serve(data: Path) -> None:
    """The server process: replay of ``data``'s index on a free loopback port."""
    db = Database(f"sqlite:///{data / 'nvr.sqlite3'}")
    clock = SystemClock()
    server = RtspServer("127.0.0.1", 0, clock)
    server.replays = Replays(ReplayReader(db, clock), clock, lambda: 60)
    await server.start()
    print(server.bound_port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await server.close()
    db.close()


class Client:
    """A raw RTSP client on asyncio streams, media interleaved on channels 0/1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/replay/{TOKEN}"
        self.parser = MessageParser("client")
        self.cseq = 0
        self.session = ""
        self.pending: list[Interleaved] = []

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert (await self.request("DESCRIBE", self.url)).status == 200
        setup = await self.request(
            "SETUP", self.url + "/trackID=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1"
        )
        assert setup.status == 200, setup
        self.session = setup.headers.get("Session", "").split(";")[0]

    async def request(self, method: str, url: str, **fields: str) -> Response:
        self.cseq += 1
        headers = Headers({"CSeq": str(self.cseq)})
        if self.session:
            headers.add("Session", self.session)
        for key, value in fields.items():
            headers.add(key.replace("_", "-"), value)
        self.writer.write(bytes(Request(method, url, headers)))
        while True:
            for message in await self.messages():
                if isinstance(message, Response):
                    return message
                self.pending.append(message)

    async def messages(self) -> list:
        data = await self.reader.read(1 << 20)
        if not data:
            raise ConnectionError("closed")
        self.nbytes = getattr(self, "nbytes", 0) + len(data)
        return self.parser.feed(data)

    def close(self) -> None:
        self.writer.close()


def extension(packet: bytes) -> tuple[int, int] | None:
    """(flags, CSeq byte) of a packet's 0xABAC extension, None without one."""
    if not packet[0] & 0x10:
        return None
    offset = 12 + 4 * (packet[0] & 0x0F)
    flags, cseq = struct.unpack_from("!BB", packet, offset + 12)
    return flags, cseq


async def first_packets(port: int, count: int, lo: int, hi: int) -> list[float]:
    client = Client(port)
    await client.open()
    rng = random.Random(11)
    out = []
    for _ in range(count):
        t = rng.randrange(lo, hi)
        client.cseq += 1
        cseq = client.cseq
        headers = Headers({"CSeq": str(cseq), "Session": client.session,
                           "Range": format_range(ClockRange(t)), "Immediate": "yes"})  # fmt: skip
        began = time.perf_counter()
        client.writer.write(bytes(Request("PLAY", client.url, headers)))
        got = False
        while not got:
            for message in await client.messages():
                if isinstance(message, Interleaved) and message.channel == 0:
                    ext = extension(message.payload)
                    if ext is not None and ext[1] == cseq & 0xFF:
                        got = True
                        break
        out.append((time.perf_counter() - began) * 1000)
    client.close()
    return out


async def throughput(port: int, start: int) -> tuple[float, int]:
    """(seconds, bytes received) of a Rate-Control: no playback until the T flag. After the
    PLAY's answer only interleaved frames come: they are walked by hand (the message parser
    would make the client the bottleneck)."""
    client = Client(port)
    await client.open()
    began = time.perf_counter()
    client.cseq += 1
    headers = Headers({"CSeq": str(client.cseq), "Session": client.session,
                       "Range": format_range(ClockRange(start)), "Rate-Control": "no"})  # fmt: skip
    client.writer.write(bytes(Request("PLAY", client.url, headers)))
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        buffer += await client.reader.read(1 << 16)
    buffer = buffer[buffer.index(b"\r\n\r\n") + 4 :]
    total = len(buffer)
    done = False
    while not done:
        offset = 0
        while len(buffer) - offset >= 4:
            channel, size = buffer[offset + 1], int.from_bytes(buffer[offset + 2 : offset + 4])
            if len(buffer) - offset < 4 + size:
                break
            if channel == 0 and buffer[offset + 4] & 0x10:
                ext = extension(bytes(buffer[offset + 4 : offset + 4 + 32]))
                done = done or (ext is not None and bool(ext[0] & 0x10))
            offset += 4 + size
        del buffer[:offset]
        if not done:
            data = await client.reader.read(1 << 20)
            if not data:
                raise ConnectionError("closed")
            total += len(data)
            buffer += data
    elapsed = time.perf_counter() - began
    client.close()
    return elapsed, total


async def sessions(port: int, pid: int, count: int, seconds: float, lo: int, hi: int) -> float:
    clients = [Client(port) for _ in range(count)]
    for c in clients:
        await c.open()
    rng = random.Random(5)
    for c in clients:
        t = rng.randrange(lo, hi - 3600 * S)
        reply = await c.request("PLAY", c.url, Range=format_range(ClockRange(t)))
        assert reply.status == 200

    async def drain(c: Client) -> None:
        while True:
            await c.messages()

    tasks = [asyncio.ensure_future(drain(c)) for c in clients]
    await asyncio.sleep(1.0)  # every session past its first read
    cpu0, began = proc_cpu_s(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = proc_cpu_s(pid) - cpu0
    elapsed = time.perf_counter() - began
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        c.close()
    return 100 * cpu / elapsed


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-replay-rtsp-") as tmp:
        began = time.perf_counter()
        db, real_start, real_end, files = await record(Path(tmp), args.minutes, args.days)
        db.close()
        print(f"footage and index: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.replay",
            "--serve",
            tmp,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert server.stdout is not None
            port = int(await server.stdout.readline())
            await first_packets(port, 10, T0, real_end)  # warm
            plays = await first_packets(port, args.plays, T0, real_end)
            drain_s, drain_bytes = await throughput(port, real_start)
            cpu = await sessions(port, server.pid, args.sessions, args.seconds, T0, real_end)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            await asyncio.wait_for(server.wait(), 10)
        peer_seek = await asyncio.to_thread(peer_seeks, files, args.plays)
        peer_s, peer_bytes = await asyncio.to_thread(peer_drain, files)
    media_s = (real_end - real_start) / S
    figures = {
        "play_to_first_packet_ms": {
            "p50": round(percentile(plays, 50), 2),
            "p99": round(percentile(plays, 99), 2),
            "peer_pyav_seek_p50": round(percentile(peer_seek, 50), 2),
            "peer_pyav_seek_p99": round(percentile(peer_seek, 99), 2),
            "peer_over_ours_p50": round(percentile(peer_seek, 50) / percentile(plays, 50), 2),
        },
        "rate_control_no": {
            "mbit_s": round(drain_bytes * 8 / drain_s / 1e6, 1),
            "x_real_time": round(media_s / drain_s, 1),
            "peer_pyav_demux_mbit_s": round(peer_bytes * 8 / peer_s / 1e6, 1),
            "peer_pyav_demux_x_real_time": round(media_s / peer_s, 1),
            "ours_over_peer": round(peer_s / drain_s, 2),
        },
        "real_time_sessions": {
            "count": args.sessions,
            "server_cpu_pct_of_one_core": round(cpu, 1),
        },
    }
    return {
        "parameters": vars(args),
        "index": {"days": args.days, "segments": args.days * 1440 + len(files)},
        "footage": {"files": len(files), "media_s": round(media_s, 1)},
        "peer": "PyAV (FFmpeg's MP4 demuxer, in process) on the same segment files: open the "
        "file holding T + seek + first packet; demux every packet (no RTSP, no network)",
        "figures": figures,
        "targets": {"first_packet_p99_ms": 30, "x_real_time_min": 100, "sessions_cpu_pct": 20},
        "machine": machine_info(),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--plays", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(Path(args.serve)))
        return 0
    del args.serve
    result = asyncio.run(run(args))
    f = result["figures"]
    p, d, s = f["play_to_first_packet_ms"], f["rate_control_no"], f["real_time_sessions"]
    print(f"{'figure':36} {'ours':>10} {'PyAV':>10}")
    print(f"{'PLAY to first packet p50 ms':36} {p['p50']:10.2f} {p['peer_pyav_seek_p50']:10.2f}")
    print(f"{'PLAY to first packet p99 ms':36} {p['p99']:10.2f} {p['peer_pyav_seek_p99']:10.2f}")
    print(
        f"{'Rate-Control: no, Mbit/s':36} {d['mbit_s']:10.1f} {d['peer_pyav_demux_mbit_s']:10.1f}"
    )
    print(f"{'Rate-Control: no, x real time':36} {d['x_real_time']:10.1f} "
          f"{d['peer_pyav_demux_x_real_time']:10.1f}")  # fmt: skip
    print(
        f"{s['count']} real-time sessions, server % of a core {s['server_cpu_pct_of_one_core']:6.1f}"
    )
    print(f"load average after the run: {result['load_average_after']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
