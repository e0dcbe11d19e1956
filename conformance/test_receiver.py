"""Receiver Device Test Specification cases (RECEIVER-*) for the Receiver service.

Each test follows its case's procedure with zeep against a box of its own. MediaUris point
at 127.0.0.1:9 (nothing listens: the box may try to connect, it never reaches anything).
RECEIVER-2-1-16/17/18 also expect a stream or a ConnectionFailed event; the stream part is
in tests/test_receiver_service.py, the event waits for the Events service."""

from __future__ import annotations

import pytest
import zeep.exceptions
from lxml import etree

from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.soaputil import envelope, op, post, username_token
from tests.test_receiver_service import config, fault_codes, receiver_client

TRV = "http://www.onvif.org/ver10/receiver/wsdl"
TT = "http://www.onvif.org/ver10/schema"
URI = "rtsp://127.0.0.1:9/receiver-test"
OTHER_URI = "rtsp://127.0.0.1:9/" + "b" * 120  # > 128 octets


@pytest.fixture
def box(tmp_path):
    nvr = NvrProcess(
        tmp_path / "data", ADMIN_PASSWORD, extra_env={"ONVIF_NVR_RECORDING_MAX_RECEIVERS": "3"}
    )
    nvr.start()
    yield nvr
    nvr.stop()
    assert not nvr.blocking_calls(), nvr.blocking_calls()


@pytest.fixture
def trv(box):
    return receiver_client(box)


def assert_same(receiver, expected: dict[str, object]) -> None:
    c = receiver.Configuration
    assert (c.Mode, c.MediaUri, c.StreamSetup.Stream, c.StreamSetup.Transport.Protocol) == (
        expected["Mode"],
        expected["MediaUri"],
        expected["StreamSetup"]["Stream"],  # type: ignore[index]
        expected["StreamSetup"]["Transport"]["Protocol"],  # type: ignore[index]
    )


def test_RECEIVER_1_1_1_service_capabilities(trv):
    caps = trv.GetServiceCapabilities()
    assert caps.SupportedReceivers == 3 and caps.MaximumRTSPURILength >= 128
    assert caps.RTP_TCP is True and caps.RTP_RTSP_TCP is True


def test_RECEIVER_1_1_2_get_services_and_capabilities_consistency(box, trv):
    from tests.clients import device_client

    device = device_client(box.device_url, "admin", ADMIN_PASSWORD)[1]
    service = next(s for s in device.GetServices(True) if s.Namespace == TRV)
    assert service.XAddr == box.base + "/onvif/receiver_service"
    embedded = service.Capabilities._value_1
    direct = trv.GetServiceCapabilities()
    for key in ("RTP_Multicast", "RTP_TCP", "RTP_RTSP_TCP", "SupportedReceivers"):
        assert str(embedded.get(key)).lower() == str(getattr(direct, key)).lower(), key
    # zeep files tt:CapabilitiesExtension's children under its leading xs:any: read the XML.
    answer = post(
        box.device_url,
        envelope(
            op("GetCapabilities", "<tds:Category>All</tds:Category>"),
            username_token("admin", ADMIN_PASSWORD),
        ),
    )
    legacy = etree.fromstring(answer.content).find(f".//{{{TT}}}Extension/{{{TT}}}Receiver")
    assert legacy is not None
    assert legacy.findtext(f"{{{TT}}}XAddr") == service.XAddr
    assert legacy.findtext(f"{{{TT}}}SupportedReceivers") == "3"


def test_RECEIVER_2_1_1_and_2_get_receivers_and_receiver(trv):
    made = [trv.CreateReceiver(config(URI)), trv.CreateReceiver(config(OTHER_URI))]
    listed = trv.GetReceivers()
    assert [r.Token for r in listed] == [r.Token for r in made]
    for receiver in listed:
        one = trv.GetReceiver(receiver.Token)
        assert one.Token == receiver.Token
        assert one.Configuration.MediaUri == receiver.Configuration.MediaUri


@pytest.mark.parametrize(
    "operation", ["GetReceiver", "GetReceiverState", "DeleteReceiver", "SetReceiverMode"]
)
def test_RECEIVER_2_1_3_5_10_13_invalid_token(trv, operation):
    """2-1-3 GetReceiver, 2-1-5 GetReceiverState, 2-1-10 DeleteReceiver, 2-1-13
    SetReceiverMode with an unknown token: env:Sender/ter:InvalidArgVal/ter:UnknownToken."""
    args = ["INVALID_TOKEN"] + (["AlwaysConnect"] if operation == "SetReceiverMode" else [])
    with pytest.raises(zeep.exceptions.Fault) as info:
        getattr(trv, operation)(*args)
    assert fault_codes(info) == ["InvalidArgVal", "UnknownToken"]
    assert info.value.code is not None and "Sender" in info.value.code


def test_RECEIVER_2_1_4_get_receiver_state(trv):
    for mode in ("NeverConnect", "AutoConnect", "AlwaysConnect"):
        receiver = trv.CreateReceiver(config(URI, mode))
        state = trv.GetReceiverState(receiver.Token)
        assert state.State in ("NotConnected", "Connecting", "Connected", "Unknown")
        if mode != "AlwaysConnect":
            assert state.State == "NotConnected"  # nothing asks it to connect
        assert state.AutoCreated is False
        trv.DeleteReceiver(receiver.Token)


def test_RECEIVER_2_1_6_create_receiver(trv):
    wanted = config(OTHER_URI, "NeverConnect", "UDP")
    created = trv.CreateReceiver(wanted)
    assert_same(created, wanted)
    assert_same(trv.GetReceiver(created.Token), wanted)
    assert created.Token in [r.Token for r in trv.GetReceivers()]


def test_RECEIVER_2_1_7_12_21_persistence(box, trv):
    """2-1-7 CreateReceiver, 2-1-12 SetReceiverMode and 2-1-21 ConfigureReceiver survive
    a reboot (here: the process restarted)."""
    created = trv.CreateReceiver(config(URI, "NeverConnect"))
    moded = trv.CreateReceiver(config(URI, "NeverConnect"))
    trv.SetReceiverMode(moded.Token, "AutoConnect")
    configured = trv.CreateReceiver(config(URI, "NeverConnect"))
    new = config(OTHER_URI, "AutoConnect", "HTTP")
    trv.ConfigureReceiver(configured.Token, new)
    box.restart()
    trv = receiver_client(box)
    assert_same(trv.GetReceiver(created.Token), config(URI, "NeverConnect"))
    assert trv.GetReceiver(moded.Token).Configuration.Mode == "AutoConnect"
    assert_same(trv.GetReceiver(configured.Token), new)


def test_RECEIVER_2_1_8_receivers_max_number(trv):
    for _ in range(3):
        trv.CreateReceiver(config(URI, "NeverConnect"))
    with pytest.raises(zeep.exceptions.Fault) as info:
        trv.CreateReceiver(config(URI, "NeverConnect"))
    assert fault_codes(info) == ["Action", "MaxReceivers"]


def test_RECEIVER_2_1_9_delete_receiver(trv):
    receiver = trv.CreateReceiver(config(URI))
    trv.DeleteReceiver(receiver.Token)
    assert receiver.Token not in [r.Token for r in trv.GetReceivers()]
    with pytest.raises(zeep.exceptions.Fault) as info:
        trv.GetReceiver(receiver.Token)
    assert fault_codes(info) == ["InvalidArgVal", "UnknownToken"]


def test_RECEIVER_2_1_11_set_receiver_mode(trv):
    receiver = trv.CreateReceiver(config(URI, "NeverConnect"))
    for mode in ("AutoConnect", "AlwaysConnect", "NeverConnect"):
        trv.SetReceiverMode(receiver.Token, mode)
        assert trv.GetReceiver(receiver.Token).Configuration.Mode == mode


@pytest.mark.parametrize(("protocol", "case"), [("UDP", "2-1-16"), ("RTSP", "2-1-17")])
def test_RECEIVER_2_1_16_17_configure_receiver_transports(trv, protocol, case):
    receiver = trv.CreateReceiver(config(URI, "NeverConnect"))
    wanted = config(OTHER_URI, "NeverConnect", protocol)
    trv.ConfigureReceiver(receiver.Token, wanted)
    trv.SetReceiverMode(receiver.Token, "AlwaysConnect")
    got = trv.GetReceiver(receiver.Token)
    assert got.Configuration.StreamSetup.Transport.Protocol == protocol
    assert got.Configuration.Mode == "AlwaysConnect"


def test_RECEIVER_2_1_18_configure_receiver_invalid_media_uri(trv):
    """A well-formed URI nothing answers is accepted; the receiver never connects."""
    receiver = trv.CreateReceiver(config(URI, "NeverConnect"))
    bad = config("rtsp://127.0.0.1:9/no-such-stream", "AlwaysConnect")
    trv.ConfigureReceiver(receiver.Token, bad)
    assert trv.GetReceiver(receiver.Token).Configuration.MediaUri == bad["MediaUri"]
    assert trv.GetReceiverState(receiver.Token).State in ("NotConnected", "Connecting")


def test_RECEIVER_2_1_19_configure_receiver_invalid_token(trv):
    with pytest.raises(zeep.exceptions.Fault) as info:
        trv.ConfigureReceiver("INVALID_TOKEN", config(URI))
    assert fault_codes(info) == ["InvalidArgVal", "UnknownToken"]


def test_RECEIVER_2_1_20_configure_receiver(trv):
    receiver = trv.CreateReceiver(config(URI, "NeverConnect"))
    new = config(OTHER_URI, "AutoConnect", "HTTP")
    trv.ConfigureReceiver(receiver.Token, new)
    assert_same(trv.GetReceiver(receiver.Token), new)
