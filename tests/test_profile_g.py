"""The Profile G domain model (recording/control.py): receivers, recordings, tracks and
recording jobs, their faults, cascades, priorities and persistence."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence
from importlib import resources

import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.config import RecordingSettings
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import (
    BadConfiguration,
    BadMode,
    CannotDelete,
    CannotDeleteReceiver,
    InvalidMediaUri,
    MaxReceivers,
    MaxRecordingJobs,
    MaxRecordings,
    MaxTracks,
    NoReceiver,
    NoRecording,
    NoRecordingJob,
    NoTrack,
)
from onvif_nvr.recording.control import (
    PROFILE_TYPE,
    IngestStatus,
    JobConfiguration,
    JobSource,
    JobTrack,
    ReceiverConfiguration,
    RecorderSpec,
    RecordingConfiguration,
    RecordingControl,
    RecordingSource,
    StreamSetup,
    TrackConfiguration,
)
from onvif_nvr.recording.index import SegmentIndex
from onvif_nvr.system.secrets import Sealer

LONG_URI = "rtsp://192.0.2.10:554/" + "x" * 140 + "?stream=main&profile=1"


class FakeRuntime:
    """Stands in for the RecordingManager: records the plan, reports given states."""

    def __init__(self) -> None:
        self.specs: list[RecorderSpec] = []
        self.states: dict[tuple[int, int], IngestStatus] = {}

    async def apply(self, specs: Sequence[RecorderSpec]) -> None:
        self.specs = list(specs)

    def status(self, key: tuple[int, int]) -> IngestStatus | None:
        if key not in {s.key for s in self.specs}:
            return None
        return self.states.get(key, IngestStatus("connecting"))

    def running(self) -> Iterable[tuple[int, int]]:
        return [s.key for s in self.specs]


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'nvr.sqlite3'}"


@pytest.fixture
async def control(db_url):
    db = Database(db_url)
    await db.migrate()
    yield RecordingControl(
        db, Sealer(b"k" * 32), ManualClock(), RecordingSettings(max_receivers=3, max_tracks=4)
    )
    db.close()


def receiver_config(uri: str = "rtsp://192.0.2.10/live", mode: str = "AlwaysConnect"):
    return ReceiverConfiguration(mode, uri, StreamSetup("RTP-Unicast", "RTSP"))


async def test_recordings_get_their_three_tracks_and_tracks_have_limits(control):
    events = []
    control.on_event = lambda topic, data: events.append((topic, dict(data)))
    source = RecordingSource("id-1", "Gate", "North", "the gate", "rtsp://192.0.2.1/")
    rec = await control.create_recording(RecordingConfiguration(source, "all day", 0))
    assert [(t.token, t.configuration.track_type, t.configuration.description) for t in rec.tracks] == [
        ("VIDEO001", "Video", ""),
        ("AUDIO001", "Audio", ""),
        ("META001", "Metadata", ""),
    ]  # fmt: skip
    assert (await control.get_recording(rec.token)).configuration.source == source
    assert [t for t, _ in events] == [
        "RecordingConfig/CreateRecording",
        "RecordingConfig/CreateTrack",
        "RecordingConfig/CreateTrack",
        "RecordingConfig/CreateTrack",
    ]
    track = await control.create_track(rec.token, TrackConfiguration("Video", "second"))
    assert track.token == "VIDEO002"
    with pytest.raises(MaxTracks) as info:
        await control.create_track(rec.token, TrackConfiguration("Audio"))
    assert info.value.subcodes == ("Action", "MaxTracks") and info.value.side == "Receiver"
    with pytest.raises(BadConfiguration):
        await control.create_track(rec.token, TrackConfiguration("Smell"))
    # TrackType is ignored by SetTrackConfiguration; descriptions are stored.
    await control.set_track_configuration(rec.token, "VIDEO002", TrackConfiguration("Audio", "d"))
    assert (await control.get_track(rec.token, "VIDEO002")).configuration == TrackConfiguration(
        "Video", "d"
    )
    await control.delete_track(rec.token, "VIDEO002")
    with pytest.raises(NoTrack) as info:
        await control.get_track(rec.token, "VIDEO002")
    assert info.value.subcodes == ("InvalidArgVal", "NoTrack") and info.value.side == "Sender"
    with pytest.raises(NoRecording) as info:
        await control.get_recording("nope")
    assert info.value.subcodes == ("InvalidArgVal", "NoRecording")
    long = "z" * 5000  # descriptive strings may be cut, without a fault
    await control.set_recording_configuration(
        rec.token, RecordingConfiguration(RecordingSource(description=long), "", 3600)
    )
    stored = (await control.get_recording(rec.token)).configuration
    assert stored.max_retention_s == 3600 and 0 < len(stored.source.description) < 5000


async def test_receivers_validate_persist_and_fault(control):
    rx = await control.create_receiver(receiver_config(LONG_URI))
    assert len(LONG_URI) > 128
    assert rx.configuration.media_uri == LONG_URI and rx.token.startswith("RECEIVER_")
    got = await control.get_receiver(rx.token)
    assert got.configuration == receiver_config(LONG_URI)
    # Credentials in the MediaUri are kept apart and never echoed.
    await control.configure_receiver(
        rx.token,
        ReceiverConfiguration(
            "AutoConnect", "rtsp://u:secret@192.0.2.11/a", StreamSetup("RTP-Unicast", "UDP")
        ),
    )
    got = await control.get_receiver(rx.token)
    assert got.configuration.media_uri == "rtsp://192.0.2.11/a"
    assert got.configuration.stream_setup.protocol == "UDP"
    camera = next(c for c in await control.cameras() if c.id == rx.id)
    assert (camera.transport, camera.username, camera.password) == ("udp", "u", "secret")
    await control.set_receiver_mode(rx.token, "NeverConnect")
    assert (await control.get_receiver(rx.token)).configuration.mode == "NeverConnect"
    assert await control.receiver_state(rx.token) == "NotConnected"
    for call in (
        control.get_receiver("RECEIVER_999"),
        control.receiver_state("RECEIVER_999"),
        control.set_receiver_mode("RECEIVER_999", "AlwaysConnect"),
        control.configure_receiver("RECEIVER_999", receiver_config()),
        control.delete_receiver("RECEIVER_999"),
    ):
        with pytest.raises(NoReceiver) as info:
            await call
        assert info.value.subcodes == ("InvalidArgVal", "UnknownToken")
    with pytest.raises(InvalidMediaUri) as info:
        await control.create_receiver(receiver_config("http://192.0.2.1/"))
    assert info.value.subcodes == ("InvalidArgVal", "BadConfiguration")
    with pytest.raises(BadConfiguration, match="multicast"):
        await control.create_receiver(
            ReceiverConfiguration("AlwaysConnect", "rtsp://h/", StreamSetup("RTP-Multicast", "UDP"))
        )
    await control.create_receiver(receiver_config())
    await control.create_receiver(receiver_config())
    with pytest.raises(MaxReceivers) as info:
        await control.create_receiver(receiver_config())
    assert info.value.subcodes == ("Action", "MaxReceivers")
    await control.delete_receiver(rx.token)
    assert rx.token not in {r.token for r in await control.receivers()}


async def test_jobs_fill_in_tracks_auto_create_receivers_and_guard_them(control):
    runtime = FakeRuntime()
    await control.attach(runtime)
    rec = await control.create_recording(RecordingConfiguration())
    rx = await control.create_receiver(receiver_config())
    job = await control.create_job(JobConfiguration(rec.token, "Active", 1, (JobSource(rx.token),)))
    assert [(t.source_tag, t.destination) for t in job.configuration.sources[0].tracks] == [
        ("video", "VIDEO001"),
        ("audio", "AUDIO001"),
        ("metadata", "META001"),
    ]
    assert [s.key for s in runtime.specs] == [(job.id, rx.id)]
    assert runtime.specs[0].recording_id == rec.id
    with pytest.raises(CannotDeleteReceiver) as info:
        await control.delete_receiver(rx.token)
    assert info.value.subcodes == ("Action", "CannotDeleteReceiver")

    auto = await control.create_job(
        JobConfiguration(rec.token, "Idle", 0, (JobSource(None, auto_create_receiver=True),))
    )
    made = auto.configuration.sources[0]
    assert made.token and not made.auto_create_receiver  # the token is filled in
    created = await control.get_receiver(made.token)
    assert created.auto_created and created.configuration.mode == "AutoConnect"
    await control.delete_job(auto.token)
    with pytest.raises(NoReceiver):
        await control.get_receiver(made.token)

    bad = [
        (JobConfiguration("RECORDING_404", sources=(JobSource(rx.token),)), NoRecording),
        (JobConfiguration(rec.token, sources=()), BadConfiguration),
        (JobConfiguration(rec.token, sources=(JobSource("RECEIVER_404"),)), BadConfiguration),
        (JobConfiguration(rec.token, sources=(JobSource("P1", PROFILE_TYPE),)), BadConfiguration),
        (
            JobConfiguration(
                rec.token, sources=(JobSource(rx.token, tracks=(JobTrack("v", "VIDEO009"),)),)
            ),
            BadConfiguration,
        ),
        (JobConfiguration(rec.token, "Busy", sources=(JobSource(rx.token),)), BadConfiguration),
        (
            JobConfiguration(rec.token, priority=-1, sources=(JobSource(rx.token),)),
            BadConfiguration,
        ),
    ]
    for config, error in bad:
        with pytest.raises(error):
            await control.create_job(config)
    with pytest.raises(BadMode) as info:
        await control.set_job_mode(job.token, "Sleeping")
    assert info.value.subcodes == ("InvalidArgVal", "BadMode")
    with pytest.raises(NoRecordingJob) as info:
        await control.get_job("JOB_404")
    assert info.value.subcodes == ("InvalidArgVal", "NoRecordingJob")
    other = await control.create_recording(RecordingConfiguration())
    with pytest.raises(BadConfiguration, match="cannot change"):
        await control.set_job_configuration(
            job.token, dataclasses.replace(job.configuration, recording_token=other.token)
        )
    with pytest.raises(CannotDelete):  # a job records into it
        await control.delete_track(rec.token, "VIDEO001")


async def test_the_highest_priority_active_job_records_and_states_follow_the_ingest(control):
    runtime = FakeRuntime()
    await control.attach(runtime)
    rec = await control.create_recording(RecordingConfiguration())
    low_rx = await control.create_receiver(receiver_config("rtsp://192.0.2.1/a", "AutoConnect"))
    high_rx = await control.create_receiver(receiver_config("rtsp://192.0.2.2/b", "AutoConnect"))
    low = await control.create_job(
        JobConfiguration(rec.token, "Active", 1, (JobSource(low_rx.token),))
    )
    high = await control.create_job(
        JobConfiguration(rec.token, "Idle", 5, (JobSource(high_rx.token),))
    )
    assert [s.key for s in runtime.specs] == [(low.id, low_rx.id)]
    await control.set_job_mode(high.token, "Active")
    assert [s.key for s in runtime.specs] == [(high.id, high_rx.id)]  # AutoConnect: low drops
    assert await control.receiver_state(low_rx.token) == "NotConnected"
    assert await control.receiver_state(high_rx.token) == "Connecting"
    assert (await control.job_state(low.token)).state == "Idle"  # outranked

    runtime.states[(high.id, high_rx.id)] = IngestStatus("recording", has_audio=False)
    assert await control.receiver_state(high_rx.token) == "Connected"
    state = await control.job_state(high.token)
    assert state.recording_token == rec.token
    # Every track of the source is Active while it records, also the audio track of a stream
    # without audio and the metadata track (nothing to write is not an idle job).
    assert [(t.destination, t.state) for t in state.sources[0].tracks] == [
        ("VIDEO001", "Active"),
        ("AUDIO001", "Active"),
        ("META001", "Active"),
    ]
    assert state.state == "Active"
    runtime.states[(high.id, high_rx.id)] = IngestStatus("retrying", "ConnectionRefusedError")
    state = await control.job_state(high.token)
    assert state.state == "Error" and state.sources[0].tracks[0].error == "ConnectionRefusedError"
    await control.set_receiver_mode(high_rx.token, "NeverConnect")
    assert [s.key for s in runtime.specs] == []  # the winner's receiver may not connect
    assert (await control.job_state(high.token)).state == "Error"
    # An AlwaysConnect receiver no job records is connected on its own (job id 0).
    await control.set_receiver_mode(low_rx.token, "AlwaysConnect")
    await control.set_job_mode(high.token, "Idle")
    assert [s.key for s in runtime.specs] == [(low.id, low_rx.id)]
    await control.set_job_mode(low.token, "Idle")
    assert [(s.key, s.recording_id) for s in runtime.specs] == [((0, low_rx.id), None)]


async def test_delete_recording_takes_jobs_auto_receivers_and_data(control, tmp_path):
    rec = await control.create_recording(RecordingConfiguration())
    keep = await control.create_recording(RecordingConfiguration())
    rx = await control.create_receiver(receiver_config())
    job = await control.create_job(
        JobConfiguration(
            rec.token, sources=(JobSource(rx.token), JobSource(None, auto_create_receiver=True))
        )
    )
    auto_token = job.configuration.sources[1].token
    assert auto_token is not None
    index = SegmentIndex(control._db)
    volume = tmp_path / "vol"
    volume_id = await index.ensure_volume(str(volume))
    files = []
    for i, recording_id in enumerate((rec.id, rec.id, keep.id)):
        segment_id = await index.create_segment(rx.id, volume_id, i * 10**9, 0, None, recording_id)
        await index.close_segment(segment_id)
        path = volume / str(rx.id) / f"{segment_id}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"data")
        files.append(path)
    await control.delete_recording(rec.token)
    with pytest.raises(NoRecording):
        await control.get_recording(rec.token)
    assert await control.jobs() == []
    with pytest.raises(NoReceiver):
        await control.get_receiver(auto_token)
    assert (await control.get_receiver(rx.token)).token == rx.token  # made by hand: kept
    assert [p.exists() for p in files] == [False, False, True]
    assert [s.recording_id for s in await index.segments()] == [keep.id]
    # The receiver still names the kept data's directory: deleting it keeps a tombstone row.
    await control.delete_receiver(rx.token)
    assert rx.token not in {r.token for r in await control.receivers()}
    assert len(await index.segments(rx.id)) == 1


async def test_limits_on_recordings_and_jobs(db_url):
    db = Database(db_url)
    await db.migrate()
    control = RecordingControl(
        db,
        Sealer(b"k" * 32),
        ManualClock(),
        RecordingSettings(max_recordings=1, max_recording_jobs=1),
    )
    try:
        rec = await control.create_recording(RecordingConfiguration())
        with pytest.raises(MaxRecordings):
            await control.create_recording(RecordingConfiguration())
        rx = await control.create_receiver(receiver_config())
        await control.create_job(JobConfiguration(rec.token, sources=(JobSource(rx.token),)))
        with pytest.raises(MaxRecordingJobs):
            await control.create_job(JobConfiguration(rec.token, sources=(JobSource(rx.token),)))
        assert (await control.recording_options(rec.token))["spare_jobs"] == 0
    finally:
        db.close()


async def test_everything_survives_a_reopened_database(db_url):
    db = Database(db_url)
    await db.migrate()
    control = RecordingControl(db, Sealer(b"k" * 32), ManualClock())
    rec = await control.create_recording(
        RecordingConfiguration(RecordingSource(name="Yard"), "c", 60)
    )
    rx = await control.create_receiver(receiver_config(LONG_URI, "AutoConnect"))
    job = await control.create_job(JobConfiguration(rec.token, "Idle", 3, (JobSource(rx.token),)))
    before = (await control.recordings(), await control.receivers(), await control.jobs())
    db.close()

    db = Database(db_url)
    await db.migrate()
    try:
        again = RecordingControl(db, Sealer(b"k" * 32), ManualClock())
        after = (await again.recordings(), await again.receivers(), await again.jobs())
        assert after == before
        assert (await again.get_job(job.token)).configuration.priority == 3
    finally:
        db.close()


def test_migration_makes_each_camera_a_receiver_recording_and_job(tmp_path):
    import alembic.command
    from alembic.config import Config
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("onvif_nvr.db") / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "0005")
    with sqlite3.connect(tmp_path / "old.sqlite3") as con:
        con.execute(
            "INSERT INTO cameras (id, name, url, transport, backend, enabled, retention_s, origin,"
            " created_wall_ns) VALUES (1, 'gate', 'rtsp://192.0.2.1/x', 'udp', 'native', 1, 600,"
            " 'cli', 0), (2, 'yard', 'rtsp://192.0.2.2/x', 'tcp', 'native', 0, 0, 'config', 0)"
        )
        con.execute(
            "INSERT INTO volumes (id, path, min_free_bytes, status, status_reason) VALUES (1, '/v', 0, 'ok', '')"
        )
        con.execute(
            "INSERT INTO segments (camera_id, volume_id, state, start_wall_ns, end_wall_ns, start_90k,"
            " duration_90k, size, init_size, fragment_count) VALUES (1, 1, 'closed', 0, 1, 0, 0, 0, 0, 0)"
        )
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "head")
    engine.dispose()
    with sqlite3.connect(tmp_path / "old.sqlite3") as con:
        assert con.execute(
            "SELECT token, mode, protocol, media_uri FROM cameras ORDER BY id"
        ).fetchall() == [
            ("RECEIVER_1", "AlwaysConnect", "UDP", "rtsp://192.0.2.1/x"),
            ("RECEIVER_2", "NeverConnect", "RTSP", "rtsp://192.0.2.2/x"),
        ]
        recordings = con.execute(
            "SELECT id, token, source_name, max_retention_s, camera_id FROM recordings ORDER BY id"
        ).fetchall()
        assert [r[1:] for r in recordings] == [
            ("RECORDING_1", "gate", 600, 1),
            ("RECORDING_2", "yard", 0, 2),
        ]
        assert con.execute("SELECT token, mode FROM recording_jobs ORDER BY id").fetchall() == [
            ("JOB_1", "Active"),
            ("JOB_2", "Idle"),
        ]
        assert con.execute("SELECT count(*) FROM tracks").fetchone() == (6,)
        assert con.execute("SELECT recording_id FROM segments").fetchall() == [(recordings[0][0],)]
