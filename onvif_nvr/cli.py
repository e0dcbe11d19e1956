"""``onvif-nvr`` command line: ``serve`` runs the box, ``coverage`` lists what each
served ONVIF binding implements."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from onvif_nvr import __version__
from onvif_nvr.config import ConfigError, Settings, load_settings
from onvif_nvr.system.logs import BufferHandler, LogBuffer


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


async def _serve(settings: Settings) -> int:
    from onvif_nvr.app import Exit, NvrApp  # already imported by main(), off the event loop

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
        app = NvrApp(settings, system_log=system_log, access_log=access_log)
        current[:] = [app]
        try:
            await app.start()
        except OSError as exc:
            await app.close()
            print(f"onvif-nvr: cannot start: {exc}", file=sys.stderr)
            return 1
        if app.generated_admin_password:
            # Printed once, to the console only: it is never written to a log.
            print(
                f"onvif-nvr: created user 'admin' with generated password: {app.generated_admin_password}",
                flush=True,
            )
        print(
            f"onvif-nvr: serving ONVIF on http://{settings.bind}:{app.bound_port}/onvif/device_service",
            flush=True,
        )
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


def _coverage() -> int:
    from onvif_nvr.app import coverage_report

    print(coverage_report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onvif-nvr", description="ONVIF network video recorder")
    parser.add_argument("--version", action="version", version=f"onvif-nvr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the NVR")
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
    sub.add_parser(
        "coverage",
        help="list the operations of each served ONVIF binding and which are implemented",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "coverage":
        return _coverage()
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
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
