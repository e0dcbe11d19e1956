"""FindEvents over the index (RecordingSearch §5: recording events, their order, the
virtual start-state events), one page at a time.

A scan walks the ``events`` table in (utc_ns, id) order — descending for a backward
search — from a keyset cursor, so a page costs an index range read of about the page's size
whatever the depth, and no result is ever returned twice. The driving index is chosen by the
scope and the topic filter (docs/design/search.md): a few recordings → one range per
recording on ``ix_events_recording_utc``; a topic filter → one range per topic on
``ix_events_topic_utc``; otherwise ``ix_events_utc``. Ranges are merged on (utc_ns, id).
Conditions that must not steer the plan are written so that no index can serve them.
The message content filter (ItemFilter) runs on each row read.

Start state (IncludeStartState): for every recording in scope, one virtual event per
property (Recording/State; Track/State of every track; Video/AudioParameters of tracks that
have them) with the value it had at the search's start — the last stored value before the
window, or "no data" — at the start point, StartStateEvent true. A backward search also
ends with the state at its end point, in the reverse order of a forward search's head, so
that without its head the backward list is exactly the forward list reversed.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.events.filters import EventFilter
from onvif_nvr.events.message import ElementItem, Item, Message, PropertyOperation, SimpleItem
from onvif_nvr.events.topics import Topic, TopicCatalog
from onvif_nvr.recording.history import (
    AUDIO_PARAMETERS,
    RECORDING_STATE,
    TRACK_STATE,
    VIDEO_PARAMETERS,
)
from onvif_nvr.recording.search import MS

E = models.Event
#: Up to this many recordings in scope, each gets its own range on its own index.
PER_RECORDING_MAX = 16
#: Rows one fetch reads at most when the content filter rejects most of them.
SCAN_BUDGET = 20_000
#: Rows read per statement when a content filter may reject rows.
FILTERED_PAGE = 500


@dataclasses.dataclass(frozen=True)
class FoundEvent:
    """A ``tt:FindEventResult``."""

    recording_token: str
    track_token: str
    message: Message
    start_state: bool = False

    @property
    def utc_ns(self) -> int:
        return self.message.utc_ns


def _items(value: Any) -> tuple[Item, ...]:
    out: list[Item] = []
    for item in value or ():
        if len(item) > 2 and item[2] == "element":
            out.append(ElementItem(str(item[0]), str(item[1]).encode()))
        else:
            out.append(SimpleItem(str(item[0]), str(item[1])))
    return tuple(out)


def _message(row: Any, *, utc_ns: int | None = None, start_state: bool = False) -> Message:
    operation = PropertyOperation.INITIALIZED if start_state else None
    if not start_state and row.operation:
        operation = PropertyOperation(row.operation)
    return Message(
        topic=Topic.onvif(row.topic),
        utc_ns=row.utc_ns if utc_ns is None else utc_ns,
        source=_items(row.source),
        data=_items(row.data),
        operation=operation,
    )


class EventScan:
    """One FindEvents session's search: ``fetch`` the next results, in order."""

    def __init__(
        self,
        db: Database,
        catalog: TopicCatalog,
        recordings: Sequence[tuple[int, str]],
        *,
        all_recordings: bool,
        start_ns: int,
        end_ns: int | None,
        event_filter: EventFilter,
        include_start_state: bool,
    ) -> None:
        self._db = db
        self.recordings = list(recordings)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.forward = end_ns is None or end_ns >= start_ns
        lo, hi = (start_ns, end_ns) if self.forward else (end_ns, start_ns)
        assert lo is not None
        # Times are written with milliseconds: a point names its whole millisecond.
        self.lo_ns = lo - lo % MS
        self.hi_ns = None if hi is None else hi - hi % MS + MS - 1
        self.filter = event_filter
        self.include_start_state = include_start_state
        matching = [d.topic for d in catalog if event_filter.matches_topic(d.topic)]
        self.topics: list[str] | None = (
            None if len(matching) == len(catalog) else sorted(t.text() for t in matching)
        )
        self._content = bool(event_filter.contents)
        ids = [rid for rid, _ in self.recordings]
        self._tokens = dict(self.recordings)
        self._streams = self._plan(None if all_recordings else ids)
        self._cursor: tuple[int, int] | None = None
        self._started = False
        self._scanned = not self._streams
        self._head: list[FoundEvent] = []
        self._tail: list[FoundEvent] = []
        #: The time of the last result handed out (EndSearch's "point reached").
        self.reached_ns = start_ns
        self.done = False

    def _plan(self, ids: list[int] | None) -> list[list[Any]]:
        """One list of WHERE terms per index range to read."""
        if ids == [] or self.topics == []:
            return []
        # ``+ 0`` / ``|| ''``: the same test, but not one an index can serve (the planner
        # must drive by the range's own index and merely filter by these).
        recording_in = None if ids is None else (E.recording_id + 0).in_(ids)
        topic_in = None if self.topics is None else (E.topic + "").in_(self.topics)
        if ids is not None and len(ids) <= PER_RECORDING_MAX:
            return [
                [E.recording_id == rid, *([topic_in] if topic_in is not None else [])]
                for rid in ids
            ]
        if self.topics is not None:
            return [
                [E.topic == topic, *([recording_in] if recording_in is not None else [])]
                for topic in self.topics
            ]
        return [[recording_in] if recording_in is not None else []]

    async def fetch(self, limit: int) -> list[FoundEvent]:
        """Up to ``limit`` further results (fewer when the scan budget ran out first;
        ``done`` says when there will be no more)."""
        if self.done or limit <= 0:
            return []
        found = await self._db.run(self._fetch, limit)
        if found:
            self.reached_ns = found[-1].utc_ns
        return found

    # -- worker thread -----------------------------------------------------------------------
    def _fetch(self, limit: int) -> list[FoundEvent]:
        with self._db.engine.connect() as conn:
            out: list[FoundEvent] = []
            if not self._started:
                self._started = True
                if self.include_start_state:
                    self._start_state(conn)
            while self._head and len(out) < limit:
                out.append(self._head.pop(0))
            scanned = 0
            while not self._scanned and len(out) < limit and scanned < SCAN_BUDGET:
                want = FILTERED_PAGE if self._content else limit - len(out)
                rows = self._page(conn, want)
                scanned += len(rows)
                consumed = 0
                for row in rows:
                    consumed += 1
                    self._cursor = (row.utc_ns, row.id)
                    message = _message(row)
                    if self.filter.matches(message):
                        out.append(
                            FoundEvent(
                                self._tokens.get(row.recording_id, ""), row.track_token, message
                            )
                        )
                        if len(out) >= limit:
                            break
                if len(rows) < want and consumed == len(rows):
                    self._scanned = True
            if self._scanned:
                while self._tail and len(out) < limit:
                    out.append(self._tail.pop(0))
                self.done = not self._head and not self._tail
            return out

    def _page(self, conn: Connection, want: int) -> list[Any]:
        """The next ``want`` rows after the cursor, merged over the plan's ranges."""
        columns = (
            E.id,
            E.recording_id,
            E.track_token,
            E.topic,
            E.utc_ns,
            E.operation,
            E.source,
            E.data,
        )
        terms: list[Any] = []
        if self.forward:
            terms.append(E.utc_ns >= self.lo_ns)
            if self.hi_ns is not None:
                terms.append(E.utc_ns <= self.hi_ns)
            if self._cursor is not None:
                at, last_id = self._cursor
                terms += [E.utc_ns >= at, or_(E.utc_ns > at, E.id > last_id)]
            order: tuple[Any, ...] = (E.utc_ns, E.id)
        else:
            assert self.hi_ns is not None
            terms += [E.utc_ns >= self.lo_ns, E.utc_ns <= self.hi_ns]
            if self._cursor is not None:
                at, last_id = self._cursor
                terms += [E.utc_ns <= at, or_(E.utc_ns < at, E.id < last_id)]
            order = (E.utc_ns.desc(), E.id.desc())
        pages = [
            conn.execute(
                select(*columns).where(and_(*terms, *stream)).order_by(*order).limit(want)
            ).all()
            for stream in self._streams
        ]
        if len(pages) == 1:
            return list(pages[0])
        sign = 1 if self.forward else -1
        merged = heapq.merge(*pages, key=lambda r: (sign * r.utc_ns, sign * r.id))
        return [row for _, row in zip(range(want), merged, strict=False)]

    def _start_state(self, conn: Connection) -> None:
        """The virtual events: at the start point (and, backward, at the end point)."""
        if self.forward:
            self._head = self._state_at(conn, self.lo_ns, self.start_ns, inclusive=False)
        else:
            assert self.end_ns is not None and self.hi_ns is not None
            self._head = self._state_at(conn, self.hi_ns, self.start_ns, inclusive=True)
            self._tail = self._state_at(conn, self.lo_ns, self.end_ns, inclusive=False)[::-1]

    def _state_at(
        self, conn: Connection, bound_ns: int, at_ns: int, *, inclusive: bool
    ) -> list[FoundEvent]:
        out = []
        tracks: dict[int, list[tuple[str, str]]] = {}
        ids = [rid for rid, _ in self.recordings]
        for rid, token, kind in conn.execute(
            select(models.Track.recording_id, models.Track.token, models.Track.track_type)
            .where(models.Track.recording_id.in_(ids))
            .order_by(models.Track.recording_id, models.Track.id)
        ):
            tracks.setdefault(rid, []).append((token, kind))
        for rid, recording in self.recordings:
            properties: list[tuple[Topic, str]] = [(RECORDING_STATE, "")]
            properties += [(TRACK_STATE, token) for token, _ in tracks.get(rid, [])]
            for token, kind in tracks.get(rid, []):
                if kind == "Video":
                    properties.append((VIDEO_PARAMETERS, token))
                elif kind == "Audio":
                    properties.append((AUDIO_PARAMETERS, token))
            for topic, track in properties:
                if not self.filter.matches_topic(topic):
                    continue
                row = conn.execute(
                    select(E.topic, E.utc_ns, E.operation, E.source, E.data)
                    .where(
                        E.recording_id == rid,
                        E.topic == topic.text(),
                        E.track_token == track,
                        E.utc_ns <= bound_ns if inclusive else E.utc_ns < bound_ns,
                    )
                    .order_by(E.utc_ns.desc(), E.id.desc())
                    .limit(1)
                ).first()
                if row is not None:
                    message = _message(row, utc_ns=at_ns, start_state=True)
                elif topic == RECORDING_STATE:
                    message = Message(
                        topic,
                        at_ns,
                        (SimpleItem("RecordingToken", recording),),
                        data=(SimpleItem("IsRecording", "false"),),
                        operation=PropertyOperation.INITIALIZED,
                    )
                elif topic == TRACK_STATE:
                    message = Message(
                        topic,
                        at_ns,
                        (SimpleItem("RecordingToken", recording), SimpleItem("Track", track)),
                        data=(SimpleItem("IsDataPresent", "false"),),
                        operation=PropertyOperation.INITIALIZED,
                    )
                else:
                    continue  # parameters never recorded: no value to state
                if self.filter.matches(message):
                    out.append(FoundEvent(recording, track, message, start_state=True))
        return out

    def end_point(self, now_ns: int) -> int:
        """EndSearch's answer: the point reached; the end point once the search is done
        (an open-ended one: now)."""
        if self.done:
            return now_ns if self.end_ns is None else self.end_ns
        return self.reached_ns
