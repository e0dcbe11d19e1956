"""The Search service (tse) against a box that recorded a GStreamer camera (video and
audio) with a gap, across a restart of the box, and a recording that was deleted
(tests/searchutil.py): zeep and raw SOAP as the clients, every answer validated against the
official XSD, results checked against GetRecordings / GetRecordingInformation and against
the index; onvif-zeep-async as a VMS finding what to play back."""

from __future__ import annotations

import datetime
import json
import posixpath
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zeep.exceptions
from lxml import etree

from onvif_nvr.wsdl.catalog import SEARCH
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT
from tests.searchutil import TSE, TT, Recorded, recorded_box, search_client
from tests.soaputil import SOAP12, envelope, post, username_token
from tests.test_peer_onvif_zeep_async import peer_python
from tests.test_receiver_service import fault_codes
from tests.test_recording_control_service import recording_client
from tests.test_schema_validation import XS, _Recorder, _schema_closure

WSNT = "http://docs.oasis-open.org/wsn/b-2"
TNS1 = "http://www.onvif.org/ver10/topics"
RECEIVER_TYPE = "http://www.onvif.org/ver10/schema/Receiver"
PEER = Path(__file__).parent / "peers" / "vms_search.py"


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    with recorded_box(tmp_path_factory.mktemp("search")) as recorded:
        yield recorded


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """tse + tt + wsnt + the SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("tse-xsd")
    _schema_closure(dest, SEARCH)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="schema/common/soap-envelope"/>'
        f'<xs:import namespace="{TSE}" schemaLocation="{posixpath.splitext(SEARCH.wsdl)[0]}.xsd"/>'
        "</xs:schema>"
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_Recorder())
    return etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))


def utc(text: str) -> int:
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def iso(dt: datetime.datetime) -> str:
    return dt.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Raw:
    """Raw SOAP to the search service, every answer validated against the schema."""

    def __init__(self, rec: Recorded, schema: etree.XMLSchema) -> None:
        self.url = rec.box.base + SEARCH.path
        self.schema = schema

    def call(self, operation: str, inner: str = "", *, valid: bool = True) -> etree._Element:
        body = (
            f'<tse:{operation} xmlns:tse="{TSE}" xmlns:tt="{TT}" xmlns:wsnt="{WSNT}" '
            f'xmlns:tns1="{TNS1}">{inner}</tse:{operation}>'
        )
        response = post(self.url, envelope(body, username_token("admin", ADMIN_PASSWORD)))
        root = etree.fromstring(response.content)
        if valid:
            self.schema.assertValid(root)
        return root[-1][0]

    def find_events(
        self,
        start: str,
        end: str | None = None,
        *,
        start_state: bool = False,
        recordings: tuple[str, ...] = (),
        search_filter: str = "",
        max_matches: int | None = None,
    ) -> str:
        scope = "".join(f"<tt:IncludedRecordings>{r}</tt:IncludedRecordings>" for r in recordings)
        inner = (
            f"<tse:StartPoint>{start}</tse:StartPoint>"
            + (f"<tse:EndPoint>{end}</tse:EndPoint>" if end else "")
            + f"<tse:Scope>{scope}</tse:Scope>"
            + f"<tse:SearchFilter>{search_filter}</tse:SearchFilter>"
            + f"<tse:IncludeStartState>{str(start_state).lower()}</tse:IncludeStartState>"
            + (f"<tse:MaxMatches>{max_matches}</tse:MaxMatches>" if max_matches else "")
            + "<tse:KeepAliveTime>PT10S</tse:KeepAliveTime>"
        )
        return str(self.call("FindEvents", inner).findtext(f"{{{TSE}}}SearchToken"))

    def event_results(self, token: str, max_results: int | None = None) -> tuple[str, list[dict]]:
        inner = f"<tse:SearchToken>{token}</tse:SearchToken>" + (
            f"<tse:MaxResults>{max_results}</tse:MaxResults>" if max_results else ""
        )
        answer = self.call("GetEventSearchResults", inner)
        results = []
        for r in answer.iter(f"{{{TT}}}Result"):
            message = r.find(f".//{{{TT}}}Message")
            assert message is not None
            results.append(
                {
                    "recording": r.findtext(f"{{{TT}}}RecordingToken"),
                    "track": r.findtext(f"{{{TT}}}TrackToken"),
                    "time": r.findtext(f"{{{TT}}}Time"),
                    "topic": (r.findtext(f".//{{{WSNT}}}Topic") or "").strip(),
                    "start_state": r.findtext(f"{{{TT}}}StartStateEvent") == "true",
                    "utc": message.get("UtcTime"),
                    "operation": message.get("PropertyOperation"),
                    "items": {
                        i.get("Name"): i.get("Value") for i in message.iter(f"{{{TT}}}SimpleItem")
                    },
                }
            )
        return str(answer.findtext(f".//{{{TT}}}SearchState")), results

    def all_events(self, token: str, page: int = 7) -> list[dict]:
        out: list[dict] = []
        for _ in range(1000):
            state, results = self.event_results(token, page)
            assert state in ("Searching", "Completed") and len(results) <= page
            out += results
            if state == "Completed":
                return out
        raise AssertionError("the search never completed")


@pytest.fixture(scope="module")
def raw(rec: Recorded, schema: etree.XMLSchema) -> Raw:
    return Raw(rec, schema)


def all_recordings(tse, scope: dict | None = None, **find: object) -> list:
    token = tse.FindRecordings(Scope=scope or {}, KeepAliveTime="PT10S", **find)
    found = []
    while True:
        result = tse.GetRecordingSearchResults(token, MaxResults=2, WaitTime="PT5S")
        found += result.RecordingInformation
        if result.SearchState == "Completed":
            return found


def test_summary_information_and_find_recordings_agree_with_the_recording_service(rec):
    tse, trc = search_client(rec.box), recording_client(rec.box)
    recordings = {r.RecordingToken for r in trc.GetRecordings()}
    assert recordings == {rec.yard, rec.attic}  # the deleted one is gone everywhere
    found = all_recordings(tse)
    assert sorted(i.RecordingToken for i in found) == sorted(recordings)
    for info in found:
        direct = tse.GetRecordingInformation(info.RecordingToken)
        assert zeep.helpers.serialize_object(direct) == zeep.helpers.serialize_object(info)
    yard = tse.GetRecordingInformation(rec.yard)
    assert yard.Source.Name == "yard" and yard.Source.Location == "Basement"
    assert yard.RecordingStatus == "Stopped"  # the job was set Idle at the end
    assert sorted(t.TrackToken for t in yard.Track) == ["AUDIO001", "VIDEO001"]
    video = next(t for t in yard.Track if t.TrackType == "Video")
    assert video.DataFrom == yard.EarliestRecording and video.DataTo == yard.LatestRecording
    attic = tse.GetRecordingInformation(rec.attic)
    assert attic.RecordingStatus == "Initiated"
    assert attic.EarliestRecording is None and attic.Track == []
    # The index agrees: the first and last instant of the yard's segments.
    with sqlite3.connect(rec.data / "nvr.sqlite3") as db:
        lo, hi = db.execute(
            "SELECT MIN(start_wall_ns), MAX(end_wall_ns) FROM segments s JOIN recordings r "
            "ON r.id = s.recording_id WHERE r.token = ?",
            (rec.yard,),
        ).fetchone()
    assert abs(yard.EarliestRecording.timestamp() * 1e9 - lo) < 1e6
    assert abs(yard.LatestRecording.timestamp() * 1e9 - hi) < 1e6
    summary = tse.GetRecordingSummary()
    assert summary.NumberRecordings == 2
    assert summary.DataFrom == yard.EarliestRecording and summary.DataUntil == yard.LatestRecording


def test_find_recordings_scopes_and_filters(rec):
    tse = search_client(rec.box)

    def tokens(scope: dict) -> set[str]:
        return {i.RecordingToken for i in all_recordings(tse, scope)}

    assert tokens({"IncludedRecordings": [rec.attic]}) == {rec.attic}
    assert tokens({"IncludedSources": [{"Token": rec.receiver, "Type": RECEIVER_TYPE}]}) == {
        rec.yard
    }
    # Union of the two lists.
    assert tokens(
        {
            "IncludedSources": [{"Token": rec.receiver, "Type": RECEIVER_TYPE}],
            "IncludedRecordings": [rec.attic],
        }
    ) == {rec.yard, rec.attic}
    flt = "RecordingInformationFilter"
    assert tokens({flt: 'boolean(//Track[TrackType = "Video"])'}) == {rec.yard}
    assert tokens({flt: "boolean(//Track[TrackType = 'Audio'])"}) == {rec.yard}
    assert tokens({flt: 'boolean(//Track[TrackType = "Metadata"])'}) == set()
    assert tokens(
        {flt: 'boolean(//Track[TrackType = "Video"]) and boolean(//Track[TrackType = "Audio"])'}
    ) == {rec.yard}
    # The specification's own example, typographic quotes included.
    assert tokens({flt: "boolean(//Source[Location = \u201cAttic\u201d])"}) == {rec.attic}
    assert tokens({flt: 'not(boolean(//Source[Location = "Attic"]))'}) == {rec.yard}
    assert tokens({flt: 'contains(//Source/Name, "tti")'}) == {rec.attic}
    assert tokens({flt: 'boolean(//RecordingInformation[RecordingStatus != "Initiated"])'}) == {
        rec.yard
    }
    # A filter applies within the listed recordings.
    assert (
        tokens({"IncludedRecordings": [rec.attic], flt: 'boolean(//Track[TrackType = "Video"])'})
        == set()
    )
    for bad in (
        "//Track",
        'boolean(//Track[TrackType ~ "Video"])',
        "count(//Track) > 1",
        "boolean(//Track[TrackType = Video])",
    ):
        with pytest.raises(zeep.exceptions.Fault) as info:
            tse.FindRecordings(Scope={flt: bad}, KeepAliveTime="PT10S")
        assert fault_codes(info) == ["InvalidArgVal"], bad
    with pytest.raises(zeep.exceptions.Fault) as info:
        tse.FindRecordings(Scope={"IncludedRecordings": ["RECORDING_999"]}, KeepAliveTime="PT10S")
    assert fault_codes(info) == ["InvalidArgVal", "InvalidToken"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        tse.FindRecordings(
            Scope={"IncludedSources": [{"Token": "RECEIVER_999", "Type": RECEIVER_TYPE}]},
            KeepAliveTime="PT10S",
        )
    assert fault_codes(info) == ["InvalidArgVal", "InvalidSource"]


def recording_states(events: list[dict]) -> list[str]:
    return [
        e["items"]["IsRecording"]
        for e in events
        if e["topic"] == "tns1:RecordingHistory/Recording/State" and not e["start_state"]
    ]


def test_find_events_forward_backward_and_start_state(rec, raw):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    start, end = iso(info.EarliestRecording), iso(info.LatestRecording)
    forward = raw.all_events(raw.find_events(start, end))
    backward = raw.all_events(raw.find_events(end, start))
    assert forward and backward == forward[::-1]
    assert {e["recording"] for e in forward} == {rec.yard}  # the deleted recording's went
    times = [utc(e["time"]) for e in forward]
    assert times == sorted(times) and times[0] == utc(start) and times[-1] == utc(end)
    assert all(e["time"] == e["utc"] for e in forward)
    # The gap (job Idle) and the restart each stop and start the recording again: the
    # stop of the box stores IsRecording=false like any other end of the data.
    states = recording_states(forward)
    assert states == ["true", "false"] * 3
    topics = {e["topic"] for e in forward}
    assert {
        "tns1:RecordingHistory/Recording/State",
        "tns1:RecordingHistory/Track/State",
        "tns1:RecordingHistory/Track/VideoParameters",
    } <= topics
    video = [e for e in forward if e["topic"].endswith("VideoParameters")]
    assert video[0]["items"]["VideoWidth"] == "320" and video[0]["track"] == "VIDEO001"
    # The same events as stored in the index, in (time, id) order.
    with sqlite3.connect(rec.data / "nvr.sqlite3") as db:
        stored = db.execute(
            "SELECT topic, track_token FROM events e JOIN recordings r ON r.id = e.recording_id "
            "WHERE r.token = ? ORDER BY utc_ns, e.id",
            (rec.yard,),
        ).fetchall()
    assert [(e["topic"], e["track"] or "") for e in forward] == stored

    # Start state inside the recording: one virtual event per property, at the start.
    middle = forward[len(forward) // 2]["time"]
    yard = (rec.yard,)
    state = raw.all_events(raw.find_events(middle, end, start_state=True, recordings=yard))
    head = [e for e in state if e["start_state"]]
    assert state[: len(head)] == head and head
    assert {e["time"] for e in head} == {middle}
    assert all(e["operation"] == "Initialized" for e in head)
    properties = {(e["topic"].split("/", 1)[1], e["track"] or "") for e in head}
    required = {
        ("Recording/State", ""),
        ("Track/State", "VIDEO001"),
        ("Track/State", "AUDIO001"),
        ("Track/State", "META001"),
        ("Track/VideoParameters", "VIDEO001"),
    }
    assert required <= properties <= required | {("Track/AudioParameters", "AUDIO001")}
    assert len(head) == len(properties)
    meta = next(e for e in head if e["track"] == "META001")
    assert meta["items"]["IsDataPresent"] == "false"
    # Backward with start state: the state at its start, then forward reversed.
    back_state = raw.all_events(raw.find_events(end, middle, start_state=True, recordings=yard))
    lead = [e for e in back_state[: len(head) + 1] if e["start_state"]]
    assert {e["time"] for e in lead} == {end}
    assert back_state[len(lead) :] == state[::-1]
    # Before any data: nothing was recording, no track had data.
    early = iso(info.EarliestRecording - datetime.timedelta(seconds=30))
    before = raw.all_events(raw.find_events(early, early, start_state=True))
    assert {e["items"].get("IsRecording", e["items"].get("IsDataPresent")) for e in before} == {
        "false"
    }


def test_event_filters(rec, raw):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    start = iso(info.EarliestRecording)
    topic = (
        '<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
        "tns1:RecordingHistory/Track/State</wsnt:TopicExpression>"
    )
    tracks = raw.all_events(raw.find_events(start, search_filter=topic))
    assert tracks and {e["topic"] for e in tracks} == {"tns1:RecordingHistory/Track/State"}
    item = (
        '<wsnt:MessageContent Dialect="http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter">'
        'boolean(//tt:SimpleItem[@Name="Track" and @Value="AUDIO001"])</wsnt:MessageContent>'
    )
    audio = raw.all_events(raw.find_events(start, search_filter=topic + item))
    assert audio and {e["track"] for e in audio} == {"AUDIO001"}
    assert audio == [e for e in tracks if e["track"] == "AUDIO001"]
    whole = (
        '<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
        "tns1:RecordingHistory//.</wsnt:TopicExpression>"
    )
    assert len(raw.all_events(raw.find_events(start, search_filter=whole))) == len(
        raw.all_events(raw.find_events(start))
    )
    other = (
        '<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
        "tns1:Device/Trigger/DigitalInput</wsnt:TopicExpression>"
    )
    assert raw.all_events(raw.find_events(start, search_filter=other)) == []
    bad = '<wsnt:TopicExpression Dialect="urn:nonsense">tns1:X</wsnt:TopicExpression>'
    root = raw.call(
        "FindEvents",
        f"<tse:StartPoint>{start}</tse:StartPoint><tse:Scope/><tse:SearchFilter>{bad}"
        "</tse:SearchFilter><tse:IncludeStartState>false</tse:IncludeStartState>"
        "<tse:KeepAliveTime>PT10S</tse:KeepAliveTime>",
        valid=False,
    )
    assert [v.text.split(":")[-1] for v in root.iter(f"{{{SOAP12}}}Value")] == [
        "Sender",
        "InvalidArgVal",
        "InvalidFilterFault",
    ]


def test_sessions(rec, raw):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    start = iso(info.EarliestRecording)
    every = raw.all_events(raw.find_events(start), page=1000)
    # Pages of 3 never repeat and never skip.
    token = raw.find_events(start)
    paged = []
    state, results = "Searching", []
    while state != "Completed":
        state, results = raw.event_results(token, 3)
        assert len(results) <= 3
        paged += results
    assert paged == every
    # The answer that completed the search ended it.
    with pytest.raises(zeep.exceptions.Fault) as fault:
        tse.GetEventSearchResults(token)
    assert fault_codes(fault) == ["InvalidArgVal", "InvalidToken"]
    # MaxMatches.
    token = raw.find_events(start, max_matches=1)
    state, results = raw.event_results(token)
    assert state == "Completed" and len(results) == 1 and results[0] == every[0]
    # EndSearch: the point reached; the session is gone after it.
    token = tse.FindEvents(
        StartPoint=start, Scope={}, SearchFilter={}, IncludeStartState=False, KeepAliveTime="PT10S"
    )
    assert tse.EndSearch(token) == info.EarliestRecording  # not begun: the StartPoint
    token = raw.find_events(start)
    _, first = raw.event_results(token, 4)
    assert tse.GetSearchState(token) == "Searching"
    assert iso(tse.EndSearch(token)) == first[-1]["time"]
    for call in (tse.GetEventSearchResults, tse.EndSearch, tse.GetSearchState):
        with pytest.raises(zeep.exceptions.Fault) as fault:
            call(token)
        assert fault_codes(fault) == ["InvalidArgVal", "InvalidToken"]
    # A token of another kind of search is no token for this one.
    recordings = tse.FindRecordings(Scope={}, KeepAliveTime="PT10S")
    with pytest.raises(zeep.exceptions.Fault):
        tse.GetEventSearchResults(recordings)
    tse.EndSearch(recordings)
    # KeepAliveTime: a session nobody asks about ends.
    token = tse.FindRecordings(Scope={}, KeepAliveTime="PT1S")
    time.sleep(2.5)
    with pytest.raises(zeep.exceptions.Fault) as fault:
        tse.GetRecordingSearchResults(token)
    assert fault_codes(fault) == ["InvalidArgVal", "InvalidToken"]
    # ... and one that is asked about lives on.
    token = tse.FindRecordings(Scope={}, KeepAliveTime="PT2S")
    for _ in range(3):
        time.sleep(1)
        assert tse.GetSearchState(token) == "Searching"
    # A bounded number of sessions (ONVIF_NVR_SEARCH_MAX_SESSIONS=6 here).
    tokens = [token] + [tse.FindRecordings(Scope={}, KeepAliveTime="PT30S") for _ in range(5)]
    with pytest.raises(zeep.exceptions.Fault) as fault:
        tse.FindRecordings(Scope={}, KeepAliveTime="PT30S")
    assert str(fault.value.code).endswith("Receiver")
    assert fault_codes(fault) == ["Action", "ResourceProblem"]
    for t in tokens:
        tse.EndSearch(t)
    assert len({*tokens, recordings}) == 7  # never the same token twice
    # MinResults / WaitTime / MaxResults on recordings.
    token = tse.FindRecordings(Scope={}, KeepAliveTime="PT10S")
    one = tse.GetRecordingSearchResults(token, MinResults=1, MaxResults=1, WaitTime="PT1S")
    assert one.SearchState == "Searching" and len(one.RecordingInformation) == 1
    rest = tse.GetRecordingSearchResults(token, MinResults=5, WaitTime="PT1S")
    assert rest.SearchState == "Completed" and len(rest.RecordingInformation) == 1
    assert one.RecordingInformation[0].RecordingToken != rest.RecordingInformation[0].RecordingToken


def test_media_attributes(rec):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    middle = info.EarliestRecording + (info.LatestRecording - info.EarliestRecording) / 5
    [media] = tse.GetMediaAttributes([rec.yard], middle)
    assert media.RecordingToken == rec.yard
    assert media.From <= middle <= media.Until
    by_type = {t.TrackInformation.TrackType: t for t in media.TrackAttributes}
    video = by_type["Video"].VideoAttributes
    assert (video.Encoding, video.Width, video.Height) == ("H264", 320, 240)
    assert 20 <= video.Framerate <= 30 and video.Bitrate > 0
    assert by_type["Audio"].AudioAttributes.Samplerate > 0
    # From = Until: at the first instant recorded; none for a recording without data.
    assert len(tse.GetMediaAttributes([rec.yard], info.EarliestRecording)) == 1
    assert tse.GetMediaAttributes([rec.attic], middle) == []
    assert [m.RecordingToken for m in tse.GetMediaAttributes([], middle)] == [rec.yard]
    with pytest.raises(zeep.exceptions.Fault) as fault:
        tse.GetMediaAttributes(["RECORDING_999"], middle)
    assert fault_codes(fault) == ["InvalidArgVal", "InvalidToken"]


def test_ptz_and_metadata_searches_find_nothing_on_a_box_without_them(rec, raw):
    tse = search_client(rec.box)
    caps = tse.GetServiceCapabilities()
    assert caps.MetadataSearch is False
    info = tse.GetRecordingInformation(rec.yard)
    start, end = iso(info.EarliestRecording), iso(info.LatestRecording)
    for forward in (True, False):
        a, b = (start, end) if forward else (end, start)
        token = raw.call(
            "FindPTZPosition",
            f"<tse:StartPoint>{a}</tse:StartPoint><tse:EndPoint>{b}</tse:EndPoint><tse:Scope/>"
            "<tse:SearchFilter><tt:MinPosition/><tt:MaxPosition/><tt:EnterOrExit>false"
            "</tt:EnterOrExit></tse:SearchFilter><tse:KeepAliveTime>PT10S</tse:KeepAliveTime>",
        ).findtext(f"{{{TSE}}}SearchToken")
        answer = raw.call(
            "GetPTZPositionSearchResults", f"<tse:SearchToken>{token}</tse:SearchToken>"
        )
        assert answer.findtext(f".//{{{TT}}}SearchState") == "Completed"
        assert answer.find(f".//{{{TT}}}Result") is None
        token = raw.call(
            "FindMetadata",
            f"<tse:StartPoint>{a}</tse:StartPoint><tse:EndPoint>{b}</tse:EndPoint><tse:Scope/>"
            "<tse:MetadataFilter><tt:MetadataStreamFilter>boolean(//Object/Appearance/Shape/"
            'BoundingBox[@right &gt; "0.5"])</tt:MetadataStreamFilter></tse:MetadataFilter>'
            "<tse:KeepAliveTime>PT10S</tse:KeepAliveTime>",
        ).findtext(f"{{{TSE}}}SearchToken")
        assert iso(tse.EndSearch(token)) == b  # completed: the EndPoint
    with pytest.raises(zeep.exceptions.Fault) as fault:
        tse.GetMetadataSearchResults("SEARCH_nope_1")
    assert fault_codes(fault) == ["InvalidArgVal", "InvalidToken"]


def test_every_answer_validates_against_the_schema(rec, raw):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    start, end = iso(info.EarliestRecording), iso(info.LatestRecording)
    raw.call("GetServiceCapabilities")
    raw.call("GetRecordingSummary")
    for token in (rec.yard, rec.attic):
        raw.call("GetRecordingInformation", f"<tse:RecordingToken>{token}</tse:RecordingToken>")
    raw.call("GetMediaAttributes", f"<tse:Time>{start}</tse:Time>")
    token = raw.call(
        "FindRecordings", "<tse:Scope/><tse:KeepAliveTime>PT10S</tse:KeepAliveTime>"
    ).findtext(f"{{{TSE}}}SearchToken")
    raw.call("GetSearchState", f"<tse:SearchToken>{token}</tse:SearchToken>")
    raw.call("GetRecordingSearchResults", f"<tse:SearchToken>{token}</tse:SearchToken>")
    token = raw.find_events(end, start, start_state=True)
    raw.all_events(token)  # validated page by page
    token = raw.find_events(start)
    raw.call("EndSearch", f"<tse:SearchToken>{token}</tse:SearchToken>")


def test_onvif_zeep_async_finds_what_to_play_back(rec):
    python = peer_python()
    done = subprocess.run(
        [str(python), str(PEER), "127.0.0.1", str(rec.box.port), "admin", ADMIN_PASSWORD],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["xaddr"] == rec.box.base + SEARCH.path
    assert seen["summary"] == 2
    assert sorted(seen["recordings"]) == sorted([rec.yard, rec.attic])
    assert seen["events"] and seen["events"] == seen["backward"][::-1]
