"""The Media2 service of a running box that receives a GStreamer camera (H.264 640x360 at
25 frames/s + AAC): the same profiles in Media2's model, a stream URI for each protocol
(played by FFmpeg over UDP and TCP), profiles built from configuration references, the
ProfileChanged/ConfigurationChanged events, faults, and answers valid against the XSD."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pytest
import zeep.exceptions
from lxml import etree

from onvif_nvr.wsdl.catalog import MEDIA2
from tests.conftest import ADMIN_PASSWORD
from tests.eventutil import EventsClient, topic_filter
from tests.mediautil import (
    NO_NETNS,
    MediaBox,
    media2_client,
    media_box,
    media_client,
    multicast_listener,
    play,
    rtp_packets,
    with_credentials,
)
from tests.soaputil import SOAP12, envelope, post, username_token
from tests.test_live import RawViewer
from tests.test_receiver_service import fault_codes
from tests.test_schema_validation import XS, _Recorder, _schema_closure, validated_body_child

TR2 = MEDIA2.namespace
TT = "http://www.onvif.org/ver10/schema"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaBox]:
    # In a loopback-only namespace when one can be had: the multicast tests need it.
    with media_box(tmp_path_factory.mktemp("media2") / "data", namespace="media2") as running:
        yield running


@pytest.fixture(scope="module")
def tr2(box: MediaBox):
    return media2_client(box.nvr)


def ref(kind: str, token: str | None = None) -> dict[str, str]:
    return {"Type": kind, "Token": token} if token else {"Type": kind}


def test_capabilities(tr2) -> None:
    caps = tr2.GetServiceCapabilities()
    assert caps.SnapshotUri is True and caps.Rotation is False and caps.OSD is False
    streaming = caps.StreamingCapabilities
    assert (streaming.RTSPStreaming, streaming.RTPMulticast, streaming.RTP_RTSP_TCP) == (
        True,
        True,
        True,
    )
    assert streaming.RTSPWebSocketUri is None
    assert caps.ProfileCapabilities.MaximumNumberOfProfiles >= 2
    assert "VideoEncoder" in caps.ProfileCapabilities.ConfigurationsSupported


def test_profiles_with_and_without_configurations(box: MediaBox, tr2) -> None:
    bare = {p.token: p for p in tr2.GetProfiles()}
    assert bare[box.main].Configurations is None and bare[box.main].fixed is True
    full = tr2.GetProfiles(Token=box.main, Type=["All"])
    assert len(full) == 1
    configs = full[0].Configurations
    encoder = configs.VideoEncoder
    assert (encoder.Encoding, encoder.Resolution.Width, encoder.Resolution.Height) == (
        "H264",
        640,
        360,
    )
    assert encoder.RateControl.FrameRateLimit == 25.0 and encoder.GovLength == 25
    assert configs.AudioEncoder.Encoding == "mpeg4-generic"
    assert configs.VideoSource.Bounds.width == 640
    only = tr2.GetProfiles(Token=box.main, Type=["VideoSource"])[0].Configurations
    assert only.VideoSource is not None and only.VideoEncoder is None
    jpeg = tr2.GetProfiles(Token=box.main + "_JPEG", Type=["VideoEncoder"])[0]
    assert jpeg.Configurations.VideoEncoder.Encoding == "JPEG"


@pytest.mark.parametrize(("protocol", "transport"), [("RtspUnicast", "udp"), ("RTSP", "tcp")])
def test_stream_uri_plays(box: MediaBox, tr2, protocol: str, transport: str) -> None:
    uri = tr2.GetStreamUri(protocol, box.main)
    assert uri == f"rtsp://127.0.0.1:{box.nvr.rtsp_port}/live/{box.receiver}"
    assert play(with_credentials(uri), transport) == ("h264", (640, 360))


def test_rtsp_over_http_plays(box: MediaBox, tr2) -> None:
    uri = tr2.GetStreamUri("RtspOverHttp", box.main)
    # FFmpeg names the tunnel by the rtsp scheme and rtsp_transport=http.
    rtsp = with_credentials(uri.replace("http://", "rtsp://", 1))
    assert play(rtsp, "http") == ("h264", (640, 360))


needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=f"multicast: {NO_NETNS}")


@needs_netns
def test_rtsp_multicast_plays(box: MediaBox, tr2) -> None:
    uri = tr2.GetStreamUri("RtspMulticast", box.main)
    assert play(with_credentials(uri), "udp_multicast") == ("h264", (640, 360))


@needs_netns
def test_rtsp_multicast_sessions_use_the_configured_group(box: MediaBox, tr2) -> None:
    config = tr2.GetVideoEncoderConfigurations(ConfigurationToken=f"VEC_{box.index}")[0]
    config.Multicast.Address.IPv4Address, config.Multicast.Port = "239.255.77.1", 46000
    tr2.SetVideoEncoderConfiguration(config)
    uri = tr2.GetStreamUri("RtspMulticast", box.main)
    viewer = RawViewer("127.0.0.1", box.nvr.rtsp_port)
    try:
        described = viewer.request("DESCRIBE", uri, Accept="application/sdp")
        assert described.status == 200
        # A multicast URI's SDP names the group and the track's port (Streaming spec).
        sdp_text = described.body.decode()
        assert "c=IN IP4 239.255.77.1" in sdp_text and "m=video 46000 " in sdp_text
        setup = viewer.request("SETUP", f"{uri}/trackID=0", Transport="RTP/AVP;multicast")
        assert setup.status == 200, setup
        transport = setup.headers.get("Transport", "")
        assert "destination=239.255.77.1" in transport and "port=46000-46001" in transport
    finally:
        viewer.close()
    assert play(with_credentials(uri), "udp_multicast") == ("h264", (640, 360))


def multicast_group(tr2, token: str) -> tuple[str, int, bool]:
    m = tr2.GetVideoEncoderConfigurations(ConfigurationToken=token)[0].Multicast
    return m.Address.IPv4Address, m.Port, m.AutoStart


@needs_netns
def test_start_and_stop_multicast_streaming(box: MediaBox, tr2) -> None:
    token = f"VEC_{box.index}"
    group, port, autostart = multicast_group(tr2, token)
    assert autostart is False
    with multicast_listener(group, port) as sock:
        tr2.StartMulticastStreaming(box.main)
        assert multicast_group(tr2, token)[2] is True
        assert len(rtp_packets(sock, 20)) == 20
        tr2.SetSynchronizationPoint(box.main)
        tr2.StopMulticastStreaming(box.main)
        assert multicast_group(tr2, token)[2] is False
        sock.settimeout(1)
        with pytest.raises(TimeoutError):
            while True:  # what was under way drains, then nothing more comes
                sock.recv(65536)
    tr2.StopMulticastStreaming(box.main)  # not streaming: still a success


def test_stream_uri_of_every_protocol(box: MediaBox, tr2) -> None:
    assert tr2.GetStreamUri("RtspMulticast", box.main).startswith("rtsp://")
    assert (
        tr2.GetStreamUri("RtspOverHttp", box.main)
        == f"{box.nvr.base}/rtsp-tunnel/live/{box.receiver}"
    )
    for protocol in ("RtspsUnicast", "RtspsMulticast", "WebRTC", "nonsense"):
        with pytest.raises(zeep.exceptions.Fault) as info:
            tr2.GetStreamUri(protocol, box.main)
        assert fault_codes(info) == ["InvalidArgVal", "InvalidStreamSetup"], protocol
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.GetStreamUri("RTSP", "nope")
    assert fault_codes(info) == ["InvalidArgVal", "NoProfile"]
    assert tr2.GetSnapshotUri(box.main) == f"{box.nvr.base}/snapshot/{box.receiver}"


def test_profile_from_references_and_its_events(box: MediaBox, tr2) -> None:
    i = box.index
    events = EventsClient(box.nvr.base, "admin", ADMIN_PASSWORD)
    subscription = events.create(
        topic_filter("tns1:Media/ProfileChanged|tns1:Media/ConfigurationChanged")
    )
    token = tr2.CreateProfile(
        "mine", [ref("VideoSource", f"VSC_{i}"), ref("VideoEncoder", f"VEC_{i}")]
    )
    profile = tr2.GetProfiles(Token=token, Type=["All"])[0]
    assert profile.fixed is False and profile.Name == "mine"
    assert profile.Configurations.VideoEncoder.token == f"VEC_{i}"
    # A reference without a token: the box picks one of that type that fits.
    tr2.AddConfiguration(token, "renamed", [ref("AudioSource"), ref("AudioEncoder")])
    profile = tr2.GetProfiles(Token=token, Type=["All"])[0]
    assert profile.Name == "renamed"
    assert profile.Configurations.AudioEncoder.token == f"AEC_{i}"
    assert tr2.GetStreamUri("RTSP", token).endswith(f"/live/{box.receiver}")
    # Dependencies: the source cannot go while its encoder stays.
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.RemoveConfiguration(token, [ref("VideoSource")])
    assert fault_codes(info) == ["Action", "ConfigurationConflict"]
    tr2.RemoveConfiguration(token, [ref("All")])
    assert tr2.GetProfiles(Token=token, Type=["All"])[0].Configurations is None
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.GetStreamUri("RTSP", token)
    assert fault_codes(info) == ["Action", "IncompleteConfiguration"]
    config = tr2.GetMetadataConfigurations(ConfigurationToken="METADATA")[0]
    config.Name = "meta"
    tr2.SetMetadataConfiguration(config)
    tr2.DeleteProfile(token)
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.DeleteProfile(token)
    assert fault_codes(info) == ["InvalidArgVal", "NoProfile"]
    seen: list[tuple[str, dict[str, str]]] = []
    for _ in range(5):
        seen += [(n.topic, n.source) for n in events.pull(subscription, "PT1S")]
        if len(seen) >= 5:
            break
    assert seen == [
        ("tns1:Media/ProfileChanged", {"Token": token}),
        ("tns1:Media/ProfileChanged", {"Token": token}),
        ("tns1:Media/ProfileChanged", {"Token": token}),
        ("tns1:Media/ConfigurationChanged", {"Token": "METADATA", "Type": "Metadata"}),
        ("tns1:Media/ProfileChanged", {"Token": token}),
    ]


def test_configurations_and_options(box: MediaBox, tr2) -> None:
    i = box.index
    encoders = {c.token: c for c in tr2.GetVideoEncoderConfigurations()}
    assert set(encoders) == {f"VEC_{i}", f"VEC_{i}_JPEG"}
    compatible = tr2.GetVideoEncoderConfigurations(ProfileToken=box.main)
    assert {c.token for c in compatible} == set(encoders)
    options = tr2.GetVideoEncoderConfigurationOptions(ConfigurationToken=f"VEC_{i}")
    assert [o.Encoding for o in options] == ["H264"]
    h264, config = options[0], encoders[f"VEC_{i}"]
    assert h264.GovLengthRange == [25, 25] and h264.FrameRatesSupported == [25.0]
    assert h264.BitrateRange.Min <= config.RateControl.BitrateLimit <= h264.BitrateRange.Max
    assert config.Profile in h264.ProfilesSupported
    audio = tr2.GetAudioEncoderConfigurationOptions(ProfileToken=box.main)
    assert [o.Encoding for o in audio] == ["mpeg4-generic"]
    instances = tr2.GetVideoEncoderInstances(f"VSC_{i}")
    assert instances.Total == 2
    assert sorted((c.Encoding, c.Number) for c in instances.Codec) == [("H264", 1), ("JPEG", 1)]
    assert tr2.GetOSDs() == []
    [mode] = tr2.GetVideoSourceModes(f"VS_{i}")
    assert (mode.MaxResolution.Width, mode.MaxResolution.Height, mode.MaxFramerate) == (
        640,
        360,
        25.0,
    )
    assert mode.Encodings == ["H264", "JPEG"] and mode.Reboot is False
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.GetVideoSourceModes("nope")
    assert fault_codes(info) == ["InvalidArgVal", "NoVideoSource"]
    # Set: the same values are accepted; another resolution needs transcoding.
    tr2.SetVideoEncoderConfiguration(config)
    config.Resolution.Width = 1280
    with pytest.raises(zeep.exceptions.Fault) as info:
        tr2.SetVideoEncoderConfiguration(config)
    assert fault_codes(info) == ["InvalidArgVal", "ConfigModify"]
    for call in (
        lambda: tr2.GetVideoSourceConfigurations(ConfigurationToken="nope"),
        lambda: tr2.GetAudioSourceConfigurations(ConfigurationToken="nope"),
        lambda: tr2.GetMetadataConfigurations(ConfigurationToken="nope"),
        lambda: tr2.AddConfiguration(box.main, None, [ref("VideoEncoder", "nope")]),
        lambda: tr2.AddConfiguration(box.main, None, [ref("PTZ")]),
    ):
        with pytest.raises(zeep.exceptions.Fault) as info:
            call()
        assert fault_codes(info) == ["InvalidArgVal", "NoConfig"]


def test_media_and_media2_share_profiles(box: MediaBox, tr2) -> None:
    trt = media_client(box.nvr)
    created = trt.CreateProfile("shared").token
    try:
        assert created in {p.token for p in tr2.GetProfiles()}
    finally:
        tr2.DeleteProfile(created)
    assert created not in {p.token for p in trt.GetProfiles()}


# -- the answers against the schema -------------------------------------------------------------
@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """tr2 + tt + the SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("tr2-xsd")
    _schema_closure(dest, MEDIA2)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="schema/common/soap-envelope"/>'
        f'<xs:import namespace="{TR2}" '
        f'schemaLocation="{posixpath.splitext(MEDIA2.wsdl)[0]}.xsd"/>'
        "</xs:schema>"
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_Recorder())
    return etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))


def test_answers_validate_against_the_schema(box: MediaBox, schema: etree.XMLSchema) -> None:
    i, p = box.index, box.main
    requests_ = [
        ("GetServiceCapabilities", ""),
        ("GetProfiles", "<tr2:Type>All</tr2:Type>"),
        ("GetVideoSourceConfigurations", ""),
        ("GetVideoEncoderConfigurations", ""),
        ("GetAudioSourceConfigurations", ""),
        ("GetAudioEncoderConfigurations", ""),
        ("GetMetadataConfigurations", ""),
        ("GetVideoSourceConfigurationOptions", ""),
        ("GetVideoEncoderConfigurationOptions", ""),
        ("GetAudioSourceConfigurationOptions", ""),
        ("GetAudioEncoderConfigurationOptions", ""),
        ("GetMetadataConfigurationOptions", ""),
        ("GetVideoEncoderInstances", f"<tr2:ConfigurationToken>VSC_{i}</tr2:ConfigurationToken>"),
        (
            "GetStreamUri",
            f"<tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>{p}</tr2:ProfileToken>",
        ),
        ("GetSnapshotUri", f"<tr2:ProfileToken>{p}</tr2:ProfileToken>"),
        ("GetOSDs", ""),
        ("GetVideoSourceModes", f"<tr2:VideoSourceToken>VS_{i}</tr2:VideoSourceToken>"),
    ]
    url = box.nvr.base + MEDIA2.path
    for operation, body in requests_:
        element = f'<tr2:{operation} xmlns:tr2="{TR2}" xmlns:tt="{TT}">{body}</tr2:{operation}>'
        answer = post(url, envelope(element, username_token("admin", ADMIN_PASSWORD)))
        assert answer.status_code == 200, (operation, answer.text)
        child = validated_body_child(schema, answer)
        assert etree.QName(child).localname == operation + "Response"


# -- last: restarts the box ---------------------------------------------------------------------
@needs_netns
def test_multicast_streaming_resumes_after_a_restart(box: MediaBox, tr2) -> None:
    group, port, _ = multicast_group(tr2, f"VEC_{box.index}")
    tr2.StartMulticastStreaming(box.main)
    box.nvr.stop()
    with multicast_listener(group, port) as sock:
        box.nvr.start()
        assert len(rtp_packets(sock, 20)) == 20
    tr2.StopMulticastStreaming(box.main)
