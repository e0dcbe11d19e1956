"""Camera streams: the rows behind the ONVIF receivers (``recording/control.py``), their
URLs and sealed credentials. The camera commands (``recording/camera_setup.py``) and the
ONVIF services go through :class:`~onvif_nvr.recording.control.RecordingControl`;
:class:`CameraStore` is the plain row store underneath.

URLs are stored without credentials; a user name and password given in the URL or
separately are kept apart, the password sealed with the box key. Nothing here logs a URL
with credentials (use :func:`onvif_nvr.recording.cameras.display_url`).
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

from sqlalchemy import select

from onvif_nvr.clock import Clock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import InvalidArgument, OperationProhibited
from onvif_nvr.system.secrets import Sealer

TRANSPORTS = ("tcp", "udp", "http")
#: The ONVIF StreamSetup Transport Protocol reported for each ingest transport.
TRANSPORT_PROTOCOL = {"tcp": "RTSP", "udp": "UDP", "http": "HTTP"}
BACKENDS = ("native", "pyav")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,63}$")
MAX_URL_LENGTH = 1024


@dataclasses.dataclass(frozen=True)
class Camera:
    id: int
    name: str
    url: str  # without credentials
    username: str | None
    password: str | None = dataclasses.field(repr=False)
    transport: str = "tcp"
    backend: str = "native"
    enabled: bool = True
    retention_s: int = 0
    origin: str = "cli"

    @property
    def url_with_credentials(self) -> str:
        """For the RTSP client only; never log it."""
        if not self.username:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        user = urllib.parse.quote(self.username, safe="")
        password = urllib.parse.quote(self.password or "", safe="")
        netloc = (
            f"{user}:{password}@{parts.netloc}"
            if self.password is not None
            else f"{user}@{parts.netloc}"
        )
        return urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path, parts.query, parts.fragment)
        )


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(url without user info, user, password) of an rtsp:// URL; ValueError if not one."""
    text = url.strip()
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.hostname:
        raise ValueError("the URL must be rtsp://host[:port]/path")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the URL has an invalid port") from None
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    clean = urllib.parse.urlunsplit(
        (parts.scheme.lower(), netloc, parts.path or "/", parts.query, "")
    )
    return clean, user, password


def display_url(url: str) -> str:
    """The URL with any credentials removed, for logs and listings."""
    try:
        return split_credentials(url)[0]
    except ValueError:
        return "<invalid URL>"


class CameraStore:
    def __init__(self, db: Database, sealer: Sealer, clock: Clock) -> None:
        self._db = db
        self._sealer = sealer
        self._clock = clock

    def _camera(self, row: models.Camera) -> Camera:
        return camera_from_row(row, self._sealer)

    async def list(self) -> list[Camera]:
        """Every camera stream (receiver), deleted receivers kept for their data excepted."""

        def read() -> list[models.Camera]:
            with self._db.session() as session:
                return list(
                    session.scalars(
                        select(models.Camera)
                        .where(models.Camera.token.is_not(None))
                        .order_by(models.Camera.name)
                    )
                )

        return [self._camera(r) for r in await self._db.run(read)]

    async def get(self, name: str) -> Camera | None:
        return next((c for c in await self.list() if c.name == name), None)

    async def add(
        self,
        name: str,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        transport: str = "tcp",
        backend: str = "native",
        enabled: bool = True,
        retention_s: int = 0,
        origin: str = "cli",
    ) -> Camera:
        name = check_name(name)
        clean, url_user, url_password = _check_url(url)
        username = username if username is not None else url_user
        password = password if password is not None else url_password
        _check_choice("transport", transport, TRANSPORTS)
        _check_choice("backend", backend, BACKENDS)
        if retention_s < 0:
            raise InvalidArgument("retention must be 0 (unlimited) or a positive number of seconds")
        sealed = self._sealer.seal(password, f"camera:{name}") if password is not None else None
        now = self._clock.wall_ns()

        def write() -> int | None:
            with self._db.session() as session, session.begin():
                if (
                    session.scalar(select(models.Camera).where(models.Camera.name == name))
                    is not None
                ):
                    return None
                row = models.Camera(
                    name=name,
                    url=clean,
                    username=username,
                    password_enc=sealed,
                    transport=transport,
                    backend=backend,
                    enabled=enabled,
                    retention_s=retention_s,
                    origin=origin,
                    created_wall_ns=now,
                    mode="AlwaysConnect" if enabled else "NeverConnect",
                    auto_created=False,
                    media_uri=clean,
                    stream_type="RTP-Unicast",
                    protocol=TRANSPORT_PROTOCOL[transport],
                )
                session.add(row)
                session.flush()
                row.token = receiver_token(row.id)
                return row.id

        camera_id = await self._db.run(write)
        if camera_id is None:
            raise OperationProhibited(f"a camera named {name!r} exists already")
        return Camera(
            camera_id,
            name,
            clean,
            username,
            password,
            transport,
            backend,
            enabled,
            retention_s,
            origin,
        )

    async def update(self, name: str, **changes: object) -> Camera:
        current = await self.get(name)
        if current is None:
            raise InvalidArgument(f"no camera named {name!r}")
        values = dataclasses.asdict(current)
        if "url" in changes and changes["url"] is not None:
            clean, url_user, url_password = _check_url(str(changes.pop("url")))
            values["url"] = clean
            if url_user is not None:
                values["username"], values["password"] = url_user, url_password
        for key, value in changes.items():
            if value is None:
                continue
            if key not in (
                "username",
                "password",
                "transport",
                "backend",
                "enabled",
                "retention_s",
            ):
                raise InvalidArgument(f"unknown camera setting {key!r}")
            values[key] = value
        _check_choice("transport", str(values["transport"]), TRANSPORTS)
        _check_choice("backend", str(values["backend"]), BACKENDS)
        sealed = (
            self._sealer.seal(values["password"], f"camera:{name}")
            if values["password"] is not None
            else None
        )

        def write() -> None:
            with self._db.session() as session, session.begin():
                row = session.scalar(select(models.Camera).where(models.Camera.name == name))
                assert row is not None
                row.url = values["url"]
                row.media_uri = values["url"]
                row.protocol = TRANSPORT_PROTOCOL[values["transport"]]
                row.username = values["username"]
                row.password_enc = sealed
                row.transport = values["transport"]
                row.backend = values["backend"]
                row.enabled = bool(values["enabled"])
                row.retention_s = int(values["retention_s"])

        await self._db.run(write)
        return Camera(**values)

    async def remove(self, name: str) -> None:
        def delete() -> bool:
            with self._db.session() as session, session.begin():
                row = session.scalar(select(models.Camera).where(models.Camera.name == name))
                if row is None:
                    return False
                session.delete(row)
                return True

        if not await self._db.run(delete):
            raise InvalidArgument(f"no camera named {name!r}")


def receiver_token(camera_id: int) -> str:
    """The ONVIF ReceiverToken of a camera stream."""
    return f"RECEIVER_{camera_id}"


def camera_from_row(row: models.Camera, sealer: Sealer) -> Camera:
    password = sealer.open(row.password_enc, f"camera:{row.name}") if row.password_enc else None
    return Camera(
        id=row.id,
        name=row.name,
        url=row.url,
        username=row.username,
        password=password,
        transport=row.transport,
        backend=row.backend,
        enabled=row.enabled,
        retention_s=row.retention_s,
        origin=row.origin,
    )


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidArgument(
            "camera names are 1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _check_url(url: str) -> tuple[str, str | None, str | None]:
    try:
        return split_credentials(url)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgument(f"{what} must be one of {', '.join(choices)}")
