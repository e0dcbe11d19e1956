"""A small event-service client built on exact bytes (tests/soaputil.py): requests signed
with WS-UsernameToken, answers parsed with lxml. zeep drops the text of ``wsnt:Topic``
(mixed content), so the tests read notifications from the raw XML."""

from __future__ import annotations

import dataclasses
import uuid

import requests
from lxml import etree

from tests.soaputil import SOAP12, envelope, username_token

TEV = "http://www.onvif.org/ver10/events/wsdl"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
WSA = "http://www.w3.org/2005/08/addressing"
TT = "http://www.onvif.org/ver10/schema"
TNS1 = "http://www.onvif.org/ver10/topics"
WSRF_R = "http://docs.oasis-open.org/wsrf/r-2"
CONCRETE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
ITEM_FILTER = "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
STORAGE_FAILURE = "tns1:Device/HardwareFailure/StorageFailure"
PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclasses.dataclass(frozen=True)
class Notification:
    topic: str
    operation: str | None
    utc_time: str
    source: dict[str, str]
    data: dict[str, str]


class SoapError(AssertionError):
    """A fault where an answer was expected."""


def topic_filter(expression: str, dialect: str = CONCRETE_SET, nsmap: str = "") -> str:
    declarations = nsmap or f'xmlns:tns1="{TNS1}"'
    return (
        f'<wsnt:TopicExpression Dialect="{dialect}" {declarations}>{expression}'
        "</wsnt:TopicExpression>"
    )


def content_filter(expression: str, dialect: str = ITEM_FILTER) -> str:
    return (
        f'<wsnt:MessageContent Dialect="{dialect}" xmlns:tt="{TT}">{expression}'
        "</wsnt:MessageContent>"
    )


def parse_notifications(parent: etree._Element) -> list[Notification]:
    out = []
    for holder in parent.iter(f"{{{WSNT}}}NotificationMessage"):
        topic = holder.find(f"{{{WSNT}}}Topic")
        message = holder.find(f"{{{WSNT}}}Message/{{{TT}}}Message")
        assert topic is not None and message is not None
        text = (topic.text or "").strip()
        prefix, _, path = text.partition(":")
        assert topic.nsmap.get(prefix) == TNS1, "the topic's prefix must be in scope"

        def items(group: str, message: etree._Element = message) -> dict[str, str]:
            return {
                i.get("Name", ""): i.get("Value", "")
                for i in message.findall(f"{{{TT}}}{group}/{{{TT}}}SimpleItem")
            }

        out.append(
            Notification(
                "tns1:" + path,
                message.get("PropertyOperation"),
                message.get("UtcTime", ""),
                items("Source"),
                items("Data"),
            )
        )
    return out


@dataclasses.dataclass
class Answer:
    status: int
    root: etree._Element
    raw: bytes

    @property
    def body_child(self) -> etree._Element:
        body = self.root.find(f"{{{SOAP12}}}Body")
        assert body is not None
        return body[0]

    @property
    def action(self) -> str | None:
        return self.root.findtext(f"{{{SOAP12}}}Header/{{{WSA}}}Action")

    @property
    def fault_detail(self) -> str | None:
        """Local name of the fault's Detail element (``ResourceUnknownFault``...)."""
        detail = self.root.find(f"{{{SOAP12}}}Body/{{{SOAP12}}}Fault/{{{SOAP12}}}Detail")
        if detail is None or not len(detail):
            return None
        return etree.QName(detail[0]).localname

    @property
    def is_fault(self) -> bool:
        return self.root.find(f"{{{SOAP12}}}Body/{{{SOAP12}}}Fault") is not None


class EventsClient:
    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        self.service = base + "/onvif/events_service"
        self.user = user
        self.password = password

    def call(self, url: str, body: str, *, timeout: float = 30, to: str | None = None) -> Answer:
        header = username_token(self.user, self.password)
        header += (
            f'<wsa:MessageID xmlns:wsa="{WSA}">urn:uuid:{uuid.uuid4()}</wsa:MessageID>'
            f'<wsa:To xmlns:wsa="{WSA}">{to or url}</wsa:To>'
        )
        response = requests.post(
            url,
            data=envelope(body, header),
            headers={"Content-Type": "application/soap+xml; charset=utf-8"},
            timeout=timeout,
        )
        return Answer(
            response.status_code, etree.fromstring(response.content, PARSER), response.content
        )

    def ok(self, url: str, body: str, **kwargs: object) -> etree._Element:
        answer = self.call(url, body, **kwargs)  # type: ignore[arg-type]
        if answer.is_fault or answer.status != 200:
            raise SoapError(answer.raw.decode())
        return answer.body_child

    # -- event binding ---------------------------------------------------------------------
    def create(self, filters: str = "", termination: str | None = "PT60S", policy: str = "") -> str:
        answer = self.ok(self.service, self.create_body(filters, termination, policy))
        address = answer.findtext(f"{{{TEV}}}SubscriptionReference/{{{WSA}}}Address")
        assert address
        return address

    @staticmethod
    def create_body(filters: str = "", termination: str | None = "PT60S", policy: str = "") -> str:
        parts = [f'<tev:CreatePullPointSubscription xmlns:tev="{TEV}" xmlns:wsnt="{WSNT}">']
        if filters:
            parts.append(f"<tev:Filter>{filters}</tev:Filter>")
        if termination:
            parts.append(f"<tev:InitialTerminationTime>{termination}</tev:InitialTerminationTime>")
        if policy:
            parts.append(f"<tev:SubscriptionPolicy>{policy}</tev:SubscriptionPolicy>")
        parts.append("</tev:CreatePullPointSubscription>")
        return "".join(parts)

    def subscribe_body(self, consumer: str, filters: str = "", termination: str = "PT60S") -> str:
        filter_xml = f"<wsnt:Filter>{filters}</wsnt:Filter>" if filters else ""
        return (
            f'<wsnt:Subscribe xmlns:wsnt="{WSNT}" xmlns:wsa="{WSA}">'
            f"<wsnt:ConsumerReference><wsa:Address>{consumer}</wsa:Address></wsnt:ConsumerReference>"
            f"{filter_xml}<wsnt:InitialTerminationTime>{termination}</wsnt:InitialTerminationTime>"
            "</wsnt:Subscribe>"
        )

    def subscribe(self, consumer: str, filters: str = "", termination: str = "PT60S") -> str:
        answer = self.ok(self.service, self.subscribe_body(consumer, filters, termination))
        address = answer.findtext(f"{{{WSNT}}}SubscriptionReference/{{{WSA}}}Address")
        assert address
        return address

    # -- a subscription --------------------------------------------------------------------
    @staticmethod
    def pull_body(timeout: str, limit: int) -> str:
        return (
            f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout>{timeout}</tev:Timeout>'
            f"<tev:MessageLimit>{limit}</tev:MessageLimit></tev:PullMessages>"
        )

    def pull(self, address: str, timeout: str = "PT1S", limit: int = 100) -> list[Notification]:
        return parse_notifications(self.ok(address, self.pull_body(timeout, limit), timeout=120))

    def sync(self, address: str) -> None:
        self.ok(address, f'<tev:SetSynchronizationPoint xmlns:tev="{TEV}"/>')

    def renew_call(self, address: str, termination: str) -> Answer:
        return self.call(
            address,
            f'<wsnt:Renew xmlns:wsnt="{WSNT}"><wsnt:TerminationTime>{termination}'
            "</wsnt:TerminationTime></wsnt:Renew>",
        )

    def unsubscribe_call(self, address: str) -> Answer:
        return self.call(address, f'<wsnt:Unsubscribe xmlns:wsnt="{WSNT}"/>')


def assert_event_fault(answer: Answer, detail: str) -> None:
    """Core §9.9: env:Receiver, HTTP 500, wsa:Action .../soap/fault, the WS-BN detail."""
    assert answer.is_fault, answer.raw
    assert answer.status == 500, answer.status
    code = answer.root.findtext(
        f"{{{SOAP12}}}Body/{{{SOAP12}}}Fault/{{{SOAP12}}}Code/{{{SOAP12}}}Value"
    )
    assert code and code.endswith(":Receiver"), code
    assert answer.action == FAULT_ACTION
    assert answer.fault_detail == detail, answer.raw.decode()
