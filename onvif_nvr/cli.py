"""``onvif-nvr`` command line: ``serve`` runs the box, ``coverage`` lists what each
served ONVIF binding implements."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onvif_nvr import __version__
from onvif_nvr.config import ConfigError, Settings, load_settings
from onvif_nvr.system.logs import BufferHandler, LogBuffer

if TYPE_CHECKING:
    from onvif_nvr.db.engine import Database


def _settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "http_port": args.http_port,
        "rtsp_port": args.rtsp_port,
        "bind": args.bind,
        "database_url": args.database_url,
        "admin_password": args.admin_password,
        "log_level": args.log_level,
    }
    return load_settings(Path(args.config) if args.config else None, overrides=overrides)


async def _serve(settings: Settings, demo_cameras: int = 0) -> int:
    from onvif_nvr.app import Exit, NvrApp  # already imported by main(), off the event loop
    from onvif_nvr.errors import NvrError

    system_log = LogBuffer(_clock())
    access_log = LogBuffer(_clock())
    logging.getLogger("onvif_nvr").addHandler(BufferHandler(system_log))
    loop = asyncio.get_running_loop()
    current: list[NvrApp] = []

    def on_signal() -> None:
        if current:
            current[0].stop_soon()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    while True:
        app = NvrApp(
            settings, system_log=system_log, access_log=access_log, demo_cameras=demo_cameras
        )
        current[:] = [app]
        try:
            await app.start()
        except (OSError, NvrError) as exc:
            await app.close()
            print(f"onvif-nvr: cannot start: {exc}", file=sys.stderr)
            return 1
        if app.generated_admin_password:
            # Printed once, to the console only: it is never written to a log.
            print(
                f"onvif-nvr: created user 'admin' with generated password: {app.generated_admin_password}",
                flush=True,
            )
        if app.rtsp is not None:
            print(
                f"onvif-nvr: serving live RTSP on rtsp://{app.rtsp_host}:{app.rtsp.bound_port}"
                "/live/<receiver or recording token>",
                flush=True,
            )
            for uri in app.live_uris():
                print(f"onvif-nvr: live {uri}", flush=True)
        print(
            f"onvif-nvr: serving ONVIF on http://{settings.bind}:{app.bound_port}/onvif/device_service",
            flush=True,
        )
        if settings.rtsp_port == 0 and app.rtsp is not None:
            settings = dataclasses.replace(settings, rtsp_port=app.rtsp.bound_port)
        if settings.http_port == 0 and app.bound_port:
            # "Any free port" is chosen once: a SystemReboot comes back where clients are.
            settings = dataclasses.replace(settings, http_port=app.bound_port)
        reason = await app.wait()
        await app.close()
        if reason is not Exit.REBOOT:
            return 0


def _clock() -> Any:
    from onvif_nvr.clock import SystemClock

    return SystemClock()


def _format_reports(reports: list[Any]) -> str:
    if not reports:
        return "no ONVIF devices answered"
    lines = []
    for r in reports:
        title = r.name or r.model or r.endpoint
        maker = f"{r.model} ({r.manufacturer})" if r.model else ""
        lines.append(
            f"{title}  {maker}  {r.xaddr}  [{r.status}]{'  ' + r.reason if r.reason else ''}"
        )
        for p in r.profiles:
            size = f"{p.width}x{p.height}" if p.width and p.height else "?"
            fps = f"{p.frame_rate:g} fps" if p.frame_rate else "? fps"
            rate = f"{p.bitrate_kbps} kbit/s" if p.bitrate_kbps else ""
            lines.append(
                f"    {p.token}  {p.name}  {p.encoding or '?'} {size} {fps} {rate}  {p.uri or '-'}"
            )
    return "\n".join(lines)


async def _discover(settings: Settings, args: argparse.Namespace) -> int:
    from onvif_nvr.clock import SystemClock
    from onvif_nvr.db.engine import Database
    from onvif_nvr.discovery import cameras, inventory, probe
    from onvif_nvr.discovery.target import local_addresses
    from onvif_nvr.system import hostinfo

    db = None
    if not args.no_save or args.saved:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        await db.migrate()
    try:
        if args.saved:
            assert db is not None
            reports = await inventory.load(db)
        else:
            unicast = [_host_port(a) for a in args.address or []]
            addresses = []
            if args.interface or not unicast:
                interfaces = await asyncio.to_thread(hostinfo.read_interfaces)
                addresses = local_addresses(interfaces, args.interface or (), "0.0.0.0")
            found = await probe.probe(addresses=addresses, unicast=unicast, timeout_s=args.timeout)
            interrogator = await asyncio.to_thread(cameras.Interrogator, args.user, args.password)
            reports = await cameras.interrogate_all(found, interrogator)
            if db is not None:
                await inventory.save(db, reports, SystemClock().wall_ns())
    finally:
        if db is not None:
            await asyncio.to_thread(db.close)
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print(_format_reports(reports))
    return 0


async def _camera(settings: Settings, args: argparse.Namespace) -> int:
    from onvif_nvr.clock import SystemClock
    from onvif_nvr.db.engine import Database
    from onvif_nvr.errors import NvrError
    from onvif_nvr.recording.camera_setup import CameraSetup
    from onvif_nvr.recording.control import RecordingControl
    from onvif_nvr.system.secrets import Sealer, load_or_create_key

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = await asyncio.to_thread(load_or_create_key, settings.data_dir / "secret.key")
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        control = RecordingControl(db, Sealer(key), SystemClock(), settings.recording)
        setup = CameraSetup(control)
        try:
            if args.camera_command == "add":
                camera = await setup.add(
                    args.name,
                    args.url,
                    username=args.user,
                    password=args.password,
                    transport=args.transport,
                    backend=args.backend,
                    enabled=not args.disabled,
                    retention_s=args.retention,
                )
                print(
                    f"added camera {camera.name} ({camera.url}): receiver {camera.receiver}, "
                    f"recording {camera.recording}, job {camera.job}"
                )
            elif args.camera_command == "set":
                camera = await setup.update(
                    args.name,
                    url=args.url,
                    username=args.user,
                    password=args.password,
                    transport=args.transport,
                    backend=args.backend,
                    enabled=None if args.enabled is None else args.enabled == "yes",
                    retention_s=args.retention,
                )
                print(f"changed camera {camera.name}")
            elif args.camera_command == "remove":
                await setup.remove(args.name)
                print(f"removed camera {args.name} (its recording and recorded data too)")
            else:
                cameras = await setup.list()
                if args.json:
                    print(
                        json.dumps(
                            [
                                {
                                    "name": c.name,
                                    "url": c.url,
                                    "username": c.username,
                                    "transport": c.transport,
                                    "backend": c.backend,
                                    "enabled": c.enabled,
                                    "retention_s": c.retention_s,
                                    "origin": c.origin,
                                    "receiver": c.receiver,
                                    "recording": c.recording,
                                    "job": c.job,
                                    "receiver_state": c.receiver_state,
                                    "job_state": c.job_state,
                                }
                                for c in cameras
                            ],
                            indent=2,
                        )
                    )
                elif not cameras:
                    print("no cameras")
                else:
                    for c in cameras:
                        state = "enabled" if c.enabled else "disabled"
                        user = f" as {c.username}" if c.username else ""
                        print(
                            f"{c.name}  {c.url}{user}  {c.transport}/{c.backend}  {state}  "
                            f"{c.receiver} -> {c.recording or '-'} ({c.job or 'no job'}: "
                            f"{c.job_state or '-'})"
                        )
        except NvrError as exc:
            print(f"onvif-nvr: {exc.message}", file=sys.stderr)
            return 1
    finally:
        await asyncio.to_thread(db.close)
    return 0


async def _check(settings: Settings, repair: bool) -> int:
    from onvif_nvr.db.engine import Database
    from onvif_nvr.recording.index import SegmentIndex
    from onvif_nvr.recording.recovery import check_volume
    from onvif_nvr.recording.volumes import VolumeSet
    from onvif_nvr.system.store import SettingsStore

    db = Database(settings.effective_database_url)
    problems = 0
    try:
        await db.migrate()
        index = SegmentIndex(db)
        store = SettingsStore(db, _clock())
        await store.load()
        volumes = VolumeSet(index, box_id=str(store.get("endpoint_uuid") or ""))
        paths = [Path(v) for v in settings.storage.volumes] or [settings.data_dir / "recordings"]
        all_segments = await index.segments()
        checked: set[int] = set()
        for path, row, verdict in await volumes.inspect(paths):
            count = sum(1 for s in all_segments if row is not None and s.volume_id == row.id)
            if verdict.status in ("offline", "foreign"):
                # Never checked, let alone repaired: its files are not there to compare.
                print(f"{path}: {verdict.status}: {verdict.reason}; {count} segments not checked")
                problems += 1
                continue
            if row is None:
                print(f"{path}: new volume (no recordings yet)")
                continue
            checked.add(row.id)
            report = await check_volume(index, row.id, path, repair=repair)
            segments = [s for s in await index.segments() if s.volume_id == row.id]
            print(f"{path}: {len(segments)} segments, {len(report.problems)} problems")
            for problem in report.problems:
                print(f"  {problem}")
            if repair:
                print(
                    f"  repaired: {report.truncated_bytes} bytes cut, {report.orphan_files} orphan files removed, "
                    f"{report.dropped_segments} lost segments dropped"
                )
            problems += len(report.problems)
        for known in await index.volumes():
            count = sum(1 for s in all_segments if s.volume_id == known.id)
            if known.id not in checked and count:
                print(
                    f"{known.path}: not configured ({known.status}); {count} segments not checked"
                )
        problems += await _check_spans(db, repair)
    finally:
        await asyncio.to_thread(db.close)
    return 1 if problems and not repair else 0


async def _check_spans(db: Database, repair: bool) -> int:
    """The timeline's summary (recording_spans) against the segment rows; rebuilt on repair."""
    from onvif_nvr.recording import spans

    def work() -> list[tuple[int, int, int]]:
        with db.engine.begin() as conn:
            found = spans.mismatches(conn)
            if found and repair:
                spans.rebuild(conn)
            return found

    found = await db.run(work)
    print(f"recording spans: {len(found)} recordings differ from their segments")
    for rid, stored, expected in found:
        print(f"  recording {rid}: {stored} spans stored, the segments give {expected}")
    if found and repair:
        print("  repaired: recording_spans rebuilt from the segments")
    return len(found)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return (host or text, int(port) if port else 3702)


def _coverage() -> int:
    from onvif_nvr.app import coverage_report

    print(coverage_report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onvif-nvr", description="ONVIF network video recorder")
    parser.add_argument("--version", action="version", version=f"onvif-nvr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the NVR")
    demo = sub.add_parser(
        "demo", help="run the NVR with simulated cameras recording (no hardware needed)"
    )
    serve.add_argument("--config", help="TOML settings file (see example.toml)")
    serve.add_argument("--data-dir", type=Path, help="where the database, key and recordings live")
    serve.add_argument("--http-port", type=int, help="SOAP/HTTP port (default 8080)")
    serve.add_argument("--rtsp-port", type=int, help="RTSP port (default 8554)")
    serve.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
    serve.add_argument(
        "--admin-password",
        help="password of the first 'admin' on a data dir with no users (else generated and printed)",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error")
    for action in serve._actions:
        if action.option_strings and action.dest != "help":
            demo._add_action(action)
    demo.add_argument(
        "--cameras", type=int, default=4, help="how many simulated cameras (default 4)"
    )
    discover = sub.add_parser(
        "discover",
        help="find ONVIF cameras with WS-Discovery and list their profiles and RTSP URIs",
    )
    discover.add_argument("--config", help="TOML settings file (for the data dir / database)")
    discover.add_argument("--data-dir", type=Path, help="where the results are kept")
    discover.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
    discover.add_argument("--user", help="user name to log in to the cameras with")
    discover.add_argument("--password", help="password to log in to the cameras with")
    discover.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers")
    discover.add_argument(
        "--interface", action="append", help="probe on this interface (repeatable)"
    )
    discover.add_argument(
        "--address", action="append", help="also probe this host[:port] directly (repeatable)"
    )
    discover.add_argument("--json", action="store_true", help="print JSON")
    discover.add_argument("--no-save", action="store_true", help="do not keep the results")
    discover.add_argument(
        "--saved", action="store_true", help="list the results kept from earlier runs"
    )
    camera = sub.add_parser(
        "camera",
        help="add, change, list and remove the cameras to record (each a receiver, a recording "
        "and a recording job)",
    )
    camera.add_argument("--config", help="TOML settings file (for the data dir / database)")
    camera.add_argument("--data-dir", type=Path, help="the NVR's data dir")
    camera.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
    camera_sub = camera.add_subparsers(dest="camera_command", required=True)
    for verb in ("add", "set"):
        p = camera_sub.add_parser(verb, help=f"{verb} a camera")
        p.add_argument("name")
        if verb == "add":
            p.add_argument("url", help="rtsp://host[:port]/path (credentials may be included)")
        else:
            p.add_argument("--url")
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument(
            "--transport", choices=("tcp", "udp", "http"), default="tcp" if verb == "add" else None
        )
        p.add_argument(
            "--backend", choices=("native", "pyav"), default="native" if verb == "add" else None
        )
        p.add_argument(
            "--retention",
            type=int,
            default=0 if verb == "add" else None,
            help="seconds; 0 = unlimited",
        )
        if verb == "add":
            p.add_argument("--disabled", action="store_true")
        else:
            p.add_argument("--enabled", choices=("yes", "no"))
    remove = camera_sub.add_parser("remove", help="remove a camera")
    remove.add_argument("name")
    listing = camera_sub.add_parser("list", help="list the cameras")
    listing.add_argument("--json", action="store_true")
    check = sub.add_parser(
        "check", help="verify the recordings against the index (and repair with --repair)"
    )
    check.add_argument("--config", help="TOML settings file")
    check.add_argument("--data-dir", type=Path, help="the NVR's data dir")
    check.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
    check.add_argument(
        "--repair", action="store_true", help="cut torn tails, remove orphans, drop lost segments"
    )
    sub.add_parser(
        "coverage",
        help="list the operations of each served ONVIF binding and which are implemented",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "coverage":
        return _coverage()
    if args.command in ("discover", "camera", "check"):
        try:
            settings = load_settings(
                Path(args.config) if args.config else None,
                overrides={"data_dir": args.data_dir, "database_url": args.database_url},
            )
        except ConfigError as exc:
            print(f"onvif-nvr: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if args.command == "camera":
            return asyncio.run(_camera(settings, args))
        if args.command == "check":
            return asyncio.run(_check(settings, args.repair))
        return asyncio.run(_discover(settings, args))
    try:
        settings = _settings_from_args(args)
    except ConfigError as exc:
        print(f"onvif-nvr: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("zeep").setLevel(max(logging.INFO, logging.getLogger().level))
    import onvif_nvr.app  # noqa: F401  (heavy imports before the event loop starts)

    if settings.loop_guard:
        from onvif_nvr import loopguard

        loopguard.install()

    try:
        return asyncio.run(
            _serve(settings, getattr(args, "cameras", 0) if args.command == "demo" else 0)
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
