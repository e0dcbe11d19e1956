"""The Replay service (trp) of a running box: zeep as the client, raw SOAP answers validated
against the official XSD (the trp schema embedded in replay.wsdl and what it imports)."""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Iterator

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.wsse.username import UsernameToken

from onvif_nvr.wsdl.catalog import REPLAY, wsdl_root
from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.soaputil import SOAP12, envelope, post, username_token
from tests.test_receiver_service import fault_codes
from tests.test_recording_control_service import recording_client, recording_config
from tests.test_schema_validation import XS, _Recorder, _schema_closure

TRP = REPLAY.namespace
TT = "http://www.onvif.org/ver10/schema"
SETUPS = [("RTP-Unicast", p) for p in ("UDP", "RTSP", "TCP", "HTTP")]


def replay_client(box: NvrProcess, user: str | None = "admin", password: str = ADMIN_PASSWORD):
    client = zeep.Client(
        str(wsdl_root() / REPLAY.wsdl),
        wsse=UsernameToken(user, password, use_digest=True) if user else None,
        transport=zeep.Transport(session=requests.Session(), timeout=20, operation_timeout=20),
        settings=zeep.Settings(strict=False),
    )
    return client.create_service(REPLAY.binding_qname, box.base + REPLAY.path)


def setup(stream: str, protocol: str) -> dict:
    return {"Stream": stream, "Transport": {"Protocol": protocol}}


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NvrProcess]:
    box = NvrProcess(tmp_path_factory.mktemp("replay-service") / "data", ADMIN_PASSWORD)
    box.start()
    try:
        yield box
    finally:
        box.stop()
    assert not box.blocking_calls(), box.blocking_calls()


@pytest.fixture(scope="module")
def recording(box: NvrProcess) -> str:
    return str(recording_client(box).CreateRecording(recording_config("yard")))


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """trp + tt + the SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("trp-xsd")
    _schema_closure(dest, REPLAY)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="schema/common/soap-envelope"/>'
        f'<xs:import namespace="{TRP}" schemaLocation="{posixpath.splitext(REPLAY.wsdl)[0]}.xsd"/>'
        "</xs:schema>"
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_Recorder())
    return etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))


def raw(
    box: NvrProcess, schema: etree.XMLSchema, operation: str, inner: str = ""
) -> etree._Element:
    """One raw call; the whole answer (a fault too) must validate."""
    body = f'<trp:{operation} xmlns:trp="{TRP}" xmlns:tt="{TT}">{inner}</trp:{operation}>'
    response = post(box.base + REPLAY.path, envelope(body, username_token("admin", ADMIN_PASSWORD)))
    root = etree.fromstring(response.content)
    schema.assertValid(root)
    return root[-1][0]


def test_service_capabilities(box):
    caps = replay_client(box).GetServiceCapabilities()
    assert caps.ReversePlayback is True and caps.RTP_RTSP_TCP is True
    assert [float(v) for v in caps.SessionTimeoutRange] == [5.0, 3600.0]
    assert caps.RTSPWebSocketUri is None


def test_capabilities_need_no_credentials(box):
    assert replay_client(box, user=None).GetServiceCapabilities().ReversePlayback is True
    with pytest.raises(zeep.exceptions.Fault) as info:
        replay_client(box, user=None).GetReplayConfiguration()
    assert fault_codes(info) == ["NotAuthorized"]


def test_advertised_by_the_device_service(box):
    device = device_client(box.device_url, "admin", ADMIN_PASSWORD)[1]
    [entry] = [s for s in device.GetServices(IncludeCapability=True) if s.Namespace == TRP]
    assert entry.XAddr == box.base + REPLAY.path
    assert (entry.Version.Major, entry.Version.Minor) == (21, 6)
    element = entry.Capabilities._value_1
    assert element.get("ReversePlayback") == "true" and element.get("RTP_RTSP_TCP") == "true"
    assert [float(v) for v in element.get("SessionTimeoutRange").split()] == [5.0, 3600.0]
    extension = device.GetCapabilities(["All"]).Extension  # zeep files it under the wildcard
    [replay] = [e for e in extension._value_1 if etree.QName(e).text == f"{{{TT}}}Replay"]
    assert replay.findtext(f"{{{TT}}}XAddr") == box.base + REPLAY.path


@pytest.mark.parametrize(("stream", "protocol"), SETUPS)
def test_replay_uri(box, recording, stream, protocol):
    uri = replay_client(box).GetReplayUri(setup(stream, protocol), recording)
    if protocol == "HTTP":
        assert uri == f"{box.base}/rtsp-tunnel/replay/{recording}"
    else:
        assert uri == f"rtsp://127.0.0.1:{box.rtsp_port}/replay/{recording}"


def test_replay_uri_faults(box, recording):
    trp = replay_client(box)
    cases = [
        (setup("RTP-Unicast", "RTSP"), "RECORDING_404", ["InvalidArgVal", "NoRecording"]),
        (setup("RTP-Multicast", "UDP"), recording, ["InvalidArgVal", "InvalidStreamSetup"]),
        (setup("RTP-Multicast", "RTSP"), recording, ["InvalidArgVal", "InvalidStreamSetup"]),
    ]
    for stream_setup, token, codes in cases:
        with pytest.raises(zeep.exceptions.Fault) as info:
            trp.GetReplayUri(stream_setup, token)
        assert str(info.value.code).endswith("Sender")
        assert fault_codes(info) == codes


def test_replay_configuration_is_kept(box):
    trp = replay_client(box)
    assert trp.GetReplayConfiguration().SessionTimeout == datetime.timedelta(seconds=60)
    trp.SetReplayConfiguration({"SessionTimeout": "PT2M30S"})
    assert trp.GetReplayConfiguration().SessionTimeout == datetime.timedelta(seconds=150)
    for bad in ("PT1S", "PT2H", "PT10.5S"):
        with pytest.raises(zeep.exceptions.Fault) as info:
            trp.SetReplayConfiguration({"SessionTimeout": bad})
        assert fault_codes(info) == ["InvalidArgVal", "ConfigModify"]
    assert trp.GetReplayConfiguration().SessionTimeout == datetime.timedelta(seconds=150)
    box.stop()
    box.start()
    assert replay_client(box).GetReplayConfiguration().SessionTimeout == datetime.timedelta(
        seconds=150
    )


def test_every_answer_validates(box, recording, schema):
    setup_xml = (
        "<trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
        "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup>"
    )
    answer = raw(box, schema, "GetServiceCapabilities")
    assert answer.tag == f"{{{TRP}}}GetServiceCapabilitiesResponse"
    answer = raw(
        box,
        schema,
        "GetReplayUri",
        setup_xml + f"<trp:RecordingToken>{recording}</trp:RecordingToken>",
    )
    assert answer.findtext(f"{{{TRP}}}Uri", "").endswith(f"/replay/{recording}")
    answer = raw(box, schema, "GetReplayConfiguration")
    assert answer.findtext(f".//{{{TT}}}SessionTimeout") is not None
    raw(box, schema, "SetReplayConfiguration",
        "<trp:Configuration><tt:SessionTimeout>PT90S</tt:SessionTimeout></trp:Configuration>")  # fmt: skip
    fault = raw(
        box, schema, "GetReplayUri", setup_xml + "<trp:RecordingToken>X</trp:RecordingToken>"
    )
    assert fault.tag == f"{{{SOAP12}}}Fault"
