"""The event service's fast path answers as the general SOAP path does.

* PullMessages requests of the plain shape are read without zeep (soap/decode.py): for
  valid and invalid requests alike, the value, the conversion errors and the answer or
  fault are the ones zeep's path gives; any other shape is left to zeep.
* The answer (and a Notify) is assembled from pre-serialised bytes (notification.py,
  EnvelopeTemplate): canonically the same XML as the lxml trees the general path builds.
* Authentication still runs on every request that takes the fast path.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest
from lxml import etree

from onvif_nvr.auth.digest import DigestAuthority
from onvif_nvr.auth.policy import UserLevel
from onvif_nvr.auth.throttle import LoginThrottle
from onvif_nvr.clock import SystemClock
from onvif_nvr.config import EventSettings
from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.message import ElementItem, Message, PropertyOperation, SimpleItem
from onvif_nvr.events.notification import WSA, notification_message, pull_messages_response
from onvif_nvr.events.termination import format_utc
from onvif_nvr.events.topics import Topic, onvif_catalog
from onvif_nvr.services.events import TEV, EventService
from onvif_nvr.services.events_push import NOTIFY_ACTION, notify_envelope
from onvif_nvr.soap import envelope as env
from onvif_nvr.soap import wsse
from onvif_nvr.soap.authn import Authenticator
from onvif_nvr.soap.decode import FlatDecoder
from onvif_nvr.soap.dispatch import HttpRequest, SoapEndpoint, SoapService
from onvif_nvr.wsdl import catalog
from tests.eventutil import WSNT
from tests.soaputil import SOAP11, SOAP12, envelope, username_token

BINDINGS = {b.service.key: b for b in catalog.load_bindings(catalog.EVENT_SERVICES)}
PULL = BINDINGS[catalog.PULL_POINT.key].operations["PullMessages"]
PASSWORD = "fast-path-pw"
TOPIC = Topic.onvif("RecordingConfig/CreateRecording")
CREATE = f'<tev:CreatePullPointSubscription xmlns:tev="{TEV}"></tev:CreatePullPointSubscription>'


def pull(timeout: str = "PT0S", limit: str = "10", *, extra: str = "", attrs: str = "") -> str:
    return (
        f'<tev:PullMessages xmlns:tev="{TEV}"{attrs}><tev:Timeout>{timeout}</tev:Timeout>'
        f"<tev:MessageLimit>{limit}</tev:MessageLimit>{extra}</tev:PullMessages>"
    )


#: PullMessages bodies: the plain shape with good and bad values, and shapes left to zeep.
REQUESTS = [
    pull(),
    pull("PT5S", "1000"),
    pull(" PT1S\n", " 10 "),
    pull("P1DT2H", "+7"),
    pull("PT0.5S", "1_0"),  # Python's int() takes it, and so does zeep
    pull("PT5X"),
    pull("", "10"),
    pull("PT0S", ""),
    pull("PT0S", "ten"),
    pull("PT0S", "99999999999"),
    pull("-PT1S"),
    pull("PT0S", "-3"),
    pull("PT0S", "0"),
    pull("PT1H"),  # beyond max_pull_timeout_s: the handler's fault
    pull("PT0S", "1e3"),
    pull("PT0S", "10", extra='<x:Y xmlns:x="urn:x">1</x:Y>'),
    pull("PT0S", "10", extra="<tev:Bogus/>"),
    pull("PT0S", "10", attrs=' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" a="1"'),
    f'<tev:PullMessages xmlns:tev="{TEV}"><tev:MessageLimit>10</tev:MessageLimit>'
    "<tev:Timeout>PT0S</tev:Timeout></tev:PullMessages>",
    f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout>PT0S</tev:Timeout></tev:PullMessages>',
    f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout>PT0S</tev:Timeout>'
    "<tev:MessageLimit>1</tev:MessageLimit><tev:MessageLimit>2</tev:MessageLimit>"
    "</tev:PullMessages>",
    f'<tev:PullMessages xmlns:tev="{TEV}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    '<tev:Timeout xsi:nil="true"/><tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>',
    f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout>PT0S<!-- c --></tev:Timeout>'
    "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>",
    f'<tev:PullMessages xmlns:tev="{TEV}">text<tev:Timeout>PT0S</tev:Timeout>'
    "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>",
    f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout><b>PT0S</b></tev:Timeout>'
    "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>",
    f'<tev:PullMessages xmlns:tev="{TEV}" xmlns:o="urn:other"><o:Timeout>PT0S</o:Timeout>'
    "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>",
    f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout>PT0S</tev:Timeout>'
    "<tev:MessageLimit/></tev:PullMessages>",
]


class _Errors(logging.Handler):
    """zeep's conversion errors, as the dispatcher's log filter collects them."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.errors.append(str(exc) if exc else record.getMessage())


def zeep_reading(payload: etree._Element) -> tuple[dict[str, object], list[str]]:
    handler = _Errors()
    zeep_log = logging.getLogger("zeep.xsd.types.simple")
    zeep_log.addHandler(handler)
    try:
        value = PULL.input.parse(payload, BINDINGS[catalog.PULL_POINT.key].schema)
    finally:
        zeep_log.removeHandler(handler)
    return {n: getattr(value, n) for n in ("Timeout", "MessageLimit", "_value_1")}, handler.errors


@pytest.mark.parametrize("body", REQUESTS)
def test_decoder_reads_what_zeep_reads_or_declines(body: str) -> None:
    decoder = FlatDecoder.compile(PULL.input)
    assert decoder is not None
    payload = etree.fromstring(body)
    decoded = decoder.decode(payload)
    if decoded is None:
        return  # left to zeep (the endpoint test below checks the answers agree)
    values, errors = zeep_reading(payload)
    assert vars(decoded.value) == values
    assert decoded.errors == errors
    # A second read comes from the decoder's cache of converted texts: still the same.
    again = decoder.decode(payload)
    assert again is not None and vars(again.value) == values


def test_decoder_covers_the_plain_shape_and_declines_the_rest() -> None:
    decoder = FlatDecoder.compile(PULL.input)
    assert decoder is not None
    assert decoder.decode(etree.fromstring(pull("PT5S", "100"))) is not None
    assert decoder.decode(etree.fromstring(pull(extra="<tev:Bogus/>"))) is None
    assert decoder.decode(etree.fromstring(REQUESTS[18])) is None  # reordered
    # A type that is not a flat sequence of simple elements gets no decoder.
    create = BINDINGS[catalog.EVENTS.key].operations["CreatePullPointSubscription"]
    assert FlatDecoder.compile(create.input) is None
    renew = BINDINGS[catalog.SUBSCRIPTION_MANAGER.key].operations["Renew"]
    assert FlatDecoder.compile(renew.input) is None  # a union type zeep reads its own way


# -- the endpoint, with and without the fast decoder -----------------------------------------


class _Users:
    def password_for(self, username: str) -> str | None:
        return PASSWORD if username == "admin" else None

    def level_for(self, username: str) -> UserLevel | None:
        return UserLevel.ADMINISTRATOR if username == "admin" else None


class Box:
    """An event service behind two endpoints: one reads PullMessages with the fast
    decoder, the other with zeep only."""

    def __init__(self) -> None:
        clock = SystemClock()
        self.bus = EventBus(onvif_catalog(), clock)
        self.service = EventService(self.bus, EventSettings(), clock, BINDINGS)
        handlers = self.service.handlers()
        fast = self.service.fast_decode()

        def endpoint(with_fast_path: bool) -> SoapEndpoint:
            services = [
                SoapService(
                    binding,
                    handlers[key],
                    addressing=True,
                    fast_decode=fast.get(key, ()) if with_fast_path else (),
                )
                for key, binding in BINDINGS.items()
            ]
            authenticator = Authenticator(
                _Users(),
                DigestAuthority("box", b"k" * 32, clock),
                wsse.UsernameTokenVerifier(clock),
                LoginThrottle(clock, max_failures=1000),
            )
            return SoapEndpoint(services, authenticator)

        self.fast, self.general = endpoint(True), endpoint(False)

    async def call(self, endpoint: SoapEndpoint, path: str, data: bytes) -> tuple[int, bytes]:
        request = HttpRequest(
            "POST", path, {"host": "127.0.0.1:80", "authorization": ""}, data, "10.0.0.1", "x:80"
        )
        response = await endpoint.handle(request)
        return response.status, response.body

    async def pull_point(self) -> str:
        data = envelope(CREATE, username_token("admin", PASSWORD))
        status, body = await self.call(self.general, catalog.EVENTS.path, data)
        assert status == 200, body
        address = re.search(rb"<wsa:Address>[^<]*(/onvif/events/subscription/\w+)<", body)
        assert address is not None
        return address.group(1).decode()


def _normalised(body: bytes) -> bytes:
    """The answer canonicalised, its clock readings replaced (two calls differ in them)."""
    canonical = etree.tostring(etree.fromstring(body), method="c14n")
    canonical = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", b"TIME", canonical)
    return re.sub(rb"subscription/\w+", b"subscription/ID", canonical)


@pytest.fixture
def box() -> Iterator[Box]:
    yield Box()


@pytest.mark.parametrize("body", REQUESTS)
@pytest.mark.parametrize("soap_ns", [SOAP12, SOAP11])
def test_fast_and_general_paths_answer_alike(box: Box, body: str, soap_ns: str) -> None:
    async def scenario() -> None:
        answers = []
        for endpoint in (box.fast, box.general):
            path = await box.pull_point()
            box.bus.publish(TOPIC, source=[SimpleItem("RecordingToken", "r&<1>")])
            header = username_token("admin", PASSWORD)
            header += '<wsa:MessageID xmlns:wsa="http://www.w3.org/2005/08/addressing">'
            header += "urn:uuid:1&amp;2</wsa:MessageID>"
            status, answer = await box.call(endpoint, path, envelope(body, header, soap_ns))
            answers.append((status, _normalised(answer)))
        assert answers[0] == answers[1]

    asyncio.run(scenario())


def test_authentication_is_checked_on_the_fast_path(box: Box) -> None:
    async def scenario() -> None:
        path = await box.pull_point()
        status, body = await box.call(box.fast, path, envelope(pull()))
        assert status == 401  # no credentials
        status, body = await box.call(
            box.fast, path, envelope(pull(), username_token("admin", "x"))
        )
        assert status == 400 and b"wrong username or password" in body
        nonce = b"0123456789abcdef"
        token = username_token("admin", PASSWORD, nonce=nonce)
        status, body = await box.call(box.fast, path, envelope(pull(), token))
        assert status == 200, body
        status, body = await box.call(box.fast, path, envelope(pull(), token))
        assert status == 400 and b"Nonce was already used" in body
        stale = username_token("admin", PASSWORD, created="2001-01-01T00:00:00Z")
        status, body = await box.call(box.fast, path, envelope(pull(), stale))
        assert status == 400 and b"outside the accepted time window" in body

    asyncio.run(scenario())


# -- pre-serialised answers -------------------------------------------------------------------


def _messages() -> list[Message]:
    when = 1_700_000_000_123_000_000
    vendor = Topic("urn:vendor:topics", ("Box", "Thing"))
    return [
        Message(TOPIC, when, (SimpleItem("RecordingToken", 'a&b<"c">\'é'),)),
        Message(
            Topic.onvif("Device/HardwareFailure/StorageFailure"),
            when,
            (SimpleItem("Token", "volume1"),),
            (),
            (SimpleItem("Failed", "true"),),
            PropertyOperation.CHANGED,
        ),
        Message(
            Topic.onvif("RecordingConfig/RecordingConfiguration"),
            when,
            (SimpleItem("RecordingToken", "rec1"),),
            (),
            (
                ElementItem(
                    "Configuration",
                    b'<tt:Configuration xmlns:tt="http://www.onvif.org/ver10/schema">'
                    b"<tt:Content>x &amp; y</tt:Content></tt:Configuration>",
                ),
            ),
        ),
        Message(vendor, when, (SimpleItem("Id", "1"),), (SimpleItem("K", "2"),)),
    ]


@pytest.mark.parametrize("count", [0, 1, 4])
def test_pre_serialised_answer_is_the_lxml_answer(count: int) -> None:
    messages = _messages()[:count]
    now, until = 1_700_000_001_000_000_000, 1_700_000_061_000_000_000
    sub, producer = "http://h:80/onvif/events/subscription/ab&c", "http://h:80/onvif/events_service"
    ours = pull_messages_response(
        now, until, messages, subscription_address=sub, producer_address=producer
    )
    expected = etree.Element(f"{{{TEV}}}PullMessagesResponse", nsmap={"tev": TEV, "wsnt": WSNT})
    etree.SubElement(expected, f"{{{TEV}}}CurrentTime").text = format_utc(now)
    etree.SubElement(expected, f"{{{TEV}}}TerminationTime").text = format_utc(until)
    for message in messages:
        notification_message(expected, message, subscription_address=sub, producer_address=producer)
    assert etree.tostring(etree.fromstring(ours), method="c14n") == etree.tostring(
        expected, method="c14n"
    )


@pytest.mark.parametrize("soap_ns", [SOAP12, SOAP11])
@pytest.mark.parametrize("relates_to", [None, "", "urn:uuid:1", "a&b<c>]]>\r\n\"'é"])
@pytest.mark.parametrize("action", [None, "http://www.onvif.org/ver10/events/wsdl/X"])
def test_envelope_template_writes_the_bytes_of_the_tree(
    soap_ns: str, relates_to: str | None, action: str | None
) -> None:
    body = b'<x:R xmlns:x="urn:x">\xc3\xa9<x:S/></x:R>'
    template = env.EnvelopeTemplate(soap_ns, {"tev": TEV}, action)
    tree, holder = env.new_envelope(soap_ns, {"tev": TEV})
    holder.append(etree.fromstring(body))
    if action:
        env.add_addressing(tree, action, relates_to)
    assert template.wrap(body, relates_to) == env.serialize(tree)


@pytest.mark.parametrize("count", [1, 4])
def test_notify_is_the_lxml_notify(count: int) -> None:
    messages = _messages()[:count]
    consumer = "http://consumer:8080/notify?a=1&b=<2>"
    sub, producer = "http://h/onvif/events/subscription/ab", "http://h/onvif/events_service"
    ours = etree.fromstring(notify_envelope(messages, consumer, sub, producer))
    message_id = ours.findtext(f"{{{SOAP12}}}Header/{{{WSA}}}MessageID")
    assert message_id is not None and message_id.startswith("urn:uuid:")
    expected, body = env.new_envelope(SOAP12, {"wsnt": WSNT, "wsa": WSA})
    header = etree.Element(f"{{{SOAP12}}}Header")
    expected.insert(0, header)
    etree.SubElement(header, f"{{{WSA}}}Action").text = NOTIFY_ACTION
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = message_id
    etree.SubElement(header, f"{{{WSA}}}To").text = consumer
    notify = etree.SubElement(body, f"{{{WSNT}}}Notify")
    for message in messages:
        notification_message(notify, message, subscription_address=sub, producer_address=producer)
    assert etree.tostring(ours, method="c14n") == etree.tostring(expected, method="c14n")
