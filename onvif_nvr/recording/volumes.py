"""Storage volumes: the ``nvr-volume.json`` marker, which volumes may be written, placement.

Every volume directory holds a marker naming the volume (a uuid also kept in the volume's
index row) and the box that owns it. At start each configured directory is classified:

* no marker and no index row: a new volume; the marker is written (atomically);
* marker matching the row: the volume is ours and mounted (``ok``);
* a row but no marker: the disk is not mounted (the mount point is there but empty) or was
  wiped: ``offline``. It is neither written to nor swept by recovery or retention, so an
  unmounted disk never makes the NVR fill the root file system or forget its recordings;
* a marker of another volume or another box: ``foreign``, refused likewise.

A row made before markers existed (no uuid) is adopted when its directory plainly holds
its data (or it has none). An offline volume whose marker comes back is recovered and used
again (``refresh``, called periodically).

Placement (``choose``) picks the volume of each new segment among the ``ok`` ones:
``most-free`` takes the one with the most free bytes above its floor; ``round-robin`` gives
each camera the next volume in turn and keeps it there until that volume is full, failed or
offline. A volume the writer marked ``full``/``failed`` is skipped until a probe write
succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from onvif_nvr.clock import Clock, SystemClock
from onvif_nvr.recording.index import SegmentIndex, VolumeRow
from onvif_nvr.recording.recovery import recover_volume

log = logging.getLogger(__name__)

MARKER_NAME = "nvr-volume.json"
MARKER_FORMAT = 1
PLACEMENTS = ("most-free", "round-robin")
#: Statuses of a volume that is ours and mounted (recovery and retention work on these).
ONLINE = ("ok", "full", "failed")
_PROBE_NAME = ".nvr-probe"
#: A full volume is used again once it has this much room above its floor.
RESUME_HEADROOM_BYTES = 1 << 20


class MarkerError(Exception):
    """The marker exists but cannot be read as one."""


@dataclasses.dataclass(frozen=True)
class Marker:
    volume_uuid: str
    box: str  # the box's identity (its ONVIF endpoint uuid); "" when it was not known yet
    created: str  # ISO 8601, UTC

    def to_json(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": MARKER_FORMAT,
                    "volume_uuid": self.volume_uuid,
                    "box": self.box,
                    "created": self.created,
                },
                indent=2,
            )
            + "\n"
        ).encode()


def read_marker(directory: Path) -> Marker | None:
    """The directory's marker; None when it has none (or the directory is missing)."""
    try:
        data = (directory / MARKER_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        doc = json.loads(data)
        volume_uuid = str(uuid.UUID(str(doc["volume_uuid"])))
        return Marker(volume_uuid, str(doc.get("box", "")), str(doc.get("created", "")))
    except (ValueError, TypeError, KeyError) as exc:
        raise MarkerError(f"{directory / MARKER_NAME} is not a volume marker ({exc})") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_marker(directory: Path, marker: Marker) -> None:
    """Write the marker atomically: temporary file, fsync, rename, directory fsync."""
    tmp = directory / f".{MARKER_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(marker.to_json())
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / MARKER_NAME)
    _fsync_dir(directory)


def _has_segment_file(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    return any(p.stem.isdigit() for p in directory.glob("*/*.mp4"))


@dataclasses.dataclass(frozen=True)
class Verdict:
    #: "ok" (ours, mounted), "new" (give it a marker), "offline" or "foreign".
    status: str
    reason: str = ""
    marker: Marker | None = None


def classify(path: Path, row: VolumeRow | None, box_id: str, row_has_segments: bool) -> Verdict:
    """What a configured directory is, from its marker and its index row (file reads only)."""
    try:
        marker = read_marker(path)
    except MarkerError as exc:
        return Verdict("foreign", str(exc))
    if row is None:
        if marker is not None:
            owner = f"box {marker.box}" if marker.box else "another database"
            return Verdict("foreign", f"marked as volume {marker.volume_uuid} of {owner}", marker)
        return Verdict("new")
    if marker is None:
        if row.uuid is None and (not row_has_segments or _has_segment_file(path)):
            return Verdict("new")  # recorded before markers existed: adopt it
        if not path.is_dir():
            return Verdict("offline", "the directory is missing")
        return Verdict("offline", f"{MARKER_NAME} is missing (disk not mounted?)")
    if row.uuid != marker.volume_uuid:
        return Verdict(
            "foreign",
            f"marked as volume {marker.volume_uuid}, the index knows {row.uuid or 'none'} here",
            marker,
        )
    if marker.box and box_id and marker.box != box_id:
        return Verdict("foreign", f"marked as belonging to box {marker.box}", marker)
    return Verdict("ok", "", marker)


def statvfs_free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _probe(path: Path) -> None:
    """A small durable write and its removal: raises OSError when the volume refuses it."""
    probe = path / _PROBE_NAME
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)


@dataclasses.dataclass
class Volume:
    path: Path
    id: int | None  # None: a foreign directory that has no index row
    uuid: str | None
    min_free_bytes: int
    status: str
    reason: str = ""

    @property
    def online(self) -> bool:
        return self.id is not None and self.status in ONLINE


class VolumeSet:
    def __init__(
        self,
        index: SegmentIndex,
        *,
        box_id: str = "",
        policy: str = "most-free",
        min_free_bytes: int = 0,
        min_free_percent: int = 0,
        clock: Clock | None = None,
        free_bytes: Callable[[Path], int] = statvfs_free_bytes,
    ) -> None:
        if policy not in PLACEMENTS:
            raise ValueError(f"unknown placement policy {policy!r} (one of {PLACEMENTS})")
        self.index = index
        self.box_id = box_id
        self.policy = policy
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.clock = clock or SystemClock()
        self.free_bytes = free_bytes
        self.volumes: list[Volume] = []
        self._assigned: dict[int, int] = {}  # round-robin: camera id → volume id
        self._turn = 0
        self._lock = asyncio.Lock()

    # -- start -----------------------------------------------------------------------------
    async def inspect(self, paths: Sequence[Path]) -> list[tuple[Path, VolumeRow | None, Verdict]]:
        """Classify the configured directories without changing anything (``check``)."""
        rows = {row.path: row for row in await self.index.volumes()}
        with_segments = {s.volume_id for s in await self.index.segments()}
        out: list[tuple[Path, VolumeRow | None, Verdict]] = []
        seen: set[Path] = set()
        for configured in paths:
            path = await asyncio.to_thread(Path(configured).resolve)
            if path in seen:
                continue
            seen.add(path)
            row = rows.get(str(path))
            verdict = await asyncio.to_thread(
                classify, path, row, self.box_id, row is not None and row.id in with_segments
            )
            out.append((path, row, verdict))
        return out

    async def attach(self, paths: Sequence[Path]) -> list[Volume]:
        """Classify the configured directories, mark new ones, record every status."""
        for path, row, verdict in await self.inspect(paths):
            self.volumes.append(await self._attach_one(path, row, verdict))
        return self.volumes

    async def _floor(self, path: Path) -> int:
        """The volume's free-space floor: ``min_free_bytes``, or ``min_free_percent`` of
        its size when that is more."""
        if self.min_free_percent <= 0:
            return self.min_free_bytes
        st = await asyncio.to_thread(os.statvfs, path)
        return max(self.min_free_bytes, st.f_blocks * st.f_frsize * self.min_free_percent // 100)

    async def _attach_one(self, path: Path, row: VolumeRow | None, verdict: Verdict) -> Volume:
        if verdict.status == "new":
            marker = Marker(str(uuid.uuid4()), self.box_id, self._now_iso())

            def make() -> None:
                path.mkdir(parents=True, exist_ok=True)
                write_marker(path, marker)

            await asyncio.to_thread(make)
            floor = await self._floor(path)
            if row is None:
                volume_id = await self.index.add_volume(str(path), marker.volume_uuid, floor)
                log.info("new storage volume %s (%s)", path, marker.volume_uuid)
            else:
                volume_id = row.id
                await self.index.update_volume(
                    volume_id, status="ok", min_free_bytes=floor, volume_uuid=marker.volume_uuid
                )
                log.info("storage volume %s marked as %s", path, marker.volume_uuid)
            return Volume(path, volume_id, marker.volume_uuid, floor, "ok")
        if verdict.status == "ok":
            assert row is not None
            floor = await self._floor(path)
            await self.index.update_volume(row.id, status="ok", min_free_bytes=floor)
            return Volume(path, row.id, row.uuid, floor, "ok")
        log.error(
            "storage volume %s is %s: %s; it is not used (no recording, recovery or retention)",
            path,
            verdict.status,
            verdict.reason,
        )
        if row is None:
            return Volume(path, None, None, self.min_free_bytes, verdict.status, verdict.reason)
        await self.index.update_volume(row.id, status=verdict.status, reason=verdict.reason)
        return Volume(path, row.id, row.uuid, row.min_free_bytes, verdict.status, verdict.reason)

    def _now_iso(self) -> str:
        seconds = self.clock.wall_ns() / 1e9
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")

    # -- views -----------------------------------------------------------------------------
    def online(self) -> list[Volume]:
        """Volumes that are ours and mounted (what recovery and retention may touch)."""
        return [v for v in self.volumes if v.online]

    def by_id(self, volume_id: int) -> Volume | None:
        return next((v for v in self.volumes if v.id == volume_id), None)

    async def _sync_status(self) -> None:
        """Pick up what the writers reported (full, failed, ok again)."""
        rows = {row.id: row for row in await self.index.volumes()}
        for volume in self.volumes:
            row = rows.get(volume.id) if volume.id is not None else None
            if row is not None:
                volume.status, volume.reason = row.status, row.status_reason

    def _still_ours(self, volume: Volume) -> str:
        """Why the volume's marker is no longer its own; "" while it is."""
        try:
            marker = read_marker(volume.path)
        except MarkerError as exc:
            return str(exc)
        if marker is None:
            return f"{MARKER_NAME} disappeared (disk unmounted?)"
        if marker.volume_uuid != volume.uuid:
            return f"{MARKER_NAME} now names volume {marker.volume_uuid}"
        return ""

    async def _detach(self, volume: Volume, reason: str) -> None:
        assert volume.id is not None
        log.error("storage volume %s is offline: %s; not writing to it", volume.path, reason)
        volume.status, volume.reason = "offline", reason
        self._assigned = {c: v for c, v in self._assigned.items() if v != volume.id}
        await self.index.update_volume(volume.id, status="offline", reason=reason)

    async def _try_probe(self, volume: Volume) -> bool:
        """A full/failed volume accepts writes again (a full one also has some room above
        its floor, not just what the failed segment left): mark it ok."""
        assert volume.id is not None
        try:
            if volume.status == "full":
                free = await asyncio.to_thread(self.free_bytes, volume.path)
                if free < volume.min_free_bytes + RESUME_HEADROOM_BYTES:
                    return False
            await asyncio.to_thread(_probe, volume.path)
        except OSError:
            return False
        log.warning("storage volume %s accepts writes again", volume.path)
        volume.status, volume.reason = "ok", ""
        await self.index.set_volume_status(volume.id, "ok")
        return True

    # -- placement -------------------------------------------------------------------------
    async def choose(self, camera_id: int) -> tuple[int, Path] | None:
        """The volume for ``camera_id``'s next segment; None when no volume can take it."""
        async with self._lock:
            await self._sync_status()
            candidates = [v for v in self.volumes if v.id is not None and v.status == "ok"]
            if not candidates:  # all full or failed: one may have room again
                for volume in self.volumes:
                    if volume.online and await self._try_probe(volume):
                        candidates.append(volume)
            usable: list[tuple[Volume, int]] = []
            for volume in candidates:
                lost = await asyncio.to_thread(self._still_ours, volume)
                if lost:
                    await self._detach(volume, lost)
                    continue
                try:
                    free = await asyncio.to_thread(self.free_bytes, volume.path)
                except OSError:
                    continue
                usable.append((volume, free - volume.min_free_bytes))
            if not usable:
                return None
            if self.policy == "round-robin":
                chosen = self._round_robin(camera_id, [v for v, _ in usable])
            else:
                chosen = max(usable, key=lambda pair: pair[1])[0]  # first of equals: config order
            assert chosen.id is not None
            return chosen.id, chosen.path

    def _round_robin(self, camera_id: int, usable: list[Volume]) -> Volume:
        current = self._assigned.get(camera_id)
        for volume in usable:
            if volume.id == current:
                return volume
        volume = usable[self._turn % len(usable)]
        self._turn += 1
        assert volume.id is not None
        self._assigned[camera_id] = volume.id
        return volume

    # -- periodic --------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Detach a volume that lost its marker, bring back a full/failed one that accepts
        writes and an offline one whose marker returned (recovered before use)."""
        async with self._lock:
            await self._sync_status()
            for volume in self.volumes:
                if volume.id is None or volume.status == "foreign":
                    continue
                if volume.status in ONLINE:
                    lost = await asyncio.to_thread(self._still_ours, volume)
                    if lost:
                        await self._detach(volume, lost)
                    elif volume.status != "ok":
                        await self._try_probe(volume)
                    continue
                # offline: is it back?
                if await asyncio.to_thread(self._still_ours, volume):
                    continue
                report = await recover_volume(self.index, volume.id, volume.path)
                volume.status, volume.reason = "ok", ""
                await self.index.update_volume(volume.id, status="ok")
                log.warning(
                    "storage volume %s is back (%d fragments recovered); recording to it again",
                    volume.path,
                    report.recovered_fragments,
                )
