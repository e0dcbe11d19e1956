"""The Receiver service (trv) over SOAP against a running NVR: zeep as the client, a
GStreamer RTSP camera as the stream, answers validated against the official XSD, objects
that outlive a restart."""

from __future__ import annotations

import asyncio
import posixpath
import sqlite3
import time
from pathlib import Path

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.wsse.username import UsernameToken

from onvif_nvr.clock import SystemClock
from onvif_nvr.db.engine import Database
from onvif_nvr.recording.control import (
    JobConfiguration,
    JobSource,
    RecordingConfiguration,
    RecordingControl,
    RecordingSource,
)
from onvif_nvr.system.secrets import Sealer, load_or_create_key
from onvif_nvr.wsdl.catalog import RECEIVER, wsdl_root
from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.soaputil import SOAP12, envelope, post, username_token
from tests.test_schema_validation import XS, _Recorder, _schema_closure

TRV = RECEIVER.namespace
TT = "http://www.onvif.org/ver10/schema"
#: 150 octets, over the 128 every receiver must take (Receiver §5.1); port 9 refuses.
LONG_URI = "rtsp://127.0.0.1:9/" + "a" * 110 + "/stream?profile=main&x=1"


def receiver_client(nvr: NvrProcess, user: str = "admin", password: str = ADMIN_PASSWORD):
    """A zeep proxy for the box's receiver service."""
    session = requests.Session()
    client = zeep.Client(
        str(wsdl_root() / RECEIVER.wsdl),
        wsse=UsernameToken(user, password, use_digest=True),
        transport=zeep.Transport(session=session, timeout=20, operation_timeout=20),
        settings=zeep.Settings(strict=False),
    )
    return client.create_service(RECEIVER.binding_qname, nvr.base + RECEIVER.path)


def config(uri: str, mode: str = "AutoConnect", protocol: str = "RTSP") -> dict[str, object]:
    return {
        "Mode": mode,
        "MediaUri": uri,
        "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": protocol}},
    }


def fault_codes(info: pytest.ExceptionInfo[zeep.exceptions.Fault]) -> list[str]:
    return [q.localname for q in info.value.subcodes or []]


def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


async def add_job(data_dir: Path, receiver_token: str) -> tuple[str, str]:
    """A recording and an active job from the receiver (the Recording service's part,
    done through the domain API while the box is stopped)."""
    db = Database(f"sqlite:///{data_dir / 'nvr.sqlite3'}")
    try:
        control = RecordingControl(
            db, Sealer(load_or_create_key(data_dir / "secret.key")), SystemClock()
        )
        recording = await control.create_recording(
            RecordingConfiguration(RecordingSource(name="gst"))
        )
        job = await control.create_job(
            JobConfiguration(recording.token, "Active", 0, (JobSource(receiver_token),))
        )
        return recording.token, job.token
    finally:
        db.close()


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """trv + tt + the SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("trv-xsd")
    _schema_closure(dest, RECEIVER)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="schema/common/soap-envelope"/>'
        f'<xs:import namespace="{TRV}" '
        f'schemaLocation="{posixpath.splitext(RECEIVER.wsdl)[0]}.xsd"/>'
        "</xs:schema>"
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_Recorder())
    return etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))


def test_receivers_over_soap_record_and_survive_a_restart(tmp_path):
    gstcam.require()
    data = tmp_path / "data"
    with gstcam.camera("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25") as url:
        nvr = NvrProcess(data, ADMIN_PASSWORD, extra_env={"ONVIF_NVR_STORAGE_SEGMENT_S": "2"})
        nvr.start()
        try:
            trv = receiver_client(nvr)
            caps = trv.GetServiceCapabilities()
            assert (caps.RTP_Multicast, caps.RTP_TCP, caps.RTP_RTSP_TCP) == (False, True, True)
            assert caps.SupportedReceivers == 64 and caps.MaximumRTSPURILength >= 128
            assert trv.GetReceivers() == []

            long = trv.CreateReceiver(config(LONG_URI))
            assert long.Configuration.MediaUri == LONG_URI and len(LONG_URI) > 128
            assert trv.GetReceiver(long.Token).Configuration.MediaUri == LONG_URI
            # AutoConnect and no job wants it: not connected.
            assert trv.GetReceiverState(long.Token).State == "NotConnected"
            cam = trv.CreateReceiver(config(url))
            assert [r.Token for r in trv.GetReceivers()] == [long.Token, cam.Token]

            for call in (
                lambda: trv.GetReceiver("RECEIVER_404"),
                lambda: trv.GetReceiverState("RECEIVER_404"),
                lambda: trv.DeleteReceiver("RECEIVER_404"),
                lambda: trv.SetReceiverMode("RECEIVER_404", "NeverConnect"),
                lambda: trv.ConfigureReceiver("RECEIVER_404", config(url)),
            ):
                with pytest.raises(zeep.exceptions.Fault) as info:
                    call()
                assert fault_codes(info) == ["InvalidArgVal", "UnknownToken"]
            with pytest.raises(zeep.exceptions.Fault) as info:
                trv.CreateReceiver(config("http://127.0.0.1/not-rtsp"))
            assert fault_codes(info) == ["InvalidArgVal", "BadConfiguration"]
        finally:
            nvr.stop()
        recording, _ = asyncio.run(add_job(data, cam.Token))

        nvr.start()
        try:
            trv = receiver_client(nvr)
            assert [r.Token for r in trv.GetReceivers()] == [long.Token, cam.Token]
            assert trv.GetReceiver(long.Token).Configuration.MediaUri == LONG_URI
            # AutoConnect, and now an active job needs it.
            wait_for(lambda: trv.GetReceiverState(cam.Token).State == "Connected")
            with pytest.raises(zeep.exceptions.Fault) as info:
                trv.DeleteReceiver(cam.Token)
            assert fault_codes(info) == ["Action", "CannotDeleteReceiver"]
            time.sleep(3)
            trv.SetReceiverMode(cam.Token, "NeverConnect")
            assert trv.GetReceiverState(cam.Token).State == "NotConnected"
            assert trv.GetReceiver(cam.Token).Configuration.Mode == "NeverConnect"
            trv.DeleteReceiver(long.Token)
            with pytest.raises(zeep.exceptions.Fault):
                trv.GetReceiver(long.Token)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()
    with sqlite3.connect(data / "nvr.sqlite3") as db:
        recorded = db.execute(
            "SELECT s.camera_id, r.token FROM segments s JOIN recordings r ON r.id = s.recording_id"
        ).fetchall()
    assert recorded and {token for _, token in recorded} == {recording}
    assert {f"RECEIVER_{camera}" for camera, _ in recorded} == {cam.Token}


def test_every_answer_validates_against_the_schema(fresh_nvr, schema):
    url = fresh_nvr.base + RECEIVER.path

    def call(operation: str, inner: str = "") -> etree._Element:
        body = f'<trv:{operation} xmlns:trv="{TRV}" xmlns:tt="{TT}">{inner}</trv:{operation}>'
        response = post(url, envelope(body, username_token("admin", ADMIN_PASSWORD)))
        root = etree.fromstring(response.content)
        schema.assertValid(root)
        return root[-1][0]

    configuration = (
        "<trv:Configuration><tt:Mode>NeverConnect</tt:Mode>"
        f"<tt:MediaUri>{LONG_URI.replace('&', '&amp;')}</tt:MediaUri>"
        "<tt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
        "<tt:Transport><tt:Protocol>UDP</tt:Protocol></tt:Transport></tt:StreamSetup>"
        "</trv:Configuration>"
    )
    assert call("GetServiceCapabilities").tag == f"{{{TRV}}}GetServiceCapabilitiesResponse"
    created = call("CreateReceiver", configuration)
    token = created.findtext(f"{{{TRV}}}Receiver/{{{TT}}}Token")
    assert token
    ref = f"<trv:ReceiverToken>{token}</trv:ReceiverToken>"
    call("GetReceivers")
    call("GetReceiver", ref)
    state = call("GetReceiverState", ref)
    assert state.findtext(f".//{{{TT}}}State") == "NotConnected"
    call("ConfigureReceiver", ref + configuration)
    call("SetReceiverMode", ref + "<trv:Mode>AutoConnect</trv:Mode>")
    fault = call("GetReceiver", "<trv:ReceiverToken>nope</trv:ReceiverToken>")
    assert fault.tag == f"{{{SOAP12}}}Fault"
    call("DeleteReceiver", ref)
