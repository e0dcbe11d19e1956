"""Recording Control Device Test Specification, event cases (RECORDING-5-*): the
RecordingConfig/* events a VMS follows, received on a pull point of the box's Events service
while the Recording service (trc) is driven over SOAP. Each case filters on its own
recording's token (the session box is shared with other cases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.eventutil import EventsClient, Notification
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client
from tests.test_recording_control_service import (
    CAMERA,
    FAST_SEGMENTS,
    job_config,
    recording_client,
    recording_config,
    segments_of,
)
from tests.test_recording_events import Pulled, find, has

RC = "tns1:RecordingConfig/"


@pytest.fixture
def box(nvr: NvrProcess) -> Iterator[tuple[object, Pulled]]:
    """(trc, a pull point on every RecordingConfig event); created recordings go after."""
    trc = recording_client(nvr)
    before = {r.RecordingToken for r in trc.GetRecordings()}
    events = EventsClient(nvr.base, "admin", ADMIN_PASSWORD)
    pulled = Pulled(events, events.create(termination="PT120S"))
    yield trc, pulled
    for recording in trc.GetRecordings():
        if recording.RecordingToken not in before:
            trc.DeleteRecording(recording.RecordingToken)


def of(recording: str, topic: str, ns: list[Notification]) -> list[Notification]:
    return [n for n in find(ns, RC + topic) if n.source.get("RecordingToken") == recording]


def test_RECORDING_5_1_3_recording_configuration_event(box):
    trc, pulled = box
    recording = trc.CreateRecording(recording_config("evt-5-1-3"))
    config = trc.GetRecordingConfiguration(recording)
    config.Content = "changed by RECORDING-5-1-3"
    trc.SetRecordingConfiguration(recording, config)
    got = pulled.pull_until(lambda ns: bool(of(recording, "RecordingConfiguration", ns)))
    [event] = of(recording, "RecordingConfiguration", got)
    assert event.operation is None  # not a property


def test_RECORDING_5_1_4_track_configuration_event(box):
    trc, pulled = box
    recording = trc.CreateRecording(recording_config("evt-5-1-4"))
    track = trc.GetTrackConfiguration(recording, "VIDEO001")
    track.Description = "changed by RECORDING-5-1-4"
    trc.SetTrackConfiguration(recording, "VIDEO001", track)
    got = pulled.pull_until(lambda ns: bool(of(recording, "TrackConfiguration", ns)))
    [event] = of(recording, "TrackConfiguration", got)
    assert event.source == {"RecordingToken": recording, "TrackToken": "VIDEO001"}


@pytest.mark.parametrize("case", ["5-1-6", "5-1-10"])
def test_RECORDING_5_1_6_and_5_1_10_create_recording_creates_tracks(box, case):
    """CreateRecording: one CreateRecording event, then a CreateTrack per default track."""
    trc, pulled = box
    recording = trc.CreateRecording(recording_config(f"evt-{case}"))
    got = pulled.pull_until(lambda ns: len(of(recording, "CreateTrack", ns)) == 3)
    assert len(of(recording, "CreateRecording", got)) == 1
    assert sorted(n.source["TrackToken"] for n in of(recording, "CreateTrack", got)) == [
        "AUDIO001",
        "META001",
        "VIDEO001",
    ]


@pytest.mark.parametrize("case", ["5-1-8", "5-1-15", "5-1-9", "5-1-16"])
def test_RECORDING_5_1_8_9_15_16_create_and_delete_track_events(box, case):
    trc, pulled = box
    recording = trc.CreateRecording(recording_config(f"evt-{case}"))
    track = trc.CreateTrack(
        recording, {"TrackType": "Video", "Description": f"added by RECORDING-{case}"}
    )
    got = pulled.pull_until(
        lambda ns: any(
            n.source.get("TrackToken") == track for n in of(recording, "CreateTrack", ns)
        )
    )
    trc.DeleteTrack(recording, track)
    got = pulled.pull_until(lambda ns: bool(of(recording, "DeleteTrack", ns)))
    [deleted] = of(recording, "DeleteTrack", got)
    assert deleted.source == {"RecordingToken": recording, "TrackToken": track}


@pytest.mark.parametrize("case", ["5-1-11", "5-1-17"])
def test_RECORDING_5_1_11_and_5_1_17_delete_recording_events(box, case):
    """DeleteRecording: a DeleteTrack per track, then DeleteRecording, in that order."""
    trc, pulled = box
    recording = trc.CreateRecording(recording_config(f"evt-{case}"))
    trc.DeleteRecording(recording)
    got = pulled.pull_until(lambda ns: bool(of(recording, "DeleteRecording", ns)))
    order = [
        n.topic.removeprefix(RC)
        for n in got
        if n.source.get("RecordingToken") == recording and "Delete" in n.topic
    ]
    assert order == ["DeleteTrack"] * 3 + ["DeleteRecording"]


def test_RECORDING_5_1_18_19_20_job_events(box, nvr):
    """A job on a receiver that cannot connect: RecordingJobConfiguration on create and on
    change, JobState as a property (Initialized, then Changed as the mode changes)."""
    trc, pulled = box
    trv = receiver_client(nvr)
    receiver = trv.CreateReceiver(receiver_config("rtsp://127.0.0.1:9/nothing-here")).Token
    try:
        recording = trc.CreateRecording(recording_config("evt-5-1-18"))
        job = trc.CreateRecordingJob(job_config(recording, receiver, mode="Idle")).JobToken
        got = pulled.pull_until(has(RC + "JobState", RecordingJobToken=job))
        [first] = find(got, RC + "JobState", RecordingJobToken=job)
        assert first.operation == "Initialized" and first.data["State"] == "Idle"
        assert find(got, RC + "RecordingJobConfiguration", RecordingJobToken=job)
        trc.SetRecordingJobMode(job, "Active")  # RECORDING-5-1-19: the state changes
        got = pulled.pull_until(
            lambda ns: any(
                n.operation == "Changed" for n in find(ns, RC + "JobState", RecordingJobToken=job)
            )
        )
        changed = [
            n for n in find(got, RC + "JobState", RecordingJobToken=job) if n.operation == "Changed"
        ]
        assert changed[0].data["State"] in ("Active", "Error")  # no camera at that address
        config = trc.GetRecordingJobConfiguration(job)
        config.Priority = 5
        trc.SetRecordingJobConfiguration(job, config)  # RECORDING-5-1-20
        got = pulled.pull_until(
            lambda ns: len(find(ns, RC + "RecordingJobConfiguration", RecordingJobToken=job)) >= 2
        )
        trc.DeleteRecording(recording)
    finally:
        trv.DeleteReceiver(receiver)


def test_RECORDING_5_1_14_delete_track_data_event(tmp_path):
    """Recorded data deleted (with its recording) gives DeleteTrackData per media track with
    the deleted time range."""
    gstcam.require()
    with gstcam.camera(*CAMERA) as url:
        box = NvrProcess(tmp_path / "data", ADMIN_PASSWORD, extra_env=FAST_SEGMENTS)
        box.start()
        try:
            events = EventsClient(box.base, "admin", ADMIN_PASSWORD)
            pulled = Pulled(events, events.create(termination="PT120S"))
            trv, trc = receiver_client(box), recording_client(box)
            receiver = trv.CreateReceiver(receiver_config(url)).Token
            recording = trc.CreateRecording(recording_config("evt-5-1-14"))
            trc.CreateRecordingJob(job_config(recording, receiver))
            pulled.pull_until(has("tns1:RecordingHistory/Recording/State", IsRecording="true"))
            pulled.pull_until(lambda ns: len(segments_of(box.data_dir, recording)) >= 1)
            trc.DeleteRecording(recording)
            got = pulled.pull_until(lambda ns: bool(of(recording, "DeleteRecording", ns)))
            deleted = of(recording, "DeleteTrackData", got)
            assert {n.source["TrackToken"] for n in deleted} >= {"VIDEO001"}
            for n in deleted:
                assert n.data["StartTime"] < n.data["EndTime"]
        finally:
            box.stop()
