"""Child processes of ``bench.ingest``: the RTSP load generator and the in-process recorders.

    python -m bench.ingest_worker server --clip CLIP --channels N --ready FILE --counts FILE
        [--snapshot FILE]
    python -m bench.ingest_worker record --backend native|pyav --base URL --channels N
        --dir DIR --ready FILE --stats FILE

``server``: the project's RTSP server with N mounts ``/sim/1..N``, one ``LoopingClip``
each, wrapped to count the units handed to viewers. It writes its port to ``--ready``; on
SIGUSR1 it stops sending (every viewer's stream pauses) and writes the counts to
``--counts``. On SIGUSR2 it writes the counts so far to ``--snapshot`` and goes on (the
rate at which it sends, to check that it keeps up).

``record``: N cameras recorded by one process, one event loop: source (``RtspSource`` or
``PyAVSource``) → ``Hub`` → ``SegmentWriter`` with a ``SegmentIndex`` on SQLite. ``--ready``
is written once every channel has published a unit; on SIGTERM the sources stop, the
writers close their segments and the per-channel counts go to ``--stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path


class CountingSource:
    """A mount source counting the units (and their bytes) it hands to viewers."""

    def __init__(self, inner, frozen: asyncio.Event) -> None:
        self.inner = inner
        self.params = inner.params
        self._frozen = frozen
        self.sent = 0
        self.bytes = 0
        self.subscriptions = 0

    async def subscribe(self):
        self.subscriptions += 1
        async for unit, dts_90k in self.inner.subscribe():
            if self._frozen.is_set():
                await asyncio.Future()  # sending stopped for good: the counts are final
            self.sent += 1
            self.bytes += sum(len(n) for n in unit.payloads)
            yield unit, dts_90k


async def serve(args: argparse.Namespace) -> None:
    from onvif_nvr.clock import SystemClock
    from onvif_nvr.recording.simulator import LoopingClip, load_clip
    from onvif_nvr.replay.rtsp_server import RtspServer

    clock = SystemClock()
    params, units = await asyncio.to_thread(load_clip, Path(args.clip))
    frozen = asyncio.Event()
    server = RtspServer("127.0.0.1", 0, clock)
    mounts = {}
    for i in range(1, args.channels + 1):
        mounts[i] = CountingSource(LoopingClip(params, units, clock), frozen)
        server.add_mount(f"/sim/{i}", mounts[i])
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def counts() -> dict:
        return {
            str(i): {"sent": m.sent, "bytes": m.bytes, "subscriptions": m.subscriptions}
            for i, m in mounts.items()
        }

    def freeze() -> None:
        frozen.set()
        _write_json(Path(args.counts), counts())

    def snapshot() -> None:
        if args.snapshot:
            data = {"monotonic": loop.time(), "counts": counts()}
            _write_json(Path(args.snapshot), data)

    loop.add_signal_handler(signal.SIGUSR1, freeze)
    loop.add_signal_handler(signal.SIGUSR2, snapshot)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _write_json(Path(args.ready), {"port": server.bound_port})
    try:
        await stop.wait()
    finally:
        await server.close()


async def record(args: argparse.Namespace) -> None:
    from onvif_nvr.clock import SystemClock
    from onvif_nvr.db.engine import Database
    from onvif_nvr.recording.cameras import CameraStore
    from onvif_nvr.recording.hub import Hub
    from onvif_nvr.recording.index import SegmentIndex
    from onvif_nvr.recording.writer import SegmentWriter
    from onvif_nvr.system.secrets import Sealer

    if args.backend == "pyav":
        from onvif_nvr.recording.pyav_source import PyAVSource as Source
    else:
        from onvif_nvr.rtsp.client import RtspSource as Source

    directory = Path(args.dir)
    db = Database(f"sqlite:///{directory / 'nvr.sqlite3'}")
    await db.migrate()
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        cameras = CameraStore(db, Sealer(b"k" * 32), clock)
        index = SegmentIndex(db)
        volume_path = directory / "volume"
        volume_id = await index.ensure_volume(str(volume_path))
        channels = []
        for i in range(1, args.channels + 1):
            url = f"{args.base}{i}"
            cam = await cameras.add(f"cam{i}", url)
            hub = Hub(f"cam{i}")
            writer = SegmentWriter(
                cam.id,
                volume_id,
                volume_path,
                index,
                segment_s=args.segment_s,
                fragment_s=1.0,
                fsync=args.fsync,
            )
            subscription = hub.subscribe("recorder", maxsize=10_000, lossy=True)
            writing = asyncio.ensure_future(writer.run(subscription))
            source = Source(url, clock=clock, on_units=_publisher(hub))
            reading = asyncio.ensure_future(source.run())
            channels.append((hub, subscription, writer, source, reading, writing))

        while not stop.is_set() and not all(c[0].published for c in channels):
            failed = [c[4] for c in channels if c[4].done()]
            if failed:
                failed[0].result()  # raises the source's error
                raise RuntimeError("a source ended before publishing")
            await asyncio.sleep(0.05)
        _write_json(Path(args.ready), {"channels": args.channels})
        await stop.wait()

        for _, _, _, source, _, _ in channels:
            source.stop()
        errors = []
        for result in await asyncio.gather(*(c[4] for c in channels), return_exceptions=True):
            if isinstance(result, BaseException):
                errors.append(repr(result))
        for hub, *_ in channels:
            hub.end()
        await asyncio.gather(*(c[5] for c in channels))
        stats = []
        for hub, subscription, writer, source, _, _ in channels:
            stats.append(
                {
                    "published": hub.published,
                    "units_written": writer.units_written,
                    "units_skipped": writer.units_skipped,
                    "hub_dropped": subscription.lost,
                    "queued": len(subscription._queue),
                    "storage_errors": writer.storage_errors,
                    "source_packets": getattr(source, "packets", None),
                    "source_lost_packets": getattr(source, "lost", None),
                    "source_dropped": getattr(source, "dropped", None),
                }
            )
        _write_json(Path(args.stats), {"channels": stats, "source_errors": errors})
    finally:
        db.close()


def _publisher(hub):
    return hub.publish_many


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--clip", required=True)
    s.add_argument("--channels", type=int, required=True)
    s.add_argument("--ready", required=True)
    s.add_argument("--counts", required=True)
    s.add_argument("--snapshot", help="on SIGUSR2, write the counts so far here (not frozen)")
    r = sub.add_parser("record")
    r.add_argument("--backend", choices=("native", "pyav"), required=True)
    r.add_argument("--base", required=True, help="URL prefix; the channel number is appended")
    r.add_argument("--channels", type=int, required=True)
    r.add_argument("--dir", required=True)
    r.add_argument("--ready", required=True)
    r.add_argument("--stats", required=True)
    r.add_argument("--segment-s", type=float, default=60.0)
    r.add_argument("--fsync", default="fragment")
    args = p.parse_args(argv)
    asyncio.run(serve(args) if args.mode == "server" else record(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
