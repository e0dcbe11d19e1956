"""Child processes of ``bench.live``: the camera, the box and the viewers.

    python -m bench.live_worker camera --clip CLIP --ready FILE --stamps FILE
    python -m bench.live_worker box --camera URL --dir DIR --ready FILE --stats FILE
    python -m bench.live_worker viewers --url URL --count N [--transport tcp|udp]
        --start T --end T --ready FILE --out FILE

``camera``: the project's RTSP server with one ``LoopingClip`` at ``/sim/1`` (as
``bench.ingest_worker server``), each unit stamped when it is handed to the packetizer: the
first 32 bytes of its slice NAL (after the NAL header) and ``time.monotonic_ns()``. On
SIGUSR2 the stamps go to ``--stamps``.

``box``: ``RtspSource`` → ``Hub`` → ``SegmentWriter`` (SQLite index) and the live
``RtspServer`` serving the hub at ``/live`` through ``HubFeed`` — the path ``app.py`` wires.

``viewers``: N plain RTSP clients (DESCRIBE, SETUP video interleaved or UDP unicast, PLAY)
in one process, at a lower priority than the camera on their shared core; between
``--start`` and ``--end`` (monotonic seconds) each records per slice NAL its key (as the
camera's) and the kernel's receive time of its first packet, per frame the receive time of
its last packet, bytes, packets and RTP sequence gaps. Kernel receive times
(``SO_TIMESTAMPNS``) leave the viewers' own scheduling out of the latency; the time the
viewer process read the packet is kept beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

KEY_BYTES = 32


def nal_key(nal: bytes) -> str | None:
    """Key of a slice NAL (type 1 or 5) with its header byte: the next 32 bytes."""
    if nal and (nal[0] & 0x1F) in (1, 5) and len(nal) > KEY_BYTES:
        return nal[1 : 1 + KEY_BYTES].hex()
    return None


class StampingSource:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.params = inner.params
        self.stamps: dict[int, tuple[str, int]] = {}

    async def subscribe(self):
        async for unit, dts_90k in self.inner.subscribe():
            if dts_90k not in self.stamps:
                for nal in unit.payloads:
                    key = nal_key(nal)
                    if key is not None:
                        self.stamps[dts_90k] = (key, time.monotonic_ns())
                        break
            yield unit, dts_90k


async def camera(args: argparse.Namespace) -> None:
    from onvif_nvr.clock import SystemClock
    from onvif_nvr.recording.simulator import LoopingClip, load_clip
    from onvif_nvr.replay.rtsp_server import RtspServer

    clock = SystemClock()
    params, units = await asyncio.to_thread(load_clip, Path(args.clip))
    server = RtspServer("127.0.0.1", 0, clock)
    source = StampingSource(LoopingClip(params, units, clock))
    server.add_mount("/sim/1", source)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def dump() -> None:
        _write_json(Path(args.stamps), list(source.stamps.values()))

    loop.add_signal_handler(signal.SIGUSR2, dump)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _write_json(Path(args.ready), {"port": server.bound_port})
    try:
        await stop.wait()
    finally:
        await server.close()


async def box(args: argparse.Namespace) -> None:
    from onvif_nvr.clock import SystemClock
    from onvif_nvr.db.engine import Database
    from onvif_nvr.recording.cameras import CameraStore
    from onvif_nvr.recording.hub import Hub
    from onvif_nvr.recording.index import SegmentIndex
    from onvif_nvr.recording.writer import SegmentWriter
    from onvif_nvr.replay.live import HubFeed
    from onvif_nvr.replay.rtsp_server import RtspServer
    from onvif_nvr.rtsp.client import RtspSource
    from onvif_nvr.system.secrets import Sealer

    directory = Path(args.dir)
    db = Database(f"sqlite:///{directory / 'nvr.sqlite3'}")
    await db.migrate()
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        cameras = CameraStore(db, Sealer(b"k" * 32), clock)
        index = SegmentIndex(db)
        volume_path = directory / "volume"
        volume_id = await index.ensure_volume(str(volume_path))
        cam = await cameras.add("cam1", args.camera)
        hub = Hub("cam1")
        writer = SegmentWriter(cam.id, volume_id, volume_path, index, segment_s=60.0)
        recording = hub.subscribe("recorder", maxsize=10_000, lossy=True)
        writing = asyncio.ensure_future(writer.run(recording))
        source = RtspSource(args.camera, clock=clock, on_units=hub.publish_many)
        reading = asyncio.ensure_future(source.run())
        # As the box's CameraRecorder does: read at once while anyone besides the recorder
        # watches, in ~0.1 s batches otherwise.
        hub.on_subscribers = lambda count: source.set_read_latency(0.0 if count > 1 else 0.1)

        def parameters():
            return source.info.video, source.info.audio

        server = RtspServer("127.0.0.1", 0, clock)
        server.add_mount(
            "/live",
            HubFeed(lambda: hub.subscribe("live", maxsize=3000, lossy=True), parameters),
        )
        await server.start()
        while not hub.published:
            if reading.done():
                reading.result()
                raise RuntimeError("the source ended before publishing")
            await asyncio.sleep(0.05)
        _write_json(Path(args.ready), {"port": server.bound_port})
        await stop.wait()
        await server.close()
        source.stop()
        await asyncio.gather(reading, return_exceptions=True)
        hub.end()
        await writing
        stats = {
            "published": hub.published,
            "units_written": writer.units_written,
            "recorder_hub_dropped": recording.lost,
            "source_lost_packets": getattr(source, "lost", None),
        }
        _write_json(Path(args.stats), stats)
    finally:
        db.close()


_FRAME = struct.Struct("!BBH")
#: SO_TIMESTAMPNS (asm-generic value; the socket module does not export it): the kernel
#: stamps each received packet (CLOCK_REALTIME) and recvmsg returns it as ancillary data.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
UDP_RCVBUF = 8 * 1024 * 1024


def _kernel_ns(ancdata: list[tuple[int, int, bytes]], offset_ns: int) -> int | None:
    """The kernel's receive time of a recvmsg, on the monotonic clock the camera stamps
    with (``offset_ns``: CLOCK_REALTIME - CLOCK_MONOTONIC when it was read)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec * 1_000_000_000 + nsec - offset_ns
    return None


class Viewer:
    """One viewer of ``viewers``: an RTSP control connection, then RTP by TCP interleaved
    (on that connection) or UDP (a socket pair of its own), read without asyncio's stream
    machinery: one ``recvmsg`` per readiness (TCP) or until empty (UDP), each packet's
    kernel receive time from ``SO_TIMESTAMPNS``.

    Per frame (RTP timestamp) it records ``[key, first_ns, read_ns, last_ns]``: the camera's
    key of its first slice, the kernel receive time of that slice's first packet, when this
    process read it, and the receive time of the frame's last (marker) packet.
    """

    def __init__(self, transport: str, start_ns: int, end_ns: int) -> None:
        self.transport = transport
        self.start_ns, self.end_ns = start_ns, end_ns
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.rtp: socket.socket | None = None
        self.rtcp: socket.socket | None = None
        self.buf = bytearray()
        self.frames: list[list] = []
        self._frame: list | None = None
        self._frame_ts: int | None = None
        self.bytes = self.packets = self.gaps = self.lost = 0
        self.last_seq: int | None = None
        self.closed_early = False
        self.session = ""
        self.base = ""

    # -- RTSP -------------------------------------------------------------------------------

    async def _response(self) -> tuple[str, bytes]:
        loop = asyncio.get_running_loop()
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end]).decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(self.buf) >= end + 4 + length:
                    body = bytes(self.buf[end + 4 : end + 4 + length])
                    del self.buf[: end + 4 + length]
                    return head, body
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            self.buf += chunk

    async def request(self, method: str, url: str, cseq: int, extra: str = ""):
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            self.sock, f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n".encode()
        )
        head, body = await asyncio.wait_for(self._response(), 10)
        status = int(head.split(" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"{method} {url}: {head.splitlines()[0]}")
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return headers, body

    def _bind_udp(self) -> int:
        """An even/odd pair of loopback UDP ports (RTP, RTCP)."""
        for _ in range(100):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp.bind(("127.0.0.1", 0))
                port = rtp.getsockname()[1]
                if port % 2:
                    raise OSError("odd port")
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            rtp.setblocking(False)
            self.rtp, self.rtcp = rtp, rtcp
            return port
        raise OSError("no free even/odd UDP port pair")

    async def play(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (parts.hostname, parts.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        headers, body = await self.request("DESCRIBE", url, 1, "Accept: application/sdp\r\n")
        base = self.base = headers.get("content-base", url)
        control = None
        for media in body.decode().split("\nm=")[1:]:
            if media.startswith("video"):
                for line in media.splitlines():
                    if line.startswith("a=control:"):
                        control = line[len("a=control:") :].strip()
                break
        if control is None:
            raise RuntimeError("no video control in the SDP")
        track = control if control.startswith("rtsp://") else base.rstrip("/") + "/" + control
        if self.transport == "udp":
            port = self._bind_udp()
            spec = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
        else:
            spec = "RTP/AVP/TCP;unicast;interleaved=0-1"
        headers, _ = await self.request("SETUP", track, 2, f"Transport: {spec}\r\n")
        self.session = headers["session"].split(";")[0]
        if self.transport == "tcp":
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await self.request("PLAY", base, 3, f"Session: {self.session}\r\nRange: npt=0-\r\n")
        if self.transport == "tcp":
            self._frames(0, 0)  # what came with the PLAY response: before the window
            loop.add_reader(self.sock.fileno(), self._read_tcp)
        else:
            assert self.rtp is not None
            loop.add_reader(self.rtp.fileno(), self._read_udp)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in (self.sock, self.rtp):
            if sock is not None and sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
        if self.transport == "udp" and self.sock.fileno() >= 0:
            # The session would outlive the connection (and keep sending) until it times out.
            with contextlib.suppress(OSError):
                self.sock.send(
                    f"TEARDOWN {self.base} RTSP/1.0\r\nCSeq: 4\r\nSession: {self.session}\r\n\r\n".encode()
                )
        for sock in (self.sock, self.rtp, self.rtcp):
            if sock is not None:
                sock.close()

    # -- media ------------------------------------------------------------------------------

    def _read_tcp(self) -> None:
        try:
            data, ancdata, _, _ = self.sock.recvmsg(1 << 18, _ANC_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancdata = b"", []
        read_ns = time.monotonic_ns()
        if not data:
            self.closed_early = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            return
        self.buf += data
        kernel_ns = _kernel_ns(ancdata, time.time_ns() - time.monotonic_ns())
        self._frames(kernel_ns or read_ns, read_ns)

    def _frames(self, kernel_ns: int, read_ns: int) -> None:
        buf = self.buf
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            magic, channel, size = _FRAME.unpack_from(buf, pos)
            if magic != 0x24:
                raise RuntimeError("lost interleaved framing")
            if n - pos < 4 + size:
                break
            if channel == 0:
                self._packet(buf, pos + 4, size, kernel_ns, read_ns)
            pos += 4 + size
        del buf[:pos]

    def _read_udp(self) -> None:
        rtp = self.rtp
        assert rtp is not None
        offset_ns = time.time_ns() - time.monotonic_ns()
        while True:
            try:
                data, ancdata, _, _ = rtp.recvmsg(2048, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            read_ns = time.monotonic_ns()
            kernel_ns = _kernel_ns(ancdata, offset_ns)
            self._packet(data, 0, len(data), kernel_ns or read_ns, read_ns)

    def _packet(self, buf, p: int, size: int, kernel_ns: int, read_ns: int) -> None:
        """One RTP packet of the video track at ``buf[p : p + size]``."""
        if not self.start_ns <= read_ns < self.end_ns or size < 13:
            return
        self.packets += 1
        self.bytes += size
        seq = (buf[p + 2] << 8) | buf[p + 3]
        if self.last_seq is not None and seq != (self.last_seq + 1) & 0xFFFF:
            self.gaps += 1
            self.lost += (seq - self.last_seq - 1) & 0xFFFF
        self.last_seq = seq
        rtp_ts = int.from_bytes(buf[p + 4 : p + 8], "big")
        h = p + 12 + 4 * (buf[p] & 0x0F)
        nal_type = buf[h] & 0x1F
        key = None
        if nal_type == 28 and buf[h + 1] & 0x80 and (buf[h + 1] & 0x1F) in (1, 5):
            key = bytes(buf[h + 2 : h + 2 + KEY_BYTES]).hex()
        elif nal_type in (1, 5) and size > KEY_BYTES + 13:
            key = bytes(buf[h + 1 : h + 1 + KEY_BYTES]).hex()
        if key is not None:
            entry = [key, kernel_ns, read_ns, None]
            self.frames.append(entry)
            if rtp_ts != self._frame_ts:
                self._frame, self._frame_ts = entry, rtp_ts
        if buf[p + 1] & 0x80 and self._frame is not None and rtp_ts == self._frame_ts:
            self._frame[3] = kernel_ns

    def result(self) -> dict:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "packets": self.packets,
            "gaps": self.gaps,
            "lost": self.lost,
            "closed_early": self.closed_early,
        }


async def viewers(args: argparse.Namespace) -> None:
    # The viewers share a core with the camera: the camera goes first.
    os.setpriority(os.PRIO_PROCESS, 0, 10)
    start_ns, end_ns = int(args.start * 1e9), int(args.end * 1e9)
    views = [Viewer(args.transport, start_ns, end_ns) for _ in range(args.count)]
    await asyncio.gather(*(v.play(args.url) for v in views))
    _write_json(Path(args.ready), "ok")
    await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9) + 0.05)
    for v in views:
        v.close()
    _write_json(Path(args.out), [v.result() for v in views])


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("camera")
    c.add_argument("--clip", required=True)
    c.add_argument("--ready", required=True)
    c.add_argument("--stamps", required=True)
    b = sub.add_parser("box")
    b.add_argument("--camera", required=True)
    b.add_argument("--dir", required=True)
    b.add_argument("--ready", required=True)
    b.add_argument("--stats", required=True)
    v = sub.add_parser("viewers")
    v.add_argument("--url", required=True)
    v.add_argument("--count", type=int, required=True)
    v.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    v.add_argument("--start", type=float, required=True)
    v.add_argument("--end", type=float, required=True)
    v.add_argument("--ready", required=True)
    v.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run = {"camera": camera, "box": box, "viewers": viewers}[args.mode]
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
