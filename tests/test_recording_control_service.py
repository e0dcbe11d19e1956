"""The Recording service (trc) over SOAP against a running NVR, as a VMS drives it: zeep
as the client, a GStreamer RTSP camera behind a receiver (trv), recorded data checked in
the index and on disk, every answer validated against the official XSD, objects that
outlive a restart, a camera that goes away and comes back."""

from __future__ import annotations

import posixpath
import sqlite3
import time
from pathlib import Path

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.helpers import serialize_object
from zeep.wsse.username import UsernameToken

from onvif_nvr.services.recording import RecordingService
from onvif_nvr.wsdl.catalog import RECORDING, load_binding, wsdl_root
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.soaputil import SOAP12, envelope, post, username_token
from tests.test_receiver_service import config as receiver_config
from tests.test_receiver_service import fault_codes, receiver_client, wait_for
from tests.test_schema_validation import XS, _Recorder, _schema_closure

TRC = RECORDING.namespace
TT = "http://www.onvif.org/ver10/schema"
RECEIVER_TYPE = "http://www.onvif.org/ver10/schema/Receiver"
CAMERA = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25")
FAST_SEGMENTS = {"ONVIF_NVR_STORAGE_SEGMENT_S": "2"}


def recording_client(nvr: NvrProcess, user: str = "admin", password: str = ADMIN_PASSWORD):
    """A zeep proxy for the box's recording service."""
    client = zeep.Client(
        str(wsdl_root() / RECORDING.wsdl),
        wsse=UsernameToken(user, password, use_digest=True),
        transport=zeep.Transport(session=requests.Session(), timeout=20, operation_timeout=20),
        settings=zeep.Settings(strict=False),
    )
    return client.create_service(RECORDING.binding_qname, nvr.base + RECORDING.path)


def recording_config(name: str = "cam", retention: str = "PT0S", **source: str) -> dict:
    return {
        "Source": {
            "SourceId": source.get("SourceId", "urn:uuid:5f0c6e7e-0000-4000-8000-000000000001"),
            "Name": name,
            "Location": source.get("Location", "lobby"),
            "Description": source.get("Description", "front door"),
            "Address": source.get("Address", "http://192.0.2.10/onvif/device_service"),
        },
        "Content": source.get("Content", "continuous"),
        "MaximumRetentionTime": retention,
    }


def job_config(
    recording: str, receiver: str | None, mode: str = "Active", priority: int = 0, tracks=None
):
    source: dict = {}
    if receiver is None:
        source["AutoCreateReceiver"] = True
    else:
        source["SourceToken"] = {"Token": receiver, "Type": RECEIVER_TYPE}
    if tracks is not None:
        source["Tracks"] = [{"SourceTag": tag, "Destination": dest} for tag, dest in tracks]
    return {"RecordingToken": recording, "Mode": mode, "Priority": priority, "Source": [source]}


def segments_of(data: Path, recording: str) -> list[tuple[int, int]]:
    """(segment id, size) of every indexed segment of the recording."""
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        return db.execute(
            "SELECT s.id, s.size FROM segments s JOIN recordings r ON r.id = s.recording_id "
            "WHERE r.token = ? ORDER BY s.id",
            (recording,),
        ).fetchall()


def recorded_bytes(data: Path, recording: str) -> int:
    """What the recording's segment files hold on disk now."""
    return sum(segment_file(data, i).stat().st_size for i, _ in segments_of(data, recording))


def segment_file(data: Path, segment_id: int) -> Path:
    found = list((data / "recordings").glob(f"*/{segment_id}.mp4"))
    assert len(found) == 1, (segment_id, found)
    return found[0]


def state_of(trc, job: str) -> str:
    return str(trc.GetRecordingJobState(job).State)


def test_a_vms_records_a_camera_over_soap(tmp_path):
    """CreateReceiver → CreateRecording → CreateRecordingJob (Active) → data grows →
    SetRecordingJobMode Idle stops writing → DeleteRecording removes data and files."""
    gstcam.require()
    data = tmp_path / "data"
    with gstcam.camera(*CAMERA) as url:
        nvr = NvrProcess(data, ADMIN_PASSWORD, extra_env=FAST_SEGMENTS)
        nvr.start()
        try:
            trv, trc = receiver_client(nvr), recording_client(nvr)
            receiver = trv.CreateReceiver(receiver_config(url)).Token
            recording = trc.CreateRecording(recording_config("gst", "P7D"))
            tracks = trc.GetRecordings()[0].Tracks.Track
            assert [(t.TrackToken, t.Configuration.TrackType) for t in tracks] == [
                ("VIDEO001", "Video"),
                ("AUDIO001", "Audio"),
                ("META001", "Metadata"),
            ]
            assert trc.GetRecordingConfiguration(recording).MaximumRetentionTime.days == 7

            # The camera has no audio: a job for the video track only is wholly Active.
            created = trc.CreateRecordingJob(
                job_config(recording, receiver, tracks=[("video", "VIDEO001")])
            )
            job = created.JobToken
            effective = created.JobConfiguration
            assert (effective.RecordingToken, effective.Mode, effective.Priority) == (
                recording,
                "Active",
                0,
            )
            assert effective.Source[0].SourceToken.Token == receiver
            assert effective.Source[0].SourceToken.Type == RECEIVER_TYPE
            assert effective.Source[0].AutoCreateReceiver is None
            assert [(t.SourceTag, t.Destination) for t in effective.Source[0].Tracks] == [
                ("video", "VIDEO001")
            ]
            assert [j.JobToken for j in trc.GetRecordingJobs()] == [job]

            wait_for(lambda: state_of(trc, job) == "Active")
            state = trc.GetRecordingJobState(job)
            assert state.RecordingToken == recording
            (source,) = state.Sources
            assert (source.SourceToken.Token, source.State) == (receiver, "Active")
            assert [(t.Destination, t.State) for t in source.Tracks.Track] == [
                ("VIDEO001", "Active")
            ]
            wait_for(lambda: len(segments_of(data, recording)) >= 2)
            first = recorded_bytes(data, recording)
            wait_for(lambda: recorded_bytes(data, recording) > first)

            trc.SetRecordingJobMode(job, "Idle")
            assert state_of(trc, job) == "Idle"
            assert trc.GetRecordingJobConfiguration(job).Mode == "Idle"
            time.sleep(1.0)  # the recorder closes its segment
            stopped = recorded_bytes(data, recording)
            time.sleep(3.0)
            assert recorded_bytes(data, recording) == stopped
            files = [segment_file(data, i) for i, _ in segments_of(data, recording)]
            assert files

            trc.DeleteRecording(recording)
            assert trc.GetRecordings() == []
            assert trc.GetRecordingJobs() == []
            assert segments_of(data, recording) == []
            assert not any(f.exists() for f in files)
            with pytest.raises(zeep.exceptions.Fault) as info:
                trc.GetRecordingJobState(job)
            assert fault_codes(info) == ["InvalidArgVal", "NoRecordingJob"]
            # The receiver was the client's own: it stays.
            assert [r.Token for r in trv.GetReceivers()] == [receiver]
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def test_recordings_tracks_and_jobs_survive_a_restart_and_recording_resumes(tmp_path):
    gstcam.require()
    data = tmp_path / "data"
    with gstcam.camera(*CAMERA) as url:
        nvr = NvrProcess(data, ADMIN_PASSWORD, extra_env=FAST_SEGMENTS)
        nvr.start()
        try:
            trv, trc = receiver_client(nvr), recording_client(nvr)
            receiver = trv.CreateReceiver(receiver_config(url)).Token
            recording = trc.CreateRecording(recording_config("persistent", "PT12H"))
            idle = trc.CreateRecording(recording_config("idle"))
            extra = trc.CreateTrack(recording, {"TrackType": "Video", "Description": "second"})
            assert extra == "VIDEO002"
            trc.SetTrackConfiguration(
                recording, "AUDIO001", {"TrackType": "Video", "Description": "mic"}
            )
            active = trc.CreateRecordingJob(
                job_config(recording, receiver, priority=5, tracks=[("video", "VIDEO001")])
            ).JobToken
            parked = trc.CreateRecordingJob(job_config(idle, None, mode="Idle")).JobToken
            wait_for(lambda: state_of(trc, active) == "Active")
            wait_for(lambda: len(segments_of(data, recording)) >= 1)
            before_recordings = serialize_object(trc.GetRecordings())
            before_jobs = serialize_object(trc.GetRecordingJobs())
        finally:
            nvr.stop()
        stored = len(segments_of(data, recording))

        nvr.start()
        try:
            trc = recording_client(nvr)
            assert serialize_object(trc.GetRecordings()) == before_recordings
            assert serialize_object(trc.GetRecordingJobs()) == before_jobs
            track = trc.GetTrackConfiguration(recording, "AUDIO001")
            assert (track.TrackType, track.Description) == ("Audio", "mic")
            assert trc.GetTrackConfiguration(recording, extra).Description == "second"
            config = trc.GetRecordingConfiguration(recording)
            assert (
                config.Source.Name == "persistent" and config.MaximumRetentionTime.seconds == 43200
            )
            jobs = {j.JobToken: j.JobConfiguration for j in trc.GetRecordingJobs()}
            assert (jobs[active].Mode, jobs[active].Priority) == ("Active", 5)
            assert jobs[parked].Mode == "Idle"
            assert state_of(trc, parked) == "Idle"
            wait_for(lambda: state_of(trc, active) == "Active")
            wait_for(lambda: len(segments_of(data, recording)) > stored)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def test_an_unreachable_camera_puts_the_job_in_error_until_it_comes_back(tmp_path):
    gstcam.require()
    port = gstcam.free_port()
    nvr = NvrProcess(tmp_path / "data", ADMIN_PASSWORD, extra_env=FAST_SEGMENTS)
    nvr.start()
    try:
        trv, trc = receiver_client(nvr), recording_client(nvr)
        receiver = trv.CreateReceiver(receiver_config(f"rtsp://127.0.0.1:{port}/live")).Token
        recording = trc.CreateRecording(recording_config("away"))
        job = trc.CreateRecordingJob(
            job_config(recording, receiver, tracks=[("video", "VIDEO001")])
        ).JobToken
        wait_for(lambda: state_of(trc, job) == "Error")
        (track,) = trc.GetRecordingJobState(job).Sources[0].Tracks.Track
        assert track.State == "Error" and track.Error  # the reason, e.g. connection refused
        with gstcam.camera(*CAMERA, port=port):
            wait_for(lambda: state_of(trc, job) == "Active", timeout_s=45)
            (track,) = trc.GetRecordingJobState(job).Sources[0].Tracks.Track
            assert track.Error is None
    finally:
        nvr.stop()
    assert not nvr.blocking_calls(), nvr.blocking_calls()


def test_faults_for_unknown_tokens_and_bad_configurations(tmp_path):
    env = {
        "ONVIF_NVR_RECORDING_MAX_RECORDINGS": "2",
        "ONVIF_NVR_RECORDING_MAX_RECORDING_JOBS": "2",
        "ONVIF_NVR_RECORDING_MAX_TRACKS": "4",
    }
    nvr = NvrProcess(tmp_path / "data", ADMIN_PASSWORD, extra_env=env)
    nvr.start()
    try:
        trc = recording_client(nvr)

        def fault(call) -> list[str]:
            with pytest.raises(zeep.exceptions.Fault) as info:
                call()
            return fault_codes(info)

        recording = trc.CreateRecording(recording_config())
        job = trc.CreateRecordingJob(job_config(recording, None, mode="Idle")).JobToken
        no_recording = ["InvalidArgVal", "NoRecording"]
        for call in (
            lambda: trc.DeleteRecording("RECORDING_404"),
            lambda: trc.GetRecordingConfiguration("RECORDING_404"),
            lambda: trc.SetRecordingConfiguration("RECORDING_404", recording_config()),
            lambda: trc.GetRecordingOptions("RECORDING_404"),
            lambda: trc.CreateTrack("RECORDING_404", {"TrackType": "Video", "Description": ""}),
            lambda: trc.DeleteTrack("RECORDING_404", "VIDEO001"),
            lambda: trc.GetTrackConfiguration("RECORDING_404", "VIDEO001"),
            lambda: trc.SetTrackConfiguration(
                "RECORDING_404", "VIDEO001", {"TrackType": "Video", "Description": ""}
            ),
            lambda: trc.CreateRecordingJob(job_config("RECORDING_404", None)),
        ):
            assert fault(call) == no_recording
        no_track = ["InvalidArgVal", "NoTrack"]
        assert fault(lambda: trc.GetTrackConfiguration(recording, "VIDEO404")) == no_track
        assert fault(lambda: trc.DeleteTrack(recording, "VIDEO404")) == no_track
        assert (
            fault(
                lambda: trc.SetTrackConfiguration(
                    recording, "VIDEO404", {"TrackType": "Video", "Description": ""}
                )
            )
            == no_track
        )
        no_job = ["InvalidArgVal", "NoRecordingJob"]
        for call in (
            lambda: trc.DeleteRecordingJob("JOB_404"),
            lambda: trc.GetRecordingJobConfiguration("JOB_404"),
            lambda: trc.GetRecordingJobState("JOB_404"),
            lambda: trc.SetRecordingJobMode("JOB_404", "Active"),
            lambda: trc.SetRecordingJobConfiguration("JOB_404", job_config(recording, None)),
        ):
            assert fault(call) == no_job

        bad = ["InvalidArgVal", "BadConfiguration"]
        assert fault(lambda: trc.SetRecordingJobMode(job, "Sometimes")) == [
            "InvalidArgVal",
            "BadMode",
        ]
        for configuration in (
            job_config(recording, None, mode="Sometimes"),
            job_config(recording, None, priority=-1),
            job_config(recording, "RECEIVER_404"),
            job_config(recording, None, tracks=[("video", "VIDEO404")]),
            {"RecordingToken": recording, "Mode": "Active", "Priority": 0},  # no source
            {
                **job_config(recording, None),
                "Source": [{"SourceToken": {"Token": "profile_1", "Type": f"{TT}/Profile"}}],
            },
            {**job_config(recording, None), "ScheduleToken": "weekdays"},
        ):
            assert fault(lambda c=configuration: trc.CreateRecordingJob(c)) == bad, configuration
        other = trc.CreateRecording(recording_config("other"))
        # A job's RecordingToken never changes.
        assert fault(lambda: trc.SetRecordingJobConfiguration(job, job_config(other, None))) == bad
        assert fault(lambda: trc.CreateRecording(recording_config(retention="-PT1S"))) == bad
        assert (
            fault(lambda: trc.CreateTrack(recording, {"TrackType": "Extended", "Description": ""}))
            == bad
        )
        # SetRecordingJobConfiguration answers the configuration as used; AutoCreateReceiver
        # becomes the receiver the box made.
        used = trc.SetRecordingJobConfiguration(
            job, job_config(recording, None, mode="Idle", priority=3)
        )
        assert used.Priority == 3 and used.Source[0].SourceToken.Token.startswith("RECEIVER_")
        assert used.Source[0].AutoCreateReceiver is None

        # Limits: 2 recordings, 2 jobs, 4 tracks a recording.
        assert fault(lambda: trc.CreateRecording(recording_config())) == ["Action", "MaxRecordings"]
        trc.CreateRecordingJob(job_config(other, None, mode="Idle"))
        assert fault(lambda: trc.CreateRecordingJob(job_config(other, None))) == [
            "Action",
            "MaxRecordingJobs",
        ]
        options = trc.GetRecordingOptions(other)
        assert options.Job.Spare == 0
        assert (options.Track.SpareTotal, options.Track.SpareVideo) == (1, 1)
        assert trc.CreateTrack(other, {"TrackType": "Metadata", "Description": ""}) == "META002"
        assert trc.GetRecordingOptions(other).Track.SpareTotal == 0
        assert fault(lambda: trc.CreateTrack(other, {"TrackType": "Audio", "Description": ""})) == [
            "Action",
            "MaxTracks",
        ]
        # A track a job writes to cannot go.
        assert fault(lambda: trc.DeleteTrack(recording, "VIDEO001")) == ["Action", "CannotDelete"]
        trc.DeleteTrack(other, "META002")

        # Export is not offered: the operations' own faults.
        assert (
            fault(
                lambda: trc.ExportRecordedData(
                    SearchScope={"IncludedRecordings": [recording]},
                    FileFormat="ONVIF",
                    StorageDestination={"StorageToken": "usb"},
                )
            )
            == bad
        )
        assert fault(lambda: trc.GetExportRecordedDataState("op-1")) == bad
        assert fault(lambda: trc.StopExportRecordedData("op-1")) == bad
        with pytest.raises(zeep.exceptions.Fault) as info:
            trc.ListRecordedSegments(
                Time={"From": "2026-01-01T00:00:00Z", "Until": "2026-01-02T00:00:00Z"},
                RecordingToken=recording,
            )
        assert info.value.code.endswith("Receiver") and fault_codes(info) == ["ActionNotSupported"]

        # DeleteRecording takes the job and the receiver it auto-created along.
        trc.DeleteRecording(recording)
        assert fault(lambda: trc.GetRecordingJobState(job)) == no_job
        assert [j.JobConfiguration.RecordingToken for j in trc.GetRecordingJobs()] == [other]
    finally:
        nvr.stop()


def test_access_classes(nvr):
    """READ_MEDIA for the Get operations (users), ACTUATE for changes (operators up),
    PRE_AUTH for the capabilities (anyone)."""
    from tests.clients import device_client

    admin = device_client(nvr.device_url, "admin", ADMIN_PASSWORD)[1]
    admin.CreateUsers([{"Username": "viewer", "Password": "Viewer-pw1", "UserLevel": "User"}])
    try:
        viewer = recording_client(nvr, "viewer", "Viewer-pw1")
        assert isinstance(viewer.GetRecordings(), list)
        assert isinstance(viewer.GetRecordingJobs(), list)
        with pytest.raises(zeep.exceptions.Fault) as info:
            viewer.CreateRecording(recording_config())
        assert fault_codes(info) == ["NotAuthorized"]
        anonymous = zeep.Client(
            str(wsdl_root() / RECORDING.wsdl), settings=zeep.Settings(strict=False)
        ).create_service(RECORDING.binding_qname, nvr.base + RECORDING.path)
        assert anonymous.GetServiceCapabilities().Options is True
    finally:
        admin.DeleteUsers(["viewer"])


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """trc + tt + the SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("trc-xsd")
    _schema_closure(dest, RECORDING)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="schema/common/soap-envelope"/>'
        f'<xs:import namespace="{TRC}" '
        f'schemaLocation="{posixpath.splitext(RECORDING.wsdl)[0]}.xsd"/>'
        "</xs:schema>"
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_Recorder())
    return etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))


def test_every_answer_validates_against_the_schema(fresh_nvr, schema):
    url = fresh_nvr.base + RECORDING.path
    seen: set[str] = set()

    def call(operation: str, inner: str = "") -> etree._Element:
        body = f'<trc:{operation} xmlns:trc="{TRC}" xmlns:tt="{TT}">{inner}</trc:{operation}>'
        response = post(url, envelope(body, username_token("admin", ADMIN_PASSWORD)))
        root = etree.fromstring(response.content)
        schema.assertValid(root)
        seen.add(operation)
        return root[-1][0]

    long = "x" * 1000
    configuration = (
        "<trc:RecordingConfiguration><tt:Source>"
        "<tt:SourceId>urn:example:camera:1</tt:SourceId>"
        f"<tt:Name>{'n' * 100}</tt:Name><tt:Location>{long}</tt:Location>"
        f"<tt:Description>{long}</tt:Description><tt:Address>http://192.0.2.1/</tt:Address>"
        f"</tt:Source><tt:Content>{long}</tt:Content>"
        "<tt:MaximumRetentionTime>P1DT2H</tt:MaximumRetentionTime></trc:RecordingConfiguration>"
    )
    caps = call("GetServiceCapabilities")
    assert caps[0].get("Options") == "true"
    created = call("CreateRecording", configuration)
    token = created.findtext(f"{{{TRC}}}RecordingToken")
    assert token
    ref = f"<trc:RecordingToken>{token}</trc:RecordingToken>"
    call("SetRecordingConfiguration", ref + configuration)
    got = call("GetRecordingConfiguration", ref)
    # The 100-character name is cut to tt:Name's 64 (a device may cut, §5.3.1).
    assert got.findtext(f".//{{{TT}}}Name") == "n" * 64
    assert got.findtext(f".//{{{TT}}}MaximumRetentionTime") == "P1DT2H"
    call("GetRecordings")
    call("GetRecordingOptions", ref)
    track_config = (
        "<trc:TrackConfiguration><tt:TrackType>Audio</tt:TrackType>"
        "<tt:Description>second microphone</tt:Description></trc:TrackConfiguration>"
    )
    track = call("CreateTrack", ref + track_config).findtext(f"{{{TRC}}}TrackToken")
    assert track == "AUDIO002"
    track_ref = ref + f"<trc:TrackToken>{track}</trc:TrackToken>"
    call("SetTrackConfiguration", track_ref + track_config)
    call("GetTrackConfiguration", track_ref)
    call("DeleteTrack", track_ref)
    job_configuration = (
        f"<trc:JobConfiguration><tt:RecordingToken>{token}</tt:RecordingToken>"
        "<tt:Mode>Active</tt:Mode><tt:Priority>1</tt:Priority>"
        "<tt:Source><tt:AutoCreateReceiver>true</tt:AutoCreateReceiver></tt:Source>"
        "</trc:JobConfiguration>"
    )
    job = call("CreateRecordingJob", job_configuration).findtext(f"{{{TRC}}}JobToken")
    assert job
    job_ref = f"<trc:JobToken>{job}</trc:JobToken>"
    call("GetRecordingJobs")
    call("GetRecordingJobConfiguration", job_ref)
    state = call("GetRecordingJobState", job_ref)
    # An auto-created receiver has no MediaUri yet: the job cannot record (Error, a reason).
    assert state.findtext(f"{{{TRC}}}State/{{{TT}}}State") == "Error"
    assert state.findtext(f".//{{{TT}}}Error")
    call("SetRecordingJobConfiguration", job_ref + job_configuration)
    call("SetRecordingJobMode", job_ref + "<trc:Mode>Idle</trc:Mode>")
    call("DeleteRecordingJob", job_ref)
    # Faults validate too.
    for operation, inner in (
        ("GetRecordingConfiguration", "<trc:RecordingToken>nope</trc:RecordingToken>"),
        (
            "ExportRecordedData",
            "<trc:SearchScope/><trc:FileFormat>ONVIF</trc:FileFormat>"
            "<trc:StorageDestination><tt:StorageToken>x</tt:StorageToken>"
            "</trc:StorageDestination>",
        ),
        ("StopExportRecordedData", "<trc:OperationToken>op</trc:OperationToken>"),
        ("GetExportRecordedDataState", "<trc:OperationToken>op</trc:OperationToken>"),
    ):
        assert call(operation, inner).tag == f"{{{SOAP12}}}Fault"
    call("DeleteRecording", ref)
    handled = RecordingService(None, load_binding(RECORDING)).handlers()  # type: ignore[arg-type]
    assert set(handled) <= seen, set(handled) - seen
