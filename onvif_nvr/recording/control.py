"""The Profile G control plane: receivers, recordings, tracks and recording jobs.

The ONVIF Recording (trc) and Receiver (trv) services, the camera commands and the config
file's ``[[camera]]`` tables all drive the box through :class:`RecordingControl`. Every
object lives in the database (it survives restarts and power cuts, RecordingControl §5.2,
Receiver §5.2); after each change the control plane computes which recorders must run
(:func:`plan`) and hands that to the runtime (the :class:`RecordingManager`), which starts,
stops or reconnects them. See docs/design/profile-g.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from onvif_nvr.clock import Clock
from onvif_nvr.config import RecordingSettings
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import (
    BadConfiguration,
    BadMode,
    CannotDelete,
    CannotDeleteReceiver,
    InvalidMediaUri,
    MaxReceivers,
    MaxRecordingJobs,
    MaxRecordings,
    MaxTracks,
    NoReceiver,
    NoRecording,
    NoRecordingJob,
    NoTrack,
)
from onvif_nvr.recording import retention
from onvif_nvr.recording.cameras import (
    BACKENDS,
    MAX_URL_LENGTH,
    Camera,
    camera_from_row,
    receiver_token,
    split_credentials,
)
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.system.secrets import Sealer

RECEIVER_TYPE = "http://www.onvif.org/ver10/schema/Receiver"
PROFILE_TYPE = "http://www.onvif.org/ver10/schema/Profile"
RECEIVER_MODES = ("AlwaysConnect", "NeverConnect", "AutoConnect")
JOB_MODES = ("Idle", "Active")
TRACK_TYPES = ("Video", "Audio", "Metadata")
#: Made by CreateRecording (RecordingControl §5.3.1).
DEFAULT_TRACKS = (("VIDEO001", "Video"), ("AUDIO001", "Audio"), ("META001", "Metadata"))
_TRACK_PREFIX = {"Video": "VIDEO", "Audio": "AUDIO", "Metadata": "META"}
#: StreamSetup Transport Protocol -> ingest transport ("RTSP" is RTP interleaved in RTSP/TCP;
#: plain "TCP" has no other meaning for an RTSP client).
PROTOCOL_TRANSPORT = {"UDP": "udp", "TCP": "tcp", "RTSP": "tcp", "HTTP": "http"}
#: Descriptive strings longer than this are cut (allowed without a fault, §5.3.1).
MAX_TEXT = 1024
#: Receiver states (tt:ReceiverState).
NOT_CONNECTED, CONNECTING, CONNECTED = "NotConnected", "Connecting", "Connected"


# -- the objects ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StreamSetup:
    stream: str = "RTP-Unicast"
    protocol: str = "RTSP"


@dataclasses.dataclass(frozen=True)
class ReceiverConfiguration:
    mode: str
    #: The RTSP URI, as given (credentials in it are kept apart and not echoed).
    media_uri: str
    stream_setup: StreamSetup = StreamSetup()


@dataclasses.dataclass(frozen=True)
class Receiver:
    token: str
    configuration: ReceiverConfiguration
    auto_created: bool = False
    id: int = 0
    name: str = ""


@dataclasses.dataclass(frozen=True)
class RecordingSource:
    source_id: str = ""
    name: str = ""
    location: str = ""
    description: str = ""
    address: str = ""


@dataclasses.dataclass(frozen=True)
class RecordingConfiguration:
    source: RecordingSource = RecordingSource()
    content: str = ""
    #: MaximumRetentionTime; 0 = unlimited.
    max_retention_s: int = 0


@dataclasses.dataclass(frozen=True)
class TrackConfiguration:
    track_type: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Track:
    token: str
    configuration: TrackConfiguration


@dataclasses.dataclass(frozen=True)
class Recording:
    token: str
    configuration: RecordingConfiguration
    tracks: tuple[Track, ...]
    id: int = 0
    #: The receiver a camera command made this recording for (None: made over ONVIF).
    camera_id: int | None = None


@dataclasses.dataclass(frozen=True)
class JobTrack:
    source_tag: str
    destination: str


@dataclasses.dataclass(frozen=True)
class JobSource:
    #: A receiver token (or a media profile token with ``type`` PROFILE_TYPE); None with
    #: ``auto_create_receiver``.
    token: str | None
    type: str = RECEIVER_TYPE
    auto_create_receiver: bool = False
    tracks: tuple[JobTrack, ...] = ()


@dataclasses.dataclass(frozen=True)
class JobConfiguration:
    recording_token: str
    mode: str = "Active"
    priority: int = 0
    sources: tuple[JobSource, ...] = ()


@dataclasses.dataclass(frozen=True)
class RecordingJob:
    token: str
    configuration: JobConfiguration
    id: int = 0


@dataclasses.dataclass(frozen=True)
class TrackState:
    source_tag: str
    destination: str
    state: str  # Idle, Active, Error
    error: str = ""


@dataclasses.dataclass(frozen=True)
class SourceState:
    token: str
    type: str
    state: str
    tracks: tuple[TrackState, ...]


@dataclasses.dataclass(frozen=True)
class JobState:
    recording_token: str
    state: str  # Idle, PartiallyActive, Active, Error
    sources: tuple[SourceState, ...]


# -- the runtime seam -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RecorderSpec:
    """One recorder that should run: ``key`` is (job id, receiver id); job id 0 is an
    AlwaysConnect receiver no active job uses (connected, nothing recorded)."""

    key: tuple[int, int]
    camera: Camera
    recording_id: int | None


@dataclasses.dataclass(frozen=True)
class IngestStatus:
    #: CameraRecorder.state: starting, connecting, recording, retrying, stopped.
    state: str
    error: str = ""
    has_audio: bool = False


class Runtime(Protocol):
    """What runs the recorders (RecordingManager)."""

    async def apply(self, specs: Sequence[RecorderSpec]) -> None:
        """Run exactly these recorders: stop the others, restart changed ones."""
        ...

    def status(self, key: tuple[int, int]) -> IngestStatus | None: ...

    def running(self) -> Iterable[tuple[int, int]]:
        """The keys of the recorders running now."""
        ...


#: ``on_event(topic, data)``: topic like "RecordingConfig/CreateRecording" (tns1: left
#: out), data the message's Source and Data items by name. The Events service plugs in here.
EventSink = Callable[[str, Mapping[str, Any]], None]
#: Deletes a recording's segments the durable way (docs/design/storage.md).
SegmentDeleter = Callable[[int], Awaitable[None]]


_DEFAULT_LIMITS = RecordingSettings()


def _no_event(topic: str, data: Mapping[str, Any]) -> None:
    pass


# -- the snapshot the pure decisions work on -----------------------------------------------
@dataclasses.dataclass(frozen=True)
class _ReceiverRow:
    id: int
    token: str
    mode: str
    url: str
    auto_created: bool


@dataclasses.dataclass(frozen=True)
class _JobRow:
    id: int
    token: str
    recording_id: int
    mode: str
    priority: int
    sources: tuple[JobSource, ...]


def track_winners(
    jobs: Iterable[_JobRow], tracks_of: Mapping[int, Mapping[str, str]]
) -> dict[tuple[int, str], int]:
    """(recording id, track token) -> id of the active job that records it: the highest
    priority, the oldest job among equals (RecordingControl §5.3.3)."""
    winners: dict[tuple[int, str], tuple[int, int]] = {}
    for job in jobs:
        if job.mode != "Active":
            continue
        for source in job.sources:
            for track in source.tracks:
                if track.destination not in tracks_of.get(job.recording_id, {}):
                    continue
                key = (job.recording_id, track.destination)
                rank = (job.priority, -job.id)
                if key not in winners or rank > winners[key]:
                    winners[key] = rank
    return {key: -rank[1] for key, rank in winners.items()}


def plan(
    receivers: Iterable[_ReceiverRow],
    jobs: Iterable[_JobRow],
    tracks_of: Mapping[int, Mapping[str, str]],
) -> list[tuple[tuple[int, int], int | None]]:
    """Which recorders must run: ((job id, receiver id), recording id). A job's source is
    recorded when the job wins at least one of the source's destination tracks and its
    receiver may connect; an AlwaysConnect receiver no recorder uses is connected alone."""
    jobs = list(jobs)
    by_token = {r.token: r for r in receivers}
    winners = track_winners(jobs, tracks_of)
    out: list[tuple[tuple[int, int], int | None]] = []
    used: set[int] = set()
    for job in jobs:
        for source in job.sources:
            receiver = by_token.get(source.token or "")
            if receiver is None or receiver.mode == "NeverConnect" or not receiver.url:
                continue
            wins = any(
                winners.get((job.recording_id, t.destination)) == job.id for t in source.tracks
            )
            if wins and (job.id, receiver.id) not in {k for k, _ in out}:
                out.append(((job.id, receiver.id), job.recording_id))
                used.add(receiver.id)
    for receiver in by_token.values():
        if receiver.mode == "AlwaysConnect" and receiver.url and receiver.id not in used:
            out.append(((0, receiver.id), None))
    return out


def aggregate(states: Iterable[str]) -> str:
    """RecordingControl §5.3.11's rules: Error if any Error; Active if all Active; Idle
    if all Idle (or none); else PartiallyActive."""
    values = list(states)
    if "Error" in values:
        return "Error"
    if values and all(v == "Active" for v in values):
        return "Active"
    if all(v == "Idle" for v in values):
        return "Idle"
    return "PartiallyActive"


def _cut(text: str | None) -> str:
    return (text or "")[:MAX_TEXT]


def _display_uri(raw: str) -> str:
    """The MediaUri as given, user information removed (it is sealed apart)."""
    text = raw.strip()
    parts = urllib.parse.urlsplit(text)
    if "@" not in parts.netloc:
        return text
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclasses.dataclass(frozen=True)
class _CheckedReceiver:
    mode: str
    url: str
    media_uri: str
    username: str | None
    password: str | None
    transport: str
    stream_type: str
    protocol: str


def check_receiver_configuration(
    config: ReceiverConfiguration, *, allow_empty_uri: bool = False
) -> _CheckedReceiver:
    if config.mode not in RECEIVER_MODES:
        raise BadConfiguration(f"Mode must be one of {', '.join(RECEIVER_MODES)}")
    stream = config.stream_setup.stream
    if stream == "RTP-Multicast":
        raise BadConfiguration("receiving RTP multicast is not supported")
    if stream != "RTP-Unicast":
        raise BadConfiguration(f"unknown StreamType {stream!r}")
    protocol = config.stream_setup.protocol
    if protocol not in PROTOCOL_TRANSPORT:
        raise BadConfiguration(f"Transport Protocol must be one of {', '.join(PROTOCOL_TRANSPORT)}")
    raw = (config.media_uri or "").strip()
    if not raw and allow_empty_uri:
        url, user, password = "", None, None
    else:
        if len(raw.encode()) > MAX_URL_LENGTH:
            raise InvalidMediaUri(f"MediaUri is longer than {MAX_URL_LENGTH} octets")
        try:
            url, user, password = split_credentials(raw)
        except ValueError as exc:
            raise InvalidMediaUri(f"invalid MediaUri: {exc}") from None
    return _CheckedReceiver(
        config.mode,
        url,
        _display_uri(raw),
        user,
        password,
        PROTOCOL_TRANSPORT[protocol],
        stream,
        protocol,
    )


def _same_host(a: str, b: str) -> bool:
    return urllib.parse.urlsplit(a).netloc.lower() == urllib.parse.urlsplit(b).netloc.lower()


def _receiver(row: models.Camera) -> Receiver:
    return Receiver(
        token=row.token or "",
        configuration=ReceiverConfiguration(
            row.mode, row.media_uri, StreamSetup(row.stream_type, row.protocol)
        ),
        auto_created=row.auto_created,
        id=row.id,
        name=row.name,
    )


def _recording(row: models.Recording, tracks: Iterable[models.Track]) -> Recording:
    return Recording(
        token=row.token,
        configuration=RecordingConfiguration(
            RecordingSource(
                row.source_id, row.source_name, row.location, row.description, row.address
            ),
            row.content,
            row.max_retention_s,
        ),
        tracks=tuple(
            Track(t.token, TrackConfiguration(t.track_type, t.description))
            for t in sorted(tracks, key=lambda t: t.id)
        ),
        id=row.id,
        camera_id=row.camera_id,
    )


def _sources_json(sources: Iterable[JobSource]) -> list[dict[str, Any]]:
    return [
        {
            "type": s.type,
            "token": s.token,
            "auto_created": s.auto_create_receiver,
            "tracks": [
                {"source_tag": t.source_tag, "destination": t.destination} for t in s.tracks
            ],
        }
        for s in sources
    ]


def _sources(value: Any) -> tuple[JobSource, ...]:
    return tuple(
        JobSource(
            token=s.get("token"),
            type=s.get("type", RECEIVER_TYPE),
            auto_create_receiver=bool(s.get("auto_created", False)),
            tracks=tuple(JobTrack(t["source_tag"], t["destination"]) for t in s.get("tracks", [])),
        )
        for s in value or []
    )


def _job_row(row: models.RecordingJob) -> _JobRow:
    return _JobRow(
        row.id, row.token, row.recording_id, row.mode, row.priority, _sources(row.sources)
    )


def _job(row: models.RecordingJob, recording_token: str) -> RecordingJob:
    return RecordingJob(
        token=row.token,
        configuration=JobConfiguration(
            recording_token,
            row.mode,
            row.priority,
            # The stored flag says the receiver was made for the job; the configuration
            # reports the receiver's token and leaves AutoCreateReceiver out (§5.3.6).
            tuple(
                dataclasses.replace(s, auto_create_receiver=False) for s in _sources(row.sources)
            ),
        ),
        id=row.id,
    )


class RecordingControl:
    """The domain API of Profile G. Every method persists before it returns and raises
    the :mod:`onvif_nvr.errors` faults the specifications name."""

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        clock: Clock,
        limits: RecordingSettings = _DEFAULT_LIMITS,
        *,
        on_event: EventSink = _no_event,
        delete_segments: SegmentDeleter | None = None,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self._clock = clock
        self.limits = limits
        #: Receives RecordingConfig/* events (the Events service replaces it).
        self.on_event = on_event
        self._delete_segments = delete_segments or self._delete_offline
        self._runtime: Runtime | None = None
        self._lock = asyncio.Lock()

    # -- wiring ------------------------------------------------------------------------------
    async def attach(self, runtime: Runtime | None) -> None:
        """Let ``runtime`` run the recorders (now and after every change)."""
        self._runtime = runtime
        await self._apply()

    def set_segment_deleter(self, deleter: SegmentDeleter | None) -> None:
        """Who deletes a deleted recording's data (the recording manager while it runs)."""
        self._delete_segments = deleter or self._delete_offline

    async def _delete_offline(self, recording_id: int) -> None:
        await retention.delete_recording(SegmentIndex(self._db), recording_id)

    async def recorder_specs(self) -> list[RecorderSpec]:
        """The recorders that must run now (see :func:`plan`)."""

        def read() -> list[RecorderSpec]:
            with self._db.session() as session:
                cams = {
                    c.id: c
                    for c in session.scalars(
                        select(models.Camera).where(models.Camera.token.is_not(None))
                    )
                }
                receivers = [
                    _ReceiverRow(c.id, c.token or "", c.mode, c.url, c.auto_created)
                    for c in cams.values()
                ]
                jobs = [_job_row(j) for j in session.scalars(select(models.RecordingJob))]
                tracks = self._tracks_of(session)
                return [
                    RecorderSpec(key, camera_from_row(cams[key[1]], self._sealer), recording_id)
                    for key, recording_id in plan(receivers, jobs, tracks)
                ]

        return await self._db.run(read)

    async def _apply(self) -> None:
        if self._runtime is not None:
            await self._runtime.apply(await self.recorder_specs())

    @staticmethod
    def _tracks_of(session: Session) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        for t in session.scalars(select(models.Track)):
            out.setdefault(t.recording_id, {})[t.token] = t.track_type
        return out

    # -- receivers ---------------------------------------------------------------------------
    async def receivers(self) -> list[Receiver]:
        def read() -> list[Receiver]:
            with self._db.session() as session:
                query = (
                    select(models.Camera)
                    .where(models.Camera.token.is_not(None))
                    .order_by(models.Camera.id)
                )
                return [_receiver(r) for r in session.scalars(query)]

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
                row = _receiver_row(session, token)
                return _receiver(row) if row is not None else None

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
                    return _receiver(
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
        checked: _CheckedReceiver,
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
                    row = _receiver_row(session, token)
                    if row is None:
                        return None
                    user, secret = checked.username, checked.password
                    if username is not None or password is not None:
                        user, secret = username, password
                    elif user is None and row.url and _same_host(row.url, checked.url):
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
                    return _receiver(row)

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
                    row = _receiver_row(session, token)
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
                    row = _receiver_row(session, token)
                    if row is None:
                        return "unknown"
                    if _jobs_using(session, token):
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

    # -- recordings and tracks ---------------------------------------------------------------
    async def recordings(self) -> list[Recording]:
        def read() -> list[Recording]:
            with self._db.session() as session:
                tracks: dict[int, list[models.Track]] = {}
                for t in session.scalars(select(models.Track)):
                    tracks.setdefault(t.recording_id, []).append(t)
                query = select(models.Recording).order_by(models.Recording.id)
                return [_recording(r, tracks.get(r.id, [])) for r in session.scalars(query)]

        return await self._db.run(read)

    async def get_recording(self, token: str) -> Recording:
        def read() -> Recording | None:
            with self._db.session() as session:
                row = _recording_row(session, token)
                if row is None:
                    return None
                tracks = session.scalars(
                    select(models.Track).where(models.Track.recording_id == row.id)
                )
                return _recording(row, tracks)

        found = await self._db.run(read)
        if found is None:
            raise NoRecording(f"no recording {token!r}")
        return found

    async def create_recording(
        self,
        config: RecordingConfiguration,
        *,
        origin: str = "onvif",
        camera_id: int | None = None,
    ) -> Recording:
        """CreateRecording, with the tracks VIDEO001, AUDIO001 and META001."""
        if config.max_retention_s < 0:
            raise BadConfiguration("MaximumRetentionTime cannot be negative")
        async with self._lock:

            def write() -> Recording:
                with self._db.session() as session, session.begin():
                    return self._add_recording(session, config, origin, camera_id)

            recording = await self._db.run(write)
        self.on_event("RecordingConfig/CreateRecording", {"RecordingToken": recording.token})
        for track in recording.tracks:
            self.on_event(
                "RecordingConfig/CreateTrack",
                {"RecordingToken": recording.token, "TrackToken": track.token},
            )
        return recording

    def _add_recording(
        self,
        session: Session,
        config: RecordingConfiguration,
        origin: str,
        camera_id: int | None,
    ) -> Recording:
        count = session.scalar(select(func.count()).select_from(models.Recording)) or 0
        if count >= self.limits.max_recordings:
            raise MaxRecordings(
                f"the box has its maximum of {self.limits.max_recordings} recordings"
            )
        source = config.source
        row = models.Recording(
            token="",
            source_id=_cut(source.source_id),
            source_name=_cut(source.name),
            location=_cut(source.location),
            description=_cut(source.description),
            address=_cut(source.address),
            content=_cut(config.content),
            max_retention_s=config.max_retention_s,
            origin=origin,
            camera_id=camera_id,
            created_wall_ns=self._clock.wall_ns(),
        )
        session.add(row)
        session.flush()
        row.token = f"RECORDING_{row.id}"
        tracks = [
            models.Track(recording_id=row.id, token=token, track_type=kind, description="")
            for token, kind in DEFAULT_TRACKS
        ]
        session.add_all(tracks)
        session.flush()
        return _recording(row, tracks)

    async def set_recording_configuration(self, token: str, config: RecordingConfiguration) -> None:
        if config.max_retention_s < 0:
            raise BadConfiguration("MaximumRetentionTime cannot be negative")

        def write() -> bool:
            with self._db.session() as session, session.begin():
                row = _recording_row(session, token)
                if row is None:
                    return False
                source = config.source
                row.source_id = _cut(source.source_id)
                row.source_name = _cut(source.name)
                row.location = _cut(source.location)
                row.description = _cut(source.description)
                row.address = _cut(source.address)
                row.content = _cut(config.content)
                row.max_retention_s = config.max_retention_s
                return True

        async with self._lock:
            if not await self._db.run(write):
                raise NoRecording(f"no recording {token!r}")
        self.on_event(
            "RecordingConfig/RecordingConfiguration",
            {"RecordingToken": token, "Configuration": config},
        )

    async def delete_recording(self, token: str) -> None:
        """DeleteRecording: its jobs (and the receivers they auto-created), its recorded
        data (the durable delete order of docs/design/storage.md), its tracks."""
        async with self._lock:

            def jobs_of() -> tuple[int, list[str], list[str]] | None:
                with self._db.session() as session, session.begin():
                    row = _recording_row(session, token)
                    if row is None:
                        return None
                    jobs = list(
                        session.scalars(
                            select(models.RecordingJob).where(
                                models.RecordingJob.recording_id == row.id
                            )
                        )
                    )
                    doomed = self._delete_jobs(session, jobs)
                    tracks = [
                        t.token
                        for t in session.scalars(
                            select(models.Track).where(models.Track.recording_id == row.id)
                        )
                    ]
                    return row.id, doomed, tracks

            found = await self._db.run(jobs_of)
            if found is None:
                raise NoRecording(f"no recording {token!r}")
            recording_id, _, tracks = found
            await self._apply()  # its recorders stop (and close their segments) first
            await self._delete_segments(recording_id)

            def drop() -> None:
                with self._db.session() as session, session.begin():
                    session.execute(
                        delete(models.Recording).where(models.Recording.id == recording_id)
                    )

            await self._db.run(drop)
        for track in tracks:
            self.on_event(
                "RecordingConfig/DeleteTrack", {"RecordingToken": token, "TrackToken": track}
            )
        self.on_event("RecordingConfig/DeleteRecording", {"RecordingToken": token})

    async def get_track(self, recording_token: str, track_token: str) -> Track:
        recording = await self.get_recording(recording_token)
        for track in recording.tracks:
            if track.token == track_token:
                return track
        raise NoTrack(f"recording {recording_token!r} has no track {track_token!r}")

    async def create_track(self, recording_token: str, config: TrackConfiguration) -> Track:
        if config.track_type not in TRACK_TYPES:
            raise BadConfiguration(f"TrackType must be one of {', '.join(TRACK_TYPES)}")

        def write() -> Track | None:
            with self._db.session() as session, session.begin():
                row = _recording_row(session, recording_token)
                if row is None:
                    return None
                existing = {
                    t.token
                    for t in session.scalars(
                        select(models.Track).where(models.Track.recording_id == row.id)
                    )
                }
                if len(existing) >= self.limits.max_tracks:
                    raise MaxTracks(f"a recording has at most {self.limits.max_tracks} tracks")
                prefix = _TRACK_PREFIX[config.track_type]
                n = 1
                while f"{prefix}{n:03d}" in existing:
                    n += 1
                track = models.Track(
                    recording_id=row.id,
                    token=f"{prefix}{n:03d}",
                    track_type=config.track_type,
                    description=_cut(config.description),
                )
                session.add(track)
                return Track(track.token, TrackConfiguration(track.track_type, track.description))

        async with self._lock:
            track = await self._db.run(write)
        if track is None:
            raise NoRecording(f"no recording {recording_token!r}")
        self.on_event(
            "RecordingConfig/CreateTrack",
            {"RecordingToken": recording_token, "TrackToken": track.token},
        )
        return track

    async def delete_track(self, recording_token: str, track_token: str) -> None:
        """DeleteTrack. A track a recording job writes to cannot be deleted, nor a video or
        audio track with data: those share their files with the recording's other tracks."""

        def write() -> str:
            with self._db.session() as session, session.begin():
                row = _recording_row(session, recording_token)
                if row is None:
                    return "no recording"
                track = session.scalar(
                    select(models.Track).where(
                        models.Track.recording_id == row.id, models.Track.token == track_token
                    )
                )
                if track is None:
                    return "no track"
                for job in session.scalars(
                    select(models.RecordingJob).where(models.RecordingJob.recording_id == row.id)
                ):
                    if any(
                        t.destination == track_token
                        for s in _sources(job.sources)
                        for t in s.tracks
                    ):
                        return f"recording job {job.token} records into it"
                if track.track_type != "Metadata" and session.scalar(
                    select(models.Segment.id).where(models.Segment.recording_id == row.id).limit(1)
                ):
                    return "its data is stored together with the recording's other tracks"
                session.delete(track)
                return "ok"

        async with self._lock:
            outcome = await self._db.run(write)
        if outcome == "no recording":
            raise NoRecording(f"no recording {recording_token!r}")
        if outcome == "no track":
            raise NoTrack(f"recording {recording_token!r} has no track {track_token!r}")
        if outcome != "ok":
            raise CannotDelete(f"track {track_token!r} cannot be deleted: {outcome}")
        self.on_event(
            "RecordingConfig/DeleteTrack",
            {"RecordingToken": recording_token, "TrackToken": track_token},
        )

    async def set_track_configuration(
        self, recording_token: str, track_token: str, config: TrackConfiguration
    ) -> None:
        """SetTrackConfiguration: the TrackType given is ignored (it never changes)."""

        def write() -> str:
            with self._db.session() as session, session.begin():
                row = _recording_row(session, recording_token)
                if row is None:
                    return "no recording"
                track = session.scalar(
                    select(models.Track).where(
                        models.Track.recording_id == row.id, models.Track.token == track_token
                    )
                )
                if track is None:
                    return "no track"
                track.description = _cut(config.description)
                return "ok"

        async with self._lock:
            outcome = await self._db.run(write)
        if outcome == "no recording":
            raise NoRecording(f"no recording {recording_token!r}")
        if outcome == "no track":
            raise NoTrack(f"recording {recording_token!r} has no track {track_token!r}")
        track = await self.get_track(recording_token, track_token)
        self.on_event(
            "RecordingConfig/TrackConfiguration",
            {
                "RecordingToken": recording_token,
                "TrackToken": track_token,
                "Configuration": track.configuration,
            },
        )

    async def recording_options(self, token: str) -> dict[str, int]:
        """GetRecordingOptions' figures: spare jobs, spare tracks (each type alike)."""
        recording = await self.get_recording(token)
        jobs = len(await self.jobs())
        spare_tracks = max(0, self.limits.max_tracks - len(recording.tracks))
        return {
            "spare_jobs": max(0, self.limits.max_recording_jobs - jobs),
            "spare_total": spare_tracks,
            "spare_video": spare_tracks,
            "spare_audio": spare_tracks,
            "spare_metadata": spare_tracks,
        }

    # -- recording jobs ----------------------------------------------------------------------
    async def jobs(self) -> list[RecordingJob]:
        def read() -> list[RecordingJob]:
            with self._db.session() as session:
                tokens = {
                    i: t
                    for i, t in session.execute(select(models.Recording.id, models.Recording.token))
                }
                query = select(models.RecordingJob).order_by(models.RecordingJob.id)
                return [_job(j, tokens[j.recording_id]) for j in session.scalars(query)]

        return await self._db.run(read)

    async def get_job(self, token: str) -> RecordingJob:
        for job in await self.jobs():
            if job.token == token:
                return job
        raise NoRecordingJob(f"no recording job {token!r}")

    def _check_job(
        self, session: Session, config: JobConfiguration
    ) -> tuple[models.Recording, list[JobSource], int]:
        """The recording, the sources with tracks filled in (token None: a receiver to
        create) and how many receivers must be created."""
        recording = _recording_row(session, config.recording_token)
        if recording is None:
            raise NoRecording(f"no recording {config.recording_token!r}")
        if config.mode not in JOB_MODES:
            raise BadConfiguration(f"Mode must be one of {', '.join(JOB_MODES)}")
        if config.priority < 0:
            raise BadConfiguration("Priority cannot be negative")
        if not config.sources:
            raise BadConfiguration(
                "the job has no source (give a SourceToken or AutoCreateReceiver)"
            )
        tracks = self._tracks_of(session).get(recording.id, {})
        sources: list[JobSource] = []
        creating = 0
        for source in config.sources:
            if source.type == PROFILE_TYPE:
                raise BadConfiguration(
                    "the box has no media profiles of its own: record from a receiver"
                )
            if source.type != RECEIVER_TYPE:
                raise BadConfiguration(f"unknown source type {source.type!r}")
            if source.token:
                if _receiver_row(session, source.token) is None:
                    raise BadConfiguration(f"no receiver {source.token!r}")
            elif source.auto_create_receiver:
                creating += 1
            else:
                raise BadConfiguration("a source needs a SourceToken or AutoCreateReceiver")
            for track in source.tracks:
                if track.destination not in tracks:
                    raise BadConfiguration(
                        f"recording {recording.token} has no track {track.destination!r}"
                    )
            mapped = source.tracks or tuple(
                JobTrack(kind.lower(), token) for token, kind in tracks.items()
            )
            sources.append(
                JobSource(
                    source.token or None,
                    RECEIVER_TYPE,
                    bool(source.auto_create_receiver and not source.token),
                    mapped,
                )
            )
        return recording, sources, creating

    def _auto_receivers(self, session: Session, sources: list[JobSource]) -> list[JobSource]:
        out = []
        for source in sources:
            if source.token is None:
                row = self._add_receiver(
                    session,
                    check_receiver_configuration(
                        ReceiverConfiguration("AutoConnect", ""), allow_empty_uri=True
                    ),
                    name=None,
                    username=None,
                    password=None,
                    auto_created=True,
                )
                source = dataclasses.replace(source, token=row.token, auto_create_receiver=True)
            out.append(source)
        return out

    async def create_job(self, config: JobConfiguration) -> RecordingJob:
        """CreateRecordingJob; returns the configuration as used (all tracks of the
        recording when none are given, created receivers' tokens filled in)."""
        async with self._lock:

            def write() -> RecordingJob:
                with self._db.session() as session, session.begin():
                    count = session.scalar(select(func.count()).select_from(models.RecordingJob))
                    if (count or 0) >= self.limits.max_recording_jobs:
                        raise MaxRecordingJobs(
                            f"the box has its maximum of {self.limits.max_recording_jobs} jobs"
                        )
                    recording, sources, _ = self._check_job(session, config)
                    sources = self._auto_receivers(session, sources)
                    row = models.RecordingJob(
                        token="",
                        recording_id=recording.id,
                        mode=config.mode,
                        priority=config.priority,
                        sources=_sources_json(sources),
                        created_wall_ns=self._clock.wall_ns(),
                    )
                    session.add(row)
                    session.flush()
                    row.token = f"JOB_{row.id}"
                    return _job(row, recording.token)

            job = await self._db.run(write)
            await self._apply()
        self._job_changed(job)
        return job

    async def set_job_configuration(self, token: str, config: JobConfiguration) -> RecordingJob:
        """SetRecordingJobConfiguration; the RecordingToken cannot change. Receivers the
        job auto-created and no longer uses are deleted."""
        async with self._lock:

            def write() -> RecordingJob:
                with self._db.session() as session, session.begin():
                    row = _job_by_token(session, token)
                    if row is None:
                        raise NoRecordingJob(f"no recording job {token!r}")
                    current = session.get(models.Recording, row.recording_id)
                    assert current is not None
                    if config.recording_token != current.token:
                        raise BadConfiguration("a recording job's RecordingToken cannot change")
                    _, sources, _ = self._check_job(session, config)
                    old = _sources(row.sources)
                    auto: set[str | None] = {s.token for s in old if s.auto_create_receiver}
                    # A source that names a receiver this job made keeps it auto-created.
                    sources = [
                        dataclasses.replace(s, auto_create_receiver=True) if s.token in auto else s
                        for s in self._auto_receivers(session, sources)
                    ]
                    row.mode = config.mode
                    row.priority = config.priority
                    row.sources = _sources_json(sources)
                    session.flush()
                    self._drop_unused_auto_receivers(session, auto - {s.token for s in sources})
                    return _job(row, current.token)

            job = await self._db.run(write)
            await self._apply()
        self._job_changed(job)
        return job

    async def set_job_mode(self, token: str, mode: str) -> None:
        if mode not in JOB_MODES:
            raise BadMode(f"Mode must be one of {', '.join(JOB_MODES)}")
        async with self._lock:

            def write() -> bool:
                with self._db.session() as session, session.begin():
                    row = _job_by_token(session, token)
                    if row is None:
                        return False
                    row.mode = mode
                    return True

            if not await self._db.run(write):
                raise NoRecordingJob(f"no recording job {token!r}")
            await self._apply()
        self._job_changed(await self.get_job(token))

    async def delete_job(self, token: str) -> None:
        """DeleteRecordingJob, with the receivers it auto-created that no other job uses."""
        async with self._lock:

            def write() -> bool:
                with self._db.session() as session, session.begin():
                    row = _job_by_token(session, token)
                    if row is None:
                        return False
                    self._delete_jobs(session, [row])
                    return True

            if not await self._db.run(write):
                raise NoRecordingJob(f"no recording job {token!r}")
            await self._apply()

    def _delete_jobs(self, session: Session, jobs: list[models.RecordingJob]) -> list[str]:
        auto: set[str | None] = set()
        for job in jobs:
            auto |= {s.token for s in _sources(job.sources) if s.auto_create_receiver}
            session.delete(job)
        session.flush()
        return self._drop_unused_auto_receivers(session, auto)

    def _drop_unused_auto_receivers(self, session: Session, tokens: set[str | None]) -> list[str]:
        dropped = []
        for token in sorted(t for t in tokens if t):
            row = _receiver_row(session, token)
            if row is not None and row.auto_created and not _jobs_using(session, token):
                self._drop_receiver(session, row)
                dropped.append(token)
        session.flush()
        return dropped

    def _job_changed(self, job: RecordingJob) -> None:
        self.on_event(
            "RecordingConfig/RecordingJobConfiguration",
            {"RecordingJobToken": job.token, "Configuration": job.configuration},
        )

    async def job_state(self, token: str) -> JobState:
        """GetRecordingJobState, from the recorders' ingest. A track is Active while its
        source records and carries that media (metadata is not recorded: Idle), Idle when
        the job is Idle or a job of higher priority records the track, Error when the
        receiver cannot deliver (NeverConnect, no MediaUri, connection failing)."""

        def read() -> tuple[
            _JobRow, str, dict[tuple[int, str], int], dict[str, _ReceiverRow], dict[str, str]
        ]:
            with self._db.session() as session:
                row = _job_by_token(session, token)
                if row is None:
                    raise NoRecordingJob(f"no recording job {token!r}")
                recording = session.get(models.Recording, row.recording_id)
                assert recording is not None
                jobs = [_job_row(j) for j in session.scalars(select(models.RecordingJob))]
                tracks = self._tracks_of(session)
                receivers = {
                    c.token: _ReceiverRow(c.id, c.token, c.mode, c.url, c.auto_created)
                    for c in session.scalars(
                        select(models.Camera).where(models.Camera.token.is_not(None))
                    )
                    if c.token
                }
                return (
                    _job_row(row),
                    recording.token,
                    track_winners(jobs, tracks),
                    receivers,
                    tracks.get(row.recording_id, {}),
                )

        job, recording_token, winners, receivers, kinds = await self._db.run(read)
        sources = []
        for source in job.sources:
            receiver = receivers.get(source.token or "")
            states = []
            for track in source.tracks:
                state, error = self._track_state(job, track, receiver, winners, kinds)
                states.append(TrackState(track.source_tag, track.destination, state, error))
            sources.append(
                SourceState(
                    source.token or "",
                    source.type,
                    aggregate(s.state for s in states),
                    tuple(states),
                )
            )
        return JobState(recording_token, aggregate(s.state for s in sources), tuple(sources))

    def _track_state(
        self,
        job: _JobRow,
        track: JobTrack,
        receiver: _ReceiverRow | None,
        winners: Mapping[tuple[int, str], int],
        kinds: Mapping[str, str],
    ) -> tuple[str, str]:
        if job.mode != "Active" or winners.get((job.recording_id, track.destination)) != job.id:
            return "Idle", ""
        if receiver is None:
            return "Error", "the receiver does not exist"
        if receiver.mode == "NeverConnect":
            return "Error", "the receiver is in NeverConnect mode"
        if not receiver.url:
            return "Error", "the receiver has no MediaUri"
        status = self._runtime.status((job.id, receiver.id)) if self._runtime else None
        if status is None:
            return "Idle", ""
        if status.state == "retrying":
            return "Error", status.error or "the connection failed"
        if status.state != "recording":
            return "Idle", ""
        kind = kinds.get(track.destination)
        if kind == "Video" or (kind == "Audio" and status.has_audio):
            return "Active", ""
        return "Idle", ""


def _receiver_row(session: Session, token: str) -> models.Camera | None:
    if not token:
        return None
    return session.scalar(select(models.Camera).where(models.Camera.token == token))


def _recording_row(session: Session, token: str) -> models.Recording | None:
    return session.scalar(select(models.Recording).where(models.Recording.token == token))


def _job_by_token(session: Session, token: str) -> models.RecordingJob | None:
    return session.scalar(select(models.RecordingJob).where(models.RecordingJob.token == token))


def _jobs_using(session: Session, receiver: str) -> list[str]:
    return [
        job.token
        for job in session.scalars(select(models.RecordingJob))
        if any(s.token == receiver for s in _sources(job.sources))
    ]
