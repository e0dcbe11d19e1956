"""Profile G objects (receivers, recordings, tracks, recording jobs), the decisions made
on them without I/O (which job records which track, which recorders run, aggregate job
states) and the base of :class:`~onvif_nvr.recording.control.RecordingControl`.
See docs/design/profile-g.md."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from onvif_nvr.clock import Clock
from onvif_nvr.config import RecordingSettings
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import (
    BadConfiguration,
    InvalidMediaUri,
)
from onvif_nvr.recording import retention
from onvif_nvr.recording.cameras import (
    MAX_URL_LENGTH,
    Camera,
    camera_from_row,
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
TRACK_PREFIX = {"Video": "VIDEO", "Audio": "AUDIO", "Metadata": "META"}
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
    #: The receiver whose stream is recorded: the token itself for a receiver source, the
    #: profile's receiver (resolved when the job is configured) for a profile source.
    receiver: str | None = None

    @property
    def feed(self) -> str:
        """The token of the receiver recorded ("" when none is known)."""
        if self.receiver is not None:
            return self.receiver
        return (self.token or "") if self.type == RECEIVER_TYPE else ""


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
    #: The recording's token and the tracks the stream's video and audio are recorded
    #: in ("" for none): what the RecordingHistory events name.
    recording_token: str = ""
    video_track: str = ""
    audio_track: str = ""
    #: The receiver's token (its live stream is served at ``/live/<token>``).
    receiver_token: str = ""


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
class ReceiverRow:
    id: int
    token: str
    mode: str
    url: str
    auto_created: bool


@dataclasses.dataclass(frozen=True)
class JobRow:
    id: int
    token: str
    recording_id: int
    mode: str
    priority: int
    sources: tuple[JobSource, ...]


def track_winners(
    jobs: Iterable[JobRow], tracks_of: Mapping[int, Mapping[str, str]]
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
    receivers: Iterable[ReceiverRow],
    jobs: Iterable[JobRow],
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
            receiver = by_token.get(source.feed)
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


def _destinations(
    receivers: Iterable[ReceiverRow],
    jobs: Iterable[JobRow],
    tracks_of: Mapping[int, Mapping[str, str]],
) -> dict[tuple[int, int], tuple[str, str]]:
    """(job id, receiver id) -> the (video, audio) tracks that job's source records (the
    first of each type it wins; "" for none)."""
    jobs = list(jobs)
    ids = {r.token: r.id for r in receivers}
    winners = track_winners(jobs, tracks_of)
    out: dict[tuple[int, int], tuple[str, str]] = {}
    for job in jobs:
        kinds = tracks_of.get(job.recording_id, {})
        for source in job.sources:
            receiver = ids.get(source.feed)
            if receiver is None:
                continue
            won = [
                t.destination
                for t in source.tracks
                if winners.get((job.recording_id, t.destination)) == job.id
            ]
            video = next((t for t in won if kinds.get(t) == "Video"), "")
            audio = next((t for t in won if kinds.get(t) == "Audio"), "")
            out.setdefault((job.id, receiver), (video, audio))
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


def cut_text(text: str | None) -> str:
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
class CheckedReceiver:
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
) -> CheckedReceiver:
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
    return CheckedReceiver(
        config.mode,
        url,
        _display_uri(raw),
        user,
        password,
        PROTOCOL_TRANSPORT[protocol],
        stream,
        protocol,
    )


def same_host(a: str, b: str) -> bool:
    return urllib.parse.urlsplit(a).netloc.lower() == urllib.parse.urlsplit(b).netloc.lower()


def receiver_from_row(row: models.Camera) -> Receiver:
    return Receiver(
        token=row.token or "",
        configuration=ReceiverConfiguration(
            row.mode, row.media_uri, StreamSetup(row.stream_type, row.protocol)
        ),
        auto_created=row.auto_created,
        id=row.id,
        name=row.name,
    )


def recording_from_row(row: models.Recording, tracks: Iterable[models.Track]) -> Recording:
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


def sources_json(sources: Iterable[JobSource]) -> list[dict[str, Any]]:
    return [
        {
            "type": s.type,
            "token": s.token,
            # Resolved once (a profile's receiver); rows written before it hold receivers only.
            "receiver": s.feed or None,
            "auto_created": s.auto_create_receiver,
            "tracks": [
                {"source_tag": t.source_tag, "destination": t.destination} for t in s.tracks
            ],
        }
        for s in sources
    ]


def sources_from_json(value: Any) -> tuple[JobSource, ...]:
    return tuple(
        JobSource(
            token=s.get("token"),
            type=s.get("type", RECEIVER_TYPE),
            auto_create_receiver=bool(s.get("auto_created", False)),
            tracks=tuple(JobTrack(t["source_tag"], t["destination"]) for t in s.get("tracks", [])),
            receiver=s.get("receiver"),
        )
        for s in value or []
    )


def job_row(row: models.RecordingJob) -> JobRow:
    return JobRow(
        row.id, row.token, row.recording_id, row.mode, row.priority, sources_from_json(row.sources)
    )


def job_from_row(row: models.RecordingJob, recording_token: str) -> RecordingJob:
    return RecordingJob(
        token=row.token,
        configuration=JobConfiguration(
            recording_token,
            row.mode,
            row.priority,
            # The stored flag says the receiver was made for the job; the configuration
            # reports the receiver's token and leaves AutoCreateReceiver out (§5.3.6).
            tuple(
                dataclasses.replace(s, auto_create_receiver=False)
                for s in sources_from_json(row.sources)
            ),
        ),
        id=row.id,
    )


class ControlBase:
    """State and wiring shared by the parts of RecordingControl."""

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
                    ReceiverRow(c.id, c.token or "", c.mode, c.url, c.auto_created)
                    for c in cams.values()
                ]
                jobs = [job_row(j) for j in session.scalars(select(models.RecordingJob))]
                tracks = self._tracks_of(session)
                tokens = {
                    r.id: r.token
                    for r in session.execute(select(models.Recording.id, models.Recording.token))
                }
                destinations = _destinations(receivers, jobs, tracks)
                return [
                    RecorderSpec(
                        key,
                        camera_from_row(cams[key[1]], self._sealer),
                        recording_id,
                        tokens.get(recording_id, "") if recording_id is not None else "",
                        *destinations.get(key, ("", "")),
                        receiver_token=cams[key[1]].token or "",
                    )
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


def receiver_row(session: Session, token: str) -> models.Camera | None:
    if not token:
        return None
    return session.scalar(select(models.Camera).where(models.Camera.token == token))


def recording_row(session: Session, token: str) -> models.Recording | None:
    return session.scalar(select(models.Recording).where(models.Recording.token == token))


def job_by_token(session: Session, token: str) -> models.RecordingJob | None:
    return session.scalar(select(models.RecordingJob).where(models.RecordingJob.token == token))


def jobs_using(session: Session, receiver: str) -> list[str]:
    """The jobs recording ``receiver``, named or through one of its media profiles."""
    return [
        job.token
        for job in session.scalars(select(models.RecordingJob))
        if any(s.feed == receiver for s in sources_from_json(job.sources))
    ]
