"""What is recorded, answered from the index (RecordingSearch §5: GetRecordingSummary,
GetRecordingInformation, GetMediaAttributes, the search scope and FindRecordings' results).

Never a file: recordings and tracks from their tables, a recording's data range from its
``recording_data`` row, a track's from its ``track_data`` row (the first and last stored
``RecordingHistory/Track/State`` event), clipped to the recording's data (retention may
have deleted the start). Both rows are kept with the segments and events they summarise
(``data_ranges``), so a page of recordings is two reads by primary key: one for the
recordings, one for their tracks. See docs/design/search.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, select

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import InvalidArgument
from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.message import SimpleItem
from onvif_nvr.events.termination import format_utc
from onvif_nvr.recording import search_filter
from onvif_nvr.recording.data_ranges import READABLE
from onvif_nvr.recording.history import (
    AUDIO_ENCODING,
    RECORDING_STATE,
    VIDEO_ENCODING,
)
from onvif_nvr.recording.profile_g import (
    PROFILE_TYPE,
    RECEIVER_TYPE,
    RecordingSource,
    sources_from_json,
)

#: Request times are compared at the millisecond every answer is written with.
MS = 10**6

R, S, T = models.Recording, models.Segment, models.Track
D, TD = models.RecordingData, models.TrackData

#: ``{recording token: IsRecording}`` now (the live RecordingHistory/Recording/State).
LiveState = Callable[[], Mapping[str, bool]]


@dataclasses.dataclass(frozen=True)
class TrackInformation:
    token: str
    track_type: str
    description: str
    data_from_ns: int
    data_to_ns: int


@dataclasses.dataclass(frozen=True)
class RecordingInformation:
    """``tt:RecordingInformation``; only tracks with recorded data are listed."""

    token: str
    source: RecordingSource
    content: str
    earliest_ns: int | None
    latest_ns: int | None
    tracks: tuple[TrackInformation, ...]
    #: Initiated, Recording or Stopped.
    status: str
    id: int = 0

    def node(self) -> search_filter.Node:
        """The structure as the RecordingInformationFilter sees it."""
        N = search_filter.Node
        source = self.source
        children = [
            N("RecordingToken", self.token),
            N(
                "Source",
                children=(
                    N("SourceId", source.source_id),
                    N("Name", source.name),
                    N("Location", source.location),
                    N("Description", source.description),
                    N("Address", source.address),
                ),
            ),
        ]
        if self.earliest_ns is not None and self.latest_ns is not None:
            children += [
                N("EarliestRecording", format_utc(self.earliest_ns)),
                N("LatestRecording", format_utc(self.latest_ns)),
            ]
        children.append(N("Content", self.content))
        children += [
            N(
                "Track",
                children=(
                    N("TrackToken", t.token),
                    N("TrackType", t.track_type),
                    N("Description", t.description),
                    N("DataFrom", format_utc(t.data_from_ns)),
                    N("DataTo", format_utc(t.data_to_ns)),
                ),
            )
            for t in self.tracks
        ]
        children.append(N("RecordingStatus", self.status))
        return N("RecordingInformation", children=tuple(children))


@dataclasses.dataclass(frozen=True)
class RecordingSummary:
    data_from_ns: int | None
    data_until_ns: int | None
    number_recordings: int


@dataclasses.dataclass(frozen=True)
class Scope:
    """``tt:SearchScope``: included recordings and sources (their union; none = all), then
    the RecordingInformationFilter over those."""

    recordings: tuple[str, ...] = ()
    #: (token, type URI) of each IncludedSources entry.
    sources: tuple[tuple[str, str], ...] = ()
    information_filter: search_filter.Expression | None = None


@dataclasses.dataclass(frozen=True)
class VideoAttributes:
    width: int
    height: int
    encoding: str
    framerate: float
    bitrate_kbps: int | None


@dataclasses.dataclass(frozen=True)
class AudioAttributes:
    encoding: str
    sample_rate: int


@dataclasses.dataclass(frozen=True)
class TrackAttributes:
    track: TrackInformation
    video: VideoAttributes | None = None
    audio: AudioAttributes | None = None
    #: A metadata track: it can contain nothing (the box records no metadata).
    metadata: bool = False


@dataclasses.dataclass(frozen=True)
class MediaAttributes:
    recording_token: str
    tracks: tuple[TrackAttributes, ...]
    #: The attributes hold over [from, until]: the segment that holds the time asked.
    from_ns: int
    until_ns: int


def invalid_token(what: str) -> InvalidArgument:
    return InvalidArgument(what, "InvalidToken")


def _item(items: Any, name: str) -> str | None:
    for item in items or ():
        if item and item[0] == name:
            return str(item[1])
    return None


class RecordingSearch:
    """The queries of the Search service (the sessions are in ``search_sessions``)."""

    def __init__(self, db: Database, live: LiveState | None = None) -> None:
        self.db = db
        self._db = db
        self._live = live or dict

    # -- async API ---------------------------------------------------------------------------
    async def summary(self) -> RecordingSummary:
        return await self._db.run(self._read, self._summary)

    async def information(self, token: str) -> RecordingInformation:
        live = dict(self._live())

        def work(conn: Connection) -> list[RecordingInformation]:
            rid = conn.scalar(select(R.id).where(R.token == token))
            return [] if rid is None else self._information(conn, [rid], live)

        found: list[RecordingInformation] = await self._db.run(self._read, work)
        if not found:
            raise invalid_token(f"no recording {token!r}")
        return found[0]

    async def informations(self, ids: Sequence[int]) -> list[RecordingInformation]:
        live = dict(self._live())
        return await self._db.run(self._read, lambda c: self._information(c, list(ids), live))

    async def scope(self, scope: Scope, *, strict: bool) -> list[tuple[int, str]]:
        """(id, token) of each recording in ``scope``, in id order. ``strict``
        (FindRecordings) faults on an unknown recording (ter:InvalidToken) or source
        (ter:InvalidSource); the other searches let such a token match nothing."""
        live = dict(self._live())

        def work(conn: Connection) -> list[tuple[int, str]]:
            ids = self._scope_ids(conn, scope, strict)
            if not ids:
                return []
            if scope.information_filter is None:
                rows = conn.execute(select(R.id, R.token).where(R.id.in_(ids)).order_by(R.id))
                return [(rid, token) for rid, token in rows]
            test = scope.information_filter
            return [(i.id, i.token) for i in self._information(conn, ids, live) if test(i.node())]

        result: list[tuple[int, str]] = await self._db.run(self._read, work)
        return result

    async def media_attributes(self, tokens: Sequence[str], at_ns: int) -> list[MediaAttributes]:
        """Per recording (every one when ``tokens`` is empty) the attributes of its tracks
        at ``at_ns``; a recording with no data then gives none."""
        live = dict(self._live())

        def work(conn: Connection) -> list[MediaAttributes]:
            if tokens:
                found = dict(conn.execute(select(R.token, R.id).where(R.token.in_(tokens))).all())
                for token in tokens:
                    if token not in found:
                        raise invalid_token(f"no recording {token!r}")
                ids = sorted(set(found.values()))
            else:
                ids = list(conn.scalars(select(R.id).order_by(R.id)))
            return self._media_attributes(conn, ids, at_ns, live)

        return await self._db.run(self._read, work)

    # -- worker thread -----------------------------------------------------------------------
    def _read(self, fn: Callable[[Connection], Any]) -> Any:
        with self._db.engine.connect() as conn:
            return fn(conn)

    def _summary(self, conn: Connection) -> RecordingSummary:
        count = select(func.count()).select_from(R).scalar_subquery()
        lo, hi, number = conn.execute(
            select(func.min(D.earliest_ns), func.max(D.latest_ns), count)
        ).one()
        return RecordingSummary(lo, hi, int(number))

    def _information(
        self, conn: Connection, ids: list[int], live: Mapping[str, bool]
    ) -> list[RecordingInformation]:
        rows = conn.execute(
            select(
                R.id,
                R.token,
                R.source_id,
                R.source_name,
                R.location,
                R.description,
                R.address,
                R.content,
                D.earliest_ns.label("first"),
                D.latest_ns.label("last"),
            )
            .select_from(R)
            .outerjoin(D, D.recording_id == R.id)
            .where(R.id.in_(ids))
            .order_by(R.id)
        ).all()
        tracks: dict[int, list[Any]] = {}
        for t in conn.execute(
            select(
                T.recording_id,
                T.token,
                T.track_type,
                T.description,
                TD.first_ns.label("first"),
                TD.last_ns.label("last"),
                TD.last_data.label("data"),
            )
            .select_from(T)
            .outerjoin(TD, and_(TD.recording_id == T.recording_id, TD.track_token == T.token))
            .where(T.recording_id.in_(ids))
            .order_by(T.recording_id, T.id)
        ):
            tracks.setdefault(t.recording_id, []).append(t)
        return [self._one(row, tracks.get(row.id, []), live.get(row.token)) for row in rows]

    @staticmethod
    def _one(row: Any, tracks: list[Any], live: bool | None) -> RecordingInformation:
        earliest, latest = row.first, row.last
        infos = []
        # Data recorded before the history was stored has no Track/State events: it is
        # the recorded stream's video.
        legacy = all(t.first is None for t in tracks)
        for t in tracks:
            if earliest is None or latest is None:
                break
            if t.first is None:
                if not (legacy and t.track_type == "Video"):
                    continue
                start, end = earliest, latest
            else:
                start = max(t.first, earliest)
                present = _item(t.data, "IsDataPresent") == "true"
                end = latest if present else min(t.last, latest)
            if start <= end:
                infos.append(TrackInformation(t.token, t.track_type, t.description, start, end))
        had_data = earliest is not None or any(t.first is not None for t in tracks)
        status = "Recording" if live else ("Stopped" if had_data else "Initiated")
        return RecordingInformation(
            token=row.token,
            source=RecordingSource(
                row.source_id, row.source_name, row.location, row.description, row.address
            ),
            content=row.content,
            earliest_ns=earliest,
            latest_ns=latest,
            tracks=tuple(infos),
            status=status,
            id=row.id,
        )

    def _scope_ids(self, conn: Connection, scope: Scope, strict: bool) -> list[int]:
        if not scope.recordings and not scope.sources:
            return list(conn.scalars(select(R.id).order_by(R.id)))
        ids: set[int] = set()
        if scope.recordings:
            found = dict(
                conn.execute(select(R.token, R.id).where(R.token.in_(scope.recordings))).all()
            )
            missing = [t for t in scope.recordings if t not in found]
            if missing and strict:
                raise invalid_token(f"no recording {missing[0]!r}")
            ids.update(found.values())
        if scope.sources:
            ids.update(self._source_recordings(conn, scope.sources, strict))
        return sorted(ids)

    @staticmethod
    def _source_recordings(
        conn: Connection, sources: Iterable[tuple[str, str]], strict: bool
    ) -> set[int]:
        """Recordings fed by the receivers named (a job's source, or the recording a camera
        command made for the receiver; a job on one of its media profiles records it too)
        and those of the jobs naming the media profiles named. A profile is never an
        unknown source: whether it exists is the Media services' to say, so one no job names
        matches nothing."""
        sources = list(sources)
        wanted = [token for token, kind in sources if kind == RECEIVER_TYPE]
        profiles = {token for token, kind in sources if kind == PROFILE_TYPE}
        cameras = dict(
            conn.execute(
                select(models.Camera.token, models.Camera.id).where(models.Camera.token.in_(wanted))
            ).all()
        )
        for token, kind in sources:
            if strict and kind != PROFILE_TYPE and (kind != RECEIVER_TYPE or token not in cameras):
                raise InvalidArgument(f"no source {token!r} of type {kind}", "InvalidSource")
        if not cameras and not profiles:
            return set()
        ids = set(conn.scalars(select(R.id).where(R.camera_id.in_(list(cameras.values())))))
        for recording_id, job_sources in conn.execute(
            select(models.RecordingJob.recording_id, models.RecordingJob.sources)
        ):
            if any(
                s.feed in cameras or (s.type == PROFILE_TYPE and s.token in profiles)
                for s in sources_from_json(job_sources)
            ):
                ids.add(recording_id)
        return ids

    def _media_attributes(
        self, conn: Connection, ids: list[int], at_ns: int, live: Mapping[str, bool]
    ) -> list[MediaAttributes]:
        out = []
        # The time as written (ms): it names that whole millisecond.
        at_end = at_ns - at_ns % MS + MS - 1
        for info in self._information(conn, ids, live):
            segment = conn.execute(
                select(S.id, S.start_wall_ns, S.end_wall_ns, S.tracks, S.size, S.init_size)
                .where(S.recording_id == info.id, S.state.in_(READABLE), S.start_wall_ns <= at_end)
                .order_by(S.start_wall_ns.desc())
                .limit(1)
            ).first()
            if segment is None or segment.end_wall_ns < at_ns - at_ns % MS:
                continue
            samples, duration_90k = conn.execute(
                select(
                    func.coalesce(func.sum(models.Fragment.sample_count), 0),
                    func.coalesce(func.sum(models.Fragment.duration_90k), 0),
                ).where(models.Fragment.segment_id == segment.id)
            ).one()
            media = list(segment.tracks or [])
            video = media[0] if media else None
            audio = media[1] if len(media) > 1 else None
            seconds = duration_90k / 90_000
            tracks = []
            for track in info.tracks:
                if not track.data_from_ns - MS < at_ns <= track.data_to_ns + MS:
                    continue
                if track.track_type == "Video" and video is not None:
                    codec = str(video.get("codec", ""))
                    tracks.append(
                        TrackAttributes(
                            track,
                            video=VideoAttributes(
                                width=int(video.get("width") or 0),
                                height=int(video.get("height") or 0),
                                encoding=VIDEO_ENCODING.get(codec, codec),
                                framerate=round(samples / seconds, 3) if seconds else 0.0,
                                bitrate_kbps=(
                                    round((segment.size - segment.init_size) * 8 / seconds / 1000)
                                    if seconds
                                    else None
                                ),
                            ),
                        )
                    )
                elif track.track_type == "Audio" and audio is not None:
                    codec = str(audio.get("codec", ""))
                    tracks.append(
                        TrackAttributes(
                            track,
                            audio=AudioAttributes(
                                AUDIO_ENCODING.get(codec, codec.lower()),
                                int(audio.get("sample_rate") or 0),
                            ),
                        )
                    )
                elif track.track_type == "Metadata":
                    tracks.append(TrackAttributes(track, metadata=True))
            out.append(
                MediaAttributes(
                    info.token, tuple(tracks), segment.start_wall_ns, segment.end_wall_ns
                )
            )
        return out


def live_from(bus: EventBus) -> LiveState:
    """The live IsRecording of every recording, from the bus's RecordingHistory property."""

    def read() -> dict[str, bool]:
        out = {}
        for message in bus.properties():
            if message.topic != RECORDING_STATE:
                continue
            token = next((i.value for i in message.source if isinstance(i, SimpleItem)), None)
            value = next(
                (
                    i.value
                    for i in message.data
                    if isinstance(i, SimpleItem) and i.name == "IsRecording"
                ),
                "false",
            )
            if token is not None:
                out[token] = value == "true"
        return out

    return read
