"""Cameras as the CLI and the config file's ``[[camera]]`` tables see them: a thin layer
over the Profile G control plane. A camera NAME is a receiver named NAME (AlwaysConnect),
a recording whose source Name is NAME (made for that receiver) and a recording job from the
one into the other (Active). "Disabled" is the job Idle and the receiver NeverConnect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from onvif_nvr.config import CameraSettings
from onvif_nvr.errors import InvalidArgument, OperationProhibited
from onvif_nvr.recording.cameras import BACKENDS, TRANSPORT_PROTOCOL, TRANSPORTS, check_name
from onvif_nvr.recording.control import (
    JobConfiguration,
    JobSource,
    Receiver,
    ReceiverConfiguration,
    Recording,
    RecordingConfiguration,
    RecordingControl,
    RecordingJob,
    RecordingSource,
    StreamSetup,
)


@dataclasses.dataclass(frozen=True)
class CameraView:
    """One camera with its Profile G objects and their states."""

    name: str
    url: str
    username: str | None
    transport: str
    backend: str
    enabled: bool
    retention_s: int
    origin: str
    receiver: str
    recording: str | None
    job: str | None
    receiver_state: str
    job_state: str | None


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgument(f"{what} must be one of {', '.join(choices)}")


class CameraSetup:
    def __init__(self, control: RecordingControl) -> None:
        self.control = control

    async def _find(self, name: str) -> tuple[Receiver, Recording | None, RecordingJob | None]:
        receiver = next((r for r in await self.control.receivers() if r.name == name), None)
        if receiver is None:
            raise InvalidArgument(f"no camera named {name!r}")
        recording = next(
            (r for r in await self.control.recordings() if r.camera_id == receiver.id), None
        )
        job = None
        if recording is not None:
            job = next(
                (
                    j
                    for j in await self.control.jobs()
                    if j.configuration.recording_token == recording.token
                    and any(s.token == receiver.token for s in j.configuration.sources)
                ),
                None,
            )
        return receiver, recording, job

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
    ) -> CameraView:
        name = check_name(name)
        _check_choice("transport", transport, TRANSPORTS)
        _check_choice("backend", backend, BACKENDS)
        if retention_s < 0:
            raise InvalidArgument("retention must be 0 (unlimited) or a positive number of seconds")
        if any(r.name == name for r in await self.control.receivers()):
            raise OperationProhibited(f"a camera named {name!r} exists already")
        receiver = await self.control.create_receiver(
            ReceiverConfiguration(
                "AlwaysConnect" if enabled else "NeverConnect",
                url,
                StreamSetup("RTP-Unicast", TRANSPORT_PROTOCOL[transport]),
            ),
            name=name,
            username=username,
            password=password,
            backend=backend,
            origin=origin,
        )
        try:
            recording = await self.control.create_recording(
                RecordingConfiguration(RecordingSource(name=name), max_retention_s=retention_s),
                origin=origin,
                camera_id=receiver.id,
            )
            try:
                await self.control.create_job(
                    JobConfiguration(
                        recording.token,
                        "Active" if enabled else "Idle",
                        0,
                        (JobSource(receiver.token),),
                    )
                )
            except BaseException:
                await self.control.delete_recording(recording.token)
                raise
        except BaseException:
            await self.control.delete_receiver(receiver.token)
            raise
        return await self.get(name)

    async def update(
        self,
        name: str,
        *,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        transport: str | None = None,
        backend: str | None = None,
        enabled: bool | None = None,
        retention_s: int | None = None,
    ) -> CameraView:
        receiver, recording, job = await self._find(name)
        current = await self.get(name)
        if transport is not None:
            _check_choice("transport", transport, TRANSPORTS)
        if backend is not None:
            _check_choice("backend", backend, BACKENDS)
        if retention_s is not None and retention_s < 0:
            raise InvalidArgument("retention must be 0 (unlimited) or a positive number of seconds")
        on = current.enabled if enabled is None else enabled
        mode = receiver.configuration.mode
        if enabled is not None:
            mode = "AlwaysConnect" if on else "NeverConnect"
        setup = receiver.configuration.stream_setup
        if transport is not None:
            setup = StreamSetup(setup.stream, TRANSPORT_PROTOCOL[transport])
        await self.control.configure_receiver(
            receiver.token,
            ReceiverConfiguration(mode, url if url is not None else current.url, setup),
            username=username,
            password=password,
            backend=backend,
        )
        if recording is not None and retention_s is not None:
            config = dataclasses.replace(recording.configuration, max_retention_s=retention_s)
            await self.control.set_recording_configuration(recording.token, config)
        if job is not None and enabled is not None:
            await self.control.set_job_mode(job.token, "Active" if on else "Idle")
        return await self.get(name)

    async def remove(self, name: str) -> None:
        receiver, recording, job = await self._find(name)
        if job is not None:
            await self.control.delete_job(job.token)
        if recording is not None:
            await self.control.delete_recording(recording.token)
        await self.control.delete_receiver(receiver.token)

    async def get(self, name: str) -> CameraView:
        for view in await self.list():
            if view.name == name:
                return view
        raise InvalidArgument(f"no camera named {name!r}")

    async def list(self) -> list[CameraView]:
        """Every receiver, with the recording and job made for it (if any)."""
        recordings = {r.camera_id: r for r in await self.control.recordings() if r.camera_id}
        jobs = await self.control.jobs()
        cameras = {c.id: c for c in await self.control.cameras()}
        out = []
        for receiver in sorted(await self.control.receivers(), key=lambda r: r.name):
            camera = cameras[receiver.id]
            recording = recordings.get(receiver.id)
            job = next(
                (
                    j
                    for j in jobs
                    if recording is not None
                    and j.configuration.recording_token == recording.token
                    and any(s.token == receiver.token for s in j.configuration.sources)
                ),
                None,
            )
            enabled = receiver.configuration.mode != "NeverConnect" and (
                job is None or job.configuration.mode == "Active"
            )
            out.append(
                CameraView(
                    name=receiver.name,
                    url=camera.url,
                    username=camera.username,
                    transport=camera.transport,
                    backend=camera.backend,
                    enabled=enabled,
                    retention_s=recording.configuration.max_retention_s if recording else 0,
                    origin=camera.origin,
                    receiver=receiver.token,
                    recording=recording.token if recording else None,
                    job=job.token if job else None,
                    receiver_state=await self.control.receiver_state(receiver.token),
                    job_state=(await self.control.job_state(job.token)).state if job else None,
                )
            )
        return out


async def sync_from_config(setup: CameraSetup, declared: Sequence[CameraSettings]) -> None:
    """Make the config-declared cameras match the config file: add new ones, update
    changed ones, remove those no longer declared. Cameras added by other means (CLI,
    ONVIF) are left alone; a name clash with one of them is an error."""
    existing = {c.name: c for c in await setup.list()}
    wanted = {}
    for entry in declared:
        wanted[check_name(entry.name)] = entry
    for name, entry in wanted.items():
        current = existing.get(name)
        if current is None:
            await setup.add(
                name,
                entry.url,
                username=entry.user or None,
                password=entry.password or None,
                transport=entry.transport,
                backend=entry.backend,
                enabled=entry.enabled,
                retention_s=entry.retention_s,
                origin="config",
            )
        elif current.origin != "config":
            raise OperationProhibited(
                f"config camera {name!r} clashes with a camera added another way"
            )
        else:
            await setup.update(
                name,
                url=entry.url,
                username=entry.user or None,
                password=entry.password or None,
                transport=entry.transport,
                backend=entry.backend,
                enabled=entry.enabled,
                retention_s=entry.retention_s,
            )
    for name, camera in existing.items():
        if camera.origin == "config" and name not in wanted:
            await setup.remove(name)
