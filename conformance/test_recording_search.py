"""Recording Search Device Test Specification cases (SEARCH-*) against a box that recorded a
GStreamer camera (tests/searchutil.py).

Not applicable: SEARCH-5-1-1..8 (MetadataSearch is false) and SEARCH-6-1-7..15, 7-1-1 (no
metadata track can contain PTZ): the box answers them with empty completed searches, which
tests/test_search_service.py checks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zeep.exceptions

from onvif_nvr.wsdl.catalog import SEARCH
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.searchutil import Recorded, recorded_box, search_client
from tests.test_recording_control_service import recording_client
from tests.test_search_service import iso


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    with recorded_box(tmp_path_factory.mktemp("search-conformance")) as recorded:
        yield recorded


def subcodes(info: pytest.ExceptionInfo) -> list[str]:
    return [q.localname for q in info.value.subcodes or []]


def drain(tse, token: str, **kwargs) -> tuple[list, list]:
    """(answers, results) of GetRecordingSearchResults until Completed."""
    answers, results = [], []
    for _ in range(100):
        answer = tse.GetRecordingSearchResults(token, **kwargs)
        answers.append(answer)
        results += answer.RecordingInformation
        if answer.SearchState == "Completed":
            return answers, results
    raise AssertionError("never completed")


def events(tse, start, end, **kwargs) -> list:
    token = tse.FindEvents(
        StartPoint=start,
        EndPoint=end,
        Scope=kwargs.pop("Scope", {}),
        SearchFilter={},
        IncludeStartState=kwargs.pop("IncludeStartState", False),
        KeepAliveTime="PT10S",
        **kwargs,
    )
    out = []
    for _ in range(500):
        answer = tse.GetEventSearchResults(token, MaxResults=10)
        out += [(r.RecordingToken, r.TrackToken, r.Time, r.StartStateEvent) for r in answer.Result]
        if answer.SearchState == "Completed":
            return out
    raise AssertionError("never completed")


def test_search_1_1_1_and_1_1_2_capabilities(rec):
    caps = search_client(rec.box).GetServiceCapabilities()
    services = device_client(rec.box.device_url, "admin", ADMIN_PASSWORD)[1].GetServices(
        IncludeCapability=True
    )
    [entry] = [s for s in services if s.Namespace == SEARCH.namespace]
    assert entry.XAddr == rec.box.base + SEARCH.path
    element = entry.Capabilities._value_1
    assert element.get("MetadataSearch") == "false" and caps.MetadataSearch is False
    for name in ("GeneralStartEvents", "NLSearch", "ImageSearch"):
        assert element.get(name) == "false" and getattr(caps, name) is False


def test_search_4_1_1_get_recording_summary(rec):
    summary = search_client(rec.box).GetRecordingSummary()
    assert summary.NumberRecordings == len(recording_client(rec.box).GetRecordings())
    assert summary.DataFrom <= summary.DataUntil


def test_search_2_1_3_4_5_7_result_limits(rec):
    tse = search_client(rec.box)
    # 2-1-3 MinResults
    _, results = drain(tse, tse.FindRecordings(Scope={}, KeepAliveTime="PT10S"), MinResults=1)
    assert len(results) == 2
    # 2-1-4 MaxResults
    answers, results = drain(tse, tse.FindRecordings(Scope={}, KeepAliveTime="PT10S"), MaxResults=1)
    assert all(len(a.RecordingInformation) <= 1 for a in answers) and len(results) == 2
    # 2-1-5 WaitTime
    started = time.monotonic()
    answers, results = drain(
        tse, tse.FindRecordings(Scope={}, KeepAliveTime="PT10S"), WaitTime="PT2S"
    )
    assert time.monotonic() - started < 4 and len(results) == 2
    # 2-1-7 MaxMatches
    _, results = drain(tse, tse.FindRecordings(Scope={}, MaxMatches=1, KeepAliveTime="PT10S"))
    assert len(results) == 1


@pytest.mark.parametrize(
    ("case", "expression", "expected"),
    [
        ("2-1-8", 'boolean(//Track[TrackType = "Video"])', {"yard"}),
        ("2-1-13", 'boolean(//Track[TrackType = "Audio"])', {"yard"}),
        ("2-1-14", 'boolean(//Track[TrackType = "Metadata"])', set()),
        (
            "2-1-15",
            'boolean(//Track[TrackType = "Video"]) and boolean(//Track[TrackType = "Audio"])',
            {"yard"},
        ),
        (
            "2-1-16",
            'boolean(//Track[TrackType = "Video"]) and boolean(//Track[TrackType = "Metadata"])',
            set(),
        ),
    ],
)
def test_search_2_1_8_13_14_15_16_information_filters(rec, case, expression, expected):
    tse = search_client(rec.box)
    token = tse.FindRecordings(
        Scope={"RecordingInformationFilter": expression}, KeepAliveTime="PT10S"
    )
    _, results = drain(tse, token)
    names = {"yard": rec.yard, "attic": rec.attic}
    assert {r.RecordingToken for r in results} == {names[n] for n in expected}, case
    # Consistent with each recording's own information.
    for token in names.values():
        info = tse.GetRecordingInformation(token)
        types = {t.TrackType for t in info.Track}
        wanted = {w for w in ("Video", "Audio", "Metadata") if f'"{w}"' in expression}
        assert (token in {r.RecordingToken for r in results}) == (wanted <= types)


def test_search_2_1_10_11_12_invalid_and_ended_tokens(rec):
    tse = search_client(rec.box)
    for call in (tse.GetRecordingSearchResults, tse.EndSearch):
        with pytest.raises(zeep.exceptions.Fault) as info:
            call("SEARCH_invalid_1")
        assert subcodes(info) == ["InvalidArgVal", "InvalidToken"]
    token = tse.FindRecordings(Scope={}, KeepAliveTime="PT10S")
    tse.EndSearch(token)
    with pytest.raises(zeep.exceptions.Fault) as info:
        tse.GetRecordingSearchResults(token)
    assert subcodes(info) == ["InvalidArgVal", "InvalidToken"]


def test_search_2_1_17_18_consistency_with_get_recordings_and_information(rec):
    tse, trc = search_client(rec.box), recording_client(rec.box)
    _, results = drain(tse, tse.FindRecordings(Scope={}, KeepAliveTime="PT10S"))
    items = {r.RecordingToken: r for r in trc.GetRecordings()}
    assert {r.RecordingToken for r in results} == set(items)
    for info in results:
        item = items[info.RecordingToken]
        assert info.Source.Name == item.Configuration.Source.Name
        assert info.Content == item.Configuration.Content
        assert {t.TrackToken for t in info.Track} <= {t.TrackToken for t in item.Tracks.Track}
        direct = tse.GetRecordingInformation(info.RecordingToken)
        assert zeep.helpers.serialize_object(direct) == zeep.helpers.serialize_object(info)


@pytest.mark.parametrize("kind", ["recordings", "events"])
def test_search_2_1_19_20_3_1_15_16_keep_alive_and_expiration(rec, kind):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)

    def find(keepalive: str) -> str:
        if kind == "recordings":
            return tse.FindRecordings(Scope={}, KeepAliveTime=keepalive)
        return tse.FindEvents(
            StartPoint=info.EarliestRecording,
            Scope={},
            SearchFilter={},
            IncludeStartState=False,
            KeepAliveTime=keepalive,
        )

    results = tse.GetRecordingSearchResults if kind == "recordings" else tse.GetEventSearchResults
    token = find("PT2S")
    for _ in range(3):
        time.sleep(1.2)
        assert results(token, MaxResults=1).SearchState in ("Searching", "Completed")
        if kind == "recordings":
            break
    tse.EndSearch(token) if kind == "events" else None
    token = find("PT1S")
    time.sleep(2.5)
    with pytest.raises(zeep.exceptions.Fault) as fault:
        results(token)
    assert subcodes(fault) == ["InvalidArgVal", "InvalidToken"]


def test_search_3_1_5_find_events_max_matches_1(rec):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    found = events(tse, info.EarliestRecording, info.LatestRecording, MaxMatches=1)
    assert len(found) == 1 and found[0][2] == info.EarliestRecording


def test_search_3_1_10_invalid_event_search_token(rec):
    with pytest.raises(zeep.exceptions.Fault) as fault:
        search_client(rec.box).GetEventSearchResults("SEARCH_invalid_2")
    assert subcodes(fault) == ["InvalidArgVal", "InvalidToken"]


@pytest.mark.parametrize("case", ["3-1-11 inside", "3-1-13 equal", "3-1-14 outside"])
def test_search_3_1_11_13_14_forward_and_backward(rec, case):
    tse = search_client(rec.box)
    info = tse.GetRecordingInformation(rec.yard)
    lo, hi = info.EarliestRecording, info.LatestRecording
    if case.endswith("inside"):
        lo, hi = lo + (hi - lo) / 4, hi - (hi - lo) / 4
    elif case.endswith("outside"):
        lo, hi = lo - (hi - lo), hi + (hi - lo)
    scope = {"IncludedRecordings": [rec.yard]}
    forward = events(tse, lo, hi, Scope=scope)
    backward = events(tse, hi, lo, Scope=scope)
    assert forward and backward == forward[::-1], case
    assert all(
        lo - (lo - lo.replace(microsecond=lo.microsecond // 1000 * 1000)) <= t <= hi
        for _, _, t, _ in forward
    )
    # With start state: virtual events first, at the StartPoint.
    with_state = events(tse, lo, hi, Scope=scope, IncludeStartState=True)
    virtual = [e for e in with_state if e[3]]
    assert virtual and with_state[: len(virtual)] == virtual
    assert {iso(e[2]) for e in virtual} == {iso(lo)}
    assert with_state[len(virtual) :] == forward
