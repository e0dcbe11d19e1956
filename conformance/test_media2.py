"""Media2 Device Test Specification cases (MEDIA2-*) for the Media2 service.

One box for the module: a GStreamer camera (H.264 640x360 25 fps + AAC) received by an
AlwaysConnect receiver. Each test follows its case's procedure with zeep; the cases that
cannot apply to this NVR are listed in NOT_APPLICABLE with the reason and reported as
skipped. The MEDIA2_RTSS-* (streaming) and MEDIA2_PTZ-* cases are other specifications.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import requests
import zeep.exceptions

from onvif_nvr.wsdl.catalog import MEDIA2
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.eventutil import EventsClient, topic_filter
from tests.mediautil import MediaBox, media2_client, media_box, play, with_credentials
from tests.test_receiver_service import fault_codes

TR2 = MEDIA2.namespace
ALL = ["All"]

NOT_APPLICABLE = {
    "MEDIA2-1-1-8": "metadata streaming: the box streams no metadata track",
    "MEDIA2-1-1-9": "Profile M: not claimed",
    "MEDIA2-2-4-2": "SetVideoSourceMode: one mode per source, the camera's (capability false)",
    "MEDIA2-3-2-1": "G.711 encoder: the box describes the camera's audio; the test camera sends AAC",
    **{f"MEDIA2-3-3-{n}": "audio outputs: an NVR has none" for n in range(1, 7)},
    **{f"MEDIA2-3-4-{n}": "audio decoders (backchannel): not offered" for n in range(1, 6)},
    "MEDIA2-4-1-1": "PTZ: the box has no PTZ service",
    "MEDIA2-4-1-2": "PTZ: the box has no PTZ service",
    **{f"MEDIA2-6-1-{n}": "OSD: capability false (no overlays)" for n in (1, 2, 3, 4, 6, 7)},
    **{f"MEDIA2-9-1-{n}": "analytics: the box has no analytics service" for n in (1, 2, 3)},
    **{f"MEDIA2-10-1-{n}": "privacy masks: Mask capability false" for n in range(1, 7)},
}


@pytest.mark.parametrize("case", sorted(NOT_APPLICABLE))
def test_not_applicable(case: str) -> None:
    pytest.skip(f"{case}: {NOT_APPLICABLE[case]}")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaBox]:
    with media_box(tmp_path_factory.mktemp("media2-conformance") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def tr2(box: MediaBox):
    return media2_client(box.nvr)


@pytest.fixture
def created(tr2) -> Iterator[list[str]]:
    """Profiles a test creates, deleted after it."""
    tokens: list[str] = []
    yield tokens
    for token in tokens:
        with contextlib.suppress(zeep.exceptions.Fault):
            tr2.DeleteProfile(token)


def ref(kind: str, token: str | None = None) -> dict[str, str]:
    return {"Type": kind, "Token": token} if token else {"Type": kind}


def invalid(call, code: str = "NoConfig") -> None:
    with pytest.raises(zeep.exceptions.Fault) as info:
        call()
    assert fault_codes(info) == ["InvalidArgVal", code]


def full_profiles(tr2):
    return tr2.GetProfiles(Type=ALL)


# -- profiles -------------------------------------------------------------------------------------
def test_MEDIA2_1_1_1_ready_to_use_profile_for_video_streaming(box, tr2):
    ready = [
        p
        for p in full_profiles(tr2)
        if p.Configurations is not None
        and p.Configurations.VideoSource is not None
        and p.Configurations.VideoEncoder is not None
    ]
    assert ready
    for p in ready:
        uri = tr2.GetStreamUri("RTSP", p.token)
        codec, size = play(with_credentials(uri), "tcp", frames=3)
        encoder = p.Configurations.VideoEncoder
        assert codec == {"H264": "h264", "JPEG": "mjpeg"}[encoder.Encoding]
        assert size == (encoder.Resolution.Width, encoder.Resolution.Height)


def test_MEDIA2_1_1_2_create_profile_with_predefined_configuration(box, tr2, created):
    source = tr2.GetVideoSourceConfigurations()[0]
    created.append(tr2.CreateProfile("predefined", [ref("VideoSource", source.token)]))
    got = tr2.GetProfiles(Token=created[0], Type=ALL)[0]
    assert got.fixed is False and got.Configurations.VideoSource.token == source.token
    tr2.DeleteProfile(created[0])
    invalid(lambda: tr2.GetProfiles(Token=created[0]), "NoProfile")


def test_MEDIA2_1_1_3_dynamic_media_profile_configuration(box, tr2, created):
    created.append(tr2.CreateProfile("dynamic"))
    token = created[0]
    source = tr2.GetVideoSourceConfigurations(ProfileToken=token)[0]
    tr2.AddConfiguration(token, None, [ref("VideoSource", source.token)])
    encoder = tr2.GetVideoEncoderConfigurations(ProfileToken=token)[0]
    tr2.AddConfiguration(token, None, [ref("VideoEncoder", encoder.token)])
    got = tr2.GetProfiles(Token=token, Type=ALL)[0].Configurations
    assert (got.VideoSource.token, got.VideoEncoder.token) == (source.token, encoder.token)
    tr2.RemoveConfiguration(token, [ref("VideoEncoder"), ref("VideoSource")])
    assert tr2.GetProfiles(Token=token, Type=ALL)[0].Configurations is None


def test_MEDIA2_1_1_4_get_profiles(box, tr2):
    listed = tr2.GetProfiles()
    assert listed and all(p.Configurations is None for p in listed)
    for p in listed:
        one = tr2.GetProfiles(Token=p.token, Type=ALL)
        assert [q.token for q in one] == [p.token] and one[0].fixed == p.fixed


def test_MEDIA2_1_1_5_create_profile_with_configurations(box, tr2, created):
    i = box.index
    created.append(
        tr2.CreateProfile(
            "with configurations",
            [
                ref("VideoSource", f"VSC_{i}"),
                ref("VideoEncoder", f"VEC_{i}"),
                ref("AudioSource", f"ASC_{i}"),
                ref("AudioEncoder", f"AEC_{i}"),
            ],
        )
    )
    got = tr2.GetProfiles(Token=created[0], Type=ALL)[0].Configurations
    assert [got.VideoSource.token, got.VideoEncoder.token] == [f"VSC_{i}", f"VEC_{i}"]
    assert [got.AudioSource.token, got.AudioEncoder.token] == [f"ASC_{i}", f"AEC_{i}"]


def test_MEDIA2_1_1_6_remove_all_configurations(box, tr2, created):
    i = box.index
    created.append(
        tr2.CreateProfile("full", [ref("VideoSource", f"VSC_{i}"), ref("VideoEncoder", f"VEC_{i}")])
    )
    tr2.RemoveConfiguration(created[0], [ref("All")])
    assert tr2.GetProfiles(Token=created[0], Type=ALL)[0].Configurations is None


def test_MEDIA2_1_1_7_fixed_media_profile_configuration(box, tr2):
    fixed = next(p for p in full_profiles(tr2) if p.fixed)
    audio = fixed.Configurations.AudioEncoder
    tr2.RemoveConfiguration(fixed.token, [ref("AudioEncoder")])
    assert tr2.GetProfiles(Token=fixed.token, Type=ALL)[0].Configurations.AudioEncoder is None
    tr2.AddConfiguration(fixed.token, None, [ref("AudioEncoder", audio.token)])
    again = tr2.GetProfiles(Token=fixed.token, Type=ALL)[0].Configurations.AudioEncoder
    assert again.token == audio.token
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.DeleteProfile(fixed.token)
    assert fault_codes(info) == ["Action", "DeletionOfFixedProfile"]


# -- video ------------------------------------------------------------------------------------------
def source_fits(config, options) -> None:
    assert config.SourceToken in options.VideoSourceTokensAvailable
    bounds = options.BoundsRange
    assert bounds.WidthRange.Min <= config.Bounds.width <= bounds.WidthRange.Max
    assert bounds.HeightRange.Min <= config.Bounds.height <= bounds.HeightRange.Max


def test_MEDIA2_2_2_1_get_video_source_configuration_options(tr2):
    options = tr2.GetVideoSourceConfigurationOptions()
    assert options.VideoSourceTokensAvailable and options.MaximumNumberOfProfiles >= 1


def test_MEDIA2_2_2_2_get_video_source_configurations(tr2):
    configs = tr2.GetVideoSourceConfigurations()
    assert configs
    for c in configs:
        assert tr2.GetVideoSourceConfigurations(ConfigurationToken=c.token) == [c]


def test_MEDIA2_2_2_3_video_source_configurations_and_options_consistency(tr2):
    for c in tr2.GetVideoSourceConfigurations():
        source_fits(c, tr2.GetVideoSourceConfigurationOptions(ConfigurationToken=c.token))


def test_MEDIA2_2_2_4_profiles_and_video_source_configurations_consistency(tr2):
    listed = {c.token: c for c in tr2.GetVideoSourceConfigurations()}
    for p in full_profiles(tr2):
        if p.Configurations is not None and p.Configurations.VideoSource is not None:
            assert listed[p.Configurations.VideoSource.token] == p.Configurations.VideoSource


def test_MEDIA2_2_2_5_modify_all_video_source_configurations(tr2):
    for c in tr2.GetVideoSourceConfigurations():
        options = tr2.GetVideoSourceConfigurationOptions(ConfigurationToken=c.token)
        c.SourceToken = options.VideoSourceTokensAvailable[0]
        c.Bounds.width = options.BoundsRange.WidthRange.Max
        c.Bounds.height = options.BoundsRange.HeightRange.Max
        tr2.SetVideoSourceConfiguration(c)
        assert tr2.GetVideoSourceConfigurations(ConfigurationToken=c.token)[0].Bounds == c.Bounds


def test_MEDIA2_2_2_6_get_video_source_configurations_invalid_token(tr2):
    invalid(lambda: tr2.GetVideoSourceConfigurations(ConfigurationToken="INVALID"))


def test_MEDIA2_2_2_7_profiles_and_video_source_options_consistency(tr2):
    for p in full_profiles(tr2):
        if p.Configurations is not None and p.Configurations.VideoSource is not None:
            options = tr2.GetVideoSourceConfigurationOptions(ProfileToken=p.token)
            source_fits(p.Configurations.VideoSource, options)


def encoder_fits(c, options) -> None:
    option = next(o for o in options if o.Encoding == c.Encoding)
    assert (c.Resolution.Width, c.Resolution.Height) in {
        (r.Width, r.Height) for r in option.ResolutionsAvailable
    }
    assert option.QualityRange.Min <= c.Quality <= option.QualityRange.Max
    assert c.RateControl.FrameRateLimit in option.FrameRatesSupported
    assert option.BitrateRange.Min <= c.RateControl.BitrateLimit <= option.BitrateRange.Max
    if c.GovLength is not None:
        assert option.GovLengthRange[0] <= c.GovLength <= option.GovLengthRange[1]
    if c.Profile is not None:
        assert c.Profile in option.ProfilesSupported


def test_MEDIA2_2_3_1_video_encoder_configuration(box, tr2):
    for c in tr2.GetVideoEncoderConfigurations():
        tr2.SetVideoEncoderConfiguration(c)
        assert tr2.GetVideoEncoderConfigurations(ConfigurationToken=c.token)[0] == c
    invalid(lambda: tr2.GetVideoEncoderConfigurations(ConfigurationToken="INVALID"))


def test_MEDIA2_2_3_2_video_encoder_configurations_and_options_consistency(tr2):
    for c in tr2.GetVideoEncoderConfigurations():
        encoder_fits(c, tr2.GetVideoEncoderConfigurationOptions(ConfigurationToken=c.token))


def test_MEDIA2_2_3_3_profiles_and_video_encoder_options_consistency(tr2):
    for p in full_profiles(tr2):
        if p.Configurations is not None and p.Configurations.VideoEncoder is not None:
            options = tr2.GetVideoEncoderConfigurationOptions(ProfileToken=p.token)
            encoder_fits(p.Configurations.VideoEncoder, options)


def test_MEDIA2_2_3_4_set_all_supported_video_encoder_configurations(box, tr2):
    for c in tr2.GetVideoEncoderConfigurations():
        for option in tr2.GetVideoEncoderConfigurationOptions(ConfigurationToken=c.token):
            c.Encoding = option.Encoding
            c.Resolution = option.ResolutionsAvailable[0]
            c.RateControl.FrameRateLimit = option.FrameRatesSupported[0]
            c.RateControl.BitrateLimit = option.BitrateRange.Max
            tr2.SetVideoEncoderConfiguration(c)
            got = tr2.GetVideoEncoderConfigurations(ConfigurationToken=c.token)[0]
            assert got.Encoding == option.Encoding
    uri = tr2.GetStreamUri("RTSP", box.main)
    assert play(with_credentials(uri), "tcp", frames=3) == ("h264", (640, 360))


def test_MEDIA2_2_3_5_video_encoder_configuration_options(tr2):
    options = tr2.GetVideoEncoderConfigurationOptions()
    assert {o.Encoding for o in options} == {"H264", "JPEG"}
    for o in options:
        assert o.ResolutionsAvailable and o.BitrateRange.Min <= o.BitrateRange.Max


def test_MEDIA2_2_4_1_get_video_source_modes(tr2):
    for source in {c.SourceToken for c in tr2.GetVideoSourceConfigurations()}:
        modes = tr2.GetVideoSourceModes(source)
        assert len(modes) == 1 and modes[0].token and modes[0].Encodings
        assert modes[0].MaxResolution.Width > 0 and modes[0].MaxFramerate > 0
    invalid(lambda: tr2.GetVideoSourceModes("INVALID"), "NoVideoSource")


# -- audio ------------------------------------------------------------------------------------------
def test_MEDIA2_3_1_1_get_audio_source_configuration_options(box, tr2):
    options = tr2.GetAudioSourceConfigurationOptions()
    assert options.InputTokensAvailable == [f"AS_{box.index}"]


def test_MEDIA2_3_1_2_get_audio_source_configurations(tr2):
    for c in tr2.GetAudioSourceConfigurations():
        assert tr2.GetAudioSourceConfigurations(ConfigurationToken=c.token) == [c]


def test_MEDIA2_3_1_3_audio_source_configurations_and_options_consistency(tr2):
    for c in tr2.GetAudioSourceConfigurations():
        options = tr2.GetAudioSourceConfigurationOptions(ConfigurationToken=c.token)
        assert c.SourceToken in options.InputTokensAvailable


def test_MEDIA2_3_1_4_profiles_and_audio_source_configurations_consistency(tr2):
    listed = {c.token: c for c in tr2.GetAudioSourceConfigurations()}
    for p in full_profiles(tr2):
        if p.Configurations is not None and p.Configurations.AudioSource is not None:
            assert listed[p.Configurations.AudioSource.token] == p.Configurations.AudioSource
            options = tr2.GetAudioSourceConfigurationOptions(ProfileToken=p.token)
            assert p.Configurations.AudioSource.SourceToken in options.InputTokensAvailable


def test_MEDIA2_3_1_5_modify_all_audio_source_configurations(tr2):
    for c in tr2.GetAudioSourceConfigurations():
        c.Name = "audio in"
        tr2.SetAudioSourceConfiguration(c)
        assert tr2.GetAudioSourceConfigurations(ConfigurationToken=c.token)[0].Name == "audio in"


def test_MEDIA2_3_1_6_get_audio_source_configurations_invalid_token(tr2):
    invalid(lambda: tr2.GetAudioSourceConfigurations(ConfigurationToken="INVALID"))


def audio_fits(c, options) -> None:
    option = next(o for o in options if o.Encoding.lower() == c.Encoding.lower())
    assert c.Bitrate in option.BitrateList.Items
    assert c.SampleRate in option.SampleRateList.Items


def test_MEDIA2_3_2_2_aac_audio_encoder_configuration(box, tr2):
    config = tr2.GetAudioEncoderConfigurations(ConfigurationToken=f"AEC_{box.index}")[0]
    assert config.Encoding in ("MP4A-LATM", "mpeg4-generic")
    audio_fits(config, tr2.GetAudioEncoderConfigurationOptions(ConfigurationToken=config.token))
    tr2.SetAudioEncoderConfiguration(config)
    assert tr2.GetAudioEncoderConfigurations(ConfigurationToken=config.token)[0] == config


def test_MEDIA2_3_2_3_get_audio_encoder_configuration_options(tr2):
    options = tr2.GetAudioEncoderConfigurationOptions()
    assert options and all(o.BitrateList.Items and o.SampleRateList.Items for o in options)


def test_MEDIA2_3_2_4_audio_encoder_configurations_and_options_consistency(tr2):
    for c in tr2.GetAudioEncoderConfigurations():
        audio_fits(c, tr2.GetAudioEncoderConfigurationOptions(ConfigurationToken=c.token))
    for p in full_profiles(tr2):
        if p.Configurations is not None and p.Configurations.AudioEncoder is not None:
            options = tr2.GetAudioEncoderConfigurationOptions(ProfileToken=p.token)
            audio_fits(p.Configurations.AudioEncoder, options)


# -- snapshot, instances, OSD, capabilities -------------------------------------------------------------
def test_MEDIA2_5_1_1_snapshot_uri(box, tr2):
    uri = tr2.GetSnapshotUri(box.main)
    answer = requests.get(
        uri, auth=requests.auth.HTTPDigestAuth("admin", ADMIN_PASSWORD), timeout=20
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    assert answer.content[:2] == b"\xff\xd8"


def test_MEDIA2_5_1_2_video_encoder_instances_per_video_source(tr2):
    for source in tr2.GetVideoSourceConfigurations():
        info = tr2.GetVideoEncoderInstances(source.token)
        assert info.Total >= 1 and sum(c.Number for c in info.Codec) <= info.Total


def test_MEDIA2_6_1_5_get_osds(tr2):
    assert tr2.GetOSDs() == []


def test_MEDIA2_7_1_1_media2_service_capabilities(tr2):
    caps = tr2.GetServiceCapabilities()
    assert caps.ProfileCapabilities.MaximumNumberOfProfiles >= 1
    assert caps.StreamingCapabilities.RTSPStreaming is True
    assert caps.SnapshotUri is True


def test_MEDIA2_7_1_2_get_services_and_media2_capabilities_consistency(box, tr2):
    device = device_client(box.nvr.device_url, "admin", ADMIN_PASSWORD)[1]
    entry = next(s for s in device.GetServices(True) if s.Namespace == TR2)
    assert entry.XAddr == box.nvr.base + MEDIA2.path
    embedded = entry.Capabilities._value_1
    direct = tr2.GetServiceCapabilities()
    assert (embedded.get("SnapshotUri") == "true") == direct.SnapshotUri
    streaming = embedded.find(f"{{{TR2}}}StreamingCapabilities")
    assert (streaming.get("RTSPStreaming") == "true") == direct.StreamingCapabilities.RTSPStreaming


# -- metadata ------------------------------------------------------------------------------------------
def test_MEDIA2_8_1_1_modify_all_metadata_configurations(box, tr2):
    events = EventsClient(box.nvr.base, "admin", ADMIN_PASSWORD)
    subscription = events.create(topic_filter("tns1:Media/ConfigurationChanged"))
    configs = tr2.GetMetadataConfigurations()
    for c in configs:
        tr2.GetMetadataConfigurationOptions(ConfigurationToken=c.token)
        c.Name = "metadata"
        tr2.SetMetadataConfiguration(c)
        assert tr2.GetMetadataConfigurations(ConfigurationToken=c.token)[0].Name == "metadata"
    seen = events.pull(subscription, "PT2S")
    assert [(n.topic, n.source) for n in seen] == [
        ("tns1:Media/ConfigurationChanged", {"Token": c.token, "Type": "Metadata"}) for c in configs
    ]


def test_MEDIA2_8_1_2_get_metadata_configurations(tr2):
    for c in tr2.GetMetadataConfigurations():
        assert tr2.GetMetadataConfigurations(ConfigurationToken=c.token) == [c]


def test_MEDIA2_8_1_3_profiles_and_metadata_configurations_consistency(tr2):
    listed = {c.token: c for c in tr2.GetMetadataConfigurations()}
    for p in full_profiles(tr2):
        if p.Configurations is not None and p.Configurations.Metadata is not None:
            assert listed[p.Configurations.Metadata.token] == p.Configurations.Metadata


def test_MEDIA2_8_1_4_get_metadata_configurations_invalid_token(tr2):
    invalid(lambda: tr2.GetMetadataConfigurations(ConfigurationToken="INVALID"))
