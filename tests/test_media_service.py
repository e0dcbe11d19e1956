"""The Media service (ver10) of a running box that receives a GStreamer camera (H.264
640x360 at 25 frames/s + AAC): profiles that describe the real stream, stream URIs that
FFmpeg plays, profile editing and its faults, answers valid against the XSD, and Home
Assistant's library (onvif-zeep-async) setting the camera up and taking a snapshot."""

from __future__ import annotations

import base64
import io
import json
import posixpath
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import requests
import zeep.exceptions
from lxml import etree

from onvif_nvr.wsdl.catalog import MEDIA, MEDIA2
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.mediautil import MediaBox, media_box, media_client, play, with_credentials
from tests.nvrproc import ROOT
from tests.soaputil import SOAP12, envelope, post, username_token
from tests.test_peer_onvif_zeep_async import peer_python
from tests.test_receiver_service import fault_codes
from tests.test_schema_validation import XS, _Recorder, _schema_closure, validated_body_child

TRT = MEDIA.namespace
TT = "http://www.onvif.org/ver10/schema"
RTSP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaBox]:
    with media_box(tmp_path_factory.mktemp("media") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def trt(box: MediaBox):
    return media_client(box.nvr)


def setup(stream: str, protocol: str) -> dict[str, object]:
    return {"Stream": stream, "Transport": {"Protocol": protocol}}


def test_profiles_describe_the_camera_stream(box: MediaBox, trt) -> None:
    profiles = {p.token: p for p in trt.GetProfiles()}
    main, jpeg = profiles[box.main], profiles[box.main + "_JPEG"]
    assert main.fixed is True and jpeg.fixed is True
    source = main.VideoSourceConfiguration
    assert (source.SourceToken, source.Bounds.width, source.Bounds.height) == (
        f"VS_{box.index}",
        640,
        360,
    )
    encoder = main.VideoEncoderConfiguration
    assert (encoder.Encoding, encoder.Resolution.Width, encoder.Resolution.Height) == (
        "H264",
        640,
        360,
    )
    assert encoder.RateControl.FrameRateLimit == 25 and encoder.H264.GovLength == 25
    assert encoder.RateControl.BitrateLimit > 0
    audio = main.AudioEncoderConfiguration
    assert audio.Encoding == "AAC" and audio.SampleRate in (44, 48)
    assert main.AudioSourceConfiguration.SourceToken == f"AS_{box.index}"
    assert jpeg.VideoEncoderConfiguration.Encoding == "JPEG"
    assert jpeg.VideoEncoderConfiguration.RateControl.FrameRateLimit == 5
    # The profile and the configuration lists agree (use counts included).
    assert trt.GetVideoSourceConfiguration(source.token).UseCount == 2
    assert trt.GetProfile(box.main).VideoEncoderConfiguration.token == encoder.token
    sources = trt.GetVideoSources()
    assert [(s.token, s.Resolution.Width, s.Resolution.Height) for s in sources] == [
        (f"VS_{box.index}", 640, 360)
    ]
    assert sources[0].Framerate == 25
    assert [s.token for s in trt.GetAudioSources()] == [f"AS_{box.index}"]


@pytest.mark.parametrize(
    ("protocol", "transport"), [("UDP", "udp"), ("RTSP", "tcp"), ("TCP", "tcp")]
)
def test_stream_uri_plays(box: MediaBox, trt, protocol: str, transport: str) -> None:
    uri = trt.GetStreamUri(setup("RTP-Unicast", protocol), box.main).Uri
    assert uri == f"rtsp://127.0.0.1:{box.nvr.rtsp_port}/live/{box.receiver}"
    assert play(with_credentials(uri), transport) == ("h264", (640, 360))


def test_jpeg_profile_streams_mjpeg(box: MediaBox, trt) -> None:
    uri = trt.GetStreamUri(RTSP, box.main + "_JPEG").Uri
    assert uri.endswith(f"/live/{box.receiver}/jpeg")
    assert play(with_credentials(uri), "tcp", frames=3) == ("mjpeg", (640, 360))


def test_http_uri_plays_and_multicast_uri(box: MediaBox, trt) -> None:
    http = trt.GetStreamUri(setup("RTP-Unicast", "HTTP"), box.main).Uri
    assert http == f"{box.nvr.base}/rtsp-tunnel/live/{box.receiver}"
    # FFmpeg names the tunnel by the rtsp scheme and rtsp_transport=http.
    tunnel = with_credentials(http.replace("http://", "rtsp://", 1))
    assert play(tunnel, "http") == ("h264", (640, 360))
    multicast = trt.GetStreamUri(setup("RTP-Multicast", "UDP"), box.main).Uri
    assert multicast == f"rtsp://127.0.0.1:{box.nvr.rtsp_port}/live/{box.receiver}?multicast"
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.GetStreamUri(setup("RTP-Multicast", "HTTP"), box.main)
    assert fault_codes(info) == ["InvalidArgVal", "InvalidStreamSetup"]


def test_snapshot_uri_answers_a_jpeg_of_the_stream(box: MediaBox, trt) -> None:
    uri = trt.GetSnapshotUri(box.main).Uri
    assert uri == f"{box.nvr.base}/snapshot/{box.receiver}"
    assert requests.get(uri, timeout=10).status_code == 401
    answer = requests.get(
        uri, auth=requests.auth.HTTPDigestAuth("admin", ADMIN_PASSWORD), timeout=20
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    assert jpeg_size(answer.content) == (640, 360)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Decode a JPEG file with FFmpeg: its picture size."""
    with av.open(io.BytesIO(data), format="jpeg_pipe") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def test_created_profile_edited_and_deleted(box: MediaBox, trt) -> None:
    i = box.index
    created = trt.CreateProfile("mine", "MINE")
    assert (created.token, created.Name, created.fixed) == ("MINE", "mine", False)
    assert created.VideoSourceConfiguration is None
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.CreateProfile("again", "MINE")
    assert fault_codes(info) == ["InvalidArgVal", "ProfileExists"]
    # An encoder needs its source first.
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.AddVideoEncoderConfiguration("MINE", f"VEC_{i}")
    assert fault_codes(info) == ["Action", "ConfigurationConflict"]
    before = trt.GetVideoEncoderConfiguration(f"VEC_{i}").UseCount
    trt.AddVideoSourceConfiguration("MINE", f"VSC_{i}")
    trt.AddVideoEncoderConfiguration("MINE", f"VEC_{i}")
    compatible = {c.token for c in trt.GetCompatibleVideoEncoderConfigurations("MINE")}
    assert compatible == {f"VEC_{i}", f"VEC_{i}_JPEG"}
    trt.AddAudioSourceConfiguration("MINE", f"ASC_{i}")
    trt.AddAudioEncoderConfiguration("MINE", f"AEC_{i}")
    trt.AddMetadataConfiguration("MINE", "METADATA")
    profile = trt.GetProfile("MINE")
    assert profile.VideoEncoderConfiguration.token == f"VEC_{i}"
    assert profile.MetadataConfiguration.token == "METADATA"
    assert trt.GetVideoEncoderConfiguration(f"VEC_{i}").UseCount == before + 1
    uri = trt.GetStreamUri(RTSP, "MINE").Uri
    assert uri.endswith(f"/live/{box.receiver}")
    # Replacing the encoder by the JPEG one switches the stream.
    trt.AddVideoEncoderConfiguration("MINE", f"VEC_{i}_JPEG")
    assert trt.GetStreamUri(RTSP, "MINE").Uri.endswith("/jpeg")
    trt.RemoveAudioEncoderConfiguration("MINE")
    trt.RemoveVideoEncoderConfiguration("MINE")
    profile = trt.GetProfile("MINE")
    assert profile.AudioEncoderConfiguration is None and profile.VideoEncoderConfiguration is None
    assert profile.AudioSourceConfiguration.token == f"ASC_{i}"
    trt.DeleteProfile("MINE")
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.GetProfile("MINE")
    assert fault_codes(info) == ["InvalidArgVal", "NoProfile"]
    assert trt.GetVideoEncoderConfiguration(f"VEC_{i}").UseCount == before


def test_fixed_profiles_cannot_be_deleted_but_can_be_edited(box: MediaBox, trt) -> None:
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.DeleteProfile(box.main)
    assert fault_codes(info) == ["Action", "DeletionOfFixedProfile"]
    trt.RemoveAudioEncoderConfiguration(box.main)
    assert trt.GetProfile(box.main).AudioEncoderConfiguration is None
    trt.AddAudioEncoderConfiguration(box.main, f"AEC_{box.index}")
    assert trt.GetProfile(box.main).AudioEncoderConfiguration.token == f"AEC_{box.index}"


def test_set_configuration_keeps_what_it_can_and_refuses_transcoding(box: MediaBox, trt) -> None:
    token = f"VEC_{box.index}"
    config = trt.GetVideoEncoderConfiguration(token)
    # Unchanged apart from the name and the multicast settings: accepted and kept.
    config.Name = "renamed"
    config.Multicast.Address.IPv4Address = "239.1.2.3"
    config.Multicast.Port = 40000
    config.Multicast.TTL = 5
    config.Multicast.AutoStart = False
    trt.SetVideoEncoderConfiguration(config, True)
    again = trt.GetVideoEncoderConfiguration(token)
    assert again.Name == "renamed"
    assert (again.Multicast.Address.IPv4Address, again.Multicast.Port, again.Multicast.TTL) == (
        "239.1.2.3",
        40000,
        5,
    )
    for change in ("resolution", "encoding", "gov", "framerate"):
        bad = trt.GetVideoEncoderConfiguration(token)
        if change == "resolution":
            bad.Resolution.Width = 320
        elif change == "encoding":
            bad.Encoding = "JPEG"
        elif change == "gov":
            bad.H264.GovLength = 50
        else:
            bad.RateControl.FrameRateLimit = 10
        with pytest.raises(zeep.exceptions.Fault) as info:
            trt.SetVideoEncoderConfiguration(bad, True)
        assert fault_codes(info) == ["InvalidArgVal", "ConfigModify"], change
    source = trt.GetVideoSourceConfiguration(f"VSC_{box.index}")
    source.Bounds.width = 100
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.SetVideoSourceConfiguration(source, True)
    assert fault_codes(info) == ["InvalidArgVal", "ConfigModify"]
    bad_group = trt.GetVideoEncoderConfiguration(token)
    bad_group.Multicast.Address.IPv4Address = "10.0.0.1"
    with pytest.raises(zeep.exceptions.Fault) as info:
        trt.SetVideoEncoderConfiguration(bad_group, True)
    assert fault_codes(info) == ["InvalidArgVal", "ConfigModify"]


def test_unknown_tokens_fault(box: MediaBox, trt) -> None:
    cases = [
        (lambda: trt.GetProfile("nope"), "NoProfile"),
        (lambda: trt.GetStreamUri(RTSP, "nope"), "NoProfile"),
        (lambda: trt.GetSnapshotUri("nope"), "NoProfile"),
        (lambda: trt.GetVideoEncoderConfiguration("nope"), "NoConfig"),
        (lambda: trt.GetAudioSourceConfiguration("nope"), "NoConfig"),
        (lambda: trt.AddVideoSourceConfiguration(box.main, "nope"), "NoConfig"),
        (lambda: trt.AddVideoSourceConfiguration("nope", f"VSC_{box.index}"), "NoProfile"),
        (lambda: trt.GetVideoEncoderConfigurationOptions("nope"), "NoConfig"),
        (lambda: trt.StartMulticastStreaming("nope"), "NoProfile"),
    ]
    for call, code in cases:
        with pytest.raises(zeep.exceptions.Fault) as info:
            call()
        assert fault_codes(info) == ["InvalidArgVal", code]


def test_options_hold_the_current_configuration(box: MediaBox, trt) -> None:
    config = trt.GetVideoEncoderConfiguration(f"VEC_{box.index}")
    options = trt.GetVideoEncoderConfigurationOptions(config.token)
    h264 = options.H264
    assert [(r.Width, r.Height) for r in h264.ResolutionsAvailable] == [(640, 360)]
    assert h264.GovLengthRange.Min <= config.H264.GovLength <= h264.GovLengthRange.Max
    assert h264.FrameRateRange.Min <= config.RateControl.FrameRateLimit <= h264.FrameRateRange.Max
    assert config.H264.H264Profile in h264.H264ProfilesSupported
    assert options.JPEG is None
    # zeep reads the extension's elements into its leading xs:any (_value_1).
    h264_2 = next(e for e in options.Extension._value_1 if etree.QName(e).localname == "H264")
    low, high = (int(h264_2.findtext(f"{{{TT}}}BitrateRange/{{{TT}}}{k}")) for k in ("Min", "Max"))
    assert low <= config.RateControl.BitrateLimit <= high
    sources = trt.GetVideoSourceConfigurationOptions(ProfileToken=box.main)
    assert sources.VideoSourceTokensAvailable == [f"VS_{box.index}"]
    audio = trt.GetAudioEncoderConfigurationOptions(ProfileToken=box.main).Options
    assert [o.Encoding for o in audio] == ["AAC"]
    assert trt.GetGuaranteedNumberOfVideoEncoderInstances(f"VSC_{box.index}").TotalNumber == 2


def test_device_service_advertises_media_and_media2(box: MediaBox) -> None:
    device = device_client(box.nvr.device_url, "admin", ADMIN_PASSWORD)[1]
    services = {s.Namespace: s.XAddr for s in device.GetServices(True)}
    assert services[TRT] == box.nvr.base + MEDIA.path
    assert services[MEDIA2.namespace] == box.nvr.base + MEDIA2.path
    caps = device.GetCapabilities(["Media"])
    assert caps.Media.XAddr == services[TRT]
    assert caps.Media.StreamingCapabilities.RTP_RTSP_TCP is True


# -- the answers against the schema -------------------------------------------------------------
@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """trt + tt + the SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("trt-xsd")
    _schema_closure(dest, MEDIA)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="schema/common/soap-envelope"/>'
        f'<xs:import namespace="{TRT}" '
        f'schemaLocation="{posixpath.splitext(MEDIA.wsdl)[0]}.xsd"/>'
        "</xs:schema>"
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_Recorder())
    return etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))


def test_answers_validate_against_the_schema(box: MediaBox, schema: etree.XMLSchema) -> None:
    i, p = box.index, box.main
    setup_xml = (
        "<trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
        "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
    )
    requests_ = [
        ("GetServiceCapabilities", ""),
        ("GetProfiles", ""),
        ("GetProfile", f"<trt:ProfileToken>{p}</trt:ProfileToken>"),
        ("GetVideoSources", ""),
        ("GetAudioSources", ""),
        ("GetVideoSourceConfigurations", ""),
        ("GetVideoEncoderConfigurations", ""),
        ("GetAudioSourceConfigurations", ""),
        ("GetAudioEncoderConfigurations", ""),
        ("GetMetadataConfigurations", ""),
        ("GetVideoSourceConfigurationOptions", ""),
        ("GetVideoEncoderConfigurationOptions", ""),
        (
            "GetVideoEncoderConfigurationOptions",
            f"<trt:ConfigurationToken>VEC_{i}_JPEG</trt:ConfigurationToken>",
        ),
        ("GetAudioSourceConfigurationOptions", ""),
        ("GetAudioEncoderConfigurationOptions", ""),
        ("GetMetadataConfigurationOptions", ""),
        ("GetCompatibleVideoEncoderConfigurations", f"<trt:ProfileToken>{p}</trt:ProfileToken>"),
        ("GetCompatibleMetadataConfigurations", f"<trt:ProfileToken>{p}</trt:ProfileToken>"),
        (
            "GetGuaranteedNumberOfVideoEncoderInstances",
            f"<trt:ConfigurationToken>VSC_{i}</trt:ConfigurationToken>",
        ),
        ("GetStreamUri", setup_xml + f"<trt:ProfileToken>{p}</trt:ProfileToken>"),
        ("GetSnapshotUri", f"<trt:ProfileToken>{p}</trt:ProfileToken>"),
        ("GetOSDs", ""),
        ("GetVideoSourceModes", f"<trt:VideoSourceToken>VS_{i}</trt:VideoSourceToken>"),
    ]
    url = box.nvr.base + MEDIA.path
    for operation, body in requests_:
        element = f'<trt:{operation} xmlns:trt="{TRT}" xmlns:tt="{TT}">{body}</trt:{operation}>'
        answer = post(url, envelope(element, username_token("admin", ADMIN_PASSWORD)))
        assert answer.status_code == 200, (operation, answer.text)
        child = validated_body_child(schema, answer)
        assert etree.QName(child).localname == operation + "Response"


# -- Home Assistant -----------------------------------------------------------------------------
@pytest.mark.peer
def test_home_assistant_sets_the_camera_up_and_takes_a_snapshot(box: MediaBox) -> None:
    done = subprocess.run(
        [
            str(peer_python()),
            str(Path(__file__).parent / "peers" / "ha_media.py"),
            "127.0.0.1",
            str(box.nvr.port),
            "admin",
            ADMIN_PASSWORD,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["snapshot_capability"] is True
    profiles = {p["token"]: p for p in result["profiles"]}
    main = profiles[box.main]
    assert (main["encoding"], main["width"], main["height"]) == ("H264", 640, 360)
    assert play(with_credentials(main["stream_uri"]), "tcp") == ("h264", (640, 360))
    assert main["snapshot_uri"] == f"{box.nvr.base}/snapshot/{box.receiver}"
    assert jpeg_size(base64.b64decode(main["snapshot"])) == (640, 360)
