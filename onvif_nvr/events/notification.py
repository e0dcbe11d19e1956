"""Event messages as XML, sans-IO: ``wsnt:NotificationMessage`` around a ``tt:Message``
(Core §9.4), and the ``wstop:TopicSet`` with a ``tt:MessageDescription`` per topic
(Core §9.6.2). Written with lxml directly: the schema types these parts ``xs:any``."""

from __future__ import annotations

import copy
import functools

from lxml import etree

from onvif_nvr.events.filters import CONCRETE_SET
from onvif_nvr.events.filters import WSNT as WSNT  # re-exported: the notification namespace
from onvif_nvr.events.message import ElementItem, Item, Message
from onvif_nvr.events.termination import format_utc
from onvif_nvr.events.topics import TNS1, TNS1_PREFIX, ItemDescription, TopicCatalog

WSA = "http://www.w3.org/2005/08/addressing"
WSTOP = "http://docs.oasis-open.org/wsn/t-1"
TT = "http://www.onvif.org/ver10/schema"
XS = "http://www.w3.org/2001/XMLSchema"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _items(parent: etree._Element, tag: str, items: tuple[Item, ...]) -> None:
    group = etree.SubElement(parent, f"{{{TT}}}{tag}")
    for item in items:
        if isinstance(item, ElementItem):
            holder = etree.SubElement(group, f"{{{TT}}}ElementItem", Name=item.name)
            holder.append(etree.fromstring(item.xml, _PARSER))
        else:
            etree.SubElement(group, f"{{{TT}}}SimpleItem", Name=item.name, Value=item.value)


def message_element(message: Message) -> etree._Element:
    """The ``tt:Message`` of one event."""
    element = etree.Element(f"{{{TT}}}Message", nsmap={"tt": TT})
    element.set("UtcTime", format_utc(message.utc_ns))
    if message.operation is not None:
        element.set("PropertyOperation", message.operation.value)
    # tt:Message is a sequence Source?, Key?, Data?: Source and Data are always written
    # (clients index them), Key only for properties that have one.
    _items(element, "Source", message.source)
    if message.key:
        _items(element, "Key", message.key)
    _items(element, "Data", message.data)
    return element


def notification_message(
    parent: etree._Element,
    message: Message,
    *,
    subscription_address: str | None,
    producer_address: str | None,
    cached: etree._Element | None = None,
) -> etree._Element:
    """Append a ``wsnt:NotificationMessage`` to ``parent``. The topic's prefix is declared
    on the element itself: its text is a QName (``tns1:Device/...``)."""
    holder = etree.SubElement(
        parent, f"{{{WSNT}}}NotificationMessage", nsmap={TNS1_PREFIX: TNS1, "wsa": WSA}
    )
    if subscription_address:
        ref = etree.SubElement(holder, f"{{{WSNT}}}SubscriptionReference")
        etree.SubElement(ref, f"{{{WSA}}}Address").text = subscription_address
    if message.topic.namespace == TNS1:
        topic = etree.SubElement(holder, f"{{{WSNT}}}Topic", Dialect=CONCRETE_SET)
        topic.text = message.topic.text()
    else:  # a vendor topic: its namespace gets a prefix of its own
        topic = etree.SubElement(
            holder,
            f"{{{WSNT}}}Topic",
            Dialect=CONCRETE_SET,
            nsmap={"tnsx": message.topic.namespace},
        )
        topic.text = message.topic.text("tnsx")
    if producer_address:
        producer = etree.SubElement(holder, f"{{{WSNT}}}ProducerReference")
        etree.SubElement(producer, f"{{{WSA}}}Address").text = producer_address
    body = etree.SubElement(holder, f"{{{WSNT}}}Message")
    body.append(cached if cached is not None else copy.deepcopy(_shared_element(message)))
    return holder


@functools.lru_cache(maxsize=1024)
def _shared_element(message: Message) -> etree._Element:
    """One event goes to every subscriber (64 pull points wake on one publish): its
    ``tt:Message`` is built once and copied (a C-level copy, far cheaper than building)."""
    return message_element(message)


def _descriptions(parent: etree._Element, tag: str, items: tuple[ItemDescription, ...]) -> None:
    if not items:
        return
    group = etree.SubElement(parent, f"{{{TT}}}{tag}")
    # The schema orders SimpleItemDescriptions before ElementItemDescriptions.
    for item in sorted(items, key=lambda i: i.element):
        kind = "ElementItemDescription" if item.element else "SimpleItemDescription"
        etree.SubElement(group, f"{{{TT}}}{kind}", Name=item.name, Type=item.type)


def topic_set(catalog: TopicCatalog) -> etree._Element:
    """``wstop:TopicSet``: one element per topic level, ``wstop:topic="true"`` and a
    MessageDescription on each topic the box emits. Children are unqualified (WS-Topics),
    so no default namespace may be in scope: the element declares ``tns1``, ``tt``, ``xs``."""
    root = etree.Element(
        f"{{{WSTOP}}}TopicSet", nsmap={"wstop": WSTOP, TNS1_PREFIX: TNS1, "tt": TT, "xs": XS}
    )
    nodes: dict[tuple[str, tuple[str, ...]], etree._Element] = {}
    for description in catalog:
        topic = description.topic
        parent = root
        for depth in range(1, len(topic.path) + 1):
            key = (topic.namespace, topic.path[:depth])
            node = nodes.get(key)
            if node is None:
                name = topic.path[depth - 1]
                tag = f"{{{topic.namespace}}}{name}" if depth == 1 else name
                node = nodes[key] = etree.SubElement(parent, tag)
            parent = node
        parent.set(f"{{{WSTOP}}}topic", "true")
        md = etree.SubElement(parent, f"{{{TT}}}MessageDescription")
        md.set("IsProperty", "true" if description.is_property else "false")
        _descriptions(md, "Source", description.source)
        _descriptions(md, "Key", description.key)
        _descriptions(md, "Data", description.data)
    return root


# -- the same, pre-serialised --------------------------------------------------------------
# A PullMessages answer is mostly notifications, and one event goes to every pull point.
# Each tt:Message is serialised once; the NotificationMessage around it is a few byte
# strings; the answer is their concatenation. The bytes are the XML the lxml functions
# above write (tests compare them canonicalised and validate them against the XSD).

TEV = "http://www.onvif.org/ver10/events/wsdl"
_NOTIFICATION_OPEN = (
    f'<wsnt:NotificationMessage xmlns:wsnt="{WSNT}" xmlns:{TNS1_PREFIX}="{TNS1}" xmlns:wsa="{WSA}">'
).encode()
_NOTIFICATION_CLOSE = b"</wsnt:Message></wsnt:NotificationMessage>"


def _escape(text: str) -> bytes:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    ).encode()


def _attribute(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace('"', "&quot;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


@functools.lru_cache(maxsize=1024)
def message_parts(message: Message) -> tuple[bytes, bytes]:
    """The ``wsnt:Topic`` element and the ``tt:Message`` element of one event as bytes,
    rendered once for every subscriber."""
    dialect = _attribute(CONCRETE_SET)
    if message.topic.namespace == TNS1:
        topic = f'<wsnt:Topic Dialect="{dialect}">'.encode() + _escape(message.topic.text())
    else:  # a vendor topic: its namespace gets a prefix of its own
        namespace = _attribute(message.topic.namespace)
        topic = f'<wsnt:Topic xmlns:tnsx="{namespace}" Dialect="{dialect}">'.encode()
        topic += _escape(message.topic.text("tnsx"))
    body: bytes = etree.tostring(_shared_element(message), encoding="UTF-8")
    return topic + b"</wsnt:Topic>", body


def notification_messages(
    parts: list[bytes],
    messages: list[Message],
    *,
    subscription_address: str,
    producer_address: str,
) -> None:
    """Append a ``wsnt:NotificationMessage`` per message to ``parts``, as
    :func:`notification_message` writes it (its namespaces declared on it)."""
    if not messages:
        return
    # The addresses are the same for every message of a batch.
    opening = b"".join(
        (
            _NOTIFICATION_OPEN,
            b"<wsnt:SubscriptionReference><wsa:Address>",
            _escape(subscription_address),
            b"</wsa:Address></wsnt:SubscriptionReference>",
        )
    )
    producer = b"".join(
        (
            b"<wsnt:ProducerReference><wsa:Address>",
            _escape(producer_address),
            b"</wsa:Address></wsnt:ProducerReference><wsnt:Message>",
        )
    )
    for message in messages:
        topic, body = message_parts(message)
        parts += (opening, topic, producer, body, _NOTIFICATION_CLOSE)


def pull_messages_response(
    current_utc_ns: int,
    termination_utc_ns: int,
    messages: list[Message],
    *,
    subscription_address: str,
    producer_address: str,
) -> bytes:
    """``tev:PullMessagesResponse`` as bytes: CurrentTime, TerminationTime and a
    NotificationMessage per message."""
    parts = [
        f'<tev:PullMessagesResponse xmlns:tev="{TEV}" xmlns:wsnt="{WSNT}"><tev:CurrentTime>'
        f"{format_utc(current_utc_ns)}</tev:CurrentTime><tev:TerminationTime>"
        f"{format_utc(termination_utc_ns)}</tev:TerminationTime>".encode()
    ]
    notification_messages(
        parts,
        messages,
        subscription_address=subscription_address,
        producer_address=producer_address,
    )
    parts.append(b"</tev:PullMessagesResponse>")
    return b"".join(parts)


def notify_body(
    messages: list[Message], *, subscription_address: str, producer_address: str
) -> bytes:
    """``wsnt:Notify`` as bytes: a NotificationMessage per message."""
    parts = [f'<wsnt:Notify xmlns:wsnt="{WSNT}">'.encode()]
    notification_messages(
        parts,
        messages,
        subscription_address=subscription_address,
        producer_address=producer_address,
    )
    parts.append(b"</wsnt:Notify>")
    return b"".join(parts)
