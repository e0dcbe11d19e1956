"""The index reads behind the timeline and the event list: keyset and index-range queries
only (tests/test_api.py checks their plans), run on the database worker thread."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, text

#: Spans of the recordings that start inside the window (the primary key, one range per
#: recording). Spans are kept with the segments (recording/spans.py): about one row per
#: continuous stretch, where the segments were one per minute.
TIMELINE_INSIDE = text(
    "SELECT recording_id, start_ns, end_ns FROM recording_spans "
    "WHERE recording_id IN :ids AND start_ns >= :start AND start_ns < :end "
    "ORDER BY recording_id, start_ns"
).bindparams(bindparam("ids", expanding=True))
#: Per recording the end of the last span that starts before the window (one probe each):
#: spans are disjoint, so only that one may reach into the window.
TIMELINE_BEFORE = text(
    "SELECT r.id, (SELECT p.end_ns FROM recording_spans p WHERE p.recording_id = r.id "
    "AND p.start_ns < :start ORDER BY p.start_ns DESC LIMIT 1) AS end_ns "
    "FROM recordings r WHERE r.id IN :ids"
).bindparams(bindparam("ids", expanding=True))


def merge(spans: Sequence[tuple[int, int]], resolution_ns: int) -> list[tuple[int, int]]:
    """Sorted ``spans`` merged where they overlap or the gap is under ``resolution_ns``."""
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if out and start - out[-1][1] < resolution_ns:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def recorded_ranges(
    conn: Connection,
    recording_ids: Sequence[int],
    start_ns: int,
    end_ns: int,
    resolution_ns: int,
) -> dict[int, list[tuple[int, int]]]:
    """Per recording id: its recorded time in [start_ns, end_ns), clipped, merged at
    ``resolution_ns`` (gaps shorter than that do not show, nor any shorter than
    ``recording.spans.JOIN_NS``)."""
    spans: dict[int, list[tuple[int, int]]] = {rid: [] for rid in recording_ids}
    if not recording_ids:
        return spans
    params = {"ids": list(recording_ids), "start": start_ns, "end": end_ns}
    for rid, e in conn.execute(TIMELINE_BEFORE, params).all():
        if e is not None and e > start_ns:
            spans[rid].append((start_ns, min(e, end_ns)))
    # In (recording, start) order after the span reaching in: sorted already. Spans are
    # disjoint and at least JOIN_NS apart, so at a resolution up to that, merging is a copy.
    for rid, s, e in conn.execute(TIMELINE_INSIDE, params).all():
        spans[rid].append((s, e if e < end_ns else end_ns))
    return {rid: merge(items, resolution_ns) for rid, items in spans.items()}


@dataclasses.dataclass(frozen=True)
class EventRow:
    id: int
    utc_ns: int
    recording_id: int | None
    track_token: str | None
    topic: str
    operation: str | None
    source: Any
    data: Any


def events_page(
    conn: Connection,
    *,
    recording_ids: Sequence[int] | None,
    topic: str | None,
    start_ns: int,
    end_ns: int,
    after: tuple[int, int] | None,
    limit: int,
) -> list[EventRow]:
    """Stored events in ``[start_ns, end_ns)`` ordered by (utc_ns, id), the page after the
    cursor ``after`` = (utc_ns, id) of the last one seen: keyset paging, so pages never
    repeat or skip rows as new events arrive."""
    where = ["utc_ns >= :start", "utc_ns < :end"]
    params: dict[str, Any] = {"start": start_ns, "end": end_ns, "limit": limit}
    if after is not None:
        where.append("(utc_ns > :after_utc OR (utc_ns = :after_utc AND id > :after_id))")
        params["after_utc"], params["after_id"] = after
    if recording_ids is not None:
        where.append("recording_id IN :ids")
        params["ids"] = list(recording_ids)
    if topic is not None:
        where.append("topic = :topic")
        params["topic"] = topic
    query = text(
        "SELECT id, utc_ns, recording_id, track_token, topic, operation, source, data "
        f"FROM events WHERE {' AND '.join(where)} ORDER BY utc_ns, id LIMIT :limit"
    )
    if recording_ids is not None:
        query = query.bindparams(bindparam("ids", expanding=True))
    return [EventRow(*row) for row in conn.execute(query, params)]
