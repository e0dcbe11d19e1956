"""SOAP envelope parsing and faults, sans-IO."""

from __future__ import annotations

import pytest
from lxml import etree

from onvif_nvr.soap.envelope import (
    SOAP11,
    SOAP12,
    EnvelopeError,
    fault_envelope,
    fault_status,
    parse_request,
    serialize,
)


def env(body: str, ns: str = SOAP12, header: str = "") -> bytes:
    return f'<e:Envelope xmlns:e="{ns}">{header}<e:Body>{body}</e:Body></e:Envelope>'.encode()


def test_payload_and_version():
    req = parse_request(env('<GetX xmlns="urn:x"/>'))
    assert req.soap_ns == SOAP12 and req.payload.tag == "{urn:x}GetX"
    assert parse_request(env('<a:GetX xmlns:a="urn:x"/>', SOAP11)).soap_ns == SOAP11


def test_prefixes_do_not_matter():
    # DEVICE-6-1-x style: default namespaces, odd prefixes, a prefix re-bound inside.
    doc = (
        b'<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body>'
        b'<q:GetX xmlns:q="urn:x"><q:Y xmlns:q="urn:other"/></q:GetX></Body></Envelope>'
    )
    req = parse_request(doc)
    assert req.payload.tag == "{urn:x}GetX"
    assert req.payload[0].tag == "{urn:other}Y"


@pytest.mark.parametrize(
    ("data", "message", "code", "subcodes"),
    [
        (b"", "empty request body", "Sender", ("WellFormed",)),
        (b"<a>", "request is not well-formed XML", "Sender", ("WellFormed",)),
        (
            b'<!DOCTYPE a [<!ENTITY b "c">]><a/>',
            "a DTD is not allowed in a SOAP message",
            "Sender",
            ("WellFormed",),
        ),
        (b'<Envelope xmlns="urn:x"/>', "expected a SOAP Envelope", "VersionMismatch", ()),
        (env(""), "SOAP Body must hold exactly one element, found 0", "Sender", ("Tag",)),
        (env("<a/><b/>"), "SOAP Body must hold exactly one element, found 2", "Sender", ("Tag",)),
        (
            f'<e:Envelope xmlns:e="{SOAP12}"/>'.encode(),
            "SOAP Envelope has no Body",
            "Sender",
            ("Tag",),
        ),
        (
            f'<e:Envelope xmlns:e="{SOAP12}"><e:Body><a/></e:Body><x/></e:Envelope>'.encode(),
            "unexpected element x in Envelope",
            "Sender",
            ("TagMismatch",),
        ),
    ],
)
def test_malformed_envelopes(data, message, code, subcodes):
    with pytest.raises(EnvelopeError) as info:
        parse_request(data)
    assert str(info.value).startswith(message)
    assert info.value.code == code and info.value.subcodes == subcodes


def test_soap12_fault_layout():
    root = etree.fromstring(
        serialize(fault_envelope(SOAP12, "Sender", ["InvalidArgVal", "NoScope"], "gone"))
    )
    ns = {"s": SOAP12}
    assert root.findtext("s:Body/s:Fault/s:Code/s:Value", namespaces=ns) == "s:Sender"
    subs = [v.text for v in root.iterfind(".//s:Subcode/s:Value", namespaces=ns)]
    assert subs == ["ter:InvalidArgVal", "ter:NoScope"]
    text = root.find(".//s:Reason/s:Text", namespaces=ns)
    assert text.text == "gone" and text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    # ter must be declared so the QName values resolve.
    assert root.nsmap["ter"] == "http://www.onvif.org/ver10/error"


def test_soap11_fault_layout():
    root = etree.fromstring(
        serialize(fault_envelope(SOAP11, "Receiver", ["ActionNotSupported"], "no"))
    )
    fault = root.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
    assert fault.findtext("faultcode") == "ter:ActionNotSupported"
    assert fault.findtext("faultstring") == "no"
    plain = etree.fromstring(serialize(fault_envelope(SOAP11, "Sender", [], "bad")))
    assert plain.findtext(f".//{{{SOAP11}}}Fault/faultcode") == "s:Client"


def test_fault_status():
    assert fault_status(SOAP12, "Sender") == 400
    assert fault_status(SOAP12, "Receiver") == 500
    assert fault_status(SOAP11, "Sender") == 500
