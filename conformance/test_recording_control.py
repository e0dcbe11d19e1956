"""Recording Control Device Test Specification cases (RECORDING-*) for the Recording
service (trc), with a receiver (trv) on a GStreamer camera where a case records; the
media-profile cases (2-1-28…31, 3-1-11) record a profile the Media service lists for that
receiver. The event cases (RECORDING-5-*) are in test_recording_events.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zeep.exceptions
from lxml import etree

from tests import gstcam
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.mediautil import media_client
from tests.nvrproc import NvrProcess
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import receiver_client, wait_for
from tests.test_recording_control_service import (
    CAMERA,
    FAST_SEGMENTS,
    job_config,
    recorded_bytes,
    recording_client,
    recording_config,
    segments_of,
    state_of,
)

TRC = "http://www.onvif.org/ver10/recording/wsdl"
TT = "http://www.onvif.org/ver10/schema"
PROFILE_TYPE = f"{TT}/Profile"


def subcodes(info: pytest.ExceptionInfo) -> list[str]:
    return [q.localname for q in info.value.subcodes or []]


@pytest.fixture
def trc(nvr: NvrProcess) -> Iterator:
    """The shared box's recording service; what a case creates goes again after it."""
    service = recording_client(nvr)
    before = {r.RecordingToken for r in service.GetRecordings()}
    yield service
    for recording in service.GetRecordings():
        if recording.RecordingToken not in before:
            service.DeleteRecording(recording.RecordingToken)


@pytest.fixture
def recorded(tmp_path) -> Iterator[tuple[NvrProcess, object, object, str]]:
    """A box of its own with a receiver on a running camera: (box, trv, trc, receiver)."""
    with gstcam.camera(*CAMERA) as url:
        box = NvrProcess(tmp_path / "data", ADMIN_PASSWORD, extra_env=FAST_SEGMENTS)
        box.start()
        try:
            trv, trc = receiver_client(box), recording_client(box)
            yield box, trv, trc, trv.CreateReceiver(receiver_config(url)).Token
        finally:
            box.stop()
        assert not box.blocking_calls(), box.blocking_calls()


def legacy_recording_capabilities(nvr: NvrProcess) -> dict[str, str]:
    """GetCapabilities' Extension/Recording as text (zeep files it under the wildcard)."""
    caps = device_client(nvr.device_url)[1].GetCapabilities(["All"])
    element = next(
        e for e in caps.Extension._value_1 if etree.QName(e).text == f"{{{TT}}}Recording"
    )
    return {etree.QName(child).localname: child.text or "" for child in element}


def stalls(box: NvrProcess, recording: str, settle_s: float = 1.0, watch_s: float = 3.0) -> bool:
    """Nothing more is written into the recording after ``settle_s``."""
    time.sleep(settle_s)
    size = recorded_bytes(box.data_dir, recording)
    time.sleep(watch_s)
    return recorded_bytes(box.data_dir, recording) == size


# -- capabilities ------------------------------------------------------------------------------
def test_RECORDING_1_1_1_recording_control_service_capabilities(nvr, trc):
    caps = trc.GetServiceCapabilities()
    assert caps.Options is True  # GetRecordingOptions (Profile G)
    assert caps.DynamicRecordings is True and caps.DynamicTracks is True
    assert caps.MaxRecordings >= 1 and caps.MaxRecordingJobs >= 1
    assert caps.MaxRate > 0 and caps.MaxTotalRate >= caps.MaxRate
    assert "H264" in caps.Encoding
    assert caps.SupportedExportFileFormats is None  # ExportRecordedData not offered
    legacy = legacy_recording_capabilities(nvr)
    assert legacy["XAddr"] == nvr.base + "/onvif/recording_service"
    assert (legacy["ReceiverSource"], legacy["MediaProfileSource"]) == ("true", "true")
    assert (legacy["DynamicRecordings"], legacy["DynamicTracks"]) == ("true", "true")
    assert int(legacy["MaxStringLength"]) >= 64


def test_RECORDING_1_1_3_get_services_and_capabilities_consistency(nvr, trc, anonymous):
    (service,) = [s for s in anonymous.GetServices(True) if s.Namespace == TRC]
    assert service.XAddr == nvr.base + "/onvif/recording_service"
    # The device client's schema has no trc types: read the element with the trc ones.
    element = service.Capabilities._value_1
    embedded = trc._client.get_element(f"{{{TRC}}}Capabilities").parse(
        element, trc._client.wsdl.types
    )
    direct = trc.GetServiceCapabilities()
    for name in (
        "DynamicRecordings",
        "DynamicTracks",
        "MaxRate",
        "MaxTotalRate",
        "MaxRecordings",
        "MaxRecordingJobs",
        "Options",
        "MetadataRecording",
    ):
        assert getattr(embedded, name) == getattr(direct, name), name
    assert list(embedded.Encoding) == list(direct.Encoding)


# -- recording on a receiver -------------------------------------------------------------------
def test_RECORDING_2_1_20_and_2_1_22_start_on_receiver_then_job_idle(recorded):
    box, _, trc, receiver = recorded
    recording = trc.CreateRecording(recording_config())
    job = trc.CreateRecordingJob(
        job_config(recording, receiver, tracks=[("video", "VIDEO001")])
    ).JobToken
    wait_for(lambda: state_of(trc, job) == "Active")
    wait_for(lambda: len(segments_of(box.data_dir, recording)) >= 1)
    trc.SetRecordingJobMode(job, "Idle")
    assert state_of(trc, job) == "Idle"
    assert stalls(box, recording)


def test_RECORDING_2_1_23_stop_on_receiver_never_connect_mode(recorded):
    box, trv, trc, receiver = recorded
    recording = trc.CreateRecording(recording_config())
    job = trc.CreateRecordingJob(
        job_config(recording, receiver, tracks=[("video", "VIDEO001")])
    ).JobToken
    wait_for(lambda: state_of(trc, job) == "Active")
    trv.SetReceiverMode(receiver, "NeverConnect")
    assert trv.GetReceiverState(receiver).State == "NotConnected"
    assert state_of(trc, job) != "Active"
    assert stalls(box, recording)


def test_RECORDING_2_1_25_stop_on_receiver_delete_job(recorded):
    box, _, trc, receiver = recorded
    recording = trc.CreateRecording(recording_config())
    job = trc.CreateRecordingJob(
        job_config(recording, receiver, tracks=[("video", "VIDEO001")])
    ).JobToken
    wait_for(lambda: state_of(trc, job) == "Active")
    trc.DeleteRecordingJob(job)
    assert trc.GetRecordingJobs() == []
    assert stalls(box, recording)
    assert segments_of(box.data_dir, recording)  # the recorded data stays


# -- recording on a media profile --------------------------------------------------------------
def video_profile(box: NvrProcess) -> str:
    """The first media profile (Media service) with a video source: what a job records."""
    profiles = media_client(box).GetProfiles()
    return next(p.token for p in profiles if p.VideoSourceConfiguration is not None)


def profile_job_config(recording: str, profile: str, mode: str = "Active", priority: int = 0):
    return {
        "RecordingToken": recording,
        "Mode": mode,
        "Priority": priority,
        "Source": [
            {
                "SourceToken": {"Token": profile, "Type": PROFILE_TYPE},
                "Tracks": [{"SourceTag": "video", "Destination": "VIDEO001"}],
            }
        ],
    }


def test_RECORDING_2_1_28_and_2_1_29_start_on_media_profile_then_job_idle(recorded):
    box, _, trc, _ = recorded
    profile = video_profile(box)
    recording = trc.CreateRecording(recording_config())
    created = trc.CreateRecordingJob(profile_job_config(recording, profile))
    job = created.JobToken
    (source,) = created.JobConfiguration.Source
    assert (source.SourceToken.Token, source.SourceToken.Type) == (profile, PROFILE_TYPE)
    wait_for(lambda: state_of(trc, job) == "Active")
    wait_for(lambda: len(segments_of(box.data_dir, recording)) >= 1)
    trc.SetRecordingJobMode(job, "Idle")
    assert state_of(trc, job) == "Idle"
    assert stalls(box, recording)


def test_RECORDING_2_1_30_stop_on_media_profile_delete_job(recorded):
    box, _, trc, _ = recorded
    recording = trc.CreateRecording(recording_config())
    job = trc.CreateRecordingJob(profile_job_config(recording, video_profile(box))).JobToken
    wait_for(lambda: state_of(trc, job) == "Active")
    trc.DeleteRecordingJob(job)
    assert trc.GetRecordingJobs() == []
    assert stalls(box, recording)
    assert segments_of(box.data_dir, recording)


def test_RECORDING_2_1_31_modify_media_attribute_while_recording_media_profile(recorded):
    """The box re-streams the camera without an encoder: what it can change of the profile's
    video encoder configuration (its name) changes while the job goes on recording; a new
    resolution is refused (ter:ConfigModify) and the recording is not disturbed either."""
    box, _, trc, _ = recorded
    profile = video_profile(box)
    recording = trc.CreateRecording(recording_config())
    job = trc.CreateRecordingJob(profile_job_config(recording, profile)).JobToken
    wait_for(lambda: state_of(trc, job) == "Active")
    trt = media_client(box)
    wait_for(lambda: trt.GetProfile(profile).VideoEncoderConfiguration is not None)
    encoder = trt.GetProfile(profile).VideoEncoderConfiguration
    encoder.Name = "renamed while recording"
    trt.SetVideoEncoderConfiguration(encoder, True)
    assert trt.GetProfile(profile).VideoEncoderConfiguration.Name == "renamed while recording"
    encoder.Resolution.Width //= 2
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.SetVideoEncoderConfiguration(encoder, True)
    assert subcodes(info) == ["InvalidArgVal", "ConfigModify"]
    assert state_of(trc, job) == "Active"
    size = recorded_bytes(box.data_dir, recording)
    wait_for(lambda: recorded_bytes(box.data_dir, recording) > size)


# -- configuration -----------------------------------------------------------------------------
def test_RECORDING_3_1_7_dynamic_tracks_configuration(trc):
    recording = trc.CreateRecording(recording_config())
    spare = trc.GetRecordingOptions(recording).Track
    assert spare.SpareTotal >= 1 and spare.SpareVideo >= 1
    track = trc.CreateTrack(recording, {"TrackType": "Video", "Description": "low"})
    tracks = {t.TrackToken: t.Configuration for t in trc.GetRecordings()[-1].Tracks.Track}
    assert (tracks[track].TrackType, tracks[track].Description) == ("Video", "low")
    assert trc.GetRecordingOptions(recording).Track.SpareTotal == spare.SpareTotal - 1
    trc.DeleteTrack(recording, track)
    with pytest.raises(zeep.exceptions.Fault) as info:
        trc.GetTrackConfiguration(recording, track)
    assert subcodes(info) == ["InvalidArgVal", "NoTrack"]


def test_RECORDING_3_1_10_dynamic_recordings_configuration(trc):
    before = len(trc.GetRecordings())
    recording = trc.CreateRecording(recording_config(retention="PT0S"))
    (item,) = [r for r in trc.GetRecordings() if r.RecordingToken == recording]
    assert len(trc.GetRecordings()) == before + 1
    assert [
        (t.TrackToken, t.Configuration.TrackType, t.Configuration.Description or "")
        for t in item.Tracks.Track
    ] == [
        ("VIDEO001", "Video", ""),
        ("AUDIO001", "Audio", ""),
        ("META001", "Metadata", ""),
    ]
    assert item.Configuration.MaximumRetentionTime.total_seconds() == 0
    trc.DeleteRecording(recording)
    assert recording not in {r.RecordingToken for r in trc.GetRecordings()}


def test_RECORDING_3_1_12_job_priorities_on_receiver(recorded):
    _, _, trc, receiver = recorded
    recording = trc.CreateRecording(recording_config())
    video = [("video", "VIDEO001")]
    low = trc.CreateRecordingJob(job_config(recording, receiver, priority=1, tracks=video)).JobToken
    high = trc.CreateRecordingJob(
        job_config(recording, receiver, priority=2, tracks=video)
    ).JobToken
    wait_for(lambda: state_of(trc, high) == "Active")
    assert state_of(trc, low) == "Idle"
    trc.SetRecordingJobConfiguration(low, job_config(recording, receiver, priority=3, tracks=video))
    wait_for(lambda: state_of(trc, low) == "Active")
    assert state_of(trc, high) == "Idle"


def test_RECORDING_3_1_11_job_priorities_on_media_profile(recorded):
    box, _, trc, _ = recorded
    profile = video_profile(box)
    recording = trc.CreateRecording(recording_config())
    assert trc.GetRecordingOptions(recording).Job.Spare >= 2
    low = trc.CreateRecordingJob(profile_job_config(recording, profile, priority=1)).JobToken
    high = trc.CreateRecordingJob(profile_job_config(recording, profile, priority=2)).JobToken
    wait_for(lambda: state_of(trc, high) == "Active")
    assert state_of(trc, low) == "Idle"
    trc.SetRecordingJobConfiguration(low, profile_job_config(recording, profile, priority=3))
    wait_for(lambda: state_of(trc, low) == "Active")
    assert state_of(trc, high) == "Idle"


# -- general -----------------------------------------------------------------------------------
def test_RECORDING_4_1_1_and_4_1_2_get_recordings_and_configuration(trc):
    recording = trc.CreateRecording(recording_config("four-one-one"))
    items = {r.RecordingToken: r for r in trc.GetRecordings()}
    config = trc.GetRecordingConfiguration(recording)
    assert items[recording].Configuration.Source.Name == config.Source.Name == "four-one-one"
    assert config.Content == "continuous" and config.Source.Location == "lobby"


def test_RECORDING_4_1_3_get_recording_configuration_invalid_token(trc):
    with pytest.raises(zeep.exceptions.Fault) as info:
        trc.GetRecordingConfiguration("RECORDING_INVALID")
    assert subcodes(info) == ["InvalidArgVal", "NoRecording"]


def test_RECORDING_4_1_4_4_1_5_4_1_7_jobs_configuration_and_state(trc):
    recording = trc.CreateRecording(recording_config())
    job = trc.CreateRecordingJob(job_config(recording, None, mode="Idle", priority=4)).JobToken
    jobs = {j.JobToken: j.JobConfiguration for j in trc.GetRecordingJobs()}
    assert jobs[job].RecordingToken == recording
    config = trc.GetRecordingJobConfiguration(job)
    assert (config.Mode, config.Priority) == ("Idle", 4) == (jobs[job].Mode, jobs[job].Priority)
    state = trc.GetRecordingJobState(job)
    assert (state.RecordingToken, state.State) == (recording, "Idle")
    assert {t.Destination for t in state.Sources[0].Tracks.Track} == {
        "VIDEO001",
        "AUDIO001",
        "META001",
    }


def test_RECORDING_4_1_9_and_4_1_10_track_configuration(trc):
    recording = trc.CreateRecording(recording_config())
    assert trc.GetTrackConfiguration(recording, "VIDEO001").TrackType == "Video"
    with pytest.raises(zeep.exceptions.Fault) as info:
        trc.GetTrackConfiguration(recording, "TRACK_INVALID")
    assert subcodes(info) == ["InvalidArgVal", "NoTrack"]


def _longest_source(nvr: NvrProcess) -> dict:
    length = int(legacy_recording_capabilities(nvr)["MaxStringLength"])
    return recording_config(
        "N" * length,
        SourceId="urn:" + "i" * (length - 4),
        Location="L" * length,
        Description="D" * length,
        Address="http://" + "a" * (length - 7),
        Content="C" * length,
    )


def _same_source(got, sent: dict) -> None:
    for name, value in sent["Source"].items():
        assert getattr(got.Source, name) == value, name
    assert got.Content == sent["Content"]


def test_RECORDING_4_1_11_set_recording_configuration_max_length(nvr, trc):
    recording = trc.CreateRecording(recording_config())
    longest = _longest_source(nvr)
    trc.SetRecordingConfiguration(recording, longest)
    _same_source(trc.GetRecordingConfiguration(recording), longest)


def test_RECORDING_4_1_12_create_recording_max_length(nvr, trc):
    longest = _longest_source(nvr)
    recording = trc.CreateRecording(longest)
    _same_source(trc.GetRecordingConfiguration(recording), longest)


def test_RECORDING_4_1_13_and_4_1_14_job_invalid_token(trc):
    for call in (trc.GetRecordingJobConfiguration, trc.GetRecordingJobState):
        with pytest.raises(zeep.exceptions.Fault) as info:
            call("JOB_INVALID")
        assert subcodes(info) == ["InvalidArgVal", "NoRecordingJob"]
