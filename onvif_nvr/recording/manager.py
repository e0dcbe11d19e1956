"""Everything the box records: volumes (marked, recovered at start, chosen per segment by
the placement policy), and the recorders the Profile G control plane asks for — one per
(active recording job, receiver) and one per AlwaysConnect receiver no job uses
(``recording/control.py``: :func:`~onvif_nvr.recording.control.plan`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.config import Settings
from onvif_nvr.db.engine import Database
from onvif_nvr.recording import retention
from onvif_nvr.recording.cameras import CameraStore
from onvif_nvr.recording.control import IngestStatus, RecorderSpec, RecordingControl
from onvif_nvr.recording.history import HistoryTarget, RecordingHistory
from onvif_nvr.recording.index import SegmentIndex, SegmentRow
from onvif_nvr.recording.recovery import recover_volume
from onvif_nvr.recording.retention import StreamPolicy
from onvif_nvr.recording.supervisor import CameraRecorder, SourceFactory, default_source_factory
from onvif_nvr.recording.volumes import VolumeSet, statvfs_free_bytes

log = logging.getLogger(__name__)


class RecorderListener(Protocol):
    """Hears what the runtime does (the Profile G events hang here)."""

    def state_changed(
        self, key: tuple[int, int], recorder: CameraRecorder, old: str, new: str
    ) -> None:
        """A recorder's ingest state changed (connecting, recording, retrying...)."""

    def applied(self) -> None:
        """The recorders were brought in line with a new plan (after any control change)."""

    def segment_deleted(self, segment: SegmentRow) -> None:
        """A segment's data is gone (retention, DeleteRecording)."""


class RecordingManager:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        cameras: CameraStore,
        clock: Clock,
        source_factory: SourceFactory | None = None,
        *,
        box_id: str = "",
        free_bytes: Callable[[Path], int] = statvfs_free_bytes,
        control: RecordingControl | None = None,
        volume_events: Callable[[int, str], None] | None = None,
        history: RecordingHistory | None = None,
        listener: RecorderListener | None = None,
        index: SegmentIndex | None = None,
    ) -> None:
        """With ``control``, runs the recorders it plans (see :meth:`apply`); without,
        only volumes and retention. ``history`` hears what the recorders write,
        ``listener`` their state changes, the plans applied and the data deleted. ``index``
        is shared with whoever else defers rows (so they commit together)."""
        self.settings = settings
        self.history = history
        self.listener = listener
        self.control = control
        self.index = index or SegmentIndex(db)
        # Volume status changes (a writer's failure, a disk gone or back) as events.
        self.index.volume_listener = volume_events
        self.cameras = cameras
        self.clock = clock
        self._factory = source_factory or default_source_factory(clock)
        #: Running recorders by (job id, receiver id); job id 0: connected, not recording.
        self.recorders: dict[tuple[int, int], CameraRecorder] = {}
        self._specs: dict[tuple[int, int], RecorderSpec] = {}
        self._applying = asyncio.Lock()
        storage = settings.storage
        self.volumes = VolumeSet(
            self.index,
            box_id=box_id,
            policy=storage.placement,
            min_free_bytes=storage.min_free_bytes,
            min_free_percent=storage.min_free_percent,
            clock=clock,
            free_bytes=free_bytes,
        )
        self._retention: asyncio.Future[None] | None = None

    def volume_paths(self) -> list[Path]:
        storage = self.settings.storage
        if storage.volumes:
            return [Path(v) for v in storage.volumes]
        return [self.settings.data_dir / "recordings"]

    async def start(self) -> None:
        await self.volumes.attach(self.volume_paths())
        if volume_events := self.index.volume_listener:
            for attached in self.volumes.volumes:  # the initial state of every volume
                if attached.id is not None:
                    volume_events(attached.id, attached.status)
        for volume in self.volumes.online():  # offline and foreign ones are not touched
            assert volume.id is not None
            path = volume.path
            report = await recover_volume(self.index, volume.id, path)
            if (
                report.recovered_fragments
                or report.truncated_bytes
                or report.orphan_files
                or report.problems
            ):
                log.warning(
                    "recovered %s: %d fragments indexed, %d torn bytes cut, %d orphan files removed%s",
                    path,
                    report.recovered_fragments,
                    report.truncated_bytes,
                    report.orphan_files,
                    "; " + "; ".join(report.problems) if report.problems else "",
                )
        if not self.volumes.online():
            log.error("no usable storage volume: nothing will be recorded until one is mounted")
        self._retention = asyncio.ensure_future(self._retention_loop())
        if self.control is not None:
            self.control.set_segment_deleter(self.delete_recording_data)
            await self.control.attach(self)

    # -- the control plane's runtime (recording.control.Runtime) ---------------------------
    async def apply(self, specs: Sequence[RecorderSpec]) -> None:
        """Run exactly ``specs``: recorders no longer wanted stop (closing their segment),
        changed ones (new URL, credentials, transport, recording) start again."""
        wanted = {s.key: s for s in specs} if self.settings.storage.record else {}
        async with self._applying:
            stale = [k for k in self.recorders if self._specs.get(k) != wanted.get(k)]
            stopping = [self.recorders.pop(k) for k in stale]
            for key in stale:
                self._specs.pop(key, None)
            await asyncio.gather(*(r.stop() for r in stopping), return_exceptions=True)
            for key, spec in wanted.items():
                if key not in self.recorders:
                    self._start(spec)
        if self.listener is not None:
            self.listener.applied()

    def status(self, key: tuple[int, int]) -> IngestStatus | None:
        recorder = self.recorders.get(key)
        if recorder is None:
            return None
        return IngestStatus(recorder.state, recorder.last_error, recorder.has_audio)

    def running(self) -> Iterable[tuple[int, int]]:
        return list(self.recorders)

    def by_recording(self) -> list[tuple[str, CameraRecorder]]:
        """(recording token or "", recorder) of every running recorder: a camera recorded
        by two recordings has two recorders (for /metrics, one series each)."""
        return [
            (spec.recording_token or "", recorder)
            for key, spec in sorted(self._specs.items())
            if (recorder := self.recorders.get(key)) is not None
        ]

    def live_streams(self) -> dict[str, CameraRecorder]:
        """Running recorders by receiver token and by recording token (the live paths)."""
        streams: dict[str, CameraRecorder] = {}
        # Recording recorders first, so a receiver token names one that records.
        for key, spec in sorted(self._specs.items(), key=lambda item: item[0][0] == 0):
            recorder = self.recorders.get(key)
            if recorder is None:
                continue
            if spec.recording_token:
                streams.setdefault(spec.recording_token, recorder)
            if spec.receiver_token:
                streams.setdefault(spec.receiver_token, recorder)
        return streams

    def _start(self, spec: RecorderSpec) -> None:
        storage = self.settings.storage
        recorder = CameraRecorder(
            spec.camera,
            placement=self.volumes.choose,
            index=self.index,
            clock=self.clock,
            source_factory=self._factory,
            segment_s=storage.segment_s,
            fragment_s=storage.fragment_ms / 1000,
            fsync=storage.fsync,
            fsync_interval_s=storage.fsync_interval_s,
            recording_id=spec.recording_id,
            record=spec.key[0] != 0,
            history=(
                self.history.sink(
                    HistoryTarget(
                        spec.recording_id,
                        spec.recording_token,
                        spec.video_track,
                        spec.audio_track,
                    )
                )
                if self.history is not None and spec.recording_id is not None and spec.key[0]
                else None
            ),
        )
        if (listener := self.listener) is not None:
            key = spec.key
            recorder.on_state = lambda old, new: listener.state_changed(key, recorder, old, new)
        self.recorders[spec.key] = recorder
        self._specs[spec.key] = spec
        recorder.start()

    async def delete_recording_data(self, recording_id: int) -> None:
        """DeleteRecording's data, in storage.md's delete order."""
        await self.volumes.refresh()
        paths = {v.id: v.path for v in self.volumes.online() if v.id is not None}
        segments = await self.index.segments(recording_id=recording_id)
        await retention.delete_segments(self.index, segments, paths, self._deleted)

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        if self.control is not None:
            self.control.set_segment_deleter(None)
            await self.control.attach(None)
        async with self._applying:
            await asyncio.gather(
                *(r.stop() for r in self.recorders.values()), return_exceptions=True
            )
            self.recorders.clear()
            self._specs.clear()

    async def enforce_retention(self) -> list[SegmentRow]:
        policies = {
            c.id: StreamPolicy(c.id, retention_s=c.retention_s) for c in await self.cameras.list()
        }
        recording_policies = (
            {
                r.id: StreamPolicy(r.id, retention_s=r.configuration.max_retention_s)
                for r in await self.control.recordings()
            }
            if self.control is not None
            else {}
        )
        await self.volumes.refresh()  # a volume unmounted since is left alone from now on
        volumes = [
            (v.id, v.path, v.min_free_bytes) for v in self.volumes.online() if v.id is not None
        ]
        return await retention.enforce(
            self.index,
            volumes,
            policies,
            self.clock.wall_ns(),
            free_bytes=self.volumes.free_bytes,
            locks=await self.index.locks(),
            on_deleted=self._deleted,
            recording_policies=recording_policies,
        )

    def _deleted(self, segment: SegmentRow) -> None:
        if self.listener is not None:
            self.listener.segment_deleted(segment)
        log.info(
            "deleted segment %d of recording %s, camera %d (%d bytes)",
            segment.id,
            segment.recording_id,
            segment.camera_id,
            segment.size,
        )

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.enforce_retention()
            except Exception:  # retention must keep trying; the recorders do not depend on it
                log.exception("retention pass failed")
            await self.clock.sleep(self.settings.storage.check_interval_s)
