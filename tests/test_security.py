"""Bad input and wrong credentials get the right fault and status; the server keeps serving."""

from __future__ import annotations

import base64
import os

import pytest
import requests
import zeep.exceptions
from lxml import etree
from requests.auth import HTTPDigestAuth

from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.soaputil import (
    SOAP11,
    SOAP12,
    TEXT_TYPE,
    envelope,
    op,
    post,
    username_token,
    utc_now_text,
)

TER = "{http://www.onvif.org/ver10/error}"


def fault_codes(response: requests.Response) -> tuple[str, list[str]]:
    root = etree.fromstring(response.content)
    ns = {"s": SOAP12}
    code = root.findtext(".//s:Fault/s:Code/s:Value", namespaces=ns)
    subs = [v.text for v in root.iterfind(".//s:Fault/s:Code//s:Subcode/s:Value", namespaces=ns)]
    return code, subs


def assert_still_serving(url: str) -> None:
    r = post(url, envelope(op("GetSystemDateAndTime")))
    assert r.status_code == 200
    assert b"GetSystemDateAndTimeResponse" in r.content


def test_no_credentials_gets_401_with_digest_challenges(nvr):
    r = post(nvr.device_url, envelope(op("GetDeviceInformation")))
    assert r.status_code == 401
    challenges = r.raw.headers.getlist("WWW-Authenticate")
    assert [c.split(",")[0] for c in challenges] == ['Digest realm="onvif-nvr"'] * 2
    assert any("algorithm=MD5" in c for c in challenges)
    assert any("algorithm=SHA-256" in c for c in challenges)
    assert all('qop="auth"' in c and "nonce=" in c for c in challenges)
    assert fault_codes(r) == ("s:Sender", ["ter:NotAuthorized"])


def test_http_digest_login_and_wrong_password(nvr):
    ok = post(
        nvr.device_url,
        envelope(op("GetDeviceInformation")),
        auth=HTTPDigestAuth("admin", ADMIN_PASSWORD),
    )
    assert ok.status_code == 200 and b"GetDeviceInformationResponse" in ok.content
    bad = post(
        nvr.device_url, envelope(op("GetDeviceInformation")), auth=HTTPDigestAuth("admin", "nope")
    )
    assert bad.status_code == 401
    assert fault_codes(bad) == ("s:Sender", ["ter:NotAuthorized"])


def test_username_token_login(nvr):
    r = post(
        nvr.device_url,
        envelope(op("GetDeviceInformation"), username_token("admin", ADMIN_PASSWORD)),
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("header_kwargs", "reason"),
    [
        ({"drop": ("Nonce",)}, "no Nonce"),
        ({"drop": ("Created",)}, "no Created"),
        ({"drop": ("Type",)}, "no Type"),
        ({"password_type": TEXT_TYPE}, "PasswordText"),
        ({"created": utc_now_text(-3600)}, "is outside the accepted time window"),
        ({"created": utc_now_text(+3600)}, "is outside the accepted time window"),
        ({"created": "yesterday"}, "not an xs:dateTime"),
    ],
)
def test_malformed_or_stale_tokens_are_not_authorized(nvr, header_kwargs, reason):
    r = post(
        nvr.device_url,
        envelope(op("GetUsers"), username_token("admin", ADMIN_PASSWORD, **header_kwargs)),
    )
    assert r.status_code == 400
    assert fault_codes(r) == ("s:Sender", ["ter:NotAuthorized"])
    assert reason in r.text
    assert_still_serving(nvr.device_url)


def test_replayed_nonce_is_refused(nvr):
    nonce, created = os.urandom(16), utc_now_text()
    header = username_token("admin", ADMIN_PASSWORD, nonce=nonce, created=created)
    first = post(nvr.device_url, envelope(op("GetDeviceInformation"), header))
    again = post(nvr.device_url, envelope(op("GetDeviceInformation"), header))
    assert first.status_code == 200
    assert again.status_code == 400
    assert fault_codes(again) == ("s:Sender", ["ter:NotAuthorized"])
    assert "already used" in again.text


def test_wrong_password_with_zeep_is_a_not_authorized_fault(nvr):
    _, service = device_client(nvr.device_url, "admin", "wrong")
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.GetDeviceInformation()
    assert info.value.subcodes[0].localname == "NotAuthorized"


def test_operator_cannot_call_administrator_operations(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.CreateUsers(
        [
            {"Username": "op1", "Password": "op-pass-1", "UserLevel": "Operator"},
            {"Username": "viewer", "Password": "view-pass", "UserLevel": "User"},
        ]
    )
    _, operator = device_client(fresh_nvr.device_url, "op1", "op-pass-1", digest=True)
    assert operator.GetDeviceInformation().Model  # READ_SYSTEM: allowed
    for call in (
        lambda: operator.GetUsers(),
        lambda: operator.SetHostname("x"),
        lambda: operator.SystemReboot(),
    ):
        with pytest.raises(zeep.exceptions.Fault) as info:
            call()
        assert info.value.code.endswith("Sender")
        assert info.value.subcodes[0].localname == "NotAuthorized"
    _, viewer = device_client(fresh_nvr.device_url, "viewer", "view-pass")
    assert viewer.GetScopes()
    with pytest.raises(zeep.exceptions.Fault):
        viewer.SetDiscoveryMode("NonDiscoverable")


def test_malformed_xml_is_a_wellformed_fault(nvr):
    r = post(
        nvr.device_url,
        b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Body><oops></s:Body>",
    )
    assert r.status_code == 400
    assert fault_codes(r) == ("s:Sender", ["ter:WellFormed"])
    assert_still_serving(nvr.device_url)


def test_entity_bomb_is_refused_without_expansion(nvr):
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10)
        )
        + b']><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&lol9;</x></s:Body></s:Envelope>'
    )
    r = post(nvr.device_url, bomb)
    assert r.status_code == 400
    assert fault_codes(r) == ("s:Sender", ["ter:WellFormed"])
    assert "DTD" in r.text
    assert_still_serving(nvr.device_url)


def test_external_entity_is_not_fetched(nvr, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        '<tds:SetHostname xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><tds:Name>&e;</tds:Name></tds:SetHostname>'
        "</s:Body></s:Envelope>"
    ).encode()
    r = post(nvr.device_url, xxe)
    assert r.status_code == 400
    assert b"TOPSECRET" not in r.content


def test_oversized_body_is_refused(nvr):
    big = envelope(op("GetSystemDateAndTime") + "<!--" + "x" * (2 * 1024 * 1024) + "-->")
    r = post(nvr.device_url, big)
    assert r.status_code == 413
    assert_still_serving(nvr.device_url)


def test_oversized_chunked_body_is_refused(nvr):
    def chunks():
        yield envelope(op("GetSystemDateAndTime"))[:-20]
        for _ in range(40):
            yield b"<!--" + b"y" * 65536 + b"-->"

    r = requests.post(
        nvr.device_url, data=chunks(), headers={"Content-Type": "application/soap+xml"}, timeout=20
    )
    assert r.status_code == 413
    assert_still_serving(nvr.device_url)


def test_unknown_operation_is_action_not_supported(nvr):
    r = post(nvr.device_url, envelope('<x:Frobnicate xmlns:x="urn:example"/>'))
    assert r.status_code == 500
    assert fault_codes(r) == ("s:Receiver", ["ter:ActionNotSupported"])


def test_unimplemented_operation_of_the_binding_is_action_not_supported(admin):
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.GetDot11Capabilities()
    assert info.value.code.endswith("Receiver")
    assert info.value.subcodes[0].localname == "ActionNotSupported"


def test_soap11_request_gets_a_soap11_answer(nvr):
    r = post(nvr.device_url, envelope(op("GetSystemDateAndTime"), soap_ns=SOAP11), soap_ns=SOAP11)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/xml")
    assert etree.fromstring(r.content).tag == f"{{{SOAP11}}}Envelope"
    bad = post(
        nvr.device_url, envelope('<x:Nope xmlns:x="urn:x"/>', soap_ns=SOAP11), soap_ns=SOAP11
    )
    assert bad.status_code == 500
    root = etree.fromstring(bad.content)
    assert root.findtext(f".//{{{SOAP11}}}Fault/faultcode") == "ter:ActionNotSupported"


def test_not_an_envelope_is_version_mismatch(nvr):
    r = post(nvr.device_url, b'<Envelope xmlns="urn:not-soap"><Body/></Envelope>')
    assert fault_codes(r)[0] == "s:VersionMismatch"


def test_must_understand_header_not_understood(nvr):
    header = '<x:Billing xmlns:x="urn:x" s:mustUnderstand="true">1</x:Billing>'
    r = post(nvr.device_url, envelope(op("GetSystemDateAndTime"), header))
    assert fault_codes(r)[0] == "s:MustUnderstand"


def test_wrong_argument_type_is_invalid_args(nvr):
    body = op(
        "SetNetworkProtocols",
        '<tds:NetworkProtocols><tt:Name xmlns:tt="http://www.onvif.org/ver10/schema">HTTP</tt:Name>'
        '<tt:Enabled xmlns:tt="http://www.onvif.org/ver10/schema">true</tt:Enabled>'
        '<tt:Port xmlns:tt="http://www.onvif.org/ver10/schema">eighty</tt:Port></tds:NetworkProtocols>',
    )
    r = post(nvr.device_url, envelope(body, username_token("admin", ADMIN_PASSWORD)))
    assert r.status_code == 400
    code, subs = fault_codes(r)
    assert code == "s:Sender" and subs[0] in ("ter:InvalidArgVal", "ter:InvalidArgs")


def test_failed_logins_are_throttled_per_address(fresh_nvr):
    url = fresh_nvr.device_url
    for _ in range(5):
        r = post(url, envelope(op("GetUsers")), auth=HTTPDigestAuth("admin", "guess"))
        assert r.status_code == 401
    locked = post(url, envelope(op("GetUsers")), auth=HTTPDigestAuth("admin", ADMIN_PASSWORD))
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert fault_codes(locked) == ("s:Sender", ["ter:NotAuthorized"])
    # PRE_AUTH operations still answer, so clients can read the time and capabilities.
    assert_still_serving(url)


def test_digest_with_basic_credentials_only_is_challenged(nvr):
    r = post(
        nvr.device_url,
        envelope(op("GetDeviceInformation")),
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        },
    )
    assert r.status_code == 401


def test_passwords_are_not_stored_or_logged_in_clear(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.CreateUsers([{"Username": "cam", "Password": "Very-Distinct-Pw-42", "UserLevel": "User"}])
    logs = admin.GetSystemLog("System").String or ""
    access = admin.GetSystemLog("Access").String or ""
    raw = b"".join(p.read_bytes() for p in fresh_nvr.data_dir.iterdir() if p.is_file())
    for blob in (logs.encode(), access.encode(), raw, "".join(fresh_nvr.output).encode()):
        assert b"Very-Distinct-Pw-42" not in blob
        assert ADMIN_PASSWORD.encode() not in blob


def test_missing_required_argument_is_invalid_args(nvr):
    r = post(
        nvr.device_url,
        envelope(op("GetStorageConfiguration"), username_token("admin", ADMIN_PASSWORD)),
    )
    assert r.status_code == 400
    assert fault_codes(r) == ("s:Sender", ["ter:InvalidArgs"])
    assert "missing Token" in r.text


def test_fault_headers_name_what_was_wrong(nvr):
    mismatch = post(nvr.device_url, b'<Envelope xmlns="urn:not-soap"><Body/></Envelope>')
    root = etree.fromstring(mismatch.content)
    supported = root.find(f"{{{SOAP12}}}Header/{{{SOAP12}}}Upgrade/{{{SOAP12}}}SupportedEnvelope")
    assert supported is not None and supported.get("qname") == "s:Envelope"
    header = '<x:Billing xmlns:x="urn:x" s:mustUnderstand="true">1</x:Billing>'
    must = post(nvr.device_url, envelope(op("GetSystemDateAndTime"), header))
    marker = etree.fromstring(must.content).find(f"{{{SOAP12}}}Header/{{{SOAP12}}}NotUnderstood")
    qname = marker.get("qname")
    prefix, local = qname.split(":")
    assert (marker.nsmap[prefix], local) == ("urn:x", "Billing")
