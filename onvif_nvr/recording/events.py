"""What the write side publishes on the event bus (ONVIF topics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from onvif_nvr.errors import NoReceiver, NoRecordingJob
from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.message import ElementItem, Item, PropertyOperation, SimpleItem
from onvif_nvr.events.termination import format_utc
from onvif_nvr.events.topics import STORAGE_FAILURE, Topic
from onvif_nvr.recording.control import NOT_CONNECTED, JobState, RecordingControl
from onvif_nvr.recording.history import RecordingHistory
from onvif_nvr.recording.index import SegmentRow
from onvif_nvr.recording.supervisor import CameraRecorder

log = logging.getLogger(__name__)

#: Volume statuses that mean the storage failed (Core §8.9.10): a write error, or the disk
#: gone (unmounted). A full volume works as designed (retention makes room): no failure.
FAILED_STATUSES = frozenset({"failed", "offline"})


def volume_token(volume_id: int) -> str:
    """The ``Token`` of a volume in storage events."""
    return f"volume{volume_id}"


class StorageEvents:
    """``tns1:Device/HardwareFailure/StorageFailure``, a property per volume: Initialized
    when the volume is attached, Changed when it fails or recovers (repeated reports of
    the same state publish nothing: the bus compares with the stored state)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def volume_status(self, volume_id: int, status: str) -> None:
        if status in ("foreign", "new"):
            return
        self.bus.publish(
            STORAGE_FAILURE,
            source=[SimpleItem("Token", volume_token(volume_id))],
            data=[SimpleItem("Failed", "true" if status in FAILED_STATUSES else "false")],
        )


# -- Profile G: RecordingConfig/* and Receiver/* -------------------------------------------------
JOB_STATE = Topic.onvif("RecordingConfig/JobState")
DELETE_TRACK_DATA = Topic.onvif("RecordingConfig/DeleteTrackData")
CHANGE_STATE = Topic.onvif("Receiver/ChangeState")
CONNECTION_FAILED = Topic.onvif("Receiver/ConnectionFailed")
#: Deleted segments of one recording closer than this are reported as one range.
DELETION_JOIN_NS = 10**9
#: Deletions are gathered this long (a retention pass, a DeleteRecording) before reporting.
DELETION_DELAY_S = 0.5

#: Renders a domain object as the XML element of the named ONVIF type
#: ("RecordingConfiguration", "TrackConfiguration", "RecordingJobConfiguration",
#: "RecordingJobStateInformation"), for ElementItems. The SOAP layer knows the schema.
ElementRenderer = Callable[[str, Any], bytes]

#: The ONVIF type of an ElementItem the control plane hands over, by item name and topic.
_ELEMENT_TYPES = {
    ("RecordingConfig/RecordingConfiguration", "Configuration"): "RecordingConfiguration",
    ("RecordingConfig/TrackConfiguration", "Configuration"): "TrackConfiguration",
    ("RecordingConfig/RecordingJobConfiguration", "Configuration"): "RecordingJobConfiguration",
}


def _job_key(state: JobState) -> tuple[object, ...]:
    """What makes a JobState event: the states, not the error texts (RecordingControl
    §5.29: when "the state field ... changes")."""
    return (
        state.state,
        tuple(
            (s.token, s.state, tuple((t.source_tag, t.destination, t.state) for t in s.tracks))
            for s in state.sources
        ),
    )


class ControlEvents:
    """The Profile G events: the control plane's ``on_event`` hook (RecordingConfig
    create/delete/configuration topics), ``RecordingConfig/JobState`` (a property per job,
    re-evaluated after every control change and every ingest state change),
    ``RecordingConfig/DeleteTrackData`` (retention and DeleteRecording),
    ``Receiver/ChangeState`` and ``Receiver/ConnectionFailed`` (the recorders' ingest).
    Plug in as the RecordingManager's listener and the RecordingControl's ``on_event``."""

    def __init__(
        self,
        bus: EventBus,
        control: RecordingControl,
        render: ElementRenderer,
        history: RecordingHistory | None = None,
    ) -> None:
        self.bus = bus
        self.control = control
        self.render = render
        self.history = history
        #: Per job token, what its last JobState event said.
        self._jobs: dict[str, tuple[object, ...]] = {}
        #: Per receiver token, the state its last ChangeState said (none: NotConnected).
        self._receivers: dict[str, str] = {}
        #: Recording id -> (token, its video and audio track tokens).
        self._recordings: dict[int, tuple[str, tuple[str, ...]]] = {}
        #: Receiver ids whose connection attempt failed, with when.
        self._failures: list[tuple[int, int]] = []
        self._deletions: dict[int, list[SegmentRow]] = {}
        self._deletion_timer: asyncio.TimerHandle | None = None
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Learn the recordings and publish every job's state (Initialized)."""
        await self._load_recordings()
        self.applied()

    async def close(self) -> None:
        self._flush_deletions()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the control plane's hook ----------------------------------------------------------
    def on_event(self, topic: str, values: Mapping[str, Any]) -> None:
        """``RecordingControl.on_event``: ``topic`` without ``tns1:``, the items by name."""
        self._flush_deletions()  # the data went before the track or recording did
        described = self.bus.catalog.get(Topic.onvif(topic))
        if described is None:
            log.warning("the control plane reported %s, which the catalogue lacks", topic)
            return
        groups: dict[str, list[Item]] = {"source": [], "data": []}
        for group, descriptions in (("source", described.source), ("data", described.data)):
            for description in descriptions:
                if description.name not in values:
                    continue
                value = values[description.name]
                if description.element:
                    kind = _ELEMENT_TYPES.get((topic, description.name), description.name)
                    groups[group].append(ElementItem(description.name, self.render(kind, value)))
                else:
                    groups[group].append(SimpleItem(description.name, str(value)))
        self.bus.publish(described.topic, source=groups["source"], data=groups["data"])
        if topic == "RecordingConfig/DeleteRecording" and self.history is not None:
            self.history.forget(str(values.get("RecordingToken", "")))
        if topic in (
            "RecordingConfig/CreateRecording",
            "RecordingConfig/CreateTrack",
            "RecordingConfig/DeleteTrack",
            "RecordingConfig/DeleteRecording",
        ):
            self._spawn_load()
        self.applied()

    # -- the recording manager's listener --------------------------------------------------
    def state_changed(
        self, key: tuple[int, int], recorder: CameraRecorder, old: str, new: str
    ) -> None:
        if new == "retrying" and old in ("starting", "connecting"):
            # The connection could not be established (a stream lost later is not that).
            self._failures.append((key[1], self.bus.clock.wall_ns()))
        self.applied()

    def applied(self) -> None:
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._refresh())

    def segment_deleted(self, segment: SegmentRow) -> None:
        if segment.recording_id is None:
            return
        self._deletions.setdefault(segment.recording_id, []).append(segment)
        if self._deletion_timer is None:
            self._deletion_timer = asyncio.get_running_loop().call_later(
                DELETION_DELAY_S, self._flush_deletions
            )

    # -- JobState and receiver state -------------------------------------------------------
    async def _refresh(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self._publish_states()
            except Exception:  # the next change tries again; events never break the box
                log.exception("publishing the recording job and receiver states failed")

    async def _publish_states(self) -> None:
        jobs = await self.control.jobs()
        seen = set()
        for job in jobs:
            seen.add(job.token)
            try:
                state = await self.control.job_state(job.token)
            except NoRecordingJob:
                continue  # deleted meanwhile: the next pass says so
            key = _job_key(state)
            if self._jobs.get(job.token) == key:
                continue
            self._jobs[job.token] = key
            self.bus.publish(
                JOB_STATE,
                source=[SimpleItem("RecordingJobToken", job.token)],
                data=[
                    SimpleItem("State", state.state),
                    ElementItem("Information", self.render("RecordingJobStateInformation", state)),
                ],
            )
        for token in [t for t in self._jobs if t not in seen]:
            del self._jobs[token]
            for message in self.bus.properties():
                if message.topic == JOB_STATE and message.source == (
                    SimpleItem("RecordingJobToken", token),
                ):
                    self.bus.publish(
                        JOB_STATE,
                        source=message.source,
                        data=message.data,
                        operation=PropertyOperation.DELETED,
                    )
        receivers = await self.control.receivers()
        by_id = {r.id: r for r in receivers}
        failures, self._failures = self._failures, []
        for receiver_id, wall_ns in failures:
            receiver = by_id.get(receiver_id)
            if receiver is not None:
                self.bus.publish(
                    CONNECTION_FAILED,
                    source=[SimpleItem("ReceiverToken", receiver.token)],
                    data=[SimpleItem("MediaUri", receiver.configuration.media_uri)],
                    utc_ns=wall_ns,
                )
        for receiver in receivers:
            try:
                now = await self.control.receiver_state(receiver.token)
            except NoReceiver:
                continue
            if self._receivers.get(receiver.token, NOT_CONNECTED) == now:
                continue
            self._receivers[receiver.token] = now
            data = [SimpleItem("NewState", now)]
            if receiver.configuration.media_uri:
                data.append(SimpleItem("MediaUri", receiver.configuration.media_uri))
            self.bus.publish(
                CHANGE_STATE, source=[SimpleItem("ReceiverToken", receiver.token)], data=data
            )
        for token in {t for t in self._receivers} - {r.token for r in receivers}:
            del self._receivers[token]

    # -- DeleteTrackData -------------------------------------------------------------------
    def _spawn_load(self) -> None:
        task = asyncio.ensure_future(self._load_recordings())
        task.add_done_callback(_log_failure)

    async def _load_recordings(self) -> None:
        self._recordings = {
            r.id: (
                r.token,
                tuple(
                    t.token for t in r.tracks if t.configuration.track_type in ("Video", "Audio")
                ),
            )
            for r in await self.control.recordings()
        }

    def _flush_deletions(self) -> None:
        if self._deletion_timer is not None:
            self._deletion_timer.cancel()
            self._deletion_timer = None
        deletions, self._deletions = self._deletions, {}
        for recording_id, segments in deletions.items():
            known = self._recordings.get(recording_id)
            if known is None:
                log.warning("data of unknown recording %d deleted: no event", recording_id)
                continue
            token, tracks = known
            for start_ns, end_ns in _ranges(segments):
                for track in tracks:
                    self.bus.publish(
                        DELETE_TRACK_DATA,
                        source=[
                            SimpleItem("RecordingToken", token),
                            SimpleItem("TrackToken", track),
                        ],
                        data=[
                            SimpleItem("StartTime", format_utc(start_ns)),
                            SimpleItem("EndTime", format_utc(end_ns)),
                        ],
                    )


def _ranges(segments: list[SegmentRow]) -> list[tuple[int, int]]:
    """The time ranges the deleted segments covered, neighbours joined."""
    out: list[list[int]] = []
    for segment in sorted(segments, key=lambda s: s.start_wall_ns):
        if out and segment.start_wall_ns <= out[-1][1] + DELETION_JOIN_NS:
            out[-1][1] = max(out[-1][1], segment.end_wall_ns)
        else:
            out.append([segment.start_wall_ns, segment.end_wall_ns])
    return [(a, b) for a, b in out]


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the recordings for events failed", exc_info=task.exception())
