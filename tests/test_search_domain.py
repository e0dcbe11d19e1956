"""The Search service's domain, sans SOAP: the searchFilter XPath dialect, search sessions
on a manual clock, and the query plans on SQLite (every search statement reads by an index,
none scans the segments or events table)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from onvif_nvr.clock import ManualClock
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import InvalidArgument, ResourceProblem
from onvif_nvr.events.filters import CONCRETE_SET, EventFilter, parse_topic_expression
from onvif_nvr.events.topics import onvif_catalog
from onvif_nvr.recording import data_ranges
from onvif_nvr.recording.event_search import EventScan
from onvif_nvr.recording.search import RecordingSearch, Scope
from onvif_nvr.recording.search_filter import Node, SearchFilterError, parse
from onvif_nvr.recording.search_sessions import (
    EVENTS,
    RECORDINGS,
    EmptyScan,
    SearchSessions,
)

NS = 10**9
T0 = 1_780_000_000 * NS


def info(location: str, *types: str) -> Node:
    return Node(
        "RecordingInformation",
        children=(
            Node("RecordingToken", "RECORDING_1"),
            Node("Source", children=(Node("Location", location), Node("Name", "front door"))),
            *(
                Node(
                    "Track",
                    children=(Node("TrackType", t), Node("DataFrom", "2026-01-01T00:00:00.000Z")),
                )
                for t in types
            ),
        ),
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('boolean(//Track[TrackType = "Video"])', True),
        ('boolean(//Track[TrackType = "Audio"])', False),
        (
            "boolean(//Source[Location = \u201cBasement\u201d]) and boolean(//Track[TrackType = \u201cVideo\u201d])",
            True,
        ),
        (
            'boolean(//Track[TrackType = "Audio"]) or boolean(//tt:Track[tt:TrackType = "Video"])',
            True,
        ),
        ('not(boolean(//Track[TrackType = "Video"]))', False),
        ('(boolean(//Track[TrackType != "Video"]))', False),
        ('boolean(//Track[DataFrom < "2026-06-01T00:00:00Z"])', True),
        ('contains(//Source/Name, "door")', True),
        ('contains(/RecordingInformation/Source/Name, "window")', False),
        ('boolean(//SimpleItem[@Name = "Track" and @Value = "VIDEO001"])', False),
        ('boolean(//Source[@Location = "Basement"])', False),
    ],
)
def test_the_dialect_evaluates_on_a_recording_information(expression: str, expected: bool) -> None:
    assert parse(expression)(info("Basement", "Video")) is expected


def test_numbers_compare_as_numbers() -> None:
    box = Node("Object", children=(Node("BoundingBox", attributes={"right": "0.75"}),))
    assert parse('boolean(//Object/BoundingBox[@right > "0.5"])')(box)
    assert not parse('boolean(//Object/BoundingBox[@right > "0.8"])')(box)
    assert parse("boolean(//Object/BoundingBox[@right <= '10e-1'])")(box)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty expression"),
        ("//Track", "expected boolean(...), contains(...), not(...) or '(' at 0"),
        ('boolean(//Track[TrackType ~ "Video"])', "unexpected '~' at 26"),
        ("boolean(//Track[TrackType = Video])", "expected a quoted string at 28"),
        ('count(//Track) > "1"', "expected boolean(...), contains(...), not(...) or '(' at 0"),
        ('boolean(//Track[TrackType = "Video"]', "expected ')' at the end"),
        (
            'boolean(//Track[TrackType = "Video"]) and',
            "expected boolean(...), contains(...), not(...) or '(' at the end",
        ),
        ('boolean(//SimpleItem[@Other = "x"])', "an item has @Name and @Value, not @Other at 22"),
        (
            'boolean(//SimpleItem[@Name > "x"])',
            "expected '=' (a name is compared for equality only) at 27",
        ),
        ('boolean(//Track[TrackType = "a" and TrackType = "b"])', "expected ']' at 32"),
        ('boolean(//Track[TrackType = "Video"]) extra', "unexpected 'extra' at 38"),
        ('boolean(//Track[TrackType = "Video)', "unterminated string at 28"),
        ("not(" * 40 + 'boolean(//T[a = "b"])' + ")" * 40, "expression nested too deeply at 128"),
    ],
)
def test_anything_outside_the_dialect_is_refused(expression: str, message: str) -> None:
    with pytest.raises(SearchFilterError) as info_:
        parse(expression)
    assert str(info_.value) == message


class ListScan:
    def __init__(self, items: list[int], per_fetch: int = 1000) -> None:
        self.items = items
        self.per_fetch = per_fetch
        self.done = not items
        self.reached = 0

    async def fetch(self, limit: int) -> list[int]:
        got, self.items = (
            self.items[: min(limit, self.per_fetch)],
            self.items[min(limit, self.per_fetch) :],
        )
        self.done = not self.items
        if got:
            self.reached = got[-1]
        return got

    def end_point(self, now_ns: int) -> int:
        return self.reached


def test_sessions_on_a_manual_clock() -> None:
    async def run() -> None:
        clock = ManualClock()
        sessions = SearchSessions(clock, max_sessions=2, max_keepalive_s=60, max_results=5)
        token = sessions.open(EVENTS, ListScan(list(range(12)), per_fetch=2), 10 * NS, None)
        # MaxResults above the box's 5 is adapted; results in order, never twice.
        assert await sessions.results(token, EVENTS, max_results=50) == (
            "Searching",
            [0, 1, 2, 3, 4],
        )
        assert await sessions.results(token, EVENTS, min_results=1) == ("Searching", [5, 6])
        with pytest.raises(InvalidArgument) as wrong:
            await sessions.results(token, RECORDINGS)
        assert wrong.value.subcodes == ("InvalidArgVal", "InvalidToken")
        assert sessions.end(token) == 6  # the point reached
        with pytest.raises(InvalidArgument):
            sessions.state(token)
        # MaxMatches ends the search.
        token = sessions.open(EVENTS, ListScan(list(range(12))), 10 * NS, 3)
        assert await sessions.results(token, EVENTS) == ("Completed", [0, 1, 2])
        assert len(sessions) == 0
        # The bound, and the keep-alive (at least 1 s, at most max_keepalive_s).
        a = sessions.open(RECORDINGS, EmptyScan(T0, None), 0, None)
        b = sessions.open(RECORDINGS, ListScan([1, 2]), 3600 * NS, None)
        with pytest.raises(ResourceProblem):
            sessions.open(RECORDINGS, ListScan([1]), NS, None)
        clock.advance(1.5)
        assert sessions.sweep() == 1 and len(sessions) == 1  # a expired, b did not
        with pytest.raises(InvalidArgument):
            await sessions.results(a, RECORDINGS)
        clock.advance(58)
        assert sessions.state(b) == "Searching"  # a request keeps it alive
        clock.advance(59)
        assert len(sessions) == 1
        clock.advance(2)
        assert sessions.sweep() == 1
        # Tokens are never given twice.
        tokens = {sessions.open(RECORDINGS, ListScan([1]), NS, None) for _ in range(2)}
        assert len(tokens) == 2 and not tokens & {a, b}

    asyncio.run(run())


# -- the query plans ---------------------------------------------------------------------------
def seed(path: Path) -> None:
    """A small index: 3 recordings, their segments and events (the schema as migrated)."""
    import sqlite3

    db = Database(f"sqlite:///{path}")
    asyncio.run(db.migrate())
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO volumes (id, path, min_free_bytes, status, status_reason) VALUES (1, '/v', 0, 'ok', '')"
        )
        for r in (1, 2, 3):
            conn.execute(
                "INSERT INTO cameras (id, name, url, transport, backend, enabled, retention_s, origin, created_wall_ns, token, mode, auto_created, media_uri, stream_type, protocol) "
                "VALUES (?, ?, '', 'tcp', 'native', 1, 0, 'cli', 0, ?, 'AlwaysConnect', 0, '', 'RTP-Unicast', 'RTSP')",
                (r, f"cam{r}", f"RECEIVER_{r}"),
            )
            conn.execute(
                "INSERT INTO recordings (id, token, source_id, source_name, location, description, address, content, max_retention_s, origin, camera_id, created_wall_ns) "
                "VALUES (?, ?, '', '', '', '', '', '', 0, 'cli', ?, 0)",
                (r, f"RECORDING_{r}", r),
            )
            for token, kind in (
                ("VIDEO001", "Video"),
                ("AUDIO001", "Audio"),
                ("META001", "Metadata"),
            ):
                conn.execute(
                    "INSERT INTO tracks (recording_id, token, track_type, description) VALUES (?, ?, ?, '')",
                    (r, token, kind),
                )
            for m in range(20):
                start = T0 + m * 60 * NS
                conn.execute(
                    "INSERT INTO segments (camera_id, recording_id, volume_id, state, start_wall_ns, end_wall_ns, start_90k, duration_90k, size, init_size, fragment_count, tracks) "
                    "VALUES (?, ?, 1, 'closed', ?, ?, 0, 5400000, 1000, 100, 1, ?)",
                    (
                        r,
                        r,
                        start,
                        start + 60 * NS,
                        json.dumps([{"codec": "H264", "width": 1, "height": 1}]),
                    ),
                )
                for topic, track, item in (
                    ("tns1:RecordingHistory/Recording/State", "", "IsRecording"),
                    ("tns1:RecordingHistory/Track/State", "VIDEO001", "IsDataPresent"),
                ):
                    conn.execute(
                        "INSERT INTO events (recording_id, recording_token, track_token, topic, utc_ns, operation, source, data) VALUES (?, ?, ?, ?, ?, 'Changed', ?, ?)",
                        (
                            r,
                            f"RECORDING_{r}",
                            track,
                            topic,
                            start,
                            json.dumps([["RecordingToken", f"RECORDING_{r}"]]),
                            json.dumps([[item, "true" if m % 2 == 0 else "false"]]),
                        ),
                    )
    # The data ranges as migration 0009 fills them from the rows loaded.
    with db.engine.begin() as conn:
        data_ranges.rebuild(conn)
    db.close()


def test_every_search_statement_reads_by_an_index(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    seed(path)
    db = Database(f"sqlite:///{path}")
    statements: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    catalog = onvif_catalog()
    state_only = parse_topic_expression(
        "tns1:RecordingHistory/Recording/State",
        CONCRETE_SET,
        {"tns1": "http://www.onvif.org/ver10/topics"},
    )

    async def run() -> None:
        search = RecordingSearch(db)
        await search.summary()
        everyone = await search.scope(Scope(), strict=False)
        infos = await search.informations([rid for rid, _ in everyone])
        assert [len(i.tracks) for i in infos] == [1, 1, 1]  # VIDEO001 has data
        await search.media_attributes(["RECORDING_2"], T0 + 90 * NS)
        await search.scope(
            Scope(sources=(("RECEIVER_1", "http://www.onvif.org/ver10/schema/Receiver"),)),
            strict=True,
        )
        for scope, everything in ((everyone, True), (everyone[:1], False)):
            for flt in (EventFilter(), EventFilter((state_only,))):
                for end in (None, T0 + 600 * NS):
                    scan = EventScan(
                        db,
                        catalog,
                        scope,
                        all_recordings=everything,
                        start_ns=T0 + 300 * NS,
                        end_ns=end,
                        event_filter=flt,
                        include_start_state=True,
                    )
                    first = await scan.fetch(5)
                    rest = await scan.fetch(1000)
                    assert scan.done and len(first) == 5 and first + rest
                    back = EventScan(
                        db,
                        catalog,
                        scope,
                        all_recordings=everything,
                        start_ns=T0 + 600 * NS,
                        end_ns=T0 + 300 * NS,
                        event_filter=flt,
                        include_start_state=False,
                    )
                    await back.fetch(1000)
        # Many recordings and a topic filter drive by the topic (PER_RECORDING_MAX is 16).
        many = [(i, f"RECORDING_{i}") for i in range(1, 40)]
        scan = EventScan(
            db,
            catalog,
            many,
            all_recordings=False,
            start_ns=T0,
            end_ns=None,
            event_filter=EventFilter((state_only,)),
            include_start_state=False,
        )
        await scan.fetch(10)
        scan = EventScan(
            db,
            catalog,
            many,
            all_recordings=False,
            start_ns=T0,
            end_ns=None,
            event_filter=EventFilter(),
            include_start_state=False,
        )
        await scan.fetch(10)

    asyncio.run(run())
    used: set[str] = set()
    with db.engine.connect() as conn:
        for statement, parameters in statements:
            if "sqlite_master" in statement or "alembic_version" in statement:
                continue
            plan = [
                row[3]
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
            for step in plan:
                assert not step.startswith(("SCAN segments", "SCAN events", "SCAN fragments")), (
                    statement,
                    plan,
                )
                # A page of events is read in index order, never sorted.
                if statement.startswith("SELECT events.id"):
                    assert "TEMP B-TREE" not in step, (statement, plan)
                used.update(word for word in step.split() if word.startswith("ix_"))
                # Data ranges: a page reads one row per recording and per track, by
                # primary key; the summary is the aggregate of every recording's row.
                if "recording_data" in step or "track_data" in step:
                    summary = statement.startswith("SELECT min(recording_data.earliest_ns)")
                    assert (summary and step == "SCAN recording_data") or (
                        step.startswith("SEARCH")
                        and ("PRIMARY KEY" in step or "sqlite_autoindex_track_data" in step)
                    ), (statement, plan)
                    used.add(step.split()[1])
    db.close()
    assert {
        "ix_events_utc",
        "ix_events_property",
        "ix_events_topic_utc",
        "ix_events_recording_utc",
        "ix_segments_recording_start",
        "recording_data",
        "track_data",
    } <= used


# -- the data ranges kept with the rows (migration 0009) ----------------------------------------
def _ranges(conn: Any) -> tuple[list[Any], list[Any]]:
    recordings = conn.exec_driver_sql(
        "SELECT recording_id, earliest_ns, latest_ns FROM recording_data "
        "WHERE earliest_ns IS NOT NULL ORDER BY recording_id"
    ).all()
    tracks = conn.exec_driver_sql(
        "SELECT recording_id, track_token, first_ns, last_ns, last_data FROM track_data "
        "ORDER BY recording_id, track_token"
    ).all()
    return [tuple(r) for r in recordings], [tuple(t) for t in tracks]


def test_data_ranges_kept_with_the_rows_equal_a_rebuild(tmp_path: Path) -> None:
    """Segments created, extended, closed, marked deleting and dropped, Track/State events
    out of order and at equal times: after each step the maintained rows are what
    migration 0009 computes from the segments and events."""
    from onvif_nvr.db import models
    from onvif_nvr.recording.history import TRACK_STATE
    from onvif_nvr.recording.index import EventRow, FragmentRow, SegmentIndex

    assert TRACK_STATE.text() == data_ranges.TRACK_STATE_TOPIC
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")

    def check() -> None:
        with db.engine.connect() as conn:
            kept = _ranges(conn)
            data_ranges.rebuild(conn)
            assert _ranges(conn) == kept
            conn.rollback()

    def event(rid: int, track: str, utc: int, present: bool) -> EventRow:
        return EventRow(
            rid,
            f"RECORDING_{rid}",
            track,
            data_ranges.TRACK_STATE_TOPIC if track else "tns1:RecordingHistory/Recording/State",
            utc,
            "Changed",
            [["RecordingToken", f"RECORDING_{rid}"]],
            [["IsDataPresent", "true" if present else "false"]],
        )

    def fragment(sid: int, seq: int, start: int) -> FragmentRow:
        return FragmentRow(sid, seq, start, 0, 90_000, 800 + seq * 1000, 1000, True, 25)

    async def run() -> None:
        await db.migrate()

        def setup() -> None:
            with db.session() as session, session.begin():
                session.add(models.Volume(path="/v", min_free_bytes=0, status="ok"))
                for rid in (1, 2):
                    session.add(
                        models.Camera(
                            id=rid,
                            name=f"cam{rid}",
                            url="",
                            token=f"RECEIVER_{rid}",
                            created_wall_ns=0,
                        )
                    )
                    session.add(
                        models.Recording(
                            id=rid, token=f"RECORDING_{rid}", created_wall_ns=0, origin="cli"
                        )
                    )

        await db.run(setup)
        index = SegmentIndex(db)
        a = await index.create_segment(1, 1, T0, 0, recording_id=1)
        b = await index.create_segment(1, 1, T0 + 10 * NS, 0, recording_id=1)
        c = await index.create_segment(2, 1, T0 + 5 * NS, 0, recording_id=2)
        await db.run(check)
        await index.add_fragments(a, [fragment(a, 0, T0), fragment(a, 1, T0 + NS)], 800)
        await index.add_fragments(c, [fragment(c, 0, T0 + 5 * NS)], 800)
        for e in (
            event(1, "VIDEO001", T0 + 2 * NS, True),
            event(1, "VIDEO001", T0, True),  # earlier, stored later
            event(1, "", T0, True),
            event(1, "VIDEO001", T0 + 2 * NS, False),  # same time: the later id is last
            event(2, "AUDIO001", T0 + 5 * NS, True),
        ):
            index.add_event(e)
        await index.flush()
        await db.run(check)
        await index.add_fragments(b, [fragment(b, 0, T0 + 10 * NS)], 800)
        index.add_event(event(1, "VIDEO001", T0 + NS, True))  # older than the last
        await index.close_segment(a)
        await db.run(check)
        await index.mark_deleting(b)  # the latest data goes
        await db.run(check)
        await index.drop_segment(b)
        await index.mark_deleting(a)  # nothing readable left
        await index.drop_segment(c)
        await db.run(check)

        def summary() -> tuple[list[Any], list[Any]]:
            with db.engine.connect() as conn:
                return _ranges(conn)

        recordings, tracks = await db.run(summary)
        assert recordings == []
        assert [(r, t, lo - T0, hi - T0) for r, t, lo, hi, _ in tracks] == [
            (1, "VIDEO001", 0, 2 * NS),
            (2, "AUDIO001", 5 * NS, 5 * NS),
        ]
        assert json.loads(tracks[0][4]) == [["IsDataPresent", "false"]]
        info = (await RecordingSearch(db).informations([1, 2]))[0]
        assert info.earliest_ns is None and info.tracks == ()

    asyncio.run(run())
    db.close()
