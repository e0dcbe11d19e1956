"""The replay reader: recorded footage read back through the index, for RTSP replay and
export.

A :class:`Playback` starts where ONVIF replay says a stream starts (Streaming §6.5
"Synchronization points"): at the clean point at or before the requested time when it lies
in recorded footage, at the next section's first clean point when it lies in a gap going
forward (the previous section's last clean point going backward), nowhere after the end.
Finding it is an index lookup (the segment that holds the time, then the sync fragment at or
before it); reading is one ``pread`` at the row's byte offset per chunk of contiguous
fragments, never a scan of the file.

The playback yields :class:`ReplayUnit` items — access units with their wall-clock capture
time, exactly as the writer indexed them (``fragment.start_wall_ns`` plus media time since
the fragment's start) — and a :class:`Gap` before the first unit after a hole in the
recording. Forward, the units of every track come in recorded order; backward, GOPs come in
reverse order with the units of each GOP forward (video only, as Streaming §6.6 advises).
In intra mode only keyframes are read (the first sample of each sync fragment, found from
the ``moof`` alone).

Files are read and parsed on worker threads (``asyncio.to_thread``), index queries run on
the database worker (``Database.run``); the event loop only hands items on. At most
``chunk_bytes`` of media (or one GOP backward) is held at a time. Reaching the end of a
segment still being written, the playback polls the index for new fragments (near-live).
A segment deleted under it (retention, DeleteRecording) ends it with
:attr:`EndReason.DELETED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Select, and_, or_, select

from onvif_nvr.clock import Clock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import NoRecording
from onvif_nvr.media.units import AccessUnit, AudioParameters, TimedUnit, VideoParameters
from onvif_nvr.mp4.boxes import TrackSpec
from onvif_nvr.mp4.reader import fragment_header, read_init, samples_of, scan_fragments
from onvif_nvr.rtsp import h264, h265
from onvif_nvr.rtsp.bits import from_avcc

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

#: Segment states whose data may be served (``deleting`` is on its way out).
READABLE = ("writing", "closed")
#: Two segments further apart than this are two sections with a gap between them (a
#: segment that follows at once starts where the previous one ends).
MAX_CONTIGUOUS_NS = 1_000_000_000
#: Fragment rows read per index query (one more is read to know whether it was the last).
PAGE = 64
#: Bytes of contiguous fragments read at once (at least one fragment).
CHUNK_BYTES = 2 << 20
#: Bytes read first to find a keyframe in intra mode (moof, mdat header, often the frame).
HEAD_BYTES = 64 << 10
#: Intra mode asks the index whether the segment is still there every this many keyframes.
KEYFRAMES_PER_CHECK = 16
VIDEO = 0
AUDIO = 1


class EndReason(enum.Enum):
    """Why a playback ended (``Playback.end_reason``)."""

    #: The requested end point was reached.
    RANGE_END = "range-end"
    #: No more data: the end of the recording (forward) or its beginning (backward).
    FOOTAGE_END = "footage-end"
    #: The segment being read was deleted (retention, DeleteRecording).
    DELETED = "deleted"
    #: A segment file could not be read or did not match its index rows.
    READ_ERROR = "read-error"
    #: The consumer closed the playback.
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True, slots=True)
class PlayRequest:
    """What to play; times are wall-clock ns (UTC)."""

    start_ns: int
    #: Stop after this time (forward) or before it (backward); None: open range.
    end_ns: int | None = None
    reverse: bool = False
    #: Keyframes only (RTSP ``Frames: intra``), at least ``intra_spacing_ns`` apart on the
    #: recording's timeline (``Frames: intra/<ms>``).
    intra_only: bool = False
    intra_spacing_ns: int = 0
    #: Track numbers to read (``TimedUnit.track``: 0 video, 1 audio).
    tracks: frozenset[int] = frozenset({VIDEO, AUDIO})
    #: At the end of the recorded data, wait for the recording to resume instead of ending
    #: (a segment still being written is always followed).
    follow: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayUnit:
    """One access unit read back. ``timed.unit`` is what the live packetizers take (NAL units
    without length prefixes; one raw audio frame), ``timed.track`` 0 video / 1 audio,
    ``timed.wall_ns`` the capture time the index holds, ``timed.dts_90k`` the media time
    (continuous within a section, unrelated across a gap: RTP times across sections come
    from ``wall_ns``)."""

    timed: TimedUnit
    segment_id: int
    #: Follows a discontinuity in transmission (the first unit of each GOP backward) — the
    #: replay extension's D flag.
    discontinuity: bool = False
    #: The last unit of its track before a gap or the end of the recorded data, when known
    #: as it is read (not for a segment still being written) — the E flag.
    section_end: bool = False
    #: The last unit of its track this playback will give (end of footage) — the T flag.
    terminal: bool = False
    #: Backward: the capture time of the last unit of this unit's GOP, which a player
    #: renders first (rate-controlled reverse replay sends the GOP by then); None forward.
    group_end_ns: int | None = None

    @property
    def clean_point(self) -> bool:
        """The C flag: a keyframe (every audio frame is one)."""
        return self.timed.unit.keyframe


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """A hole in the recording between the unit before it and the unit after it."""

    #: Where the data before it ended / the data after it starts (wall-clock ns). Backward
    #: the data "before" is the later section.
    end_ns: int
    resume_ns: int


ReplayItem = ReplayUnit | Gap


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentMedia:
    """What a segment file holds, from its init segment."""

    video: VideoParameters | None
    audio: AudioParameters | None
    #: File track id → (track number, timescale, NAL length size or 0 for audio).
    tracks: dict[int, tuple[int, int, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordingMedia:
    """A recording as replay serves it: its track tokens and the media of its newest
    segment (what DESCRIBE announces; keyframes carry their parameter sets in band)."""

    id: int
    token: str
    video_track: str | None
    audio_track: str | None
    video: VideoParameters | None
    audio: AudioParameters | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Segment:
    id: int
    state: str
    start_wall_ns: int
    end_wall_ns: int
    start_90k: int
    init_size: int
    path: Path


@dataclasses.dataclass(frozen=True, slots=True)
class _Fragment:
    seq: int
    start_wall_ns: int
    start_90k: int
    offset: int
    size: int
    sync: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Page:
    state: str
    end_ns: int
    init_size: int
    rows: list[_Fragment]
    #: No rows follow these (as far as the index knows now).
    last: bool


# -- index queries (database worker thread) ----------------------------------------------------
_S = models.Segment
_F = models.Fragment
_SEGMENT_COLUMNS = (
    _S.id,
    _S.state,
    _S.start_wall_ns,
    _S.end_wall_ns,
    _S.start_90k,
    _S.init_size,
    _S.camera_id,
    models.Volume.path,
)


def _segment(row: Any) -> _Segment:
    sid, state, start, end, start_90k, init_size, camera_id, volume = row
    return _Segment(
        sid, state, start, end, start_90k, init_size, Path(volume) / str(camera_id) / f"{sid}.mp4"
    )


def _fragment(row: Any) -> _Fragment:
    seq, start, start_90k, offset, size, sync = row
    return _Fragment(seq, start, start_90k, offset, size, bool(sync))


_FRAGMENT_COLUMNS = (_F.seq, _F.start_wall_ns, _F.start_90k, _F.offset, _F.size, _F.first_is_sync)


class _Index:
    """The queries a playback makes; each is one indexed statement."""

    def __init__(self, db: Database, recording_id: int) -> None:
        self.db = db
        self.recording_id = recording_id

    def _segments(self) -> Select[Any]:
        query: Select[Any] = (
            select(*_SEGMENT_COLUMNS)  # type: ignore[assignment]
            .join(models.Volume, models.Volume.id == _S.volume_id)
            .where(_S.recording_id == self.recording_id, _S.state.in_(READABLE))
        )
        return query

    def _one(self, query: Select[Any]) -> _Segment | None:
        with self.db.session() as session:
            row = session.execute(query.limit(1)).first()
        return None if row is None else _segment(row)

    def at_or_before(self, wall_ns: int) -> _Segment | None:
        """The segment that starts last at or before ``wall_ns``."""
        return self._one(
            self._segments()
            .where(_S.start_wall_ns <= wall_ns)
            .order_by(_S.start_wall_ns.desc(), _S.id.desc())
        )

    def after(self, segment: _Segment | None, wall_ns: int = 0) -> _Segment | None:
        """The segment after ``segment`` in (start, id) order, or the first starting after
        ``wall_ns`` when there is none to follow."""
        query = self._segments()
        if segment is None:
            query = query.where(_S.start_wall_ns > wall_ns)
        else:
            query = query.where(
                or_(
                    _S.start_wall_ns > segment.start_wall_ns,
                    and_(_S.start_wall_ns == segment.start_wall_ns, _S.id > segment.id),
                )
            )
        return self._one(query.order_by(_S.start_wall_ns, _S.id))

    def before(self, segment: _Segment) -> _Segment | None:
        """The segment before ``segment`` in (start, id) order."""
        return self._one(
            self._segments()
            .where(
                or_(
                    _S.start_wall_ns < segment.start_wall_ns,
                    and_(_S.start_wall_ns == segment.start_wall_ns, _S.id < segment.id),
                )
            )
            .order_by(_S.start_wall_ns.desc(), _S.id.desc())
        )

    def fragment_at(self, segment_id: int, wall_ns: int, sync: bool) -> _Fragment | None:
        """The (sync) fragment of the segment starting last at or before ``wall_ns``."""
        query = select(*_FRAGMENT_COLUMNS).where(
            _F.segment_id == segment_id, _F.start_wall_ns <= wall_ns
        )
        if sync:
            query = query.where(_F.first_is_sync.is_(True))
        query = query.order_by(_F.start_wall_ns.desc(), _F.seq.desc()).limit(1)
        with self.db.session() as session:
            row = session.execute(query).first()
        return None if row is None else _fragment(row)

    def state(self, segment_id: int) -> str | None:
        with self.db.session() as session:
            return session.scalar(select(_S.state).where(_S.id == segment_id))

    def page(
        self, segment: _Segment, after_seq: int, *, reverse: bool, sync_only: bool
    ) -> _Page | None:
        """The segment as it is now and up to ``PAGE + 1`` of its fragment rows after
        ``after_seq`` (before it, backward); None once its row is gone."""
        query = select(*_FRAGMENT_COLUMNS).where(_F.segment_id == segment.id)
        if reverse:
            query = query.where(_F.seq < after_seq).order_by(_F.seq.desc())
        else:
            query = query.where(_F.seq > after_seq).order_by(_F.seq)
        if sync_only:
            query = query.where(_F.first_is_sync.is_(True))
        with self.db.session() as session:
            head = session.execute(
                select(_S.state, _S.end_wall_ns, _S.init_size).where(_S.id == segment.id)
            ).first()
            if head is None:
                return None
            rows = [_fragment(r) for r in session.execute(query.limit(PAGE + 1))]
        state, end_ns, init_size = head
        return _Page(state, end_ns, init_size, rows[:PAGE], len(rows) <= PAGE)


async def recording_media(db: Database, token: str) -> RecordingMedia:
    """The recording ``token`` as replay serves it; :class:`NoRecording` when unknown."""

    def work() -> tuple[int, list[tuple[str, str]], _Segment | None]:
        with db.session() as session:
            recording_id = session.scalar(
                select(models.Recording.id).where(models.Recording.token == token)
            )
            if recording_id is None:
                raise NoRecording(f"no recording {token!r}")
            tracks = session.execute(
                select(models.Track.token, models.Track.track_type)
                .where(models.Track.recording_id == recording_id)
                .order_by(models.Track.id)
            ).all()
        newest = _Index(db, recording_id)._one(
            _Index(db, recording_id)
            ._segments()
            .where(_S.fragment_count > 0)
            .order_by(_S.start_wall_ns.desc(), _S.id.desc())
        )
        return recording_id, [(t, k) for t, k in tracks], newest

    recording_id, tracks, newest = await db.run(work)
    video = audio = None
    if newest is not None:
        try:
            media = await asyncio.to_thread(_read_media, newest)
        except (OSError, ValueError) as exc:
            log.debug("replay: segment %s unreadable: %s", newest.id, exc)
        else:
            video, audio = media.video, media.audio
    return RecordingMedia(
        recording_id,
        token,
        next((t for t, kind in tracks if kind == "Video"), None),
        next((t for t, kind in tracks if kind == "Audio"), None),
        video,
        audio,
    )


# -- file reading (worker threads) -------------------------------------------------------------
def _media_of(specs: Sequence[TrackSpec]) -> SegmentMedia:
    video: VideoParameters | None = None
    audio: AudioParameters | None = None
    tracks: dict[int, tuple[int, int, int]] = {}
    for spec in specs:
        if spec.kind == "video" and video is None:
            config = spec.sample_entry_config
            if spec.codec == "H264":
                sps, pps, length_size = h264.parse_avcc(config)
                video = h264.video_parameters(sps[0], pps) if sps and pps else None
            else:
                arrays, length_size = h265.parse_hvcc(config)
                vps, sps_list, pps_list = (arrays.get(t, []) for t in (32, 33, 34))
                video = h265.video_parameters(vps, sps_list, pps_list) if sps_list else None
            if video is None:
                raise ValueError(f"track {spec.track_id}: no parameter sets in the sample entry")
            tracks[spec.track_id] = (VIDEO, spec.timescale, length_size)
        elif spec.kind == "audio" and audio is None:
            audio = AudioParameters(
                spec.codec, spec.sample_rate or spec.timescale, spec.channels or 1,
                spec.sample_entry_config if spec.codec == "AAC" else b"",
            )  # fmt: skip
            tracks[spec.track_id] = (AUDIO, spec.timescale, 0)
    return SegmentMedia(video, audio, tracks)


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (os.pread may return less); ValueError at a short file."""
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise ValueError(f"file ends at {offset + len(data)}, {size - len(data)} bytes short")
        data += more
    return data


def _read_media(segment: _Segment) -> SegmentMedia:
    fd = os.open(segment.path, os.O_RDONLY)
    try:
        return _media_of(read_init(pread_exact(fd, segment.init_size, 0)))
    finally:
        os.close(fd)


def _open(segment: _Segment, init_size: int) -> tuple[int, SegmentMedia]:
    fd = os.open(segment.path, os.O_RDONLY)
    try:
        if init_size <= 0:
            raise ValueError(f"segment {segment.id} has no init segment indexed")
        return fd, _media_of(read_init(pread_exact(fd, init_size, 0)))
    except BaseException:
        os.close(fd)
        raise


def _unit(
    media: SegmentMedia,
    segment: _Segment,
    fragment: _Fragment,
    track_id: int,
    decode_time: int,
    sync: bool,
    data: bytes,
) -> TimedUnit | None:
    known = media.tracks.get(track_id)
    if known is None:
        return None
    number, timescale, length_size = known
    # Media time on the segment's 90 kHz clock; wall time from the fragment's indexed
    # start, as the writer computed its line (docs/design/time.md).
    if timescale == 90_000:
        dts_90k = segment.start_90k + decode_time
    else:
        dts_90k = segment.start_90k + (decode_time * 90_000 + timescale // 2) // timescale
    wall_ns = fragment.start_wall_ns + (dts_90k - fragment.start_90k) * 100_000 // 9
    if number == VIDEO:
        assert media.video is not None
        payloads = tuple(from_avcc(data, length_size))
        unit = AccessUnit(media.video.codec, payloads, dts_90k & 0xFFFFFFFF, sync)
    else:
        assert media.audio is not None
        unit = AccessUnit(media.audio.codec, (data,), dts_90k & 0xFFFFFFFF, True)
    return TimedUnit(unit, number, dts_90k, wall_ns)


def _read_fragments(
    fd: int,
    media: SegmentMedia,
    segment: _Segment,
    fragments: Sequence[_Fragment],
    tracks: frozenset[int],
) -> list[list[TimedUnit]]:
    """The units of contiguous fragments (one read), per fragment, in recorded order."""
    first, last = fragments[0], fragments[-1]
    data = pread_exact(fd, last.offset + last.size - first.offset, first.offset)
    scan = scan_fragments(data)
    if len(scan.fragments) != len(fragments) or scan.stop_reason is not None:
        raise ValueError(
            f"segment {segment.id}: {len(scan.fragments)} of {len(fragments)} fragments "
            f"at offset {first.offset} ({scan.stop_reason or 'sizes differ'})"
        )
    out = []
    for row, info in zip(fragments, scan.fragments, strict=True):
        if info.offset != row.offset - first.offset or info.size != row.size:
            raise ValueError(f"segment {segment.id}: fragment {row.seq} is not where indexed")
        units = []
        for sample in samples_of(data, info):
            unit = _unit(
                media, segment, row, sample.track_id, sample.decode_time, sample.is_sync,
                sample.data,
            )  # fmt: skip
            if unit is not None and unit.track in tracks:
                units.append(unit)
        # Audio rides in the fragments of its video: merge by time, video first at a tie.
        units.sort(key=lambda u: (u.dts_90k, u.track))
        out.append(units)
    return out


def _read_keyframe(
    fd: int, media: SegmentMedia, segment: _Segment, fragment: _Fragment
) -> TimedUnit | None:
    """The first video sample of a sync fragment, read from its moof (and no further)."""
    head = pread_exact(fd, min(fragment.size, HEAD_BYTES), fragment.offset)
    if len(head) >= 8 and int.from_bytes(head[:4], "big") + 16 > len(head):
        head = pread_exact(
            fd, min(fragment.size, int.from_bytes(head[:4], "big") + 16), fragment.offset
        )
    info = fragment_header(head)
    for run in info.tracks:
        known = media.tracks.get(run.track_id)
        if known is None or known[0] != VIDEO or not run.sample_count:
            continue
        start, size = run.data_offset_absolute, run.sample_sizes[0]
        if start + size <= len(head):
            data = head[start : start + size]
        else:
            data = pread_exact(fd, size, fragment.offset + start)
        return _unit(media, segment, fragment, run.track_id, run.base_decode_time, True, data)
    return None


# -- playback ------------------------------------------------------------------------------------
class _Stop(Exception):
    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _contiguous(earlier: _Segment, later: _Segment, earlier_end_ns: float) -> bool:
    return later.start_wall_ns - earlier_end_ns <= MAX_CONTIGUOUS_NS


def _flag_last(
    units: list[ReplayUnit], *, section_end: bool, terminal: bool, tracks: Sequence[int]
) -> None:
    """Set E (and T) on the last unit of each track in ``units``."""
    if not (section_end or terminal):
        return
    for track in tracks:
        for i in range(len(units) - 1, -1, -1):
            if units[i].timed.track == track:
                units[i] = dataclasses.replace(units[i], section_end=section_end, terminal=terminal)
                break


class Playback:
    """An async iterator of :data:`ReplayItem` for one :class:`PlayRequest`; after it ends,
    ``end_reason`` says why. ``aclose()`` stops it (and its file) at once."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        recording: RecordingMedia,
        request: PlayRequest,
        *,
        poll_s: float,
        chunk_bytes: int,
    ) -> None:
        self.recording = recording
        self.request = request
        self.end_reason: EndReason | None = None
        self._index = _Index(db, recording.id)
        self._db = db
        self._clock = clock
        self._poll_s = poll_s
        self._chunk_bytes = chunk_bytes
        self._fd: int | None = None
        #: The segment's state came with the last page of rows (no question before a read).
        self._state_known = False
        self._first_read = True
        self._items = self._run()

    def __aiter__(self) -> AsyncIterator[ReplayItem]:
        return self._items

    async def __anext__(self) -> ReplayItem:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()
        if self.end_reason is None:
            self.end_reason = EndReason.CLOSED

    async def _run(self) -> AsyncGenerator[ReplayItem, None]:
        items = self._backward() if self.request.reverse else self._forward()
        try:
            async for item in items:
                yield item
        except _Stop as stop:
            self.end_reason = stop.reason
        finally:
            await items.aclose()
            await self._release()
        if self.end_reason is None:
            self.end_reason = EndReason.FOOTAGE_END

    # -- helpers ---------------------------------------------------------------------------
    async def _q(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db.run(lambda: fn(*args, **kwargs))

    async def _open(self, segment: _Segment, init_size: int) -> SegmentMedia:
        await self._release()
        try:
            self._fd, media = await asyncio.to_thread(_open, segment, init_size)
        except FileNotFoundError:
            raise _Stop(EndReason.DELETED) from None
        except (OSError, ValueError) as exc:
            log.warning("replay: segment %s unreadable: %s", segment.id, exc)
            raise _Stop(EndReason.READ_ERROR) from None
        return media

    async def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # On the loop: closing a read-only regular file writes nothing back, and a
            # thread hop here could be cut short by a cancellation and leak the descriptor.
            os.close(fd)

    async def _page(self, segment: _Segment, after_seq: int, *, reverse: bool = False) -> _Page:
        """The segment's next rows; a segment deleted (or being deleted) ends the play."""
        page: _Page | None = await self._q(
            self._index.page,
            segment,
            after_seq,
            reverse=reverse,
            sync_only=self.request.intra_only,
        )
        if page is None or page.state not in READABLE:
            raise _Stop(EndReason.DELETED)
        self._state_known = True
        return page

    async def _check(self, segment: _Segment) -> None:
        """End the playback if the segment is no longer readable (the first read after a
        page of rows needs no question: the page came with the segment's state)."""
        if self._state_known:
            self._state_known = False
            return
        if await self._q(self._index.state, segment.id) not in READABLE:
            raise _Stop(EndReason.DELETED)

    async def _in_thread(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except FileNotFoundError:
            raise _Stop(EndReason.DELETED) from None
        except (OSError, ValueError) as exc:
            log.warning("replay of %s: %s", self.recording.token, exc)
            raise _Stop(EndReason.READ_ERROR) from None

    def _chunks(self, rows: list[_Fragment]) -> list[list[_Fragment]]:
        """Rows grouped into runs of contiguous bytes of at most ``chunk_bytes``; the
        playback's very first read is one fragment, so that its first unit comes soonest."""
        chunks: list[list[_Fragment]] = []
        size = 0
        for row in rows:
            if self._first_read:
                self._first_read = False
                chunks.append([row])
                size = self._chunk_bytes  # nothing joins the first fragment
            elif (
                chunks
                and chunks[-1][-1].offset + chunks[-1][-1].size == row.offset
                and size + row.size <= self._chunk_bytes
            ):
                chunks[-1].append(row)
                size += row.size
            else:
                chunks.append([row])
                size = row.size
        return chunks

    async def _units(
        self, media: SegmentMedia, segment: _Segment, rows: list[_Fragment]
    ) -> AsyncGenerator[list[TimedUnit], None]:
        """Per row, its units (the keyframe only in intra mode), read a chunk at a time.
        Before each read the segment's row is asked again: an open file stays readable
        after its unlink, so only the index tells that retention took the segment away."""
        assert self._fd is not None
        if self.request.intra_only:
            for n, row in enumerate(rows):
                if VIDEO not in self.request.tracks:
                    yield []
                    continue
                if n % KEYFRAMES_PER_CHECK == 0:
                    await self._check(segment)
                unit = await self._in_thread(_read_keyframe, self._fd, media, segment, row)
                yield [unit] if unit is not None else []
            return
        for chunk in self._chunks(rows):
            await self._check(segment)
            for units in await self._in_thread(
                _read_fragments, self._fd, media, segment, chunk, self.request.tracks
            ):
                yield units

    # -- forward -----------------------------------------------------------------------------
    async def _start_forward(self) -> tuple[_Segment, int] | None:
        """The segment and the fragment sequence number to start from (one database job)."""
        t = self.request.start_ns
        index = self._index

        def work() -> tuple[_Segment, int] | None:
            segment = index.at_or_before(t)
            if segment is not None and (t < segment.end_wall_ns or segment.state == "writing"):
                fragment = index.fragment_at(segment.id, t, True)
                return segment, fragment.seq if fragment is not None else 1
            following = index.after(segment, t)
            return None if following is None else (following, 1)

        return await self._db.run(work)

    async def _forward(self) -> AsyncGenerator[ReplayItem, None]:
        request = self.request
        start = await self._start_forward()
        while start is None:
            if not request.follow:
                return
            await self._clock.sleep(self._poll_s)
            start = await self._start_forward()
        segment, first_seq = start
        last_spaced: int | None = None
        keyframe_first = VIDEO in request.tracks
        while True:
            media: SegmentMedia | None = None
            after = first_seq - 1
            end_ns = segment.end_wall_ns
            while True:
                page = await self._page(segment, after)
                state, end_ns, rows, last_page = page.state, page.end_ns, page.rows, page.last
                if not rows:
                    if state == "writing":  # near-live: the writer adds fragments
                        await self._clock.sleep(self._poll_s)
                        continue
                    break
                if media is None:  # a new segment's init is indexed with its first rows
                    media = await self._open(segment, page.init_size)
                after = rows[-1].seq
                if request.intra_only and request.intra_spacing_ns and rows:
                    kept = []
                    for row in rows:
                        if last_spaced is None or (
                            row.start_wall_ns >= last_spaced + request.intra_spacing_ns
                        ):
                            kept.append(row)
                            last_spaced = row.start_wall_ns
                    rows = kept
                    if not rows:
                        continue
                final = last_page and state == "closed"
                successor: _Segment | None = None
                section_end = terminal = False
                if final:
                    successor = await self._q(self._index.after, segment)
                    section_end = successor is None or not _contiguous(segment, successor, end_ns)
                    # T whenever no more data is there now, also when following (§6.3).
                    terminal = successor is None
                n = 0
                async with contextlib.aclosing(self._units(media, segment, rows)) as per_row:
                    async for units in per_row:
                        items = [ReplayUnit(u, segment.id) for u in units]
                        n += 1
                        if final and n == len(rows):
                            _flag_last(
                                items, section_end=section_end, terminal=terminal,
                                tracks=(VIDEO, AUDIO),
                            )  # fmt: skip
                        for item in items:
                            if request.end_ns is not None and item.timed.wall_ns > request.end_ns:
                                raise _Stop(EndReason.RANGE_END)
                            if keyframe_first:
                                # A section starts at its clean point: audio gathered with
                                # the first GOP but captured before its keyframe is left out.
                                if item.timed.track != VIDEO or not item.clean_point:
                                    continue
                                keyframe_first = False
                            yield item
                if final:
                    break
            following = await self._q(self._index.after, segment)
            while following is None:
                if not request.follow:
                    return
                await self._clock.sleep(self._poll_s)
                following = await self._q(self._index.after, segment)
            if not _contiguous(segment, following, end_ns):
                if request.end_ns is not None and following.start_wall_ns > request.end_ns:
                    raise _Stop(EndReason.RANGE_END)
                yield Gap(int(end_ns), following.start_wall_ns)
                keyframe_first = VIDEO in request.tracks
            segment, first_seq = following, 1

    # -- backward ----------------------------------------------------------------------------
    async def _start_backward(self) -> tuple[_Segment, int] | None:
        """The segment and the sequence number just past the first fragment to read."""
        t = self.request.start_ns
        index = self._index

        def work() -> tuple[_Segment, int] | None:
            segment = index.at_or_before(t)
            if segment is None:
                return None
            fragment = index.fragment_at(segment.id, t, False)
            return None if fragment is None else (segment, fragment.seq + 1)

        return await self._db.run(work)

    async def _backward(self) -> AsyncGenerator[ReplayItem, None]:
        request = self.request
        start = await self._start_backward()
        if start is None:
            return
        segment, before = start
        first_gop = True
        last_spaced: int | None = None
        while True:
            media: SegmentMedia | None = None
            pending: list[_Fragment] = []  # a GOP's fragments gathered backward
            first_in_segment = False
            while not first_in_segment:
                page = await self._page(segment, before, reverse=True)
                rows, last_page = page.rows, page.last
                if not rows:
                    break
                if media is None:
                    media = await self._open(segment, page.init_size)
                before = rows[-1].seq
                for n, row in enumerate(rows):
                    pending.insert(0, row)
                    if not row.sync:
                        continue
                    gop, pending = pending, []
                    if request.intra_only:
                        gop = gop[:1]
                        if last_spaced is not None and (
                            row.start_wall_ns > last_spaced - request.intra_spacing_ns
                        ):
                            continue
                        last_spaced = row.start_wall_ns
                    first_in_segment = last_page and n == len(rows) - 1
                    previous: _Segment | None = None
                    section_start = terminal = False
                    if first_in_segment:
                        previous = await self._q(self._index.before, segment)
                        section_start = previous is None or not _contiguous(
                            previous, segment, previous.end_wall_ns
                        )
                        terminal = previous is None
                    units = [u async for per in self._units(media, segment, gop) for u in per]
                    units = [u for u in units if u.track == VIDEO]
                    if first_gop:
                        units = [u for u in units if u.wall_ns <= request.start_ns]
                    first_gop = False
                    group_end = units[-1].wall_ns if units else None
                    items = [ReplayUnit(u, segment.id, group_end_ns=group_end) for u in units]
                    if items:
                        items[0] = dataclasses.replace(items[0], discontinuity=True)
                    _flag_last(items, section_end=section_start, terminal=terminal, tracks=(VIDEO,))
                    for item in items:
                        yield item
                    if request.end_ns is not None and row.start_wall_ns <= request.end_ns:
                        raise _Stop(EndReason.RANGE_END)
                    if first_in_segment:
                        break
            previous = await self._q(self._index.before, segment)
            if previous is None:
                return
            if not _contiguous(previous, segment, previous.end_wall_ns):
                if request.end_ns is not None and previous.end_wall_ns < request.end_ns:
                    raise _Stop(EndReason.RANGE_END)
                yield Gap(segment.start_wall_ns, previous.end_wall_ns)
            segment, before = previous, 1 << 62


class ReplayReader:
    """Opens playbacks of recordings; one per box, shared by every replay session."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        poll_s: float = 0.25,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        """``poll_s``: how often a playback that reached the end of a segment still being
        written (or, with ``follow``, of the recording) asks the index for more."""
        self._db = db
        self._clock = clock
        self._poll_s = poll_s
        self._chunk_bytes = chunk_bytes

    async def recording(self, token: str) -> RecordingMedia:
        """The recording ``token`` (:class:`~onvif_nvr.errors.NoRecording` if unknown)."""
        return await recording_media(self._db, token)

    async def data_range(self, recording: RecordingMedia) -> tuple[int, int] | None:
        """(first start, last end) of the recording's readable data (wall-clock ns), None
        when it holds none: DESCRIBE's ``a=range:clock=`` and where ``npt`` counts from."""
        index = _Index(self._db, recording.id)

        def work() -> tuple[int, int] | None:
            base = index._segments().where(_S.fragment_count > 0)
            first = index._one(base.order_by(_S.start_wall_ns, _S.id))
            last = index._one(base.order_by(_S.end_wall_ns.desc(), _S.id.desc()))
            if first is None or last is None:
                return None
            return first.start_wall_ns, last.end_wall_ns

        return await self._db.run(work)

    def play(self, recording: RecordingMedia, request: PlayRequest) -> Playback:
        return Playback(
            self._db,
            self._clock,
            recording,
            request,
            poll_s=self._poll_s,
            chunk_bytes=self._chunk_bytes,
        )
