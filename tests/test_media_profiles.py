"""The media-profile model in process: fixed profiles follow the receivers, created profiles
and configuration settings survive a new instance on the same database (a restart), the
rate meter measures what a stream carries, the SPS names the codec profile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import InvalidArgument
from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.topics import onvif_catalog
from onvif_nvr.media.units import AccessUnit, TimedUnit, VideoParameters
from onvif_nvr.recording.control import ReceiverConfiguration, RecordingControl, StreamSetup
from onvif_nvr.recording.hub import RateMeter
from onvif_nvr.recording.media_config import (
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    ConfigModify,
    Multicast,
    NoProfile,
    Proposal,
    video_profile_name,
)
from onvif_nvr.recording.media_profiles import MEDIA_TOPICS, MediaProfiles
from onvif_nvr.system.secrets import Sealer, load_or_create_key

CONFIG = ReceiverConfiguration(
    "NeverConnect", "rtsp://127.0.0.1:9/cam", StreamSetup("RTP-Unicast", "RTSP")
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")
    await database.migrate()
    yield database
    database.close()


def control(db: Database, tmp_path: Path) -> RecordingControl:
    return RecordingControl(db, Sealer(load_or_create_key(tmp_path / "secret.key")), SystemClock())


def media_bus() -> EventBus:
    bus = EventBus(onvif_catalog(), SystemClock())
    for description in MEDIA_TOPICS:
        bus.catalog.add(description)
    return bus


async def test_fixed_profiles_follow_the_receivers(db: Database, tmp_path: Path) -> None:
    recording = control(db, tmp_path)
    bus = media_bus()
    announced: list[str] = []
    bus.listen(lambda message: announced.append(message.source[0].value))
    profiles = MediaProfiles(db, recording, dict, bus)
    assert (await profiles.state()).profiles == ()
    receiver = await recording.create_receiver(CONFIG)
    state = await profiles.state()
    i = receiver.id
    assert [p.token for p in state.profiles] == [f"PROFILE_{i}", f"PROFILE_{i}_JPEG"]
    # No stream seen yet: the source is there, its encoders are not.
    assert list(state.profile(f"PROFILE_{i}").configurations) == [VIDEO_SOURCE]
    await recording.delete_receiver(receiver.token)
    assert (await profiles.state()).profiles == ()
    # ProfileChanged when they came and when they went.
    assert announced == [f"PROFILE_{i}", f"PROFILE_{i}_JPEG"] * 2


async def test_created_profiles_and_settings_survive_a_restart(
    db: Database, tmp_path: Path
) -> None:
    recording = control(db, tmp_path)
    profiles = MediaProfiles(db, recording, dict, media_bus())
    receiver = await recording.create_receiver(CONFIG)
    i = receiver.id
    made = await profiles.create_profile("mine", refs={VIDEO_SOURCE: f"VSC_{i}"})
    assert made.token.startswith("MEDIA_PROFILE_") and not made.fixed
    await profiles.set_configuration(
        VIDEO_SOURCE,
        f"VSC_{i}",
        Proposal(name="front", bounds=(0, 0, 0, 0), multicast=Multicast("239.9.9.9", 6000, 3)),
    )
    with pytest.raises(ConfigModify):
        await profiles.set_configuration(
            VIDEO_SOURCE, f"VSC_{i}", Proposal(bounds=(0, 0, 320, 240))
        )
    with pytest.raises(InvalidArgument):  # tt:Name is at most 64 characters
        await profiles.create_profile("x" * 65)
    again = MediaProfiles(db, recording, dict)
    state = await again.state()
    kept = state.profile(made.token)
    assert (kept.name, list(kept.configurations)) == ("mine", [VIDEO_SOURCE])
    source = state.configuration(VIDEO_SOURCE, f"VSC_{i}")
    assert source.name == "front" and source.use_count == 3
    assert state.configuration(VIDEO_SOURCE, f"VSC_{i}").token == f"VSC_{i}"
    await again.delete_profile(made.token)
    with pytest.raises(NoProfile):
        (await profiles.state()).profile(made.token)
    assert not (await profiles.state()).of_kind(VIDEO_ENCODER)


def _unit(dts_90k: int, size: int, keyframe: bool) -> TimedUnit:
    return TimedUnit(AccessUnit("H264", (b"\x65" + bytes(size - 1),), 0, keyframe), 0, dts_90k, 0)


def test_rate_meter_measures_frames_bits_and_keyframe_interval() -> None:
    meter = RateMeter()
    for n in range(25 * 5):  # 5 s at 25 frames/s, 5000-byte frames, a keyframe every 10
        meter.add(_unit(n * 3600, 5000, n % 10 == 0))
    assert meter.rate == pytest.approx(25, abs=0.5)
    assert meter.bitrate_bps == pytest.approx(25 * 5000 * 8, rel=0.05)
    assert meter.gov_length == 10
    for n in range(125, 125 + 25 * 4):  # 4 s of frames twice as big: the peak follows
        meter.add(_unit(n * 3600, 10000, n % 10 == 0))
    assert meter.peak_bitrate_bps == pytest.approx(25 * 10000 * 8, rel=0.05)
    assert meter.bitrate_bps == meter.peak_bitrate_bps


def test_codec_profile_from_the_sps() -> None:
    def params(codec: str, sps: bytes) -> VideoParameters:
        return VideoParameters(codec, 640, 360, (sps, b"\x68\x00"))

    assert video_profile_name(params("H264", b"\x67\x42\xc0\x1e")) == "Baseline"
    assert video_profile_name(params("H264", b"\x67\x64\x00\x1f")) == "High"
    assert video_profile_name(params("H265", b"\x42\x01\x01\x01")) == "Main"
    assert video_profile_name(params("H265", b"\x42\x01\x01\x02")) == "Main10"
