"""Event Handling Test Specification cases (EVENT-*) for the event service.

The session's box has one storage volume: one ``tns1:Device/HardwareFailure/StorageFailure``
property (``volume1``), delivered as ``Initialized`` on subscribing and on
SetSynchronizationPoint. Pull-point calls go through zeep; filters and topics are read
from the raw XML (zeep drops the text of ``wsnt:Topic``).
"""

from __future__ import annotations

import datetime
import time

import pytest
import zeep
import zeep.exceptions
from zeep.wsse.username import UsernameToken

from onvif_nvr.wsdl.catalog import EVENTS, wsdl_root
from tests.conftest import ADMIN_PASSWORD
from tests.eventutil import (
    CONCRETE,
    STORAGE_FAILURE,
    TEV,
    EventsClient,
    assert_event_fault,
    content_filter,
    topic_filter,
)

EVENT_NS = "{http://www.onvif.org/ver10/events/wsdl}"
DEVICE_NS = "http://www.onvif.org/ver10/device/wsdl"


@pytest.fixture(scope="module")
def zclient():
    return zeep.Client(
        str(wsdl_root() / EVENTS.wsdl),
        wsse=UsernameToken("admin", ADMIN_PASSWORD, use_digest=True),
        settings=zeep.Settings(strict=False),
    )


@pytest.fixture(scope="module")
def event_service(zclient, nvr):
    return zclient.create_service(EVENT_NS + "EventBinding", nvr.base + EVENTS.path)


@pytest.fixture(scope="module")
def raw(nvr) -> EventsClient:
    return EventsClient(nvr.base, "admin", ADMIN_PASSWORD)


def pull_point(zclient, address: str):
    return zclient.create_service(EVENT_NS + "PullPointSubscriptionBinding", address)


def manager(zclient, address: str):
    return zclient.create_service(EVENT_NS + "SubscriptionManagerBinding", address)


def test_EVENT_1_1_2_get_event_properties(event_service):
    props = event_service.GetEventProperties()
    assert props.FixedTopicSet is True
    assert CONCRETE in props.TopicExpressionDialect
    assert (
        "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet" in props.TopicExpressionDialect
    )
    assert props.MessageContentFilterDialect == [
        "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
    ]
    assert props.TopicNamespaceLocation and props.MessageContentSchemaLocation


def test_EVENT_3_1_9_create_pull_point_subscription(event_service):
    answer = event_service.CreatePullPointSubscription(InitialTerminationTime="PT10S")
    assert answer.TerminationTime - answer.CurrentTime >= datetime.timedelta(seconds=10)
    assert answer.SubscriptionReference.Address._value_1.startswith("http://127.0.0.1:")


def test_EVENT_3_1_12_renew(event_service, zclient):
    answer = event_service.CreatePullPointSubscription(InitialTerminationTime="PT10S")
    renewed = manager(zclient, answer.SubscriptionReference.Address._value_1).Renew("PT60S")
    assert renewed.TerminationTime - renewed.CurrentTime >= datetime.timedelta(seconds=59)


def test_EVENT_3_1_15_pull_messages(event_service, zclient):
    address = event_service.CreatePullPointSubscription().SubscriptionReference.Address._value_1
    point = pull_point(zclient, address)
    point.PullMessages(Timeout=datetime.timedelta(seconds=1), MessageLimit=10)
    point.SetSynchronizationPoint()
    got = point.PullMessages(Timeout=datetime.timedelta(seconds=5), MessageLimit=10)
    assert len(got.NotificationMessage) == 1
    message = got.NotificationMessage[0].Message._value_1
    assert message.get("PropertyOperation") == "Initialized" and message.get("UtcTime")


def test_EVENT_3_1_16_pull_messages_filter(raw):
    address = raw.create(topic_filter(STORAGE_FAILURE, CONCRETE))
    got = raw.pull(address)
    assert [n.topic for n in got] == [STORAGE_FAILURE]


@pytest.mark.parametrize(
    "expression", ['boolean(//tt:SimpleItem[@Name="Token" and @Value=volume1])', "boolean(("]
)
def test_EVENT_3_1_17_invalid_message_content_filter(raw, expression):
    answer = raw.call(raw.service, raw.create_body(content_filter(expression)))
    assert_event_fault(answer, "InvalidMessageContentExpressionFault")


def test_EVENT_3_1_19_unsubscribe_negative(event_service, zclient):
    address = event_service.CreatePullPointSubscription().SubscriptionReference.Address._value_1
    subscription = manager(zclient, address)
    subscription.Unsubscribe()
    with pytest.raises(zeep.exceptions.Fault) as second:
        subscription.Unsubscribe()
    assert second.value.detail[0].tag == "{http://docs.oasis-open.org/wsrf/r-2}ResourceUnknownFault"
    with pytest.raises(zeep.exceptions.Fault):
        subscription.Renew("PT10S")


def test_EVENT_3_1_20_timeout(raw):
    address = raw.create(termination="PT2S")
    time.sleep(3.5)
    assert_event_fault(raw.unsubscribe_call(address), "ResourceUnknownFault")


@pytest.mark.parametrize(
    ("expression", "fault"),
    [
        ("tns1:Invalid/Topic", "TopicNotSupportedFault"),
        ("tns1:Device//..", "InvalidTopicExpressionFault"),
    ],
)
def test_EVENT_3_1_22_invalid_topic_expression(raw, expression, fault):
    assert_event_fault(raw.call(raw.service, raw.create_body(topic_filter(expression))), fault)


def test_EVENT_3_1_24_pull_messages_as_keep_alive(raw):
    address = raw.create(termination="PT3S")
    raw.pull(address, "PT5S")  # answers at once (the initial property) ...
    time.sleep(4)  # ... and keeps the pull point alive for at least its Timeout
    raw.sync(address)


def test_EVENT_3_1_25_set_synchronization_point(raw):
    address = raw.create()
    raw.pull(address)
    raw.sync(address)
    again = raw.pull(address)
    assert [(n.operation, n.source) for n in again] == [("Initialized", {"Token": "volume1"})]


def test_EVENT_3_1_32_pull_messages_timeout(raw):
    address = raw.create()
    raw.pull(address)
    started = time.monotonic()
    assert raw.pull(address, "PT3S", limit=1) == []
    assert time.monotonic() - started >= 2.9


@pytest.mark.parametrize(
    ("case", "expression"),
    [
        ("3_1_33", "tns1:RecordingConfig/JobState|tns1:Device/HardwareFailure/StorageFailure"),
        ("3_1_34", "tns1:Device//."),
        ("3_1_35", "tns1:RecordingHistory//.|tns1:Device/HardwareFailure//."),
    ],
)
def test_EVENT_3_1_33_34_35_concrete_set_filters(raw, case, expression):
    assert [n.topic for n in raw.pull(raw.create(topic_filter(expression)))] == [STORAGE_FAILURE]


def test_EVENT_3_1_36_unsubscribe(raw):
    address = raw.create()
    assert raw.unsubscribe_call(address).status == 200


def test_EVENT_3_1_37_maximum_number_of_pull_points(event_service, raw):
    limit = event_service.GetServiceCapabilities().MaxPullPoints
    assert limit >= 2
    addresses = [raw.create() for _ in range(8)]  # several at once, each its own address
    assert len(set(addresses)) == 8
    for address in addresses:
        raw.unsubscribe_call(address)


def test_EVENT_3_1_38_message_content_filter(raw):
    match = content_filter('boolean(//tt:SimpleItem[@Name="Token" and @Value="volume1"])')
    other = content_filter('boolean(//tt:SimpleItem[@Name="Token" and @Value="volume9"])')
    assert len(raw.pull(raw.create(match))) == 1
    assert raw.pull(raw.create(other)) == []


@pytest.mark.parametrize(
    "body",
    [
        # 4-1-6: default namespaces on each tag
        '<CreatePullPointSubscription xmlns="{tev}"><Filter><TopicExpression xmlns="{wsnt}" '
        'xmlns:tns1="{tns1}" Dialect="{cs}">tns1:Device//.</TopicExpression></Filter>'
        "</CreatePullPointSubscription>",
        # 4-1-8: unusual prefixes
        '<q1:CreatePullPointSubscription xmlns:q1="{tev}" xmlns:q2="{wsnt}" xmlns:q3="{tns1}">'
        '<q1:Filter><q2:TopicExpression Dialect="{cs}">q3:Device//.</q2:TopicExpression></q1:Filter>'
        "</q1:CreatePullPointSubscription>",
        # 4-1-10: one prefix bound to different namespaces at different depths
        '<a:CreatePullPointSubscription xmlns:a="{tev}"><a:Filter><a:TopicExpression '
        'xmlns:a="{wsnt}" Dialect="{cs}" xmlns:b="{tns1}">b:Device//.</a:TopicExpression>'
        "</a:Filter></a:CreatePullPointSubscription>",
    ],
    ids=["4_1_6", "4_1_8", "4_1_10"],
)
def test_EVENT_4_1_namespaces(raw, body):
    body = body.format(
        tev=TEV,
        wsnt="http://docs.oasis-open.org/wsn/b-2",
        tns1="http://www.onvif.org/ver10/topics",
        cs="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet",
    )
    answer = raw.ok(raw.service, body)
    address = answer.findtext(
        f"{{{TEV}}}SubscriptionReference/{{http://www.w3.org/2005/08/addressing}}Address"
    )
    assert [n.topic for n in raw.pull(address)] == [STORAGE_FAILURE]


def test_EVENT_5_1_1_event_service_capabilities(event_service):
    caps = event_service.GetServiceCapabilities()
    assert caps.MaxPullPoints >= 64
    assert caps.WSSubscriptionPolicySupport is True
    assert caps.WSPausableSubscriptionManagerInterfaceSupport is False
    assert caps.PersistentNotificationStorage is False


def test_EVENT_5_1_2_get_services_and_capabilities_consistency(event_service, anonymous, nvr):
    services = {s.Namespace: s for s in anonymous.GetServices(True)}
    entry = services[TEV]
    assert entry.XAddr == nvr.base + EVENTS.path
    embedded = entry.Capabilities._value_1
    caps = event_service.GetServiceCapabilities()
    assert int(embedded.get("MaxPullPoints")) == caps.MaxPullPoints
    assert anonymous.GetCapabilities(["Events"]).Events.XAddr == entry.XAddr


def test_EVENT_2_1_9_and_28_subscribe_and_unsubscribe(raw):
    # A consumer that never answers still gets a subscription (delivery is retried).
    address = raw.subscribe("http://127.0.0.1:9/notify")
    assert raw.unsubscribe_call(address).status == 200
    assert_event_fault(raw.unsubscribe_call(address), "ResourceUnknownFault")


def test_EVENT_2_1_23_basic_notification_invalid_topic_expression(raw):
    answer = raw.call(
        raw.service, raw.subscribe_body("http://127.0.0.1:9/", topic_filter("tns1:No/Such"))
    )
    assert_event_fault(answer, "TopicNotSupportedFault")
