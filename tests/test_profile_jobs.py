"""Recording jobs whose source is one of the box's media profiles (SourceToken Type
``…/schema/Profile``): the profile's receiver is resolved once and recorded, the job keeps
naming the profile. In the domain (a fake runtime) and over SOAP against a running box
recording a GStreamer camera."""

from __future__ import annotations

import time
from collections.abc import Iterator

import av
import pytest
import zeep.exceptions

from onvif_nvr.clock import ManualClock
from onvif_nvr.config import RecordingSettings
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import BadConfiguration, CannotDeleteReceiver
from onvif_nvr.recording.control import (
    PROFILE_TYPE,
    RECEIVER_TYPE,
    JobConfiguration,
    JobSource,
    JobTrack,
    RecordingConfiguration,
    RecordingControl,
)
from onvif_nvr.recording.media_config import VIDEO_SOURCE
from onvif_nvr.recording.media_profiles import MediaProfiles
from onvif_nvr.system.secrets import Sealer
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.mediautil import media2_client
from tests.nvrproc import NvrProcess
from tests.searchutil import search_client
from tests.test_profile_g import FakeRuntime, receiver_config
from tests.test_receiver_service import config as trv_config
from tests.test_receiver_service import fault_codes, receiver_client, wait_for
from tests.test_recording_control_service import (
    CAMERA,
    FAST_SEGMENTS,
    recorded_bytes,
    recording_client,
    recording_config,
    segment_file,
    segments_of,
    state_of,
)
from tests.test_search_service import all_recordings

VIDEO = (("video", "VIDEO001"),)


# -- the domain ---------------------------------------------------------------------------------
@pytest.fixture
async def control(tmp_path) -> RecordingControl:
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await db.migrate()
    return RecordingControl(db, Sealer(b"k" * 32), ManualClock(), RecordingSettings())


def on_profile(recording: str, profile: str, priority: int = 0, mode: str = "Active"):
    return JobConfiguration(
        recording,
        mode,
        priority,
        (JobSource(profile, PROFILE_TYPE, tracks=(JobTrack(*VIDEO[0]),)),),
    )


async def test_a_profile_source_records_its_receiver_and_keeps_its_name(control):
    runtime = FakeRuntime()
    await control.attach(runtime)
    rx = await control.create_receiver(receiver_config(mode="AutoConnect"))
    rec = await control.create_recording(RecordingConfiguration())
    # No media call has made the receiver's fixed profiles yet: the job makes them.
    job = await control.create_job(on_profile(rec.token, f"PROFILE_{rx.id}_JPEG"))
    (source,) = job.configuration.sources
    assert (source.token, source.type, source.receiver) == (
        f"PROFILE_{rx.id}_JPEG",
        PROFILE_TYPE,
        rx.token,
    )
    assert (await control.get_job(job.token)).configuration.sources == (source,)
    assert [s.key for s in runtime.specs] == [(job.id, rx.id)]
    assert runtime.specs[0].video_track == "VIDEO001"
    state = await control.job_state(job.token)
    assert [(s.token, s.type) for s in state.sources] == [(source.token, PROFILE_TYPE)]
    with pytest.raises(CannotDeleteReceiver):
        await control.delete_receiver(rx.token)

    # A receiver job of higher priority on the same track outranks it, and back.
    direct = await control.create_job(
        JobConfiguration(
            rec.token, "Active", 5, (JobSource(rx.token, tracks=(JobTrack(*VIDEO[0]),)),)
        )
    )
    assert [s.key for s in runtime.specs] == [(direct.id, rx.id)]
    await control.set_job_configuration(job.token, on_profile(rec.token, f"PROFILE_{rx.id}", 9))
    assert [s.key for s in runtime.specs] == [(job.id, rx.id)]
    await control.delete_job(direct.token)
    await control.set_job_mode(job.token, "Idle")
    assert runtime.specs == []
    await control.delete_job(job.token)
    await control.delete_receiver(rx.token)


async def test_created_profiles_and_the_faults(control):
    runtime = FakeRuntime()
    await control.attach(runtime)
    rx = await control.create_receiver(receiver_config(mode="AutoConnect"))
    rec = await control.create_recording(RecordingConfiguration())
    profiles = MediaProfiles(control._db, control, lambda: {})
    await profiles.create_profile("empty", "EMPTY")
    await profiles.create_profile("mine", "MINE", {VIDEO_SOURCE: f"VSC_{rx.id}"})
    for token, reason in (
        ("NOPE", "no media profile 'NOPE'"),
        ("EMPTY", "media profile 'EMPTY' has no video source configuration to record"),
    ):
        with pytest.raises(BadConfiguration) as info:
            await control.create_job(on_profile(rec.token, token))
        assert str(info.value) == reason
    with pytest.raises(BadConfiguration, match="needs a SourceToken"):
        await control.create_job(
            JobConfiguration(rec.token, sources=(JobSource(None, PROFILE_TYPE),))
        )

    job = await control.create_job(on_profile(rec.token, "MINE"))
    assert job.configuration.sources[0].receiver == rx.token
    # The receiver was resolved when the job was configured: deleting or changing the
    # profile leaves the job recording it.
    await profiles.remove_configurations("MINE", [VIDEO_SOURCE], strict=False)
    await profiles.delete_profile("MINE")
    assert [s.key for s in runtime.specs] == [(job.id, rx.id)]
    assert (await control.get_job(job.token)).configuration.sources[0].token == "MINE"
    # ... until the job is reconfigured with the profile it names.
    with pytest.raises(BadConfiguration, match="no media profile 'MINE'"):
        await control.set_job_configuration(job.token, on_profile(rec.token, "MINE", 1))


# -- over SOAP ---------------------------------------------------------------------------------
class Box:
    def __init__(self, nvr: NvrProcess, receiver: str) -> None:
        self.nvr, self.receiver = nvr, receiver
        self.index = int(receiver.rsplit("_", 1)[1])
        self.trc, self.trv = recording_client(nvr), receiver_client(nvr)

    @property
    def main(self) -> str:
        return f"PROFILE_{self.index}"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One box recording the test camera through an AutoConnect receiver (connected only
    while a job records it)."""
    gstcam.require()
    with gstcam.camera(*CAMERA) as url:
        nvr = NvrProcess(
            tmp_path_factory.mktemp("profile-jobs"), ADMIN_PASSWORD, extra_env=FAST_SEGMENTS
        )
        nvr.start()
        try:
            receiver = receiver_client(nvr).CreateReceiver(trv_config(url)).Token
            yield Box(nvr, receiver)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


@pytest.fixture
def recording(box: Box) -> Iterator[str]:
    """A recording of its own for the test, deleted (with its jobs) after it."""
    token = box.trc.CreateRecording(recording_config("profile-job"))
    yield token
    box.trc.DeleteRecording(token)


def profile_job(recording: str, profile: str, mode: str = "Active", priority: int = 0) -> dict:
    return {
        "RecordingToken": recording,
        "Mode": mode,
        "Priority": priority,
        "Source": [
            {
                "SourceToken": {"Token": profile, "Type": PROFILE_TYPE},
                "Tracks": [{"SourceTag": t, "Destination": d} for t, d in VIDEO],
            }
        ],
    }


def receiver_job(recording: str, receiver: str, priority: int) -> dict:
    job = profile_job(recording, receiver, priority=priority)
    job["Source"][0]["SourceToken"]["Type"] = RECEIVER_TYPE
    return job


def stalls(box: Box, recording: str) -> bool:
    time.sleep(1.0)
    size = recorded_bytes(box.nvr.data_dir, recording)
    time.sleep(3.0)
    return recorded_bytes(box.nvr.data_dir, recording) == size


def test_a_job_on_a_media_profile_records_then_idles_then_goes(box: Box, recording: str):
    created = box.trc.CreateRecordingJob(profile_job(recording, box.main))
    job = created.JobToken
    (source,) = created.JobConfiguration.Source
    assert (source.SourceToken.Token, source.SourceToken.Type) == (box.main, PROFILE_TYPE)
    (source,) = box.trc.GetRecordingJobConfiguration(job).Source
    assert (source.SourceToken.Token, source.SourceToken.Type) == (box.main, PROFILE_TYPE)
    wait_for(lambda: state_of(box.trc, job) == "Active")
    (state,) = box.trc.GetRecordingJobState(job).Sources
    assert (state.SourceToken.Token, state.SourceToken.Type, state.State) == (
        box.main,
        PROFILE_TYPE,
        "Active",
    )
    wait_for(lambda: len(segments_of(box.nvr.data_dir, recording)) >= 1)
    tse = search_client(box.nvr)
    summary = tse.GetRecordingSummary()
    assert summary.NumberRecordings >= 1 and summary.DataFrom is not None
    # Searching by the profile, or by the receiver it records, finds the recording.
    for token, kind in ((box.main, PROFILE_TYPE), (box.receiver, RECEIVER_TYPE)):
        found = all_recordings(tse, {"IncludedSources": [{"Token": token, "Type": kind}]})
        assert recording in {i.RecordingToken for i in found}, kind
    assert all_recordings(tse, {"IncludedSources": [{"Token": "P404", "Type": PROFILE_TYPE}]}) == []

    # The receiver is in use through its profile.
    with pytest.raises(zeep.exceptions.Fault) as info:
        box.trv.DeleteReceiver(box.receiver)
    assert fault_codes(info) == ["Action", "CannotDeleteReceiver"]

    box.trc.SetRecordingJobMode(job, "Idle")
    assert state_of(box.trc, job) == "Idle"
    assert stalls(box, recording)
    box.trc.SetRecordingJobMode(job, "Active")
    wait_for(lambda: state_of(box.trc, job) == "Active")
    box.trc.DeleteRecordingJob(job)
    assert job not in {j.JobToken for j in box.trc.GetRecordingJobs()}
    assert stalls(box, recording)
    assert segments_of(box.nvr.data_dir, recording)  # the recorded data stays


def test_a_jpeg_profile_records_the_cameras_h264(box: Box, recording: str):
    job = box.trc.CreateRecordingJob(profile_job(recording, f"{box.main}_JPEG")).JobToken
    wait_for(lambda: len(segments_of(box.nvr.data_dir, recording)) >= 2)
    first = segments_of(box.nvr.data_dir, recording)[0][0]
    with av.open(str(segment_file(box.nvr.data_dir, first))) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    box.trc.DeleteRecordingJob(job)


def test_jobs_on_a_profile_and_its_receiver_follow_their_priorities(box: Box, recording: str):
    on_profile = box.trc.CreateRecordingJob(profile_job(recording, box.main, priority=1)).JobToken
    on_receiver = box.trc.CreateRecordingJob(receiver_job(recording, box.receiver, 2)).JobToken
    wait_for(lambda: state_of(box.trc, on_receiver) == "Active")
    assert state_of(box.trc, on_profile) == "Idle"
    box.trc.SetRecordingJobConfiguration(on_profile, profile_job(recording, box.main, priority=3))
    wait_for(lambda: state_of(box.trc, on_profile) == "Active")
    assert state_of(box.trc, on_receiver) == "Idle"


def test_a_profile_that_cannot_be_recorded_is_a_bad_configuration(box: Box, recording: str):
    tr2 = media2_client(box.nvr)
    empty = tr2.CreateProfile("nothing to record")
    try:
        for profile in ("PROFILE_404", empty):
            with pytest.raises(zeep.exceptions.Fault) as info:
                box.trc.CreateRecordingJob(profile_job(recording, profile))
            assert fault_codes(info) == ["InvalidArgVal", "BadConfiguration"]
    finally:
        tr2.DeleteProfile(empty)


def test_deleting_a_created_profile_a_job_records_leaves_the_job_recording(
    box: Box, recording: str
):
    tr2 = media2_client(box.nvr)
    profile = tr2.CreateProfile("to record", [{"Type": "VideoSource", "Token": f"VSC_{box.index}"}])
    job = box.trc.CreateRecordingJob(profile_job(recording, profile)).JobToken
    wait_for(lambda: state_of(box.trc, job) == "Active")
    tr2.DeleteProfile(profile)  # the Media services have no fault for a profile in use
    assert profile not in {p.token for p in tr2.GetProfiles()}
    size = recorded_bytes(box.nvr.data_dir, recording)
    wait_for(lambda: recorded_bytes(box.nvr.data_dir, recording) > size)
    assert state_of(box.trc, job) == "Active"
    (source,) = box.trc.GetRecordingJobConfiguration(job).Source
    assert source.SourceToken.Token == profile
    # Configured again, the job must name a profile that exists.
    with pytest.raises(zeep.exceptions.Fault) as info:
        box.trc.SetRecordingJobConfiguration(job, profile_job(recording, profile, priority=1))
    assert fault_codes(info) == ["InvalidArgVal", "BadConfiguration"]
    box.trc.DeleteRecordingJob(job)
