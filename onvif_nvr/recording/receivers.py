"""Receivers (ONVIF Receiver service objects): camera streams the box connects to."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onvif_nvr.db import models
from onvif_nvr.errors import (
    BadConfiguration,
    CannotDeleteReceiver,
    MaxReceivers,
    NoReceiver,
)
from onvif_nvr.recording.cameras import (
    BACKENDS,
    Camera,
    camera_from_row,
    receiver_token,
)
from onvif_nvr.recording.profile_g import (
    CONNECTED,
    CONNECTING,
    NOT_CONNECTED,
    RECEIVER_MODES,
    CheckedReceiver,
    ControlBase,
    Receiver,
    ReceiverConfiguration,
    check_receiver_configuration,
    jobs_using,
    receiver_from_row,
    receiver_row,
    same_host,
)


class ReceiverOps(ControlBase):
    # -- receivers ---------------------------------------------------------------------------
    async def receivers(self) -> list[Receiver]:
        def read() -> list[Receiver]:
            with self._db.session() as session:
                query = (
                    select(models.Camera)
                    .where(models.Camera.token.is_not(None))
                    .order_by(models.Camera.id)
                )
                return [receiver_from_row(r) for r in session.scalars(query)]

        return await self._db.run(read)

    async def cameras(self) -> list[Camera]:
        """The receivers' streams as the ingest sees them (credentials included)."""

        def read() -> list[Camera]:
            with self._db.session() as session:
                query = select(models.Camera).where(models.Camera.token.is_not(None))
                return [camera_from_row(r, self._sealer) for r in session.scalars(query)]

        return await self._db.run(read)

    async def get_receiver(self, token: str) -> Receiver:
        def read() -> Receiver | None:
            with self._db.session() as session:
                row = receiver_row(session, token)
                return receiver_from_row(row) if row is not None else None

        found = await self._db.run(read)
        if found is None:
            raise NoReceiver(f"no receiver {token!r}")
        return found

    async def create_receiver(
        self,
        config: ReceiverConfiguration,
        *,
        name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        backend: str = "native",
        origin: str = "onvif",
    ) -> Receiver:
        """CreateReceiver; ``name`` (unique) defaults to the token. ``username`` and
        ``password`` override the ones in the MediaUri."""
        checked = check_receiver_configuration(config)
        if backend not in BACKENDS:
            raise BadConfiguration(f"backend must be one of {', '.join(BACKENDS)}")
        async with self._lock:

            def write() -> Receiver:
                with self._db.session() as session, session.begin():
                    return receiver_from_row(
                        self._add_receiver(
                            session,
                            checked,
                            name=name,
                            username=username if username is not None else checked.username,
                            password=password if password is not None else checked.password,
                            backend=backend,
                            origin=origin,
                        )
                    )

            receiver = await self._db.run(write)
            await self._apply()
        return receiver

    def _add_receiver(
        self,
        session: Session,
        checked: CheckedReceiver,
        *,
        name: str | None,
        username: str | None,
        password: str | None,
        backend: str = "native",
        origin: str = "onvif",
        auto_created: bool = False,
    ) -> models.Camera:
        count = session.scalar(
            select(func.count()).select_from(models.Camera).where(models.Camera.token.is_not(None))
        )
        if (count or 0) >= self.limits.max_receivers:
            raise MaxReceivers(f"the box has its maximum of {self.limits.max_receivers} receivers")
        if name is not None and session.scalar(
            select(models.Camera.id).where(models.Camera.name == name)
        ):
            raise BadConfiguration(f"a receiver named {name!r} exists already")
        row = models.Camera(
            name=name or f"new-{self._clock.wall_ns()}",
            url=checked.url,
            username=username,
            password_enc=None,
            transport=checked.transport,
            backend=backend,
            enabled=checked.mode != "NeverConnect",
            retention_s=0,
            origin=origin,
            created_wall_ns=self._clock.wall_ns(),
            mode=checked.mode,
            auto_created=auto_created,
            media_uri=checked.media_uri,
            stream_type=checked.stream_type,
            protocol=checked.protocol,
        )
        session.add(row)
        session.flush()
        row.token = receiver_token(row.id)
        if name is None:
            row.name = row.token
        if password is not None:
            row.password_enc = self._sealer.seal(password, f"camera:{row.name}")
        session.flush()
        return row

    async def configure_receiver(
        self,
        token: str,
        config: ReceiverConfiguration,
        *,
        username: str | None = None,
        password: str | None = None,
        backend: str | None = None,
    ) -> Receiver:
        """ConfigureReceiver: a running connection is made again with the new settings.
        Credentials in the new MediaUri replace the stored ones; a MediaUri without any
        keeps them while it points at the same host."""
        checked = check_receiver_configuration(config)
        if backend is not None and backend not in BACKENDS:
            raise BadConfiguration(f"backend must be one of {', '.join(BACKENDS)}")
        async with self._lock:

            def write() -> Receiver | None:
                with self._db.session() as session, session.begin():
                    row = receiver_row(session, token)
                    if row is None:
                        return None
                    user, secret = checked.username, checked.password
                    if username is not None or password is not None:
                        user, secret = username, password
                    elif user is None and row.url and same_host(row.url, checked.url):
                        user = row.username
                        secret = (
                            self._sealer.open(row.password_enc, f"camera:{row.name}")
                            if row.password_enc
                            else None
                        )
                    row.url = checked.url
                    row.media_uri = checked.media_uri
                    row.username = user
                    row.password_enc = (
                        self._sealer.seal(secret, f"camera:{row.name}")
                        if secret is not None
                        else None
                    )
                    row.transport = checked.transport
                    row.stream_type = checked.stream_type
                    row.protocol = checked.protocol
                    row.mode = checked.mode
                    row.enabled = checked.mode != "NeverConnect"
                    if backend is not None:
                        row.backend = backend
                    return receiver_from_row(row)

            receiver = await self._db.run(write)
            if receiver is None:
                raise NoReceiver(f"no receiver {token!r}")
            await self._apply()
        return receiver

    async def set_receiver_mode(self, token: str, mode: str) -> None:
        if mode not in RECEIVER_MODES:
            raise BadConfiguration(f"ReceiverMode must be one of {', '.join(RECEIVER_MODES)}")
        async with self._lock:

            def write() -> bool:
                with self._db.session() as session, session.begin():
                    row = receiver_row(session, token)
                    if row is None:
                        return False
                    row.mode = mode
                    row.enabled = mode != "NeverConnect"
                    return True

            if not await self._db.run(write):
                raise NoReceiver(f"no receiver {token!r}")
            await self._apply()

    async def delete_receiver(self, token: str) -> None:
        """DeleteReceiver; CannotDeleteReceiver while a recording job uses it. A receiver
        whose data is still recorded keeps its row, without a token, for that data."""
        async with self._lock:

            def write() -> str:
                with self._db.session() as session, session.begin():
                    row = receiver_row(session, token)
                    if row is None:
                        return "unknown"
                    if jobs_using(session, token):
                        return "in use"
                    self._drop_receiver(session, row)
                    return "ok"

            outcome = await self._db.run(write)
            if outcome == "unknown":
                raise NoReceiver(f"no receiver {token!r}")
            if outcome == "in use":
                raise CannotDeleteReceiver(f"receiver {token!r} is used by a recording job")
            await self._apply()

    @staticmethod
    def _drop_receiver(session: Session, row: models.Camera) -> None:
        has_data = session.scalar(
            select(models.Segment.id).where(models.Segment.camera_id == row.id).limit(1)
        )
        if has_data is None:
            session.delete(row)
            return
        # Segments name their stream (and directory) by this row: keep it as a tombstone.
        row.token = None
        row.name = f"deleted-{row.id}"
        row.mode = "NeverConnect"
        row.enabled = False
        row.password_enc = None

    async def receiver_state(self, token: str) -> str:
        """GetReceiverState: from the ingest of the recorders that use the receiver."""
        receiver = await self.get_receiver(token)
        if receiver.configuration.mode == "NeverConnect":
            return NOT_CONNECTED
        return self._ingest_state(receiver.id)

    def _ingest_state(self, receiver_id: int) -> str:
        if self._runtime is None:
            return NOT_CONNECTED
        states = [
            status.state
            for key in self._keys_for(receiver_id)
            if (status := self._runtime.status(key)) is not None
        ]
        if "recording" in states:
            return CONNECTED
        if any(s in ("starting", "connecting", "retrying") for s in states):
            return CONNECTING
        return NOT_CONNECTED

    def _keys_for(self, receiver_id: int) -> list[tuple[int, int]]:
        if self._runtime is None:
            return []
        return [k for k in self._runtime.running() if k[1] == receiver_id]
