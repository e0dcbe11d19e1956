"""What each recording and track holds, in short (``recording_data``, ``track_data``,
migration 0009), kept in the same transactions as the rows they summarise so that the
Search service reads one row per recording and per track instead of probing ``segments``
and ``events`` (docs/design/search.md).

* ``recording_data``: the first start and the last end of a recording's readable segments
  (``writing``, ``closed``). A new segment widens it, indexed fragments move its end, a
  segment marked ``deleting`` or dropped makes it probe the segments again (two index
  probes: ``ix_segments_recording_start`` / ``_end``); None when nothing readable is left.
* ``track_data``: per (recording, track) the time of the first stored
  ``RecordingHistory/Track/State`` event and the last one with its data, both by
  ``(utc_ns, id)`` as the events are ordered: a new event (its id is the largest) becomes
  the first only if strictly earlier, the last if not earlier.

Every function takes the connection of the caller's transaction. :func:`rebuild` computes
both tables from scratch (what migration 0009 does; the bench after a raw load, the tests to
check the maintained rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, bindparam, text

TRACK_STATE_TOPIC = "tns1:RecordingHistory/Track/State"
#: Segment states whose data can be read (a ``deleting`` segment is on its way out).
READABLE = ("writing", "closed")
_READABLE = "('writing', 'closed')"

_FIRST = (
    "(SELECT s.start_wall_ns FROM segments s WHERE s.recording_id = {rid} "
    f"AND s.state IN {_READABLE} ORDER BY s.start_wall_ns LIMIT 1)"
)
_LAST = (
    "(SELECT s.end_wall_ns FROM segments s WHERE s.recording_id = {rid} "
    f"AND s.state IN {_READABLE} ORDER BY s.end_wall_ns DESC LIMIT 1)"
)

#: A new segment (state ``writing``, end = start) of recording ``:rid``.
_SEGMENT_ADDED = text(
    "INSERT INTO recording_data (recording_id, earliest_ns, latest_ns) "
    "VALUES (:rid, :start, :start) "
    "ON CONFLICT (recording_id) DO UPDATE SET "
    "earliest_ns = CASE WHEN recording_data.earliest_ns IS NULL "
    "OR excluded.earliest_ns < recording_data.earliest_ns "
    "THEN excluded.earliest_ns ELSE recording_data.earliest_ns END, "
    "latest_ns = CASE WHEN recording_data.latest_ns IS NULL "
    "OR excluded.latest_ns > recording_data.latest_ns "
    "THEN excluded.latest_ns ELSE recording_data.latest_ns END"
)
#: Segment ``:sid``'s data now ends at ``:end`` (executemany, with the segment updates).
_SEGMENT_EXTENDED = text(
    "UPDATE recording_data SET latest_ns = :end "
    "WHERE recording_id = (SELECT recording_id FROM segments WHERE id = :sid) "
    "AND (latest_ns IS NULL OR latest_ns < :end)"
)
#: Recording ``:rid`` lost a segment: probe what is left.
_RECOMPUTE = text(
    "UPDATE recording_data SET "
    f"earliest_ns = {_FIRST.format(rid='recording_data.recording_id')}, "
    f"latest_ns = {_LAST.format(rid='recording_data.recording_id')} "
    "WHERE recording_id = :rid"
)
_TRACK_EVENT = text(
    "INSERT INTO track_data (recording_id, track_token, first_ns, last_ns, last_data) "
    "VALUES (:rid, :track, :utc, :utc, :data) "
    "ON CONFLICT (recording_id, track_token) DO UPDATE SET "
    "first_ns = CASE WHEN excluded.first_ns < track_data.first_ns "
    "THEN excluded.first_ns ELSE track_data.first_ns END, "
    "last_data = CASE WHEN excluded.last_ns >= track_data.last_ns "
    "THEN excluded.last_data ELSE track_data.last_data END, "
    "last_ns = CASE WHEN excluded.last_ns >= track_data.last_ns "
    "THEN excluded.last_ns ELSE track_data.last_ns END"
).bindparams(bindparam("data", type_=JSON))

_TRACK_PROBE = (
    "(SELECT e.{column} FROM events e WHERE e.recording_id = p.recording_id "
    "AND e.topic = :topic AND e.track_token = p.track_token ORDER BY e.utc_ns {order}, "
    "e.id {order} LIMIT 1)"
)
REBUILD = (
    text("DELETE FROM recording_data"),
    text("DELETE FROM track_data"),
    text(
        "INSERT INTO recording_data (recording_id, earliest_ns, latest_ns) "
        f"SELECT r.id, {_FIRST.format(rid='r.id')}, {_LAST.format(rid='r.id')} "
        "FROM recordings r"
    ),
    text(
        "INSERT INTO track_data (recording_id, track_token, first_ns, last_ns, last_data) "
        "SELECT p.recording_id, p.track_token, "
        + _TRACK_PROBE.format(column="utc_ns", order="ASC")
        + ", "
        + _TRACK_PROBE.format(column="utc_ns", order="DESC")
        + ", "
        + _TRACK_PROBE.format(column="data", order="DESC")
        + " FROM (SELECT DISTINCT recording_id, track_token FROM events WHERE topic = :topic) p"
    ).bindparams(topic=TRACK_STATE_TOPIC),
)


def segment_added(conn: Connection, recording_id: int | None, start_wall_ns: int) -> None:
    if recording_id is not None:
        conn.execute(_SEGMENT_ADDED, {"rid": recording_id, "start": start_wall_ns})


def segments_extended(conn: Connection, ends: Sequence[dict[str, Any]]) -> None:
    """``ends``: ``{"sid": segment id, "end": its new end}`` each (other keys ignored)."""
    if ends:
        conn.execute(_SEGMENT_EXTENDED, [{"sid": e["sid"], "end": e["end"]} for e in ends])


def segment_removed(conn: Connection, recording_id: int | None) -> None:
    """A segment of ``recording_id`` stopped being readable (deleting, dropped)."""
    if recording_id is not None:
        conn.execute(_RECOMPUTE, {"rid": recording_id})


def events_added(conn: Connection, events: Iterable[dict[str, Any]]) -> None:
    """``events`` as inserted into ``events``, in insertion (id) order."""
    rows = [
        {
            "rid": e["recording_id"],
            "track": e["track_token"],
            "utc": e["utc_ns"],
            "data": e["data"],
        }
        for e in events
        if e["topic"] == TRACK_STATE_TOPIC
    ]
    if rows:
        conn.execute(_TRACK_EVENT, rows)


def rebuild(conn: Connection) -> None:
    """Both tables from ``segments`` and ``events``, from scratch."""
    for statement in REBUILD:
        conn.execute(statement)
