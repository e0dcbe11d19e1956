"""Media Device Test Specification cases (MEDIA-*) for the Media service (ver10).

One box for the module: a GStreamer camera (H.264 640x360 25 fps + AAC) received by an
AlwaysConnect receiver, plus a NeverConnect receiver (a second video source without a
stream) so that "different configuration" cases have one to switch to. Each test follows
its case's procedure with zeep. Cases that cannot apply to an NVR that re-streams without
transcoding are listed in NOT_APPLICABLE with the reason, and reported as skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import requests
import zeep.exceptions

from onvif_nvr.wsdl.catalog import MEDIA
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.mediautil import MediaBox, media_box, media_client, play, with_credentials
from tests.soaputil import envelope, post, username_token
from tests.test_receiver_service import config, fault_codes, receiver_client

TRT = MEDIA.namespace
TT = "http://www.onvif.org/ver10/schema"
RTSP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}

NOT_APPLICABLE = {
    "MEDIA-2-1-10": "MPEG-4 part 2: no camera stream the box re-streams uses it",
    "MEDIA-3-1-14": "G.711 encoder: the box describes the camera's audio; the test camera sends AAC",
    "MEDIA-3-1-15": "G.726: not an encoding the box receives or offers",
    "MEDIA-3-2-13": "one audio source per stream: there is no different one to add",
    "MEDIA-3-3-13": "one audio encoder per stream (no transcoding): there is no different one",
    "MEDIA-3-4-4": "audio outputs: an NVR has none",
    "MEDIA-3-4-6": "audio outputs: an NVR has none",
    "MEDIA-3-4-7": "audio outputs: an NVR has none",
    "MEDIA-3-4-8": "audio outputs: an NVR has none",
    "MEDIA-3-4-9": "audio outputs: an NVR has none",
    "MEDIA-3-4-10": "audio decoders (backchannel): not offered",
    "MEDIA-3-4-11": "audio outputs: an NVR has none",
    "MEDIA-3-4-12": "audio outputs: an NVR has none",
    "MEDIA-3-4-13": "audio outputs: an NVR has none",
    "MEDIA-3-4-14": "audio outputs: an NVR has none",
    "MEDIA-3-4-15": "audio outputs: an NVR has none",
    "MEDIA-3-4-16": "audio decoders (backchannel): not offered",
    "MEDIA-3-4-17": "audio decoders (backchannel): not offered",
    "MEDIA-4-1-2": "PTZ: the box has no PTZ service",
}


@pytest.mark.parametrize("case", sorted(NOT_APPLICABLE))
def test_not_applicable(case: str) -> None:
    pytest.skip(f"{case}: {NOT_APPLICABLE[case]}")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaBox]:
    with media_box(tmp_path_factory.mktemp("media-conformance") / "data") as running:
        receiver_client(running.nvr).CreateReceiver(config("rtsp://127.0.0.1:9/x", "NeverConnect"))
        yield running


@pytest.fixture(scope="module")
def trt(box: MediaBox):
    return media_client(box.nvr)


@pytest.fixture
def profile(trt) -> Iterator[str]:
    """A profile the test creates, deleted after it."""
    token = trt.CreateProfile("conformance", "CONFORMANCE").token
    yield token
    with contextlib.suppress(zeep.exceptions.Fault):  # the test may have deleted it
        trt.DeleteProfile(token)


def use_count(trt, kind: str, token: str) -> int:
    counts = {c.token: c.UseCount for c in getattr(trt, f"Get{kind}Configurations")()}
    one = getattr(trt, f"Get{kind}Configuration")(token).UseCount
    assert counts[token] == one
    return one


def profiles_using(trt, field: str, token: str) -> int:
    return sum(
        1
        for p in trt.GetProfiles()
        if getattr(p, field) is not None and getattr(p, field).token == token
    )


# -- profiles -----------------------------------------------------------------------------------
def test_MEDIA_1_1_1_media_profile_configuration(box, trt):
    profiles = trt.GetProfiles()
    assert profiles and all(p.fixed is not None and p.token for p in profiles)
    main = next(p for p in profiles if p.token == box.main)
    assert main.VideoSourceConfiguration and main.VideoEncoderConfiguration


def test_MEDIA_1_1_3_profiles_consistency(trt):
    for listed in trt.GetProfiles():
        assert trt.GetProfile(listed.token) == listed


def test_MEDIA_1_1_5_dynamic_media_profile_configuration(box, trt, profile):
    i = box.index
    trt.AddVideoSourceConfiguration(profile, f"VSC_{i}")
    trt.AddVideoEncoderConfiguration(profile, f"VEC_{i}")
    got = trt.GetProfile(profile)
    assert (got.VideoSourceConfiguration.token, got.VideoEncoderConfiguration.token) == (
        f"VSC_{i}",
        f"VEC_{i}",
    )
    trt.RemoveVideoEncoderConfiguration(profile)
    trt.RemoveVideoSourceConfiguration(profile)
    got = trt.GetProfile(profile)
    assert got.VideoSourceConfiguration is None and got.VideoEncoderConfiguration is None
    trt.DeleteProfile(profile)
    assert profile not in {p.token for p in trt.GetProfiles()}


# -- video encoders -----------------------------------------------------------------------------
def check_encoder(trt, profile: str, token: str, encoding: str) -> None:
    """Set the configuration as it is (accepted), play the profile's stream."""
    config = trt.GetVideoEncoderConfiguration(token)
    assert config.Encoding == encoding
    trt.SetVideoEncoderConfiguration(config, True)
    assert trt.GetVideoEncoderConfiguration(token).Encoding == encoding
    uri = trt.GetStreamUri(RTSP, profile).Uri
    codec, size = play(with_credentials(uri), "tcp", frames=3)
    assert codec == {"H264": "h264", "JPEG": "mjpeg"}[encoding]
    assert size == (config.Resolution.Width, config.Resolution.Height)


def test_MEDIA_2_1_2_video_encoder_configuration(box, trt):
    check_encoder(trt, box.main, f"VEC_{box.index}", "H264")


def test_MEDIA_2_1_6_guaranteed_number_of_video_encoder_instances(box, trt):
    answer = trt.GetGuaranteedNumberOfVideoEncoderInstances(f"VSC_{box.index}")
    assert answer.TotalNumber >= 1
    assert (answer.JPEG or 0) + (answer.H264 or 0) + (answer.MPEG4 or 0) <= answer.TotalNumber


def test_MEDIA_2_1_7_guaranteed_instances_and_options_consistency(box, trt):
    answer = trt.GetGuaranteedNumberOfVideoEncoderInstances(f"VSC_{box.index}")
    options = trt.GetVideoEncoderConfigurationOptions(ProfileToken=box.main + "_JPEG")
    assert (answer.JPEG > 0) == (options.JPEG is not None)


def test_MEDIA_2_1_8_video_source_configuration(box, trt):
    config = trt.GetVideoSourceConfiguration(f"VSC_{box.index}")
    options = trt.GetVideoSourceConfigurationOptions(config.token)
    assert config.SourceToken in options.VideoSourceTokensAvailable
    rng = options.BoundsRange
    assert rng.WidthRange.Min <= config.Bounds.width <= rng.WidthRange.Max
    trt.SetVideoSourceConfiguration(config, True)
    assert trt.GetVideoSourceConfiguration(config.token) == config


def test_MEDIA_2_1_9_jpeg_video_encoder_configuration(box, trt):
    check_encoder(trt, box.main + "_JPEG", f"VEC_{box.index}_JPEG", "JPEG")


def test_MEDIA_2_1_11_h264_video_encoder_configuration(box, trt):
    check_encoder(trt, box.main, f"VEC_{box.index}", "H264")


def test_MEDIA_2_2_1_video_source_configurations_and_profiles_consistency(trt):
    listed = {c.token: c for c in trt.GetVideoSourceConfigurations()}
    for p in trt.GetProfiles():
        if p.VideoSourceConfiguration is not None:
            assert listed[p.VideoSourceConfiguration.token] == p.VideoSourceConfiguration


def test_MEDIA_2_2_2_video_source_configurations_and_configuration_consistency(trt):
    for c in trt.GetVideoSourceConfigurations():
        assert trt.GetVideoSourceConfiguration(c.token) == c


def test_MEDIA_2_2_3_video_source_configurations_and_options_consistency(trt):
    for c in trt.GetVideoSourceConfigurations():
        options = trt.GetVideoSourceConfigurationOptions(c.token)
        assert c.SourceToken in options.VideoSourceTokensAvailable
        assert options.BoundsRange.HeightRange.Min <= c.Bounds.height
        assert c.Bounds.height <= options.BoundsRange.HeightRange.Max


def test_MEDIA_2_2_4_profiles_and_video_source_options_consistency(trt):
    for p in trt.GetProfiles():
        if p.VideoSourceConfiguration is not None:
            options = trt.GetVideoSourceConfigurationOptions(ProfileToken=p.token)
            assert p.VideoSourceConfiguration.SourceToken in options.VideoSourceTokensAvailable


def test_MEDIA_2_2_5_video_source_configurations_and_video_sources_consistency(trt):
    sources = {s.token for s in trt.GetVideoSources()}
    assert {c.SourceToken for c in trt.GetVideoSourceConfigurations()} <= sources


def test_MEDIA_2_2_6_video_source_use_count_current_state(trt):
    for c in trt.GetVideoSourceConfigurations():
        assert use_count(trt, "VideoSource", c.token) == profiles_using(
            trt, "VideoSourceConfiguration", c.token
        )


def test_MEDIA_2_2_12_video_source_use_count_add_twice(box, trt, profile):
    token = f"VSC_{box.index}"
    before = use_count(trt, "VideoSource", token)
    trt.AddVideoSourceConfiguration(profile, token)
    trt.AddVideoSourceConfiguration(profile, token)
    assert use_count(trt, "VideoSource", token) == before + 1


def test_MEDIA_2_2_13_video_source_use_count_add_different(box, trt, profile):
    first, other = f"VSC_{box.index}", f"VSC_{box.index + 1}"
    trt.AddVideoSourceConfiguration(profile, first)
    counts = use_count(trt, "VideoSource", first), use_count(trt, "VideoSource", other)
    trt.AddVideoSourceConfiguration(profile, other)
    assert use_count(trt, "VideoSource", first) == counts[0] - 1
    assert use_count(trt, "VideoSource", other) == counts[1] + 1


def test_MEDIA_2_2_14_video_source_use_count_remove(box, trt, profile):
    token = f"VSC_{box.index}"
    trt.AddVideoSourceConfiguration(profile, token)
    before = use_count(trt, "VideoSource", token)
    trt.RemoveVideoSourceConfiguration(profile)
    assert use_count(trt, "VideoSource", token) == before - 1


def test_MEDIA_2_2_15_video_source_use_count_delete_profile(box, trt, profile):
    token = f"VSC_{box.index}"
    trt.AddVideoSourceConfiguration(profile, token)
    before = use_count(trt, "VideoSource", token)
    trt.DeleteProfile(profile)
    assert use_count(trt, "VideoSource", token) == before - 1


def test_MEDIA_2_2_16_video_source_use_count_set(box, trt):
    token = f"VSC_{box.index}"
    before = use_count(trt, "VideoSource", token)
    trt.SetVideoSourceConfiguration(trt.GetVideoSourceConfiguration(token), True)
    assert use_count(trt, "VideoSource", token) == before


def test_MEDIA_2_3_1_video_encoder_configurations_and_profiles_consistency(trt):
    listed = {c.token: c for c in trt.GetVideoEncoderConfigurations()}
    for p in trt.GetProfiles():
        if p.VideoEncoderConfiguration is not None:
            assert listed[p.VideoEncoderConfiguration.token] == p.VideoEncoderConfiguration


def test_MEDIA_2_3_2_video_encoder_configurations_and_configuration_consistency(trt):
    for c in trt.GetVideoEncoderConfigurations():
        assert trt.GetVideoEncoderConfiguration(c.token) == c


def encoder_fits(c, options) -> None:
    spec = options.H264 if c.Encoding == "H264" else options.JPEG
    assert spec is not None, c.Encoding
    sizes = {(r.Width, r.Height) for r in spec.ResolutionsAvailable}
    assert (c.Resolution.Width, c.Resolution.Height) in sizes
    rate = spec.FrameRateRange
    assert rate.Min <= c.RateControl.FrameRateLimit <= rate.Max
    assert options.QualityRange.Min <= c.Quality <= options.QualityRange.Max
    if c.Encoding == "H264":
        assert spec.GovLengthRange.Min <= c.H264.GovLength <= spec.GovLengthRange.Max
        assert c.H264.H264Profile in spec.H264ProfilesSupported


def test_MEDIA_2_3_3_video_encoder_configurations_and_options_consistency(trt):
    for c in trt.GetVideoEncoderConfigurations():
        encoder_fits(c, trt.GetVideoEncoderConfigurationOptions(c.token))


def test_MEDIA_2_3_4_profiles_and_video_encoder_options_consistency(trt):
    for p in trt.GetProfiles():
        if p.VideoEncoderConfiguration is not None:
            options = trt.GetVideoEncoderConfigurationOptions(ProfileToken=p.token)
            encoder_fits(p.VideoEncoderConfiguration, options)


def test_MEDIA_2_3_5_video_encoder_use_count_current_state(trt):
    for c in trt.GetVideoEncoderConfigurations():
        assert use_count(trt, "VideoEncoder", c.token) == profiles_using(
            trt, "VideoEncoderConfiguration", c.token
        )


@pytest.mark.parametrize("case", ["MEDIA-2-3-12", "MEDIA-2-3-18"])
def test_MEDIA_2_3_12_and_18_all_supported_video_encodings(box, trt, case):
    """Every encoding the options offer is set on a configuration and streamed."""
    for c in trt.GetVideoEncoderConfigurations():
        options = trt.GetVideoEncoderConfigurationOptions(c.token)
        offered = [e for e in ("JPEG", "H264") if getattr(options, e) is not None]
        assert offered == [c.Encoding]
        trt.SetVideoEncoderConfiguration(c, True)
    check_encoder(trt, box.main, f"VEC_{box.index}", "H264")
    check_encoder(trt, box.main + "_JPEG", f"VEC_{box.index}_JPEG", "JPEG")


def video_profile(trt, box, profile: str) -> None:
    trt.AddVideoSourceConfiguration(profile, f"VSC_{box.index}")


def test_MEDIA_2_3_13_video_encoder_use_count_add_twice(box, trt, profile):
    video_profile(trt, box, profile)
    token = f"VEC_{box.index}"
    before = use_count(trt, "VideoEncoder", token)
    trt.AddVideoEncoderConfiguration(profile, token)
    trt.AddVideoEncoderConfiguration(profile, token)
    assert use_count(trt, "VideoEncoder", token) == before + 1


def test_MEDIA_2_3_14_video_encoder_use_count_add_different(box, trt, profile):
    video_profile(trt, box, profile)
    first, other = f"VEC_{box.index}", f"VEC_{box.index}_JPEG"
    trt.AddVideoEncoderConfiguration(profile, first)
    counts = use_count(trt, "VideoEncoder", first), use_count(trt, "VideoEncoder", other)
    trt.AddVideoEncoderConfiguration(profile, other)
    assert use_count(trt, "VideoEncoder", first) == counts[0] - 1
    assert use_count(trt, "VideoEncoder", other) == counts[1] + 1


def test_MEDIA_2_3_15_video_encoder_use_count_remove(box, trt, profile):
    video_profile(trt, box, profile)
    token = f"VEC_{box.index}"
    trt.AddVideoEncoderConfiguration(profile, token)
    before = use_count(trt, "VideoEncoder", token)
    trt.RemoveVideoEncoderConfiguration(profile)
    assert use_count(trt, "VideoEncoder", token) == before - 1


def test_MEDIA_2_3_16_video_encoder_use_count_delete_profile(box, trt, profile):
    video_profile(trt, box, profile)
    token = f"VEC_{box.index}"
    trt.AddVideoEncoderConfiguration(profile, token)
    before = use_count(trt, "VideoEncoder", token)
    trt.DeleteProfile(profile)
    assert use_count(trt, "VideoEncoder", token) == before - 1


def test_MEDIA_2_3_17_video_encoder_use_count_set(box, trt):
    token = f"VEC_{box.index}"
    before = use_count(trt, "VideoEncoder", token)
    trt.SetVideoEncoderConfiguration(trt.GetVideoEncoderConfiguration(token), True)
    assert use_count(trt, "VideoEncoder", token) == before


# -- audio ----------------------------------------------------------------------------------------
def test_MEDIA_3_1_7_get_audio_source_configuration_options(box, trt):
    options = trt.GetAudioSourceConfigurationOptions(f"ASC_{box.index}")
    assert options.InputTokensAvailable == [f"AS_{box.index}"]
    options = trt.GetAudioSourceConfigurationOptions(ProfileToken=box.main)
    assert options.InputTokensAvailable == [f"AS_{box.index}"]


def test_MEDIA_3_1_16_aac_audio_encoder_configuration(box, trt):
    config = trt.GetAudioEncoderConfiguration(f"AEC_{box.index}")
    assert config.Encoding == "AAC"
    trt.SetAudioEncoderConfiguration(config, True)
    assert trt.GetAudioEncoderConfiguration(config.token) == config


def invalid(call, code: str = "NoConfig") -> None:
    with pytest.raises(zeep.exceptions.Fault) as info:
        call()
    assert fault_codes(info) == ["InvalidArgVal", code]


def test_MEDIA_3_1_17_get_audio_source_configuration_invalid_token(trt):
    invalid(lambda: trt.GetAudioSourceConfiguration("INVALID"))


def test_MEDIA_3_1_18_audio_source_options_invalid_profile(trt):
    invalid(lambda: trt.GetAudioSourceConfigurationOptions(ProfileToken="INVALID"), "NoProfile")


def test_MEDIA_3_1_19_audio_source_options_invalid_configuration(trt):
    invalid(lambda: trt.GetAudioSourceConfigurationOptions(ConfigurationToken="INVALID"))


def test_MEDIA_3_1_20_set_audio_source_configuration_invalid_token(box, trt):
    config = trt.GetAudioSourceConfiguration(f"ASC_{box.index}")
    config.token = "INVALID"
    invalid(lambda: trt.SetAudioSourceConfiguration(config, True))


def test_MEDIA_3_1_21_set_audio_encoder_configuration(box, trt):
    config = trt.GetAudioEncoderConfiguration(f"AEC_{box.index}")
    config.Name = "aac"
    config.Multicast.Port = 42000
    trt.SetAudioEncoderConfiguration(config, True)
    again = trt.GetAudioEncoderConfiguration(config.token)
    assert (again.Name, again.Multicast.Port) == ("aac", 42000)
    config.SampleRate = 8
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.SetAudioEncoderConfiguration(config, True)
    assert fault_codes(info) == ["InvalidArgVal", "ConfigModify"]


def test_MEDIA_3_1_22_audio_source_configuration(box, trt):
    config = trt.GetAudioSourceConfiguration(f"ASC_{box.index}")
    assert config.SourceToken in {s.token for s in trt.GetAudioSources()}
    trt.SetAudioSourceConfiguration(config, True)


def test_MEDIA_3_1_23_audio_encoder_configuration(box, trt):
    config = trt.GetAudioEncoderConfiguration(f"AEC_{box.index}")
    option = trt.GetAudioEncoderConfigurationOptions(config.token).Options[0]
    assert option.Encoding == config.Encoding
    assert config.Bitrate in option.BitrateList.Items
    assert config.SampleRate in option.SampleRateList.Items


def test_MEDIA_3_2_1_audio_source_configurations_and_profiles_consistency(trt):
    listed = {c.token: c for c in trt.GetAudioSourceConfigurations()}
    for p in trt.GetProfiles():
        if p.AudioSourceConfiguration is not None:
            assert listed[p.AudioSourceConfiguration.token] == p.AudioSourceConfiguration


def test_MEDIA_3_2_2_audio_source_configurations_and_configuration_consistency(trt):
    for c in trt.GetAudioSourceConfigurations():
        assert trt.GetAudioSourceConfiguration(c.token) == c


def test_MEDIA_3_2_3_audio_source_configurations_and_options_consistency(trt):
    for c in trt.GetAudioSourceConfigurations():
        assert c.SourceToken in trt.GetAudioSourceConfigurationOptions(c.token).InputTokensAvailable


def test_MEDIA_3_2_4_profiles_and_audio_source_options_consistency(trt):
    for p in trt.GetProfiles():
        if p.AudioSourceConfiguration is not None:
            options = trt.GetAudioSourceConfigurationOptions(ProfileToken=p.token)
            assert p.AudioSourceConfiguration.SourceToken in options.InputTokensAvailable


def test_MEDIA_3_2_5_audio_source_configurations_and_audio_sources_consistency(trt):
    sources = {s.token for s in trt.GetAudioSources()}
    assert {c.SourceToken for c in trt.GetAudioSourceConfigurations()} <= sources


def test_MEDIA_3_2_6_audio_source_use_count_current_state(trt):
    for c in trt.GetAudioSourceConfigurations():
        assert use_count(trt, "AudioSource", c.token) == profiles_using(
            trt, "AudioSourceConfiguration", c.token
        )


def test_MEDIA_3_2_12_audio_source_use_count_add_twice(box, trt, profile):
    token = f"ASC_{box.index}"
    before = use_count(trt, "AudioSource", token)
    trt.AddAudioSourceConfiguration(profile, token)
    trt.AddAudioSourceConfiguration(profile, token)
    assert use_count(trt, "AudioSource", token) == before + 1


def test_MEDIA_3_2_14_audio_source_use_count_remove(box, trt, profile):
    token = f"ASC_{box.index}"
    trt.AddAudioSourceConfiguration(profile, token)
    before = use_count(trt, "AudioSource", token)
    trt.RemoveAudioSourceConfiguration(profile)
    assert use_count(trt, "AudioSource", token) == before - 1


def test_MEDIA_3_2_15_audio_source_use_count_delete_profile(box, trt, profile):
    token = f"ASC_{box.index}"
    trt.AddAudioSourceConfiguration(profile, token)
    before = use_count(trt, "AudioSource", token)
    trt.DeleteProfile(profile)
    assert use_count(trt, "AudioSource", token) == before - 1


def test_MEDIA_3_2_16_audio_source_use_count_set(box, trt):
    token = f"ASC_{box.index}"
    before = use_count(trt, "AudioSource", token)
    trt.SetAudioSourceConfiguration(trt.GetAudioSourceConfiguration(token), True)
    assert use_count(trt, "AudioSource", token) == before


def test_MEDIA_3_3_1_audio_encoder_configurations_and_profiles_consistency(trt):
    listed = {c.token: c for c in trt.GetAudioEncoderConfigurations()}
    for p in trt.GetProfiles():
        if p.AudioEncoderConfiguration is not None:
            assert listed[p.AudioEncoderConfiguration.token] == p.AudioEncoderConfiguration


def test_MEDIA_3_3_2_audio_encoder_configurations_and_configuration_consistency(trt):
    for c in trt.GetAudioEncoderConfigurations():
        assert trt.GetAudioEncoderConfiguration(c.token) == c


def audio_fits(c, options) -> None:
    option = next(o for o in options.Options if o.Encoding == c.Encoding)
    assert c.Bitrate in option.BitrateList.Items
    assert c.SampleRate in option.SampleRateList.Items


def test_MEDIA_3_3_3_audio_encoder_configurations_and_options_consistency(trt):
    for c in trt.GetAudioEncoderConfigurations():
        audio_fits(c, trt.GetAudioEncoderConfigurationOptions(c.token))


def test_MEDIA_3_3_4_profiles_and_audio_encoder_options_consistency(trt):
    for p in trt.GetProfiles():
        if p.AudioEncoderConfiguration is not None:
            options = trt.GetAudioEncoderConfigurationOptions(ProfileToken=p.token)
            audio_fits(p.AudioEncoderConfiguration, options)


def test_MEDIA_3_3_5_audio_encoder_use_count_current_state(trt):
    for c in trt.GetAudioEncoderConfigurations():
        assert use_count(trt, "AudioEncoder", c.token) == profiles_using(
            trt, "AudioEncoderConfiguration", c.token
        )


def test_MEDIA_3_3_11_audio_encoder_options_bitrate_and_samplerate(trt):
    for c in trt.GetAudioEncoderConfigurations():
        audio_fits(c, trt.GetAudioEncoderConfigurationOptions(c.token))


def audio_profile(trt, box, profile: str) -> None:
    trt.AddAudioSourceConfiguration(profile, f"ASC_{box.index}")


def test_MEDIA_3_3_12_audio_encoder_use_count_add_twice(box, trt, profile):
    audio_profile(trt, box, profile)
    token = f"AEC_{box.index}"
    before = use_count(trt, "AudioEncoder", token)
    trt.AddAudioEncoderConfiguration(profile, token)
    trt.AddAudioEncoderConfiguration(profile, token)
    assert use_count(trt, "AudioEncoder", token) == before + 1


def test_MEDIA_3_3_14_audio_encoder_use_count_remove(box, trt, profile):
    audio_profile(trt, box, profile)
    token = f"AEC_{box.index}"
    trt.AddAudioEncoderConfiguration(profile, token)
    before = use_count(trt, "AudioEncoder", token)
    trt.RemoveAudioEncoderConfiguration(profile)
    assert use_count(trt, "AudioEncoder", token) == before - 1


def test_MEDIA_3_3_15_audio_encoder_use_count_delete_profile(box, trt, profile):
    audio_profile(trt, box, profile)
    token = f"AEC_{box.index}"
    trt.AddAudioEncoderConfiguration(profile, token)
    before = use_count(trt, "AudioEncoder", token)
    trt.DeleteProfile(profile)
    assert use_count(trt, "AudioEncoder", token) == before - 1


def test_MEDIA_3_3_16_audio_encoder_use_count_set(box, trt):
    token = f"AEC_{box.index}"
    before = use_count(trt, "AudioEncoder", token)
    trt.SetAudioEncoderConfiguration(trt.GetAudioEncoderConfiguration(token), True)
    assert use_count(trt, "AudioEncoder", token) == before


# -- metadata, snapshot, faults, capabilities ---------------------------------------------------------
def test_MEDIA_5_1_3_metadata_configuration(box, trt, profile):
    configs = trt.GetMetadataConfigurations()
    assert configs
    compatible = trt.GetCompatibleMetadataConfigurations(profile)
    assert {c.token for c in compatible} <= {c.token for c in configs}
    trt.AddMetadataConfiguration(profile, configs[0].token)
    assert trt.GetProfile(profile).MetadataConfiguration.token == configs[0].token
    trt.GetMetadataConfigurationOptions(configs[0].token, profile)
    trt.SetMetadataConfiguration(trt.GetMetadataConfiguration(configs[0].token), True)
    trt.RemoveMetadataConfiguration(profile)
    assert trt.GetProfile(profile).MetadataConfiguration is None


def test_MEDIA_6_1_1_snapshot_uri(box, trt):
    uri = trt.GetSnapshotUri(box.main).Uri
    answer = requests.get(
        uri, auth=requests.auth.HTTPDigestAuth("admin", ADMIN_PASSWORD), timeout=20
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    assert answer.content[:2] == b"\xff\xd8" and answer.content[-2:] == b"\xff\xd9"


def test_MEDIA_7_1_2_soap_fault_invalid_stream_setup(box):
    """GetStreamUri with a transport the schema does not know: a Sender fault."""
    body = (
        f'<trt:GetStreamUri xmlns:trt="{TRT}" xmlns:tt="{TT}"><trt:StreamSetup>'
        "<tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>INVALID</tt:Protocol>"
        f"</tt:Transport></trt:StreamSetup><trt:ProfileToken>{box.main}</trt:ProfileToken>"
        "</trt:GetStreamUri>"
    )
    answer = post(
        box.nvr.base + MEDIA.path, envelope(body, username_token("admin", ADMIN_PASSWORD))
    )
    assert answer.status_code == 400
    assert b"InvalidArgVal" in answer.content


def test_MEDIA_7_1_4_soap_fault_invalid_profile(trt):
    invalid(lambda: trt.GetStreamUri(RTSP, "INVALID"), "NoProfile")
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.GetStreamUri({"Stream": "RTP-Multicast", "Transport": {"Protocol": "HTTP"}}, "INVALID")
    assert fault_codes(info)[0] == "InvalidArgVal"


def test_MEDIA_7_1_5_start_multicast_invalid_profile(trt):
    invalid(lambda: trt.StartMulticastStreaming("INVALID"), "NoProfile")


def test_MEDIA_8_1_1_media_service_capabilities(trt):
    caps = trt.GetServiceCapabilities()
    assert caps.ProfileCapabilities.MaximumNumberOfProfiles >= 1
    streaming = caps.StreamingCapabilities
    assert (streaming.RTPMulticast, streaming.RTP_TCP, streaming.RTP_RTSP_TCP) == (True, True, True)
    assert caps.SnapshotUri is True


def test_MEDIA_8_1_2_get_services_and_media_capabilities_consistency(box, trt):
    device = device_client(box.nvr.device_url, "admin", ADMIN_PASSWORD)[1]
    entry = next(s for s in device.GetServices(True) if s.Namespace == TRT)
    embedded = entry.Capabilities._value_1
    direct = trt.GetServiceCapabilities()
    assert embedded.get("SnapshotUri") == "true" and direct.SnapshotUri is True
    streaming = embedded.find(f"{{{TRT}}}StreamingCapabilities")
    assert streaming.get("RTP_RTSP_TCP") == "true"
    profiles = embedded.find(f"{{{TRT}}}ProfileCapabilities")
    assert int(profiles.get("MaximumNumberOfProfiles")) == (
        direct.ProfileCapabilities.MaximumNumberOfProfiles
    )
