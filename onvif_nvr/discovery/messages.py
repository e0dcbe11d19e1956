"""WS-Discovery messages, sans-IO: ``parse(bytes) -> message`` and ``build_*(...) -> bytes``.

SOAP 1.2 envelopes with WS-Addressing 2004/08, as in WS-Discovery 2005/04. Parsing is
namespace-aware (any prefix, default namespaces, re-bound prefixes: DISCOVERY-2-1-x) and
hostile-input safe (no DTD, no entities, a size limit). Scope matching implements the
rules a probe may name; ONVIF requires rfc3986 (Core §7.3.2.2).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
import uuid
from collections.abc import Sequence

from lxml import etree

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
DN = "http://www.onvif.org/ver10/network/wsdl"
TDS = "http://www.onvif.org/ver10/device/wsdl"

ACTION_HELLO = WSD + "/Hello"
ACTION_BYE = WSD + "/Bye"
ACTION_PROBE = WSD + "/Probe"
ACTION_PROBE_MATCHES = WSD + "/ProbeMatches"
ACTION_RESOLVE = WSD + "/Resolve"
ACTION_RESOLVE_MATCHES = WSD + "/ResolveMatches"
ACTION_FAULT = WSD + "/fault"
TO_MULTICAST = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
TO_ANONYMOUS = WSA + "/role/anonymous"

MATCH_RFC3986 = WSD + "/rfc3986"
MATCH_RFC2396 = WSD + "/rfc2396"  # WS-Discovery's default; read with the RFC 3986 rule
MATCH_UUID = WSD + "/uuid"
MATCH_STRCMP0 = WSD + "/strcmp0"
SUPPORTED_MATCH_RULES = (MATCH_RFC3986, MATCH_RFC2396, MATCH_UUID, MATCH_STRCMP0)

#: SOAP-over-UDP datagrams are small; anything larger is not a discovery message.
MAX_MESSAGE_BYTES = 32 * 1024

NVT = (DN, "NetworkVideoTransmitter")
DEVICE = (TDS, "Device")

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, collect_ids=False
)


class DiscoveryError(ValueError):
    """Not a discovery message we can act on (the listener drops it)."""


class MatchingRuleNotSupported(DiscoveryError):
    def __init__(self, rule: str) -> None:
        super().__init__(f"scope matching rule {rule} is not supported")
        self.rule = rule


QName = tuple[str, str]  # (namespace, local name)


@dataclasses.dataclass(frozen=True)
class AppSequence:
    instance_id: int
    message_number: int
    sequence_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Probe:
    message_id: str
    #: None: the probe names no types (matches every target).
    types: tuple[QName, ...] | None
    scopes: tuple[str, ...]
    match_by: str | None
    reply_to: str | None = None


@dataclasses.dataclass(frozen=True)
class Resolve:
    message_id: str
    address: str
    reply_to: str | None = None


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """What a target says about itself in Hello, ProbeMatch and ResolveMatch."""

    address: str  # urn:uuid:...
    types: tuple[QName, ...]
    scopes: tuple[str, ...]
    xaddrs: tuple[str, ...]
    metadata_version: int


@dataclasses.dataclass(frozen=True)
class Announcement:
    """A Hello, Bye, ProbeMatches or ResolveMatches as a client receives it."""

    action: str
    message_id: str
    relates_to: str | None
    endpoints: tuple[Endpoint, ...]
    app_sequence: AppSequence | None


Message = Probe | Resolve | Announcement


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


# -- parsing ---------------------------------------------------------------------------------
def parse(data: bytes) -> Message:
    """Parse a datagram; raise :class:`DiscoveryError` for anything that is not usable."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise DiscoveryError("datagram larger than a discovery message may be")
    if b"<!DOCTYPE" in data:
        raise DiscoveryError("a DTD is not allowed")
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise DiscoveryError(f"not well-formed XML: {exc}") from None
    if root.tag != f"{{{SOAP12}}}Envelope":
        raise DiscoveryError("not a SOAP 1.2 envelope")
    header = root.find(f"{{{SOAP12}}}Header")
    body = root.find(f"{{{SOAP12}}}Body")
    if header is None or body is None:
        raise DiscoveryError("envelope lacks Header or Body")
    action = _text(header.find(f"{{{WSA}}}Action"))
    message_id = _text(header.find(f"{{{WSA}}}MessageID"))
    if not message_id:
        raise DiscoveryError("message has no wsa:MessageID")
    payload = next((c for c in body if isinstance(c.tag, str)), None)
    if payload is None:
        raise DiscoveryError("empty Body")
    reply_to = _text(header.find(f"{{{WSA}}}ReplyTo/{{{WSA}}}Address")) or None
    tag = payload.tag
    if tag == f"{{{WSD}}}Probe":
        if action and action != ACTION_PROBE:
            raise DiscoveryError("Probe with another wsa:Action")
        types_el = payload.find(f"{{{WSD}}}Types")
        scopes_el = payload.find(f"{{{WSD}}}Scopes")
        types = _qnames(types_el) if types_el is not None else None
        scopes = tuple((scopes_el.text or "").split()) if scopes_el is not None else ()
        match_by = scopes_el.get("MatchBy") if scopes_el is not None else None
        return Probe(message_id, types or None, scopes, match_by, reply_to)
    if tag == f"{{{WSD}}}Resolve":
        address = _text(payload.find(f"{{{WSA}}}EndpointReference/{{{WSA}}}Address"))
        if not address:
            raise DiscoveryError("Resolve without an EndpointReference")
        return Resolve(message_id, address, reply_to)
    kinds = {
        f"{{{WSD}}}Hello": (ACTION_HELLO, None),
        f"{{{WSD}}}Bye": (ACTION_BYE, None),
        f"{{{WSD}}}ProbeMatches": (ACTION_PROBE_MATCHES, f"{{{WSD}}}ProbeMatch"),
        f"{{{WSD}}}ResolveMatches": (ACTION_RESOLVE_MATCHES, f"{{{WSD}}}ResolveMatch"),
        # Some cameras answer with a bare ProbeMatch (no ProbeMatches wrapper, action
        # ".../ProbeMatch"); a client finding cameras takes it as the one match it is.
        f"{{{WSD}}}ProbeMatch": (ACTION_PROBE_MATCHES, None),
    }
    if tag not in kinds:
        raise DiscoveryError(f"unsupported discovery message {etree.QName(tag).localname}")
    kind, child = kinds[tag]
    items = [payload] if child is None else list(payload.iter(child))
    endpoints = tuple(_endpoint(item) for item in items)
    seq_el = header.find(f"{{{WSD}}}AppSequence")
    sequence = None
    if seq_el is not None:
        try:
            sequence = AppSequence(
                int(seq_el.get("InstanceId", "0")),
                int(seq_el.get("MessageNumber", "0")),
                seq_el.get("SequenceId"),
            )
        except ValueError:
            raise DiscoveryError("AppSequence numbers are not integers") from None
    relates_to = _text(header.find(f"{{{WSA}}}RelatesTo")) or None
    return Announcement(kind, message_id, relates_to, endpoints, sequence)


def _text(element: etree._Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _qnames(element: etree._Element) -> tuple[QName, ...]:
    """Resolve ``prefix:Local`` tokens with the namespaces in scope at ``element``."""
    out = []
    for token in (element.text or "").split():
        prefix, _, local = token.rpartition(":")
        namespace = element.nsmap.get(prefix or None)
        if namespace is None or not local:
            raise DiscoveryError(f"type {token!r} has an undeclared prefix")
        out.append((namespace, local))
    return tuple(out)


def _epr_address(element: etree._Element) -> str:
    """The EndpointReference address; some cameras put EndpointReference (or Address) in
    the discovery namespace instead of WS-Addressing's, so take the local names."""
    address = _text(element.find(f"{{{WSA}}}EndpointReference/{{{WSA}}}Address"))
    if address:
        return address
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == "EndpointReference":
            for grandchild in child:
                if (
                    isinstance(grandchild.tag, str)
                    and etree.QName(grandchild).localname == "Address"
                ):
                    return _text(grandchild)
    return ""


def _endpoint(element: etree._Element) -> Endpoint:
    address = _epr_address(element)
    types_el = element.find(f"{{{WSD}}}Types")
    try:
        types = _qnames(types_el) if types_el is not None else ()
    except DiscoveryError:
        types = ()
    scopes = tuple(_text(element.find(f"{{{WSD}}}Scopes")).split())
    xaddrs = tuple(_text(element.find(f"{{{WSD}}}XAddrs")).split())
    version_text = _text(element.find(f"{{{WSD}}}MetadataVersion")) or "0"
    try:
        version = int(version_text)
    except ValueError:
        version = 0
    return Endpoint(address, types, scopes, xaddrs, version)


# -- matching --------------------------------------------------------------------------------
def matches(target: Endpoint, probe: Probe) -> bool:
    """Whether ``target`` answers ``probe`` (WS-Discovery §5.1 rules)."""
    if probe.types is not None and not set(probe.types) <= set(target.types):
        return False
    if not probe.scopes:
        return True
    rule = probe.match_by or MATCH_RFC2396
    if rule not in SUPPORTED_MATCH_RULES:
        raise MatchingRuleNotSupported(rule)
    return all(any(_scope_matches(rule, p, t) for t in target.scopes) for p in probe.scopes)


def _scope_matches(rule: str, probe_scope: str, target_scope: str) -> bool:
    if rule == MATCH_STRCMP0:
        return probe_scope == target_scope
    if rule == MATCH_UUID:
        try:
            return uuid.UUID(probe_scope) == uuid.UUID(target_scope)
        except ValueError:
            return False
    return rfc3986_prefix_match(probe_scope, target_scope)


def rfc3986_prefix_match(probe_scope: str, target_scope: str) -> bool:
    """Scheme and authority equal (case-insensitive); the probe's path segments a prefix of
    the target's, compared segment by segment: ``.../hardware/D1`` does not match
    ``.../hardware/D1-566`` but ``.../location/country`` matches ``.../location/country/china``."""
    p = urllib.parse.urlsplit(probe_scope)
    t = urllib.parse.urlsplit(target_scope)
    if p.scheme.lower() != t.scheme.lower() or p.netloc.lower() != t.netloc.lower():
        return False
    probe_segments = [s for s in p.path.split("/") if s]
    target_segments = [s for s in t.path.split("/") if s]
    if any(s in (".", "..") for s in probe_segments):
        return False
    if len(probe_segments) > len(target_segments):
        return False
    return all(
        urllib.parse.unquote(a) == urllib.parse.unquote(b)
        for a, b in zip(probe_segments, target_segments, strict=False)
    )


# -- building --------------------------------------------------------------------------------
_NSMAP = {"s": SOAP12, "a": WSA, "d": WSD, "dn": DN, "tds": TDS}


def _envelope(
    action: str, message_id: str, to: str, relates_to: str | None, sequence: AppSequence | None
) -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap=_NSMAP)
    header = etree.SubElement(env, f"{{{SOAP12}}}Header")
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = message_id
    if relates_to:
        etree.SubElement(header, f"{{{WSA}}}RelatesTo").text = relates_to
    etree.SubElement(header, f"{{{WSA}}}To").text = to
    etree.SubElement(header, f"{{{WSA}}}Action").text = action
    if sequence is not None:
        seq = etree.SubElement(header, f"{{{WSD}}}AppSequence")
        seq.set("InstanceId", str(sequence.instance_id))
        if sequence.sequence_id:
            seq.set("SequenceId", sequence.sequence_id)
        seq.set("MessageNumber", str(sequence.message_number))
    body = etree.SubElement(env, f"{{{SOAP12}}}Body")
    return env, body


def _types_element(parent: etree._Element, types: Sequence[QName]) -> etree._Element:
    """``d:Types`` with ``prefix:Local`` tokens; namespaces outside the envelope's map get a
    prefix declared on the element itself."""
    known = {ns: p for p, ns in _NSMAP.items()}
    extra: dict[str, str] = {}
    for namespace, _local in types:
        if namespace not in known and namespace not in extra.values():
            extra[f"t{len(extra)}"] = namespace
    element = etree.SubElement(parent, f"{{{WSD}}}Types", nsmap=extra or None)
    prefixes = {**known, **{ns: p for p, ns in extra.items()}}
    element.text = " ".join(f"{prefixes[ns]}:{local}" for ns, local in types)
    return element


def _endpoint_children(
    parent: etree._Element, endpoint: Endpoint, *, with_xaddrs: bool = True
) -> None:
    epr = etree.SubElement(parent, f"{{{WSA}}}EndpointReference")
    etree.SubElement(epr, f"{{{WSA}}}Address").text = endpoint.address
    if endpoint.types:
        _types_element(parent, endpoint.types)
    if endpoint.scopes:
        etree.SubElement(parent, f"{{{WSD}}}Scopes").text = " ".join(endpoint.scopes)
    if with_xaddrs and endpoint.xaddrs:
        etree.SubElement(parent, f"{{{WSD}}}XAddrs").text = " ".join(endpoint.xaddrs)
    etree.SubElement(parent, f"{{{WSD}}}MetadataVersion").text = str(endpoint.metadata_version)


def _bytes(env: etree._Element) -> bytes:
    data: bytes = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
    return data


def build_hello(endpoint: Endpoint, sequence: AppSequence, message_id: str | None = None) -> bytes:
    env, body = _envelope(
        ACTION_HELLO, message_id or new_message_id(), TO_MULTICAST, None, sequence
    )
    _endpoint_children(etree.SubElement(body, f"{{{WSD}}}Hello"), endpoint)
    return _bytes(env)


def build_bye(endpoint: Endpoint, sequence: AppSequence, message_id: str | None = None) -> bytes:
    env, body = _envelope(ACTION_BYE, message_id or new_message_id(), TO_MULTICAST, None, sequence)
    bye = etree.SubElement(body, f"{{{WSD}}}Bye")
    epr = etree.SubElement(bye, f"{{{WSA}}}EndpointReference")
    etree.SubElement(epr, f"{{{WSA}}}Address").text = endpoint.address
    return _bytes(env)


def _build_matches(
    action: str,
    wrapper: str,
    item: str,
    endpoint: Endpoint,
    relates_to: str,
    sequence: AppSequence,
    message_id: str | None,
) -> bytes:
    env, body = _envelope(
        action, message_id or new_message_id(), TO_ANONYMOUS, relates_to, sequence
    )
    matches_el = etree.SubElement(body, f"{{{WSD}}}{wrapper}")
    _endpoint_children(etree.SubElement(matches_el, f"{{{WSD}}}{item}"), endpoint)
    return _bytes(env)


def build_probe_matches(
    endpoint: Endpoint, relates_to: str, sequence: AppSequence, message_id: str | None = None
) -> bytes:
    return _build_matches(
        ACTION_PROBE_MATCHES,
        "ProbeMatches",
        "ProbeMatch",
        endpoint,
        relates_to,
        sequence,
        message_id,
    )


def build_resolve_matches(
    endpoint: Endpoint, relates_to: str, sequence: AppSequence, message_id: str | None = None
) -> bytes:
    return _build_matches(
        ACTION_RESOLVE_MATCHES,
        "ResolveMatches",
        "ResolveMatch",
        endpoint,
        relates_to,
        sequence,
        message_id,
    )


def build_matching_rule_fault(relates_to: str, message_id: str | None = None) -> bytes:
    """The SOAP 1.2 fault for a unicast probe with an unsupported MatchBy (Core §7.3.6)."""
    env, body = _envelope(
        ACTION_FAULT, message_id or new_message_id(), TO_ANONYMOUS, relates_to, None
    )
    fault = etree.SubElement(body, f"{{{SOAP12}}}Fault")
    code = etree.SubElement(fault, f"{{{SOAP12}}}Code")
    etree.SubElement(code, f"{{{SOAP12}}}Value").text = "s:Sender"
    sub = etree.SubElement(code, f"{{{SOAP12}}}Subcode")
    etree.SubElement(sub, f"{{{SOAP12}}}Value").text = "d:MatchingRuleNotSupported"
    reason = etree.SubElement(fault, f"{{{SOAP12}}}Reason")
    text = etree.SubElement(reason, f"{{{SOAP12}}}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = "the matching rule specified is not supported"
    detail = etree.SubElement(fault, f"{{{SOAP12}}}Detail")
    etree.SubElement(detail, f"{{{WSD}}}SupportedMatchingRules").text = " ".join(
        SUPPORTED_MATCH_RULES
    )
    return _bytes(env)


def build_probe(
    types: Sequence[QName] = (NVT,),
    scopes: Sequence[str] = (),
    match_by: str | None = None,
    message_id: str | None = None,
) -> bytes:
    env, body = _envelope(ACTION_PROBE, message_id or new_message_id(), TO_MULTICAST, None, None)
    probe = etree.SubElement(body, f"{{{WSD}}}Probe")
    if types:
        _types_element(probe, types)
    if scopes:
        el = etree.SubElement(probe, f"{{{WSD}}}Scopes")
        el.text = " ".join(scopes)
        if match_by:
            el.set("MatchBy", match_by)
    return _bytes(env)
