"""Everything the box records: volumes (marked, recovered at start, chosen per segment by
the placement policy), one recorder per enabled camera."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from onvif_nvr.clock import Clock
from onvif_nvr.config import Settings
from onvif_nvr.db.engine import Database
from onvif_nvr.recording import retention
from onvif_nvr.recording.cameras import Camera, CameraStore
from onvif_nvr.recording.index import SegmentIndex, SegmentRow
from onvif_nvr.recording.recovery import recover_volume
from onvif_nvr.recording.retention import StreamPolicy
from onvif_nvr.recording.supervisor import CameraRecorder, SourceFactory, default_source_factory
from onvif_nvr.recording.volumes import VolumeSet, statvfs_free_bytes

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 10.0


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
    ) -> None:
        self.settings = settings
        self.index = SegmentIndex(db)
        self.cameras = cameras
        self.clock = clock
        self._factory = source_factory or default_source_factory(clock)
        self.recorders: dict[str, CameraRecorder] = {}
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
        storage = self.settings.storage
        await self.volumes.attach(self.volume_paths())
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
        if not storage.record:
            return
        for camera in await self.cameras.list():
            if camera.enabled:
                self.start_camera(camera.name, camera)

    def start_camera(self, name: str, camera: Camera) -> None:
        storage = self.settings.storage
        recorder = CameraRecorder(
            camera,
            placement=self.volumes.choose,
            index=self.index,
            clock=self.clock,
            source_factory=self._factory,
            segment_s=storage.segment_s,
            fragment_s=storage.fragment_ms / 1000,
            fsync=storage.fsync,
            fsync_interval_s=storage.fsync_interval_s,
        )
        self.recorders[name] = recorder
        recorder.start()

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        await asyncio.gather(*(r.stop() for r in self.recorders.values()), return_exceptions=True)
        self.recorders.clear()

    async def enforce_retention(self) -> list[SegmentRow]:
        policies = {
            c.id: StreamPolicy(c.id, retention_s=c.retention_s) for c in await self.cameras.list()
        }
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
        )

    def _deleted(self, segment: SegmentRow) -> None:
        # The ONVIF DeleteTrackData event will hang here (Profile G control plane).
        log.info(
            "retention deleted segment %d of camera %d (%d bytes)",
            segment.id,
            segment.camera_id,
            segment.size,
        )

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.enforce_retention()
            except Exception:  # retention must keep trying; the recorders do not depend on it
                log.exception("retention pass failed")
            await self.clock.sleep(RETENTION_INTERVAL_S)
