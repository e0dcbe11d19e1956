"""The ``/api/v1`` endpoints: pydantic models in, domain calls, pydantic models out.

Nothing here knows HTTP beyond :class:`Call`; the domain raises the taxonomy of errors.py
and the dispatcher maps it (api/server.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import ipaddress
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import select

from onvif_nvr.api import media as mse
from onvif_nvr.api.metrics import metric_family
from onvif_nvr.api.queries import events_page, recorded_ranges
from onvif_nvr.api.routes import FieldError, Route, openapi_document
from onvif_nvr.api.server import SESSION_COOKIE, ApiError, Call, Dispatcher, Gate
from onvif_nvr.auth.policy import UserLevel
from onvif_nvr.clock import Clock
from onvif_nvr.config import Settings
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import NoRecording
from onvif_nvr.recording.control import RecordingControl
from onvif_nvr.recording.manager import RecordingManager
from onvif_nvr.recording.profile_g import (
    JobConfiguration,
    JobSource,
    Receiver,
    ReceiverConfiguration,
    Recording,
    RecordingConfiguration,
    RecordingSource,
)
from onvif_nvr.recording.supervisor import CameraRecorder
from onvif_nvr.replay.live import Feed
from onvif_nvr.replay.webrtc import BadOffer, NoLiveStream, WebRtcSessions
from onvif_nvr.system import hostinfo
from onvif_nvr.system.users import UserChange, UserStore

NS_PER_MS = 1_000_000
MAX_TIMELINE_S = 31 * 86400


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def _ms(ns: int) -> int:
    return ns // NS_PER_MS


def _in_range(moment: datetime) -> datetime:
    # Times are int64 nanoseconds in the index: 1970 to 2262.
    if not 0 <= moment.timestamp() < 2**63 / 1e9:
        raise ValueError("must be between 1970-01-01 and 2262-04-11 UTC")
    return moment


#: An instant with its UTC offset (RFC 3339), within the index's time range.
Instant = Annotated[AwareDatetime, AfterValidator(_in_range)]


# -- models --------------------------------------------------------------------------------
class Login(BaseModel):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(max_length=256)]


class SessionInfo(BaseModel):
    username: str
    level: str
    #: Send back in X-CSRF-Token with every cookie-authenticated POST, PATCH, PUT, DELETE.
    csrf_token: str


class TokenRequest(BaseModel):
    lifetime_s: Annotated[int, Field(ge=60, le=365 * 86400)] = 30 * 86400


class TokenInfo(BaseModel):
    token: str
    expires_in_s: int


class CameraStats(BaseModel):
    state: str
    ingest_state: str | None = None
    bitrate_bps: int | None = None
    fps: float | None = None
    last_error: str = ""
    reconnects: int = 0
    recording: bool = False


class CameraLinks(BaseModel):
    live_rtsp: str
    live_tunnel: str
    snapshot: str


class Camera(BaseModel):
    token: str
    name: str
    url: str
    mode: Literal["AlwaysConnect", "NeverConnect", "AutoConnect"]
    transport: str
    stats: CameraStats
    links: CameraLinks
    #: The recording a job records this camera into (None: not recorded).
    recording: str | None = None
    #: That recording's MaximumRetentionTime in seconds (0: kept until space runs out).
    retention_s: int | None = None


class CameraList(BaseModel):
    cameras: list[Camera]


def _rtsp_url(value: str) -> str:
    """An RTSP URL the box can open: a regex on the scheme lets through URLs without a host
    or with a port that is not one, which would only fail later in the camera's log."""
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise PydanticCustomError("rtsp_url", "the URL must not contain spaces")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise PydanticCustomError("rtsp_url", "the port must be a number from 1 to 65535") from None
    if parts.scheme.lower() not in ("rtsp", "rtsps"):
        raise PydanticCustomError("rtsp_url", "the URL must start with rtsp://")
    if not parts.hostname:
        raise PydanticCustomError("rtsp_url", "the URL has no host (rtsp://HOST[:PORT]/PATH)")
    if port == 0:
        raise PydanticCustomError("rtsp_url", "the port must be a number from 1 to 65535")
    return value


RtspUrl = Annotated[str, Field(max_length=1024), AfterValidator(_rtsp_url)]
#: Days a new camera's recording keeps its data (0: until the storage needs the space).
RetentionDays = Annotated[int, Field(ge=0, le=36500)]


class CameraCreate(BaseModel):
    url: RtspUrl
    name: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    mode: Literal["AlwaysConnect", "NeverConnect", "AutoConnect"] = "AlwaysConnect"
    transport: Literal["RTSP", "TCP", "HTTP", "UDP"] = "RTSP"
    username: Annotated[str | None, Field(max_length=256)] = None
    password: Annotated[str | None, Field(max_length=256)] = None
    #: Make a recording and an Active recording job for the camera (as ONVIF's
    #: CreateRecording + CreateRecordingJob would), so an added camera records.
    record: bool = True
    retention_days: RetentionDays = 0


class CameraUpdate(BaseModel):
    url: RtspUrl | None = None
    mode: Literal["AlwaysConnect", "NeverConnect", "AutoConnect"] | None = None
    transport: Literal["RTSP", "TCP", "HTTP", "UDP"] | None = None
    username: Annotated[str | None, Field(max_length=256)] = None
    password: Annotated[str | None, Field(max_length=256)] = None
    #: True: record (the job Active; a recording and job are made if there is none);
    #: False: the job Idle.
    record: bool | None = None
    retention_days: RetentionDays | None = None


class DiscoveredProfile(BaseModel):
    token: str = ""
    name: str = ""
    encoding: str = ""
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    bitrate_kbps: int | None = None
    #: The profile's RTSP stream URI (what "add" puts in the camera form).
    uri: str | None = None


class DiscoveredDevice(BaseModel):
    endpoint: str
    xaddr: str
    #: ok, unreachable, unauthorized or error (then ``reason`` says why).
    status: str
    reason: str
    name: str
    manufacturer: str
    model: str
    serial: str
    firmware: str
    scopes: list[str]
    profiles: list[DiscoveredProfile]
    seen_ms: int


class DiscoveredList(BaseModel):
    devices: list[DiscoveredDevice]


def _probe_address(value: str) -> str:
    """An IPv4 address with an optional port: a host name would be resolved by a blocking
    call inside the datagram send, and the probe socket is IPv4."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "3702"
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise PydanticCustomError(
            "address", "must be an IPv4 address, optionally with :port (192.0.2.10:3702)"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PydanticCustomError("address", "the port must be a number from 1 to 65535")
    return value


class DiscoverRequest(BaseModel):
    """Search for ONVIF devices and question them (``onvif-nvr discover`` on the box)."""

    #: Credentials to question the devices with (their names, streams); none: what a
    #: device tells anyone.
    username: Annotated[str | None, Field(max_length=256)] = None
    password: Annotated[str | None, Field(max_length=256)] = None
    #: ``host[:port]`` (port 3702 by default) of devices to probe directly; empty: a
    #: WS-Discovery multicast probe on the box's interfaces.
    addresses: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_probe_address)]],
        Field(max_length=64),
    ] = []
    #: How long to wait for answers.
    timeout_s: Annotated[float, Field(ge=0.5, le=10)] = 3.0


class RecordingOut(BaseModel):
    token: str
    source_name: str
    content: str
    max_retention_s: int
    tracks: list[str]
    earliest_ms: int | None
    latest_ms: int | None
    replay_rtsp: str


class RecordingList(BaseModel):
    recordings: list[RecordingOut]


class TimelineQuery(BaseModel):
    start: Instant
    end: Instant
    #: The smallest gap that shows, in seconds (a day across 1000 pixels: 86).
    resolution: Annotated[float, Field(gt=0, le=86400)] = 1.0
    recording: str | None = None

    @model_validator(mode="after")
    def _window(self) -> TimelineQuery:
        span = (self.end - self.start).total_seconds()
        if span <= 0:
            raise ValueError("end must be after start")
        if span > MAX_TIMELINE_S:
            raise ValueError(f"the window may span at most {MAX_TIMELINE_S} s")
        return self


class TimelineRecording(BaseModel):
    recording: str
    #: [start_ms, end_ms] pairs, Unix milliseconds, sorted, merged at the resolution.
    ranges: list[tuple[int, int]]


class Timeline(BaseModel):
    start_ms: int
    end_ms: int
    resolution_ms: int
    recordings: list[TimelineRecording]


class EventQuery(BaseModel):
    recording: str | None = None
    topic: Annotated[str | None, Field(max_length=128)] = None
    start: Instant | None = None
    end: Instant | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Annotated[str | None, Field(max_length=64)] = None


class EventOut(BaseModel):
    id: int
    utc_ms: int
    time: datetime
    recording: str | None
    track: str | None
    topic: str
    operation: str | None
    source: dict[str, str]
    data: dict[str, str]


class EventPage(BaseModel):
    events: list[EventOut]
    #: Pass as ``cursor`` for the next page; None when this page is the last.
    next_cursor: str | None


class VolumeOut(BaseModel):
    id: int | None
    path: str
    status: str
    reason: str
    total_bytes: int | None
    free_bytes: int | None
    min_free_bytes: int
    oldest_ms: int | None


class StorageOut(BaseModel):
    volumes: list[VolumeOut]
    segment_s: int


class UserOut(BaseModel):
    username: str
    level: str


class UserList(BaseModel):
    users: list[UserOut]


class UserCreate(BaseModel):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=64)]
    level: Literal["Administrator", "Operator", "User"]


class UserUpdate(BaseModel):
    password: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    level: Literal["Administrator", "Operator", "User"] | None = None


class SystemOut(BaseModel):
    version: str
    uptime_s: float
    cpu_percent: float | None
    load_average: list[float]
    ingest_mbit_s: float
    #: Media sent to viewers (live and replay) since the previous call to this endpoint.
    egress_mbit_s: float | None
    live_viewers: int
    utc: datetime
    ntp_servers: list[str]
    #: The kernel says an NTP daemon disciplines the clock (None: cannot tell here).
    clock_synchronized: bool | None
    #: The clock's maximum error as the NTP daemon last set it.
    clock_max_error_ms: float | None
    cameras: int
    recording: int


class WebRtcOffer(BaseModel):
    """A browser's offer, sent once ICE gathering is complete (no trickle)."""

    type: Literal["offer"]
    sdp: Annotated[str, Field(min_length=1, max_length=65536)]


class WebRtcAnswer(BaseModel):
    type: Literal["answer"]
    sdp: str
    #: ``DELETE /api/v1/webrtc/<session>`` ends it (closing the peer connection does too).
    session: str


# -- the dependencies --------------------------------------------------------------------
@dataclasses.dataclass
class ApiDeps:
    settings: Settings
    clock: Clock
    db: Database
    users: UserStore
    control: RecordingControl
    recording: RecordingManager
    gate: Gate
    version: str
    #: Running recorders by receiver and recording token.
    live_streams: Callable[[], dict[str, CameraRecorder]]
    rtsp_port: Callable[[], int | None]
    #: The live feed of a camera (receiver or recording token), as RTSP viewers get it.
    live_feed: Callable[[str], Feed | None] = lambda _token: None
    #: Extra Prometheus lines (RTSP viewers, event subscriptions) from the composition root.
    extra_metrics: Callable[[], list[str]] = lambda: []
    #: WebRTC live sessions (replay/webrtc.py); None: not offered.
    webrtc: WebRtcSessions | None = None
    #: Probe for ONVIF devices and store what they say (discovered_devices): username,
    #: password, unicast (host, port) targets (none: multicast), timeout in seconds.
    discover: (
        Callable[[str | None, str | None, list[tuple[str, int]], float], Awaitable[None]] | None
    ) = None
    #: Media bytes sent to viewers since start (every live and replay path).
    egress_bytes: Callable[[], int] = lambda: 0


class Endpoints:
    def __init__(self, deps: ApiDeps) -> None:
        self.d = deps
        self._started_ns = deps.clock.monotonic_ns()
        self._cpu: tuple[float, float] = (time.process_time(), time.monotonic())
        self._egress: tuple[int, float] = (deps.egress_bytes(), time.monotonic())
        self._document: bytes | None = None
        self._discovering = asyncio.Lock()

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _host(call: Call) -> str:
        host = call.request.host
        return host.rsplit(":", 1)[0] if not host.endswith("]") else host

    def _base(self, call: Call) -> str:
        return f"{call.request.scheme}://{call.request.host}"

    def _rtsp(self, call: Call, path: str) -> str:
        return f"rtsp://{self._host(call)}:{self.d.rtsp_port() or 554}{path}"

    def _camera(
        self, call: Call, receiver: Receiver, state: str, recording: Recording | None = None
    ) -> Camera:
        recorder = self.d.live_streams().get(receiver.token)
        meter = recorder.hub.meters.get(0) if recorder is not None else None
        cfg = receiver.configuration
        return Camera(
            token=receiver.token,
            name=receiver.name or receiver.token,
            url=cfg.media_uri,
            mode=cfg.mode,  # type: ignore[arg-type]
            transport=cfg.stream_setup.protocol,
            stats=CameraStats(
                state=state,
                ingest_state=recorder.state if recorder is not None else None,
                bitrate_bps=meter.bitrate_bps if meter is not None else None,
                fps=round(meter.rate, 3) if meter is not None and meter.rate else None,
                last_error=recorder.last_error if recorder is not None else "",
                reconnects=recorder.reconnects if recorder is not None else 0,
                recording=bool(recorder is not None and recorder.record),
            ),
            links=CameraLinks(
                live_rtsp=self._rtsp(call, f"/live/{receiver.token}"),
                live_tunnel=f"{self._base(call)}/rtsp-tunnel/live/{receiver.token}",
                snapshot=f"{self._base(call)}/snapshot/{receiver.token}",
            ),
            recording=recording.token if recording is not None else None,
            retention_s=recording.configuration.max_retention_s if recording is not None else None,
        )

    async def _recordings_of_receivers(self) -> dict[str, tuple[Recording, str]]:
        """Receiver token -> (the recording a job records it into, the job's token); the
        recording made for the receiver (``camera_id``) wins over others."""
        recordings = {r.token: r for r in await self.d.control.recordings()}
        found: dict[str, tuple[Recording, str]] = {}
        for job in await self.d.control.jobs():
            recording = recordings.get(job.configuration.recording_token)
            if recording is None:
                continue
            for source in job.configuration.sources:
                if not source.feed:
                    continue
                known = found.get(source.feed)
                if known is None or (recording.camera_id and not known[0].camera_id):
                    found[source.feed] = (recording, job.token)
        return found

    async def _record(self, receiver: Receiver, retention_days: int) -> Recording:
        """A recording made for ``receiver`` and an Active job into it (what the camera
        CLI makes; recording/camera_setup.py), undone if the job is refused."""
        recording = await self.d.control.create_recording(
            RecordingConfiguration(
                RecordingSource(name=receiver.name), max_retention_s=retention_days * 86400
            ),
            origin="api",
            camera_id=receiver.id,
        )
        try:
            await self.d.control.create_job(
                JobConfiguration(recording.token, "Active", 0, (JobSource(receiver.token),))
            )
        except BaseException:
            await self.d.control.delete_recording(recording.token)
            raise
        return recording

    # -- session and tokens -------------------------------------------------------------------
    async def login(self, call: Call) -> web.StreamResponse:
        body: Login = call.body
        level = self.d.gate.check_password(body.username, body.password, call.request.remote or "")
        sid, csrf = await self.d.gate.open_session(body.username)
        info = SessionInfo(username=body.username, level=level.value, csrf_token=csrf)
        response = web.Response(
            body=info.model_dump_json().encode(), content_type="application/json"
        )
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            secure=call.request.secure,
            path="/",
        )
        return response

    async def logout(self, call: Call) -> web.StreamResponse:
        await self.d.gate.close_session(call.request.cookies.get(SESSION_COOKIE))
        response = web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def session(self, call: Call) -> SessionInfo:
        assert call.caller is not None
        csrf = await self.d.gate.csrf_for(call.request.cookies.get(SESSION_COOKIE))
        return SessionInfo(
            username=call.caller.username, level=call.caller.level.value, csrf_token=csrf
        )

    async def create_token(self, call: Call) -> TokenInfo:
        assert call.caller is not None
        body: TokenRequest = call.body
        token = await self.d.gate.issue_token(call.caller.username, body.lifetime_s)
        return TokenInfo(token=token, expires_in_s=body.lifetime_s)

    # -- cameras ---------------------------------------------------------------------------
    async def list_cameras(self, call: Call) -> CameraList:
        out = []
        recorded = await self._recordings_of_receivers()
        for receiver in await self.d.control.receivers():
            state = await self.d.control.receiver_state(receiver.token)
            recording = recorded.get(receiver.token, (None, ""))[0]
            out.append(self._camera(call, receiver, state, recording))
        return CameraList(cameras=out)

    async def get_camera(self, call: Call) -> Camera:
        token = call.params["token"]
        receiver = await self.d.control.get_receiver(token)
        recording = (await self._recordings_of_receivers()).get(token, (None, ""))[0]
        return self._camera(call, receiver, await self.d.control.receiver_state(token), recording)

    async def create_camera(self, call: Call) -> Camera:
        body: CameraCreate = call.body
        config = ReceiverConfiguration(body.mode, body.url)
        config = dataclasses.replace(
            config,
            stream_setup=dataclasses.replace(config.stream_setup, protocol=body.transport),
        )
        receiver = await self.d.control.create_receiver(
            config, name=body.name, username=body.username, password=body.password, origin="api"
        )
        recording = None
        if body.record:
            try:
                recording = await self._record(receiver, body.retention_days)
            except BaseException:
                await self.d.control.delete_receiver(receiver.token)
                raise
        state = await self.d.control.receiver_state(receiver.token)
        return self._camera(call, receiver, state, recording)

    async def update_camera(self, call: Call) -> Camera:
        token = call.params["token"]
        body: CameraUpdate = call.body
        current = (await self.d.control.get_receiver(token)).configuration
        config = ReceiverConfiguration(
            body.mode or current.mode,
            body.url or current.media_uri,
            dataclasses.replace(
                current.stream_setup, protocol=body.transport or current.stream_setup.protocol
            ),
        )
        receiver = await self.d.control.configure_receiver(
            token, config, username=body.username, password=body.password
        )
        recording, job = (await self._recordings_of_receivers()).get(token, (None, ""))
        if body.record and recording is None:
            recording = await self._record(receiver, body.retention_days or 0)
        elif body.record is not None and job:
            await self.d.control.set_job_mode(job, "Active" if body.record else "Idle")
        if body.retention_days is not None and recording is not None:
            kept = dataclasses.replace(
                recording.configuration, max_retention_s=body.retention_days * 86400
            )
            await self.d.control.set_recording_configuration(recording.token, kept)
            recording = await self.d.control.get_recording(recording.token)
        return self._camera(call, receiver, await self.d.control.receiver_state(token), recording)

    async def delete_camera(self, call: Call) -> None:
        """The receiver and the jobs recording it; the recordings stay (their data is
        replayable until retention or an ONVIF DeleteRecording removes it)."""
        token = call.params["token"]
        await self.d.control.get_receiver(token)  # unknown: 404 before anything changes
        for job in await self.d.control.jobs():
            if any(s.feed == token for s in job.configuration.sources):
                await self.d.control.delete_job(job.token)
        await self.d.control.delete_receiver(token)

    # -- discovered devices ------------------------------------------------------------------
    async def discover(self, call: Call) -> DiscoveredList:
        """A new probe (one at a time: a second one while it runs is refused)."""
        body: DiscoverRequest = call.body
        if self.d.discover is None:
            raise ApiError(503, "NoDiscovery", "device discovery is not available on this box")
        if self._discovering.locked():
            raise ApiError(409, "DiscoveryRunning", "a search for devices is running already")
        unicast = []
        for text in body.addresses:
            host, sep, port = text.rpartition(":")
            unicast.append((host, int(port)) if sep and host else (text, 3702))
        async with self._discovering:
            await self.d.discover(body.username, body.password, unicast, body.timeout_s)
        return await self.discovered(call)

    async def discovered(self, call: Call) -> DiscoveredList:
        """What ``onvif-nvr discover`` found (db table discovered_devices)."""

        def read() -> list[models.DiscoveredDevice]:
            with self.d.db.session() as session:
                return list(
                    session.scalars(
                        select(models.DiscoveredDevice).order_by(
                            models.DiscoveredDevice.name, models.DiscoveredDevice.endpoint
                        )
                    )
                )

        rows = await self.d.db.run(read)
        return DiscoveredList(
            devices=[
                DiscoveredDevice(
                    endpoint=r.endpoint,
                    xaddr=r.xaddr,
                    status=r.status,
                    reason=r.reason or "",
                    name=r.name or "",
                    manufacturer=r.manufacturer or "",
                    model=r.model or "",
                    serial=r.serial or "",
                    firmware=r.firmware or "",
                    scopes=[str(s) for s in r.scopes or ()],
                    profiles=[
                        DiscoveredProfile.model_validate(p)
                        for p in r.profiles or ()
                        if isinstance(p, dict)
                    ],
                    seen_ms=_ms(r.seen_wall_ns),
                )
                for r in rows
            ]
        )

    # -- WebRTC live ------------------------------------------------------------------------
    def _webrtc(self) -> WebRtcSessions:
        if self.d.webrtc is None:
            raise ApiError(503, "NoWebRtc", "WebRTC is not running on this box")
        return self.d.webrtc

    async def webrtc_offer(self, call: Call) -> WebRtcAnswer:
        token = call.params["token"]
        body: WebRtcOffer = call.body
        try:
            session, sdp = await self._webrtc().open(token, body.sdp)
        except NoLiveStream:
            await self.d.control.get_receiver(token)  # an unknown camera: 404
            raise
        except BadOffer as exc:
            raise ApiError(
                422,
                "InvalidArgVal",
                "the offer cannot be answered",
                [FieldError(field="body.sdp", message=exc.message)],
            ) from None
        return WebRtcAnswer(type="answer", sdp=sdp, session=session)

    async def webrtc_close(self, call: Call) -> None:
        if not await self._webrtc().close_session(call.params["session"]):
            raise ApiError(404, "NoSession", "no such WebRTC session")

    # -- recordings and the timeline --------------------------------------------------------
    async def _ranges(self) -> dict[int, tuple[int | None, int | None]]:
        def read() -> dict[int, tuple[int | None, int | None]]:
            with self.d.db.session() as session:
                rows = session.execute(
                    select(
                        models.RecordingData.recording_id,
                        models.RecordingData.earliest_ns,
                        models.RecordingData.latest_ns,
                    )
                )
                return {rid: (lo, hi) for rid, lo, hi in rows}

        return await self.d.db.run(read)

    async def list_recordings(self, call: Call) -> RecordingList:
        ranges = await self._ranges()
        out = []
        for rec in await self.d.control.recordings():
            lo, hi = ranges.get(rec.id, (None, None))
            out.append(
                RecordingOut(
                    token=rec.token,
                    source_name=rec.configuration.source.name,
                    content=rec.configuration.content,
                    max_retention_s=rec.configuration.max_retention_s,
                    tracks=[t.token for t in rec.tracks],
                    earliest_ms=_ms(lo) if lo is not None else None,
                    latest_ms=_ms(hi) if hi is not None else None,
                    replay_rtsp=self._rtsp(call, f"/replay/{rec.token}"),
                )
            )
        return RecordingList(recordings=out)

    async def timeline(self, call: Call) -> Timeline:
        q: TimelineQuery = call.query
        recordings = await self.d.control.recordings()
        if q.recording is not None:
            recordings = [r for r in recordings if r.token == q.recording]
            if not recordings:
                raise NoRecording(f"no recording {q.recording!r}")
        start_ns, end_ns = _ns(q.start), _ns(q.end)
        resolution_ns = max(1, int(q.resolution * 1e9))
        ids = [r.id for r in recordings]

        def read() -> dict[int, list[tuple[int, int]]]:
            with self.d.db.engine.connect() as conn:
                return recorded_ranges(conn, ids, start_ns, end_ns, resolution_ns)

        found = await self.d.db.run(read)
        return Timeline(
            start_ms=_ms(start_ns),
            end_ms=_ms(end_ns),
            resolution_ms=resolution_ns // NS_PER_MS,
            recordings=[
                TimelineRecording(
                    recording=r.token, ranges=[(_ms(s), _ms(e)) for s, e in found[r.id]]
                )
                for r in recordings
            ],
        )

    # -- events ----------------------------------------------------------------------------
    async def events(self, call: Call) -> EventPage:
        q: EventQuery = call.query
        recordings = await self.d.control.recordings()
        tokens = {r.id: r.token for r in recordings}
        ids = None
        if q.recording is not None:
            ids = [r.id for r in recordings if r.token == q.recording]
            if not ids:
                raise NoRecording(f"no recording {q.recording!r}")
        after = _decode_cursor(q.cursor) if q.cursor else None
        start_ns = _ns(q.start) if q.start else 0
        end_ns = _ns(q.end) if q.end else 2**62
        topic = q.topic
        if topic is not None and not topic.startswith("tns1:"):
            topic = "tns1:" + topic

        def read() -> Any:
            with self.d.db.engine.connect() as conn:
                return events_page(
                    conn,
                    recording_ids=ids,
                    topic=topic,
                    start_ns=start_ns,
                    end_ns=end_ns,
                    after=after,
                    limit=q.limit + 1,
                )

        rows = await self.d.db.run(read)
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        out = [
            EventOut(
                id=row.id,
                utc_ms=_ms(row.utc_ns),
                time=datetime.fromtimestamp(row.utc_ns / 1e9, UTC),
                recording=tokens.get(row.recording_id) if row.recording_id is not None else None,
                track=row.track_token or None,
                topic=row.topic,
                operation=row.operation or None,
                source=_items(row.source),
                data=_items(row.data),
            )
            for row in rows
        ]
        cursor = _encode_cursor(rows[-1].utc_ns, rows[-1].id) if more and rows else None
        return EventPage(events=out, next_cursor=cursor)

    # -- storage ---------------------------------------------------------------------------
    async def storage(self, call: Call) -> StorageOut:
        volumes = list(self.d.recording.volumes.volumes)

        def read() -> tuple[dict[int, int | None], list[hostinfo.VolumeInfo | None]]:
            with self.d.db.session() as session:
                oldest: dict[int, int | None] = {}
                for v in volumes:
                    if v.id is not None:
                        oldest[v.id] = session.scalar(
                            select(models.Segment.start_wall_ns)
                            .where(models.Segment.volume_id == v.id)
                            .order_by(models.Segment.start_wall_ns)
                            .limit(1)
                        )
            infos: list[hostinfo.VolumeInfo | None] = []
            for v in volumes:
                try:
                    infos.append(hostinfo.volume_info(v.path))
                except OSError:
                    infos.append(None)
            return oldest, infos

        oldest, infos = await self.d.db.run(read)
        return StorageOut(
            volumes=[
                VolumeOut(
                    id=v.id,
                    path=str(v.path),
                    status=v.status,
                    reason=v.reason,
                    total_bytes=info.total_bytes if info else None,
                    free_bytes=info.free_bytes if info else None,
                    min_free_bytes=v.min_free_bytes,
                    oldest_ms=_ms(o) if (o := oldest.get(v.id or -1)) is not None else None,
                )
                for v, info in zip(volumes, infos, strict=True)
            ],
            segment_s=self.d.settings.storage.segment_s,
        )

    # -- users -----------------------------------------------------------------------------
    async def list_users(self, call: Call) -> UserList:
        return UserList(
            users=[
                UserOut(username=a.username, level=a.level.value) for a in self.d.users.accounts()
            ]
        )

    async def create_user(self, call: Call) -> UserOut:
        body: UserCreate = call.body
        await self.d.users.create([UserChange(body.username, body.level, body.password)])
        return UserOut(username=body.username, level=body.level)

    async def update_user(self, call: Call) -> UserOut:
        name = call.params["username"]
        body: UserUpdate = call.body
        level = self.d.users.level_for(name)
        if level is None:
            raise ApiError(404, "UsernameMissing", f"no user {name!r}")
        password = body.password if body.password is not None else self.d.users.password_for(name)
        new_level = body.level or level.value
        await self.d.users.update([UserChange(name, new_level, password)])
        return UserOut(username=name, level=new_level)

    async def delete_user(self, call: Call) -> None:
        name = call.params["username"]
        if self.d.users.level_for(name) is None:
            raise ApiError(404, "UsernameMissing", f"no user {name!r}")
        await self.d.users.delete([name])

    # -- media for Media Source Extensions (api/media.py, docs/design/mse.md) -----------
    async def live_mp4(self, call: Call) -> web.StreamResponse:
        token = call.params["token"]
        feed = self.d.live_feed(token)
        if feed is None:
            raise ApiError(404, "UnknownToken", f"no live stream for camera {token!r}")
        return await mse.live(call.request, feed, call.query)

    async def media_mp4(self, call: Call) -> web.StreamResponse:
        return await mse.playback(call.request, self.d.db, call.params["token"], call.query)

    # -- the document ----------------------------------------------------------------------
    async def openapi(self, call: Call) -> web.StreamResponse:
        if self._document is None:
            self._document = json.dumps(document(), indent=2, sort_keys=True).encode()
        return web.Response(body=self._document, content_type="application/json")

    # -- system and metrics ------------------------------------------------------------------
    def _cpu_percent(self) -> float | None:
        cpu, wall = time.process_time(), time.monotonic()
        last_cpu, last_wall = self._cpu
        self._cpu = (cpu, wall)
        if wall - last_wall <= 0:
            return None
        return round(100 * (cpu - last_cpu) / (wall - last_wall), 2)

    def _egress_mbit_s(self) -> float | None:
        sent, wall = self.d.egress_bytes(), time.monotonic()
        last_sent, last_wall = self._egress
        self._egress = (sent, wall)
        if wall - last_wall <= 0:
            return None
        return round((sent - last_sent) * 8 / (wall - last_wall) / 1e6, 3)

    def _ingest_bps(self) -> int:
        seen: set[int] = set()
        total = 0
        for recorder in self.d.live_streams().values():
            if id(recorder) in seen:
                continue
            seen.add(id(recorder))
            for meter in recorder.hub.meters.values():
                total += meter.bitrate_bps or 0
        return total

    async def system(self, call: Call) -> SystemOut:
        recorders = {id(r): r for r in self.d.live_streams().values()}
        ntp, sync = await asyncio.to_thread(
            lambda: (hostinfo.read_ntp_servers(), hostinfo.clock_sync())
        )
        return SystemOut(
            version=self.d.version,
            uptime_s=round((self.d.clock.monotonic_ns() - self._started_ns) / 1e9, 3),
            cpu_percent=self._cpu_percent(),
            load_average=list(os.getloadavg()),
            ingest_mbit_s=round(self._ingest_bps() / 1e6, 3),
            egress_mbit_s=self._egress_mbit_s(),
            live_viewers=sum(
                max(0, r.hub.subscriber_count - (1 if r.record else 0)) for r in recorders.values()
            ),
            utc=datetime.fromtimestamp(self.d.clock.wall_ns() / 1e9, UTC),
            ntp_servers=list(ntp),
            clock_synchronized=sync.synchronized if sync is not None else None,
            clock_max_error_ms=sync.max_error_us / 1000 if sync is not None else None,
            cameras=len(await self.d.control.receivers()),
            recording=sum(1 for r in recorders.values() if r.record),
        )

    async def metrics(self, call: Call) -> web.StreamResponse:
        recorders = sorted(
            (
                ({"camera": r.camera.name, "recording": token}, r)
                for token, r in self.d.recording.by_recording()
            ),
            key=lambda x: (x[0]["camera"], x[0]["recording"]),
        )
        per_camera: list[tuple[str, str, Callable[[CameraRecorder], int | float]]] = [
            ("nvr_camera_units_total", "counter", lambda r: r.hub.published),
            ("nvr_camera_bytes_total", "counter", _payload_bytes),
            ("nvr_camera_units_written_total", "counter", lambda r: r.writer.units_written),
            ("nvr_camera_units_skipped_total", "counter", lambda r: r.writer.units_skipped),
            ("nvr_camera_packets_dropped_total", "counter", lambda r: r.packet_counts()[0]),
            ("nvr_camera_packets_lost_total", "counter", lambda r: r.packet_counts()[1]),
            ("nvr_camera_reconnects_total", "counter", lambda r: r.reconnects),
            ("nvr_camera_bitrate_bps", "gauge", _bitrate),
            ("nvr_camera_consumers", "gauge", lambda r: r.hub.subscriber_count),
        ]
        lines = []
        for metric, kind, value in per_camera:
            samples = [(labels, value(r)) for labels, r in recorders]
            lines += metric_family(metric, kind, samples, ("camera", "recording"))
        lines.append("# TYPE nvr_uptime_seconds gauge")
        lines.append(
            f"nvr_uptime_seconds {(self.d.clock.monotonic_ns() - self._started_ns) / 1e9:.3f}"
        )
        lines.extend(self.d.extra_metrics())
        return web.Response(
            text="\n".join(lines) + "\n",
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )


def _payload_bytes(recorder: CameraRecorder) -> int:
    """Media payload bytes the camera delivered (every track, since the camera started)."""
    return sum(meter.total_bytes for meter in recorder.hub.meters.values())


def _bitrate(recorder: CameraRecorder) -> int:
    meter = recorder.hub.meters.get(0)
    return meter.bitrate_bps if meter is not None and meter.bitrate_bps else 0


def _items(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        value = json.loads(value)
    return {str(item[0]): str(item[1]) for item in value or ()}


def _encode_cursor(utc_ns: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{utc_ns}:{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        utc, _, row = raw.partition(":")
        return int(utc), int(row)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(
            422,
            "InvalidArgVal",
            "invalid query",
            [FieldError(field="query.cursor", message="not a cursor this API handed out")],
        ) from None


API_VERSION = "1.0"
ADMIN, OPERATOR, USER = UserLevel.ADMINISTRATOR, UserLevel.OPERATOR, UserLevel.USER


def route_table(e: Endpoints | None) -> list[Route]:
    """Every route; ``e`` None gives the table for the document alone (no handlers run)."""

    def h(name: str) -> Callable[..., Any]:
        if e is None:

            async def absent(call: Call) -> None:
                raise AssertionError(name)

            return absent
        handler: Callable[..., Any] = getattr(e, name)
        return handler

    v1 = "/api/v1"
    return [
        Route(
            "POST",
            f"{v1}/session",
            "login",
            "Log in: session cookie and CSRF token",
            h("login"),
            access=None,
            body=Login,
            response=SessionInfo,
        ),
        Route(
            "GET",
            f"{v1}/session",
            "whoami",
            "The caller's user and level",
            h("session"),
            response=SessionInfo,
        ),
        Route(
            "DELETE",
            f"{v1}/session",
            "logout",
            "Log out (ends the session cookie)",
            h("logout"),
            access=None,
            status=204,
        ),
        Route(
            "POST",
            f"{v1}/tokens",
            "createToken",
            "A bearer token for scripts",
            h("create_token"),
            body=TokenRequest,
            response=TokenInfo,
        ),
        Route(
            "GET",
            f"{v1}/cameras",
            "listCameras",
            "Cameras (receivers) with their state",
            h("list_cameras"),
            response=CameraList,
        ),
        Route(
            "POST",
            f"{v1}/cameras",
            "createCamera",
            "Add a camera by RTSP URL",
            h("create_camera"),
            access=OPERATOR,
            body=CameraCreate,
            response=Camera,
            status=201,
        ),
        Route(
            "GET",
            f"{v1}/cameras/{{token}}",
            "getCamera",
            "One camera",
            h("get_camera"),
            response=Camera,
        ),
        Route(
            "PATCH",
            f"{v1}/cameras/{{token}}",
            "updateCamera",
            "Change a camera",
            h("update_camera"),
            access=OPERATOR,
            body=CameraUpdate,
            response=Camera,
        ),
        Route(
            "DELETE",
            f"{v1}/cameras/{{token}}",
            "deleteCamera",
            "Remove a camera",
            h("delete_camera"),
            access=OPERATOR,
            status=204,
        ),
        Route(
            "POST",
            f"{v1}/cameras/{{token}}/webrtc",
            "openWebRtc",
            "Watch a camera live over WebRTC: the browser's offer (every ICE candidate in it) "
            "in, the answer and a session id out; H.264 cameras only (H.265: 501)",
            h("webrtc_offer"),
            body=WebRtcOffer,
            response=WebRtcAnswer,
            status=201,
            errors=(
                (501, "the camera's codec cannot pass through WebRTC (H.265): use live.mp4"),
                (503, "the camera has no live stream yet, or every WebRTC session is taken"),
            ),
        ),
        Route(
            "DELETE",
            f"{v1}/webrtc/{{session}}",
            "closeWebRtc",
            "End a WebRTC session",
            h("webrtc_close"),
            status=204,
        ),
        Route(
            "GET",
            f"{v1}/recordings",
            "listRecordings",
            "Recordings and their data range",
            h("list_recordings"),
            response=RecordingList,
        ),
        Route(
            "GET",
            f"{v1}/timeline",
            "timeline",
            "Every recording's recorded intervals in a window, merged at a resolution",
            h("timeline"),
            query=TimelineQuery,
            response=Timeline,
        ),
        Route(
            "GET",
            f"{v1}/events",
            "listEvents",
            "Stored events, filtered, cursor-paged",
            h("events"),
            query=EventQuery,
            response=EventPage,
        ),
        Route(
            "GET",
            f"{v1}/discovered",
            "listDiscovered",
            "ONVIF devices found by `onvif-nvr discover`, with their stream profiles",
            h("discovered"),
            access=OPERATOR,
            response=DiscoveredList,
        ),
        Route(
            "POST",
            f"{v1}/discovered",
            "discoverDevices",
            "Search for ONVIF devices now (WS-Discovery multicast, or unicast to the given "
            "addresses), question them and store the results; answers the new list",
            h("discover"),
            access=OPERATOR,
            body=DiscoverRequest,
            response=DiscoveredList,
        ),
        Route(
            "GET",
            f"{v1}/storage",
            "storage",
            "Storage volumes: size, free, oldest data",
            h("storage"),
            response=StorageOut,
        ),
        Route(
            "GET",
            f"{v1}/users",
            "listUsers",
            "Users (the ONVIF users)",
            h("list_users"),
            access=ADMIN,
            response=UserList,
        ),
        Route(
            "POST",
            f"{v1}/users",
            "createUser",
            "Create a user",
            h("create_user"),
            access=ADMIN,
            body=UserCreate,
            response=UserOut,
            status=201,
        ),
        Route(
            "PATCH",
            f"{v1}/users/{{username}}",
            "updateUser",
            "Change a user's password or level",
            h("update_user"),
            access=ADMIN,
            body=UserUpdate,
            response=UserOut,
        ),
        Route(
            "DELETE",
            f"{v1}/users/{{username}}",
            "deleteUser",
            "Delete a user",
            h("delete_user"),
            access=ADMIN,
            status=204,
        ),
        Route(
            "GET",
            f"{v1}/system",
            "system",
            "Version, uptime, CPU, ingest, clock",
            h("system"),
            response=SystemOut,
        ),
        Route(
            "GET",
            f"{v1}/cameras/{{token}}/live.mp4",
            "liveMp4",
            "Live video as fragmented MP4 for MSE (streamed; max_s bounds it)",
            h("live_mp4"),
            query=mse.LiveQuery,
            media="video/mp4",
        ),
        Route(
            "GET",
            f"{v1}/recordings/{{token}}/media.mp4",
            "recordingMp4",
            "Recorded video of a window as fragmented MP4 for MSE, on a wall-clock timeline",
            h("media_mp4"),
            query=mse.MediaQuery,
            media="video/mp4",
        ),
        Route(
            "GET",
            "/api/openapi.json",
            "openapi",
            "This OpenAPI 3.1 document",
            h("openapi"),
            access=None,
        ),
        Route(
            "GET",
            "/metrics",
            "metrics",
            "Prometheus metrics (text exposition format)",
            h("metrics"),
            media="text/plain",
        ),
    ]


def document() -> dict[str, Any]:
    """The OpenAPI document of the route table (docs/api/openapi.json is its checked-in copy)."""
    return openapi_document(route_table(None), API_VERSION)


def document_text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def mount(router: web.UrlDispatcher, deps: ApiDeps) -> Endpoints:
    """Put the API's routes on the box's aiohttp router."""
    endpoints = Endpoints(deps)
    Dispatcher(route_table(endpoints), deps.gate).mount(router)
    return endpoints
