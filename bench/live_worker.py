"""Child processes of ``bench.live``: the camera, the box and the viewers.

    python -m bench.live_worker camera --clip CLIP --ready FILE --stamps FILE
    python -m bench.live_worker box --camera URL --dir DIR --ready FILE --stats FILE
    python -m bench.live_worker viewers --url URL --count N --start T --end T --out FILE

``camera``: the project's RTSP server with one ``LoopingClip`` at ``/sim/1`` (as
``bench.ingest_worker server``), each unit stamped when it is handed to the packetizer: the
first 32 bytes of its slice NAL (after the NAL header) and ``time.monotonic_ns()``. On
SIGUSR2 the stamps go to ``--stamps``.

``box``: ``RtspSource`` → ``Hub`` → ``SegmentWriter`` (SQLite index) and the live
``RtspServer`` serving the hub at ``/live`` through ``HubFeed`` — the path ``app.py`` wires.

``viewers``: N plain asyncio RTSP clients (DESCRIBE, SETUP video interleaved, PLAY) reading
``$``-framed packets; between ``--start`` and ``--end`` (monotonic seconds) each records the
arrival time of the first packet of every slice NAL (its key as the camera's), bytes,
packets and RTP sequence gaps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
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


class ViewerProtocol(asyncio.Protocol):
    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.buf = bytearray()
        self.playing = False
        self.response: asyncio.Future | None = None
        self.start_ns, self.end_ns = start_ns, end_ns
        self.arrivals: list[tuple[str, int]] = []
        self.bytes = self.packets = self.gaps = 0
        self.last_seq: int | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.response is not None and not self.response.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            self.response.set_result((head, body))
        if self.playing:
            self._frames()

    def _frames(self) -> None:
        buf = self.buf
        now = time.monotonic_ns()
        window = self.start_ns <= now < self.end_ns
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            magic, channel, size = _FRAME.unpack_from(buf, pos)
            if magic != 0x24:
                raise RuntimeError("lost interleaved framing")
            if n - pos < 4 + size:
                break
            if channel == 0 and window:
                p = pos + 4
                self.packets += 1
                self.bytes += size
                seq = (buf[p + 2] << 8) | buf[p + 3]
                if self.last_seq is not None and seq != (self.last_seq + 1) & 0xFFFF:
                    self.gaps += 1
                self.last_seq = seq
                h = p + 12 + 4 * (buf[p] & 0x0F)
                nal_type = buf[h] & 0x1F
                if nal_type == 28 and buf[h + 1] & 0x80 and (buf[h + 1] & 0x1F) in (1, 5):
                    key = bytes(buf[h + 2 : h + 2 + KEY_BYTES]).hex()
                    self.arrivals.append((key, now))
                elif nal_type in (1, 5) and size > KEY_BYTES + 13:
                    key = bytes(buf[h + 1 : h + 1 + KEY_BYTES]).hex()
                    self.arrivals.append((key, now))
            pos += 4 + size
        del buf[:pos]


async def _request(proto: ViewerProtocol, transport, method: str, url: str, cseq: int, extra=""):
    proto.response = asyncio.get_running_loop().create_future()
    transport.write(f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n".encode())
    head, body = await asyncio.wait_for(proto.response, 10)
    status = int(head.split(" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"{method} {url}: {head.splitlines()[0]}")
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


async def one_viewer(url: str, start_ns: int, end_ns: int) -> ViewerProtocol:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(
        lambda: ViewerProtocol(start_ns, end_ns), parts.hostname, parts.port
    )
    headers, body = await _request(
        proto, transport, "DESCRIBE", url, 1, "Accept: application/sdp\r\n"
    )
    base = headers.get("content-base", url)
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
    headers, _ = await _request(
        proto, transport, "SETUP", track, 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
    )
    session = headers["session"].split(";")[0]
    await _request(proto, transport, "PLAY", base, 3, f"Session: {session}\r\nRange: npt=0-\r\n")
    proto.playing = True
    proto._frames()
    proto.transport = transport
    return proto


async def viewers(args: argparse.Namespace) -> None:
    start_ns, end_ns = int(args.start * 1e9), int(args.end * 1e9)
    protos = await asyncio.gather(
        *(one_viewer(args.url, start_ns, end_ns) for _ in range(args.count))
    )
    _write_json(Path(args.ready), "ok")
    await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9) + 0.05)
    out = []
    for p in protos:
        out.append(
            {
                "arrivals": p.arrivals,
                "bytes": p.bytes,
                "packets": p.packets,
                "gaps": p.gaps,
                "closed_early": p.closed.done(),
            }
        )
        p.transport.abort()
    _write_json(Path(args.out), out)


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
