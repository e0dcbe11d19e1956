"""Each recording's contiguous recorded stretches (``recording_spans``, migration 0011), kept
in the same transactions as the segment rows they summarise, so that the timeline reads
about one row per recording per continuous stretch instead of one per segment
(docs/design/storage.md, "Recording spans").

A span is a maximal union of a recording's readable segments (``writing``, ``closed``) in
which no gap reaches :data:`JOIN_NS`: a rollover's frame-sized seam does not split a span, a
camera outage, a restart or a full disk does. Spans of one recording are disjoint, separated
by at least ``JOIN_NS``, and each segment lies inside exactly one of them. The union does not
depend on the order segments are looked at, which is what makes the edits below local:

* a segment added (or made readable again) joins the spans within ``JOIN_NS`` of it: the
  span before it and those starting inside it (two index probes);
* a segment's end moving (fragments indexed) moves the end of the span holding it, in one
  executemany statement; only when the new end comes within ``JOIN_NS`` of the next span
  (one probe per segment, rare: overlapping writers) are the spans joined;
* a segment leaving (``deleting``, dropped) is cut from its span: when it has the latest
  start in the span, the span ends at the latest end of the rest (the rest was joined before
  it, so it stays one span); when it has the earliest end, symmetrically, the span starts at
  the earliest start of the rest — retention's case; otherwise (the middle of a span) the
  span is recomputed from its segments.

Every function takes the connection of the caller's transaction. :func:`rebuild` computes
the table from scratch (what migration 0011 does; the bench after a raw load, the tests to
check the kept rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, text

#: Two pieces of a recording separated by less than this (ns) are one span. The timeline
#: cannot show a gap shorter than this, whatever its resolution.
JOIN_NS = 10**9
_READABLE = "('writing', 'closed')"

#: Spans by chain-merging the readable segments in start order: a segment starts a new span
#: when it begins ``JOIN_NS`` or more after the latest end before it (window functions).
_FROM_SEGMENTS = (
    "WITH ordered AS ("
    " SELECT id, recording_id, start_wall_ns AS s, end_wall_ns AS e, "
    " MAX(end_wall_ns) OVER (PARTITION BY recording_id ORDER BY start_wall_ns, id "
    " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_e "
    f" FROM segments WHERE recording_id IS NOT NULL AND state IN {_READABLE}{{where}}), "
    "flagged AS ("
    " SELECT recording_id, s, e, SUM(CASE WHEN before_e IS NULL OR s - before_e >= {join} "
    " THEN 1 ELSE 0 END) OVER (PARTITION BY recording_id ORDER BY s, id "
    " ROWS UNBOUNDED PRECEDING) AS piece FROM ordered) "
    "SELECT recording_id, MIN(s), MAX(e) FROM flagged GROUP BY recording_id, piece"
)
REBUILD = (
    text("DELETE FROM recording_spans"),
    text(
        "INSERT INTO recording_spans (recording_id, start_ns, end_ns) "
        + _FROM_SEGMENTS.format(where="", join=JOIN_NS)
    ),
)

#: The span holding (or last before) time ``:at`` of recording ``:rid``.
_AT = text(
    "SELECT start_ns, end_ns FROM recording_spans WHERE recording_id = :rid "
    "AND start_ns <= :at ORDER BY start_ns DESC LIMIT 1"
)
#: Spans of ``:rid`` starting in (``:lo``, ``:hi``).
_STARTING_IN = text(
    "SELECT start_ns, end_ns FROM recording_spans WHERE recording_id = :rid "
    "AND start_ns > :lo AND start_ns < :hi ORDER BY start_ns"
)
_INSERT = text(
    "INSERT INTO recording_spans (recording_id, start_ns, end_ns) VALUES (:rid, :start, :end)"
)
_SET = text(
    "UPDATE recording_spans SET start_ns = :start, end_ns = :end "
    "WHERE recording_id = :rid AND start_ns = :old"
)
_DELETE_ONE = text("DELETE FROM recording_spans WHERE recording_id = :rid AND start_ns = :start")
_DELETE_RANGE = text(
    "DELETE FROM recording_spans WHERE recording_id = :rid AND start_ns >= :lo AND start_ns <= :hi"
)
_SEGMENT = text(
    "SELECT recording_id, state, start_wall_ns, end_wall_ns FROM segments WHERE id = :sid"
)
#: Segment ``:sid``'s data now ends at ``:end``: so does its span, if that ended before.
_EXTENDED = text(
    "UPDATE recording_spans SET end_ns = :end "
    "WHERE recording_id = (SELECT recording_id FROM segments WHERE id = :sid "
    f"AND state IN {_READABLE}) "
    "AND start_ns = (SELECT p.start_ns FROM recording_spans p "
    "WHERE p.recording_id = (SELECT recording_id FROM segments WHERE id = :sid) "
    "AND p.start_ns <= (SELECT start_wall_ns FROM segments WHERE id = :sid) "
    "ORDER BY p.start_ns DESC LIMIT 1) "
    "AND end_ns < :end"
)
#: The extended segments that now come within JOIN_NS of a later span.
_REACHING = text(
    "SELECT s.recording_id, s.start_wall_ns, s.end_wall_ns FROM segments s "
    f"WHERE s.id IN :sids AND s.state IN {_READABLE} AND s.recording_id IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM recording_spans n WHERE n.recording_id = s.recording_id "
    "AND n.start_ns > s.start_wall_ns AND n.start_ns < s.end_wall_ns + :join)"
).bindparams(bindparam("sids", expanding=True))
#: Another readable segment of ``:rid`` than ``:sid`` starting in (``:lo``, ``:hi``].
_OTHER_STARTING_AFTER = text(
    "SELECT 1 FROM segments WHERE recording_id = :rid AND start_wall_ns > :lo "
    f"AND start_wall_ns <= :hi AND state IN {_READABLE} AND id != :sid LIMIT 1"
)
#: Another readable segment of ``:rid`` than ``:sid`` ending in [``:lo``, ``:hi``).
_OTHER_ENDING_BEFORE = text(
    "SELECT 1 FROM segments WHERE recording_id = :rid AND end_wall_ns >= :lo "
    f"AND end_wall_ns < :hi AND state IN {_READABLE} AND id != :sid LIMIT 1"
)
#: The latest end among the other readable segments ending in [``:lo``, ``:hi``].
_LAST_END = text(
    "SELECT end_wall_ns FROM segments WHERE recording_id = :rid AND end_wall_ns >= :lo "
    f"AND end_wall_ns <= :hi AND state IN {_READABLE} AND id != :sid "
    "ORDER BY end_wall_ns DESC LIMIT 1"
)
#: The earliest start among the other readable segments starting in [``:lo``, ``:hi``].
_FIRST_START = text(
    "SELECT start_wall_ns FROM segments WHERE recording_id = :rid AND start_wall_ns >= :lo "
    f"AND start_wall_ns <= :hi AND state IN {_READABLE} AND id != :sid "
    "ORDER BY start_wall_ns LIMIT 1"
)
#: The other readable segments starting in [``:lo``, ``:hi``], in start order.
_PIECES = text(
    "SELECT start_wall_ns, end_wall_ns FROM segments WHERE recording_id = :rid "
    f"AND start_wall_ns >= :lo AND start_wall_ns <= :hi AND state IN {_READABLE} "
    "AND id != :sid ORDER BY start_wall_ns"
)


def join(pieces: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``pieces`` sorted by start, joined where the gap is under :data:`JOIN_NS` (what
    the table holds for a recording's readable segments)."""
    out: list[tuple[int, int]] = []
    for start, end in pieces:
        if out and start - out[-1][1] < JOIN_NS:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _add(conn: Connection, rid: int, start: int, end: int) -> None:
    """Readable data [start, end] of recording ``rid`` joins the spans near it."""
    before = conn.execute(_AT, {"rid": rid, "at": start}).first()
    after = conn.execute(_STARTING_IN, {"rid": rid, "lo": start, "hi": end + JOIN_NS}).all()
    joined = list(after)
    if before is not None and start - before[1] < JOIN_NS:
        joined.insert(0, before)
    if not joined:
        conn.execute(_INSERT, {"rid": rid, "start": start, "end": end})
        return
    first = joined[0][0]
    new = (min(first, start), max(end, *(e for _, e in joined)))
    if len(joined) > 1:
        conn.execute(_DELETE_RANGE, {"rid": rid, "lo": joined[1][0], "hi": joined[-1][0]})
    if new != tuple(joined[0]):
        conn.execute(_SET, {"rid": rid, "old": first, "start": new[0], "end": new[1]})


def _remove(conn: Connection, rid: int, sid: int, start: int, end: int) -> None:
    """Segment ``sid`` ([start, end] of recording ``rid``) stops counting."""
    span = conn.execute(_AT, {"rid": rid, "at": start}).first()
    if span is None or span[1] < end:
        # Not where the invariant puts it (a row written before this table existed cannot
        # be: the migration builds it): recompute the recording rather than guess.
        _rebuild_recording(conn, rid)
        return
    lo, hi = span
    probe = {"rid": rid, "sid": sid}
    if conn.execute(_OTHER_STARTING_AFTER, {**probe, "lo": start, "hi": hi}).first() is None:
        # It has the latest start: the rest was one span before it came.
        last = conn.execute(_LAST_END, {**probe, "lo": lo, "hi": hi}).scalar()
        if last is None:
            conn.execute(_DELETE_ONE, {"rid": rid, "start": lo})
        elif last != hi:
            conn.execute(_SET, {"rid": rid, "old": lo, "start": lo, "end": last})
        return
    if conn.execute(_OTHER_ENDING_BEFORE, {**probe, "lo": lo, "hi": end}).first() is None:
        # It has the earliest end (retention's oldest segment): symmetric.
        first = conn.execute(_FIRST_START, {**probe, "lo": lo, "hi": hi}).scalar()
        if first is None:
            conn.execute(_DELETE_ONE, {"rid": rid, "start": lo})
        elif first != lo:
            conn.execute(_SET, {"rid": rid, "old": lo, "start": first, "end": hi})
        return
    pieces = conn.execute(_PIECES, {**probe, "lo": lo, "hi": hi}).all()
    conn.execute(_DELETE_ONE, {"rid": rid, "start": lo})
    for s, e in join((s, e) for s, e in pieces):
        conn.execute(_INSERT, {"rid": rid, "start": s, "end": e})


def _rebuild_recording(conn: Connection, rid: int) -> None:
    conn.execute(text("DELETE FROM recording_spans WHERE recording_id = :rid"), {"rid": rid})
    conn.execute(
        text(
            "INSERT INTO recording_spans (recording_id, start_ns, end_ns) "
            + _FROM_SEGMENTS.format(where=" AND recording_id = :rid", join=JOIN_NS)
        ),
        {"rid": rid},
    )


def segment_added(
    conn: Connection, recording_id: int | None, start_wall_ns: int, end_wall_ns: int | None = None
) -> None:
    """A new readable segment (``writing``: it ends where it starts)."""
    if recording_id is not None:
        end = start_wall_ns if end_wall_ns is None else end_wall_ns
        _add(conn, recording_id, start_wall_ns, end)


def segments_extended(conn: Connection, ends: Sequence[dict[str, Any]]) -> None:
    """``ends``: ``{"sid": segment id, "end": its new end}`` each (other keys ignored);
    after the segment rows were updated."""
    if not ends:
        return
    conn.execute(_EXTENDED, [{"sid": e["sid"], "end": e["end"]} for e in ends])
    reaching = conn.execute(_REACHING, {"sids": [e["sid"] for e in ends], "join": JOIN_NS}).all()
    for rid, start, end in reaching:
        _add(conn, rid, start, end)


def segment_state_changing(conn: Connection, segment_id: int, state: str) -> None:
    """Before segment ``segment_id`` is set to ``state``: a readable segment becoming
    unreadable leaves its span, the reverse joins one."""
    row = conn.execute(_SEGMENT, {"sid": segment_id}).first()
    if row is None or row[0] is None:
        return
    rid, old, start, end = row
    was, will = old in ("writing", "closed"), state in ("writing", "closed")
    if was and not will:
        _remove(conn, rid, segment_id, start, end)
    elif will and not was:
        _add(conn, rid, start, end)


def segment_dropping(conn: Connection, segment_id: int) -> None:
    """Before segment ``segment_id``'s row is deleted."""
    segment_state_changing(conn, segment_id, "dropped")


def rebuild(conn: Connection) -> None:
    """The table from ``segments``, from scratch."""
    for statement in REBUILD:
        conn.execute(statement)


def mismatches(conn: Connection) -> list[tuple[int, int, int]]:
    """Per recording whose table rows differ from what its readable segments give:
    (recording id, spans in the table, spans the segments give). ``onvif-nvr check``."""
    expected: dict[int, set[tuple[int, int]]] = {}
    for rid, start, end in conn.execute(text(_FROM_SEGMENTS.format(where="", join=JOIN_NS))):
        expected.setdefault(rid, set()).add((start, end))
    stored: dict[int, set[tuple[int, int]]] = {}
    for rid, start, end in conn.execute(
        text("SELECT recording_id, start_ns, end_ns FROM recording_spans")
    ):
        stored.setdefault(rid, set()).add((start, end))
    return [
        (rid, len(stored.get(rid, ())), len(expected.get(rid, ())))
        for rid in sorted(expected.keys() | stored.keys())
        if stored.get(rid, set()) != expected.get(rid, set())
    ]
