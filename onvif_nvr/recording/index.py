"""The segment index: the source of truth for what is recorded, where, and when.

Writes follow the order of docs/design/storage.md: a fragment row is added only after its
bytes are durable; a deletion marks the segment ``deleting`` before the file goes and drops
the rows after. Queries answer "what is recorded around T" without touching any file.
All methods run SQL on the database worker thread (``Database.run``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, case, delete, insert, select, update
from sqlalchemy.orm import Session

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.recording import data_ranges, spans

NS_PER_90K = 10**9 / 90_000


@dataclasses.dataclass(frozen=True)
class SegmentRow:
    id: int
    camera_id: int
    volume_id: int
    state: str
    start_wall_ns: int
    end_wall_ns: int
    start_90k: int
    duration_90k: int
    size: int
    init_size: int
    fragment_count: int
    #: The recording the segment belongs to (None: none, see models.Segment).
    recording_id: int | None = None


@dataclasses.dataclass(frozen=True)
class FragmentRow:
    segment_id: int
    seq: int
    start_wall_ns: int
    start_90k: int
    duration_90k: int
    offset: int
    size: int
    first_is_sync: bool
    sample_count: int

    @property
    def end_wall_ns(self) -> int:
        return self.start_wall_ns + round(self.duration_90k * NS_PER_90K)


@dataclasses.dataclass(frozen=True)
class VolumeRow:
    id: int
    path: str
    min_free_bytes: int
    status: str
    status_reason: str
    uuid: str | None


#: Statuses only the volume set gives and takes back (a writer's "full"/"ok" never
#: overrides them: a volume that is not mounted stays untouched).
DETACHED = ("offline", "foreign")


def _volume(row: models.Volume) -> VolumeRow:
    return VolumeRow(row.id, row.path, row.min_free_bytes, row.status, row.status_reason, row.uuid)


def _segment(row: models.Segment) -> SegmentRow:
    return SegmentRow(
        row.id,
        row.camera_id,
        row.volume_id,
        row.state,
        row.start_wall_ns,
        row.end_wall_ns,
        row.start_90k,
        row.duration_90k,
        row.size,
        row.init_size,
        row.fragment_count,
        row.recording_id,
    )


def _fragment(row: models.Fragment) -> FragmentRow:
    return FragmentRow(
        row.segment_id,
        row.seq,
        row.start_wall_ns,
        row.start_90k,
        row.duration_90k,
        row.offset,
        row.size,
        row.first_is_sync,
        row.sample_count,
    )


@dataclasses.dataclass(frozen=True)
class EventRow:
    """A recorded event (models.Event): RecordingHistory, kept for FindEvents."""

    recording_id: int
    recording_token: str
    track_token: str
    topic: str
    utc_ns: int
    operation: str
    #: [[name, value], ...]; an ElementItem is [name, xml, "element"].
    source: list[list[str]]
    data: list[list[str]]


_S = models.Segment
_INSERT_FRAGMENT = insert(models.Fragment)
_INSERT_EVENT = insert(models.Event)
#: Move a segment's end over newly indexed fragments (executemany, one row per segment).
_EXTEND_SEGMENT = (
    update(_S)
    .where(_S.id == bindparam("sid"))
    .values(
        end_wall_ns=case(
            (_S.end_wall_ns > bindparam("end"), _S.end_wall_ns), else_=bindparam("end")
        ),
        duration_90k=bindparam("media_end") - _S.start_90k,
        size=bindparam("size"),
        init_size=bindparam("init"),
        fragment_count=_S.fragment_count + bindparam("count"),
    )
)


def _recording_of(session: Session, segment_id: int) -> int | None:
    return session.scalar(select(_S.recording_id).where(_S.id == segment_id))


class SegmentIndex:
    def __init__(self, db: Database) -> None:
        self._db = db
        #: Told (volume id, status) after each volume status written: the storage
        #: failure event hangs here.
        self.volume_listener: Callable[[int, str], None] | None = None

    # -- write side (one writer per stream calls these, in this order) ---------------------
    async def ensure_volume(self, path: str, min_free_bytes: int = 0) -> int:
        def work() -> int:
            with self._db.session() as session, session.begin():
                row = session.scalar(select(models.Volume).where(models.Volume.path == path))
                if row is None:
                    row = models.Volume(
                        path=path, min_free_bytes=min_free_bytes, status="ok", status_reason=""
                    )
                    session.add(row)
                    session.flush()
                else:
                    row.min_free_bytes = min_free_bytes
                return row.id

        return await self._db.run(work)

    async def add_volume(
        self, path: str, volume_uuid: str, min_free_bytes: int, status: str = "ok"
    ) -> int:
        def work() -> int:
            with self._db.session() as session, session.begin():
                row = models.Volume(
                    path=path,
                    min_free_bytes=min_free_bytes,
                    status=status,
                    status_reason="",
                    uuid=volume_uuid,
                )
                session.add(row)
                session.flush()
                return row.id

        return await self._db.run(work)

    async def update_volume(
        self,
        volume_id: int,
        *,
        status: str,
        reason: str = "",
        min_free_bytes: int | None = None,
        volume_uuid: str | None = None,
    ) -> None:
        """The volume set's own update: may attach or detach (offline/foreign) a volume."""
        values: dict[str, Any] = {"status": status, "status_reason": reason}
        if min_free_bytes is not None:
            values["min_free_bytes"] = min_free_bytes
        if volume_uuid is not None:
            values["uuid"] = volume_uuid

        def work() -> None:
            with self._db.session() as session, session.begin():
                session.execute(
                    update(models.Volume).where(models.Volume.id == volume_id).values(**values)
                )

        await self._db.run(work)
        if self.volume_listener is not None:
            self.volume_listener(volume_id, status)

    async def set_volume_status(self, volume_id: int, status: str, reason: str = "") -> None:
        """A writer's report (``full``, ``failed``, ``ok``); ignored for a detached volume."""

        def work() -> int:
            with self._db.session() as session, session.begin():
                result = session.execute(
                    update(models.Volume)
                    .where(models.Volume.id == volume_id, models.Volume.status.not_in(DETACHED))
                    .values(status=status, status_reason=reason)
                )
                return int(getattr(result, "rowcount", 0) or 0)

        if await self._db.run(work) and self.volume_listener is not None:
            self.volume_listener(volume_id, status)

    async def volumes(self) -> list[VolumeRow]:
        def work() -> list[VolumeRow]:
            with self._db.session() as session:
                query = select(models.Volume).order_by(models.Volume.id)
                return [_volume(r) for r in session.scalars(query)]

        return await self._db.run(work)

    async def create_segment(
        self,
        camera_id: int,
        volume_id: int,
        start_wall_ns: int,
        start_90k: int,
        tracks: Any = None,
        recording_id: int | None = None,
    ) -> int:
        """A row in state ``writing``; its id names the file, which is created after.
        ``camera_id`` is the stream (its directory), ``recording_id`` the recording."""

        def work() -> int:
            with self._db.session() as session, session.begin():
                row = models.Segment(
                    camera_id=camera_id,
                    recording_id=recording_id,
                    volume_id=volume_id,
                    state="writing",
                    start_wall_ns=start_wall_ns,
                    end_wall_ns=start_wall_ns,
                    start_90k=start_90k,
                    duration_90k=0,
                    size=0,
                    init_size=0,
                    fragment_count=0,
                    tracks=tracks,
                )
                session.add(row)
                session.flush()
                data_ranges.segment_added(session.connection(), recording_id, start_wall_ns)
                spans.segment_added(session.connection(), recording_id, start_wall_ns)
                return row.id

        return await self._db.run(work)

    async def add_fragments(
        self, segment_id: int, fragments: list[FragmentRow], init_size: int
    ) -> None:
        """Record durable fragments and move the segment's end.

        The rows are deferred (``Database.defer``): committed within half a second in one
        transaction with every other stream's, and before any later index operation, so
        ``close_segment`` or a query never misses them. A kill before the commit loses
        nothing: the fragments are in the file, and recovery indexes them."""
        if fragments:
            self._db.defer(self._commit_deferred, (segment_id, list(fragments), init_size))

    def add_event(self, event: EventRow) -> None:
        """Record an event, deferred like fragment rows (in the same transactions: an
        event costs no commit of its own). A kill before the commit loses it."""
        self._db.defer(self._commit_deferred, event)

    def _commit_deferred(self, items: list[tuple[int, list[FragmentRow], int] | EventRow]) -> None:
        """Worker thread: the fragment rows of several segments and the events queued with
        them in one transaction (executemany statements, compiled once)."""
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        ends: dict[int, dict[str, Any]] = {}
        for item in items:
            if isinstance(item, EventRow):
                events.append(dataclasses.asdict(item))
                continue
            segment_id, fragments, init_size = item
            rows.extend(f.__dict__ for f in fragments)
            last = fragments[-1]
            count = ends[segment_id]["count"] if segment_id in ends else 0
            ends[segment_id] = {
                "sid": segment_id,
                "end": last.end_wall_ns,
                "media_end": last.start_90k + last.duration_90k,
                "size": last.offset + last.size,
                "init": init_size,
                "count": count + len(fragments),
            }
        with self._db.engine.begin() as connection:
            if rows:
                connection.execute(_INSERT_FRAGMENT, rows)
                connection.execute(_EXTEND_SEGMENT, list(ends.values()))
                data_ranges.segments_extended(connection, list(ends.values()))
                spans.segments_extended(connection, list(ends.values()))
            if events:
                connection.execute(_INSERT_EVENT, events)
                data_ranges.events_added(connection, events)

    async def flush(self) -> None:
        """Commit the deferred fragment rows now."""
        await self._db.flush()

    async def close_segment(self, segment_id: int) -> None:
        await self._set_state(segment_id, "closed")

    async def mark_deleting(self, segment_id: int) -> None:
        await self._set_state(segment_id, "deleting")

    async def _set_state(self, segment_id: int, state: str) -> None:
        def work() -> None:
            with self._db.session() as session, session.begin():
                spans.segment_state_changing(session.connection(), segment_id, state)
                session.execute(
                    update(models.Segment)
                    .where(models.Segment.id == segment_id)
                    .values(state=state)
                )
                if state not in data_ranges.READABLE:
                    data_ranges.segment_removed(
                        session.connection(), _recording_of(session, segment_id)
                    )

        await self._db.run(work)

    async def drop_segment(self, segment_id: int) -> None:
        """The file is gone (and the directory fsynced): forget the rows."""

        def work() -> None:
            with self._db.session() as session, session.begin():
                recording_id = _recording_of(session, segment_id)
                spans.segment_dropping(session.connection(), segment_id)
                session.execute(
                    delete(models.Fragment).where(models.Fragment.segment_id == segment_id)
                )
                session.execute(delete(models.Segment).where(models.Segment.id == segment_id))
                data_ranges.segment_removed(session.connection(), recording_id)

        await self._db.run(work)

    async def open_gap(self, camera_id: int, start_wall_ns: int, reason: str) -> None:
        def work() -> None:
            with self._db.session() as session, session.begin():
                session.add(
                    models.Gap(
                        camera_id=camera_id,
                        start_wall_ns=start_wall_ns,
                        end_wall_ns=None,
                        reason=reason,
                    )
                )

        await self._db.run(work)

    async def close_gaps(self, camera_id: int, end_wall_ns: int) -> None:
        def work() -> None:
            with self._db.session() as session, session.begin():
                session.execute(
                    update(models.Gap)
                    .where(models.Gap.camera_id == camera_id, models.Gap.end_wall_ns.is_(None))
                    .values(end_wall_ns=end_wall_ns)
                )

        await self._db.run(work)

    # -- read side -------------------------------------------------------------------------
    async def segments(
        self,
        camera_id: int | None = None,
        states: tuple[str, ...] = (),
        *,
        recording_id: int | None = None,
    ) -> list[SegmentRow]:
        def work() -> list[SegmentRow]:
            query = select(models.Segment).order_by(models.Segment.start_wall_ns)
            if camera_id is not None:
                query = query.where(models.Segment.camera_id == camera_id)
            if recording_id is not None:
                query = query.where(models.Segment.recording_id == recording_id)
            if states:
                query = query.where(models.Segment.state.in_(states))
            with self._db.session() as session:
                return [_segment(r) for r in session.scalars(query)]

        return await self._db.run(work)

    async def fragments(self, segment_id: int) -> list[FragmentRow]:
        def work() -> list[FragmentRow]:
            with self._db.session() as session:
                query = (
                    select(models.Fragment)
                    .where(models.Fragment.segment_id == segment_id)
                    .order_by(models.Fragment.seq)
                )
                return [_fragment(r) for r in session.scalars(query)]

        return await self._db.run(work)

    async def find_at(self, camera_id: int, wall_ns: int) -> tuple[SegmentRow, FragmentRow] | None:
        """The clean point at or before ``wall_ns``: the last fragment that starts with a
        sync sample at or before that time, in the segment that holds it (ONVIF replay's
        start rule). None when nothing is recorded at or before it."""

        def work() -> tuple[SegmentRow, FragmentRow] | None:
            with self._db.session() as session:
                segment = session.scalar(
                    select(models.Segment)
                    .where(
                        models.Segment.camera_id == camera_id,
                        models.Segment.start_wall_ns <= wall_ns,
                        models.Segment.state != "deleting",
                    )
                    .order_by(models.Segment.start_wall_ns.desc())
                    .limit(1)
                )
                if segment is None:
                    return None
                fragment = session.scalar(
                    select(models.Fragment)
                    .where(
                        models.Fragment.segment_id == segment.id,
                        models.Fragment.start_wall_ns <= wall_ns,
                        models.Fragment.first_is_sync.is_(True),
                    )
                    .order_by(models.Fragment.start_wall_ns.desc())
                    .limit(1)
                )
                if fragment is None:
                    return None
                return _segment(segment), _fragment(fragment)

        return await self._db.run(work)

    async def locks(self) -> dict[int, list[tuple[int, int]]]:
        """Locked ranges per camera (retention never deletes data overlapping them)."""

        def work() -> dict[int, list[tuple[int, int]]]:
            out: dict[int, list[tuple[int, int]]] = {}
            with self._db.session() as session:
                for row in session.scalars(select(models.Lock)):
                    out.setdefault(row.camera_id, []).append((row.start_wall_ns, row.end_wall_ns))
            return out

        return await self._db.run(work)

    async def add_lock(
        self, camera_id: int, start_wall_ns: int, end_wall_ns: int, reason: str = ""
    ) -> None:
        def work() -> None:
            with self._db.session() as session, session.begin():
                session.add(
                    models.Lock(
                        camera_id=camera_id,
                        start_wall_ns=start_wall_ns,
                        end_wall_ns=end_wall_ns,
                        reason=reason,
                    )
                )

        await self._db.run(work)

    async def recorded_ranges(
        self, camera_id: int, start_wall_ns: int, end_wall_ns: int
    ) -> list[tuple[int, int]]:
        """Merged [start, end) ranges with data, for timelines (segments that touch merge)."""
        segments = [
            s
            for s in await self.segments(camera_id, ("writing", "closed"))
            if s.end_wall_ns > start_wall_ns and s.start_wall_ns < end_wall_ns
        ]
        ranges: list[tuple[int, int]] = []
        for s in segments:
            lo, hi = max(s.start_wall_ns, start_wall_ns), min(s.end_wall_ns, end_wall_ns)
            if ranges and lo <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], max(ranges[-1][1], hi))
            else:
                ranges.append((lo, hi))
        return ranges
