"""WS-Discovery messages and matching rules, sans-IO."""

from __future__ import annotations

import pytest

from onvif_nvr.discovery import messages as m

ENDPOINT = m.Endpoint(
    address="urn:uuid:5a1b2c3d-0000-4000-8000-000000000001",
    types=(m.NVT, m.DEVICE),
    scopes=(
        "onvif://www.onvif.org/Profile/Streaming",
        "onvif://www.onvif.org/hardware/D1-566",
        "onvif://www.onvif.org/location/country/china",
        "onvif://www.onvif.org/name/ARV-453",
    ),
    xaddrs=("http://192.0.2.1:8080/onvif/device_service",),
    metadata_version=4,
)


def probe(
    types: str | None = None,
    scopes: str | None = None,
    match_by: str | None = None,
    extra_ns: str = "",
) -> bytes:
    types_el = f"<d:Types>{types}</d:Types>" if types is not None else ""
    mb = f' MatchBy="{match_by}"' if match_by else ""
    scopes_el = f"<d:Scopes{mb}>{scopes}</d:Scopes>" if scopes is not None else ""
    return (
        f'<s:Envelope xmlns:s="{m.SOAP12}" xmlns:a="{m.WSA}" xmlns:d="{m.WSD}" {extra_ns}>'
        f"<s:Header><a:MessageID>urn:uuid:1</a:MessageID><a:To>{m.TO_MULTICAST}</a:To>"
        f"<a:Action>{m.ACTION_PROBE}</a:Action></s:Header>"
        f"<s:Body><d:Probe>{types_el}{scopes_el}</d:Probe></s:Body></s:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("onvif://www.onvif.org", True),  # Core §7.3.2.2 examples
        ("onvif://www.onvif.org/location/country/china", True),
        ("onvif://www.onvif.org/location/country", True),
        ("onvif://www.onvif.org/hardware/D1", False),
        ("onvif://www.onvif.org/hardware/D1-566/", True),
        ("ONVIF://WWW.ONVIF.ORG/name/ARV-453", True),  # scheme and authority ignore case
        ("onvif://www.onvif.org/Name/ARV-453", False),  # segments do not
        ("onvif://www.onvif.org/location/./country", False),
        ("onvif://other.org/name/ARV-453", False),
    ],
)
def test_rfc3986_rule(scope, expected):
    assert m.matches(ENDPOINT, m.parse(probe(scopes=scope, match_by=m.MATCH_RFC3986))) is expected
    # An omitted MatchBy means rfc2396, read the same way.
    assert m.matches(ENDPOINT, m.parse(probe(scopes=scope))) is expected


def test_types_and_several_scopes_must_all_match():
    nvt = 'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl"'
    assert m.matches(
        ENDPOINT, m.parse(probe("dn:NetworkVideoTransmitter tds:Device", extra_ns=nvt))
    )
    assert m.matches(ENDPOINT, m.parse(probe("")))  # empty Types: anything
    assert m.matches(
        ENDPOINT, m.parse(probe(None, "onvif://www.onvif.org/name onvif://www.onvif.org/Profile"))
    )
    assert not m.matches(
        ENDPOINT, m.parse(probe(None, "onvif://www.onvif.org/name onvif://www.onvif.org/Profile/Q"))
    )
    other = 'xmlns:x="urn:other"'
    assert not m.matches(ENDPOINT, m.parse(probe("x:NetworkVideoTransmitter", extra_ns=other)))


def test_types_are_matched_by_namespace_not_prefix():
    # DISCOVERY-2-1-x: unusual prefixes and a default namespace on the Types element.
    for types, ns in [
        ("weird:NetworkVideoTransmitter", 'xmlns:weird="http://www.onvif.org/ver10/network/wsdl"'),
        ("NetworkVideoTransmitter", ""),
    ]:
        data = probe(types, extra_ns=ns)
        if not ns:
            data = data.replace(
                b"<d:Types>", b'<d:Types xmlns="http://www.onvif.org/ver10/network/wsdl">'
            )
        assert m.matches(ENDPOINT, m.parse(data))


def test_undeclared_prefix_is_rejected():
    with pytest.raises(m.DiscoveryError, match="undeclared prefix"):
        m.parse(probe("nope:NetworkVideoTransmitter"))


def test_other_rules():
    assert m.matches(
        ENDPOINT,
        m.parse(probe(scopes="onvif://www.onvif.org/name/ARV-453", match_by=m.MATCH_STRCMP0)),
    )
    assert not m.matches(
        ENDPOINT, m.parse(probe(scopes="onvif://www.onvif.org/name", match_by=m.MATCH_STRCMP0))
    )
    with pytest.raises(m.MatchingRuleNotSupported):
        m.matches(ENDPOINT, m.parse(probe(scopes="x", match_by=m.WSD + "/ldap")))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not well-formed XML"),
        (b"\x00\xff garbage", "not well-formed XML"),
        (b"<a/>", "not a SOAP 1.2 envelope"),
        (
            b'<!DOCTYPE x><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>',
            "a DTD is not allowed",
        ),
        (b"x" * (m.MAX_MESSAGE_BYTES + 1), "datagram larger"),
        (probe().replace(b"<a:MessageID>urn:uuid:1</a:MessageID>", b""), "no wsa:MessageID"),
    ],
)
def test_malformed(data, message):
    with pytest.raises(m.DiscoveryError, match=message):
        m.parse(data)


def test_round_trips():
    seq = m.AppSequence(7, 3)
    hello = m.parse(m.build_hello(ENDPOINT, seq))
    assert (
        hello.action == m.ACTION_HELLO
        and hello.endpoints == (ENDPOINT,)
        and hello.app_sequence == seq
    )
    bye = m.parse(m.build_bye(ENDPOINT, seq))
    assert bye.action == m.ACTION_BYE and bye.endpoints[0].address == ENDPOINT.address
    matches = m.parse(m.build_probe_matches(ENDPOINT, "urn:uuid:1", seq))
    assert matches.relates_to == "urn:uuid:1" and matches.endpoints == (ENDPOINT,)
    resolve = m.parse(m.build_resolve_matches(ENDPOINT, "urn:uuid:2", seq))
    assert resolve.action == m.ACTION_RESOLVE_MATCHES
    sent = m.parse(
        m.build_probe(scopes=["onvif://www.onvif.org/Profile/G"], match_by=m.MATCH_RFC3986)
    )
    assert isinstance(sent, m.Probe) and sent.types == (m.NVT,) and sent.match_by == m.MATCH_RFC3986


def test_matching_rule_fault_lists_supported_rules():
    data = m.build_matching_rule_fault("urn:uuid:9")
    assert b"d:MatchingRuleNotSupported" in data and m.MATCH_RFC3986.encode() in data
    assert m.ACTION_FAULT.encode() in data


def test_bare_probe_match_from_lenient_cameras_is_read():
    good = m.build_probe_matches(ENDPOINT, "urn:uuid:1", m.AppSequence(1, 1))
    bare = (
        good.replace(b"<d:ProbeMatches>", b"")
        .replace(b"</d:ProbeMatches>", b"")
        .replace(b"/ProbeMatches<", b"/ProbeMatch<")
    )
    answer = m.parse(bare)
    assert answer.action == m.ACTION_PROBE_MATCHES and answer.endpoints == (ENDPOINT,)
