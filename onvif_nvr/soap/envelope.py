"""SOAP envelopes, sans-IO: ``parse_request(bytes) -> Request`` and response/fault writers.

Requests are hostile input: no DTD, no entities, no network access, a size limit (enforced
by the caller before parsing) and libxml2's default depth limit. Responses are written in
the envelope version of the request (SOAP 1.2 ``application/soap+xml``, SOAP 1.1
``text/xml``), with the conventional ONVIF prefixes that naive clients look for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lxml import etree

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
TER = "http://www.onvif.org/ver10/error"
WSA = "http://www.w3.org/2005/08/addressing"
#: WS-Addressing action of every fault of the event service (Core §9.9).
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
XML_NS = "http://www.w3.org/XML/1998/namespace"

#: Prefixes put on every response envelope, so the body reads ``tds:..``, ``tt:..``.
RESPONSE_NSMAP = {
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "trc": "http://www.onvif.org/ver10/recording/wsdl",
    "tse": "http://www.onvif.org/ver10/search/wsdl",
    "trp": "http://www.onvif.org/ver10/replay/wsdl",
    "trv": "http://www.onvif.org/ver10/receiver/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tns1": "http://www.onvif.org/ver10/topics",
    "ter": TER,
}

CONTENT_TYPES = {SOAP12: "application/soap+xml; charset=utf-8", SOAP11: "text/xml; charset=utf-8"}

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    collect_ids=False,
)


class EnvelopeError(ValueError):
    """The bytes are not a usable SOAP envelope; carries the fault to answer with."""

    def __init__(
        self, message: str, code: str, subcodes: tuple[str, ...] = (), soap_ns: str = SOAP12
    ):
        super().__init__(message)
        self.code = code
        self.subcodes = subcodes
        self.soap_ns = soap_ns


@dataclasses.dataclass(frozen=True)
class Request:
    soap_ns: str
    header: etree._Element | None
    body: etree._Element
    #: The single child of Body: the operation's request element.
    payload: etree._Element


def parse_request(data: bytes) -> Request:
    """Parse a SOAP request; raise :class:`EnvelopeError` with the fault to send back."""
    if not data.strip():
        raise EnvelopeError("empty request body", "Sender", ("WellFormed",))
    if b"<!DOCTYPE" in data:
        # Refuse before libxml2 reads any declaration (entity bombs, external entities).
        raise EnvelopeError("a DTD is not allowed in a SOAP message", "Sender", ("WellFormed",))
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise EnvelopeError(
            f"request is not well-formed XML: {exc.msg}", "Sender", ("WellFormed",)
        ) from None
    except ValueError as exc:  # e.g. an encoding declaration in a str, or NUL bytes
        raise EnvelopeError(
            f"request is not well-formed XML: {exc}", "Sender", ("WellFormed",)
        ) from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise EnvelopeError("a DTD is not allowed in a SOAP message", "Sender", ("WellFormed",))
    if not isinstance(root.tag, str):
        raise EnvelopeError("document element is not an element", "Sender", ("WellFormed",))
    qname = etree.QName(root)
    if qname.localname != "Envelope" or qname.namespace not in (SOAP12, SOAP11):
        # SOAP 1.2 part 1 §5.4.8: anything but a 1.2 (or, leniently, 1.1) Envelope.
        found = f"{{{qname.namespace}}}{qname.localname}" if qname.namespace else qname.localname
        raise EnvelopeError(f"expected a SOAP Envelope, found {found}", "VersionMismatch")
    soap_ns = qname.namespace
    header = None
    body = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        cq = etree.QName(child)
        if cq.namespace == soap_ns and cq.localname == "Header" and header is None and body is None:
            header = child
        elif cq.namespace == soap_ns and cq.localname == "Body" and body is None:
            body = child
        else:
            raise EnvelopeError(
                f"unexpected element {cq.localname} in Envelope",
                "Sender",
                ("TagMismatch",),
                soap_ns,
            )
    if body is None:
        raise EnvelopeError("SOAP Envelope has no Body", "Sender", ("Tag",), soap_ns)
    elements = [c for c in body if isinstance(c.tag, str)]
    if len(elements) != 1:
        raise EnvelopeError(
            f"SOAP Body must hold exactly one element, found {len(elements)}",
            "Sender",
            ("Tag",),
            soap_ns,
        )
    return Request(soap_ns=soap_ns, header=header, body=body, payload=elements[0])


def new_envelope(
    soap_ns: str, extra_nsmap: dict[str, str] | None = None
) -> tuple[etree._Element, etree._Element]:
    """An empty response envelope; returns ``(envelope, body)``. The envelope declares
    ``s``, ``tt`` and ``ter`` plus ``extra_nsmap`` (the service's own prefix)."""
    nsmap = {"s": soap_ns, "tt": RESPONSE_NSMAP["tt"], "ter": TER}
    if extra_nsmap:
        nsmap.update(extra_nsmap)
    env = etree.Element(f"{{{soap_ns}}}Envelope", nsmap=nsmap)
    body = etree.SubElement(env, f"{{{soap_ns}}}Body")
    return env, body


def serialize(envelope: etree._Element) -> bytes:
    data: bytes = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return data


def fault_envelope(
    soap_ns: str,
    code: str,
    subcodes: Sequence[str],
    reason: str,
    detail: str | etree._Element | None = None,
    not_understood: etree.QName | None = None,
) -> etree._Element:
    """A fault in the request's SOAP version. ``code`` is the SOAP 1.2 code local name
    (Sender, Receiver, VersionMismatch, MustUnderstand); ``subcodes`` are ``ter:`` names.
    SOAP 1.2 §5.4.7-8: a VersionMismatch fault names the supported envelope in an Upgrade
    header, a MustUnderstand fault the header it did not understand in NotUnderstood."""
    env, body = new_envelope(soap_ns)
    if soap_ns == SOAP12 and code == "VersionMismatch":
        header = etree.Element(f"{{{SOAP12}}}Header")
        upgrade = etree.SubElement(header, f"{{{SOAP12}}}Upgrade")
        etree.SubElement(upgrade, f"{{{SOAP12}}}SupportedEnvelope", qname="s:Envelope")
        env.insert(0, header)
    if soap_ns == SOAP12 and code == "MustUnderstand" and not_understood is not None:
        header = etree.Element(f"{{{SOAP12}}}Header")
        marker = etree.SubElement(
            header, f"{{{SOAP12}}}NotUnderstood", nsmap={"h": not_understood.namespace or ""}
        )
        marker.set("qname", f"h:{not_understood.localname}")
        env.insert(0, header)
    if soap_ns == SOAP11:
        # SOAP 1.1 has no subcodes: faultcode carries the most specific one (WS-I BP style).
        fault = etree.SubElement(body, f"{{{SOAP11}}}Fault")
        fc = etree.SubElement(fault, "faultcode")
        if subcodes:
            fc.text = f"ter:{subcodes[-1]}"
        else:
            fc.text = "s:" + {"Sender": "Client", "Receiver": "Server"}.get(code, code)
        etree.SubElement(fault, "faultstring").text = reason
        if isinstance(detail, etree._Element):
            etree.SubElement(fault, "detail").append(detail)
        elif detail:
            etree.SubElement(fault, "detail").text = detail
        return env
    fault = etree.SubElement(body, f"{{{SOAP12}}}Fault")
    code_el = etree.SubElement(fault, f"{{{SOAP12}}}Code")
    etree.SubElement(code_el, f"{{{SOAP12}}}Value").text = f"s:{code}"
    parent = code_el
    for sub in subcodes:
        parent = etree.SubElement(parent, f"{{{SOAP12}}}Subcode")
        etree.SubElement(parent, f"{{{SOAP12}}}Value").text = f"ter:{sub}"
    reason_el = etree.SubElement(fault, f"{{{SOAP12}}}Reason")
    text = etree.SubElement(reason_el, f"{{{SOAP12}}}Text")
    text.set(f"{{{XML_NS}}}lang", "en")
    text.text = reason
    if isinstance(detail, etree._Element):
        etree.SubElement(fault, f"{{{SOAP12}}}Detail").append(detail)
    elif detail:
        det = etree.SubElement(fault, f"{{{SOAP12}}}Detail")
        etree.SubElement(det, f"{{{SOAP12}}}Text").text = detail
    return env


@dataclasses.dataclass(frozen=True)
class Addressing:
    """The WS-Addressing headers of a request that matter to an answer."""

    to: str | None = None
    message_id: str | None = None
    action: str | None = None


def read_addressing(header: etree._Element | None) -> Addressing:
    """wsa:To, wsa:MessageID and wsa:Action of a request (2005/08 namespace)."""
    if header is None:
        return Addressing()
    values: dict[str, str] = {}
    for child in header:
        if isinstance(child.tag, str) and child.tag.startswith(f"{{{WSA}}}"):
            local = child.tag[len(WSA) + 2 :]
            if local in ("To", "MessageID", "Action") and local not in values:
                values[local] = (child.text or "").strip()
    return Addressing(values.get("To"), values.get("MessageID"), values.get("Action"))


def add_addressing(envelope: etree._Element, action: str, relates_to: str | None) -> None:
    """Put wsa:Action (and wsa:RelatesTo the request's MessageID) in the answer's Header."""
    soap_ns = etree.QName(envelope).namespace
    header = envelope.find(f"{{{soap_ns}}}Header")
    if header is None:
        header = etree.Element(f"{{{soap_ns}}}Header")
        envelope.insert(0, header)
    etree.SubElement(header, f"{{{WSA}}}Action", nsmap={"wsa": WSA}).text = action
    if relates_to:
        etree.SubElement(header, f"{{{WSA}}}RelatesTo", nsmap={"wsa": WSA}).text = relates_to


def fault_status(soap_ns: str, code: str) -> int:
    """HTTP status for a fault (SOAP 1.2 HTTP binding: Sender → 400, others → 500)."""
    if soap_ns == SOAP12 and code in ("Sender", "VersionMismatch", "MustUnderstand"):
        return 400 if code == "Sender" else 500
    return 500


def escape_text(text: str) -> str:
    """Character data as lxml writes it (``&``, ``<``, ``>`` and CR escaped)."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


_BODY_MARK = "@@body@@"
_RELATES_MARK = "@@relates-to@@"


class EnvelopeTemplate:
    """The bytes around an already serialised body element: the same bytes
    ``serialize(new_envelope(...))`` (plus :func:`add_addressing` with ``action``) writes,
    cut once at the Body's content and at wsa:RelatesTo's text. Answers that are sent
    many times (PullMessages) are assembled by concatenation instead of a tree."""

    def __init__(
        self, soap_ns: str, extra_nsmap: dict[str, str] | None, action: str | None
    ) -> None:
        self._plain = self._cut(soap_ns, extra_nsmap, action, None)
        self._related = self._cut(soap_ns, extra_nsmap, action, _RELATES_MARK) if action else None

    @staticmethod
    def _cut(
        soap_ns: str, extra_nsmap: dict[str, str] | None, action: str | None, relates: str | None
    ) -> list[bytes]:
        envelope, body = new_envelope(soap_ns, extra_nsmap)
        body.text = _BODY_MARK
        if action:
            add_addressing(envelope, action, relates)
        text = serialize(envelope).decode()
        head, tail = text.split(_BODY_MARK)
        if relates is None:
            return [head.encode(), tail.encode()]
        before, after = head.split(_RELATES_MARK)
        return [before.encode(), after.encode(), tail.encode()]

    def wrap(self, body_xml: bytes, relates_to: str | None = None) -> bytes:
        """The envelope holding ``body_xml`` (one element, UTF-8, its namespaces declared
        or in scope of the envelope's prefixes)."""
        if relates_to and self._related is not None:
            before, after, tail = self._related
            return b"".join((before, escape_text(relates_to).encode(), after, body_xml, tail))
        head, tail = self._plain
        return b"".join((head, body_xml, tail))
