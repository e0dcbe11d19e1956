"""Everything the box records: volumes (recovered at start), one recorder per enabled camera."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from onvif_nvr.system import hostinfo

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
    ) -> None:
        self.settings = settings
        self.index = SegmentIndex(db)
        self.cameras = cameras
        self.clock = clock
        self._factory = source_factory or default_source_factory(clock)
        self.recorders: dict[str, CameraRecorder] = {}
        self.volumes: list[tuple[int, Path]] = []
        self._retention: asyncio.Future[None] | None = None

    def volume_paths(self) -> list[Path]:
        storage = self.settings.storage
        if storage.volumes:
            return [Path(v) for v in storage.volumes]
        return [self.settings.data_dir / "recordings"]

    async def start(self) -> None:
        storage = self.settings.storage
        for path in self.volume_paths():
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
            volume_id = await self.index.ensure_volume(str(path.resolve()), storage.min_free_bytes)
            report = await recover_volume(self.index, volume_id, path)
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
            self.volumes.append((volume_id, path))
        self._retention = asyncio.ensure_future(self._retention_loop())
        if not storage.record:
            return
        for camera in await self.cameras.list():
            if camera.enabled:
                self.start_camera(camera.name, camera)

    def start_camera(self, name: str, camera: Camera) -> None:
        volume_id, path = self.volumes[0]
        storage = self.settings.storage
        recorder = CameraRecorder(
            camera,
            volume_id=volume_id,
            volume_path=path,
            index=self.index,
            clock=self.clock,
            source_factory=self._factory,
            segment_s=storage.segment_s,
            fragment_s=storage.fragment_ms / 1000,
            fsync=storage.fsync,
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
        volumes = [(vid, path, self.settings.storage.min_free_bytes) for vid, path in self.volumes]
        return await retention.enforce(
            self.index,
            volumes,
            policies,
            self.clock.wall_ns(),
            free_bytes=lambda path: hostinfo.volume_info(path).free_bytes,
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
