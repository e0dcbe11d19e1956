"""Event service (tev, Core §9): topic set, pull-point subscriptions, Basic Notification.

Four bindings of event.wsdl are served. At ``/onvif/events_service``: EventBinding
(capabilities, GetEventProperties, CreatePullPointSubscription) and the
NotificationProducer's Subscribe. At each subscription's own address
``/onvif/events/subscription/<id>``: PullMessages, SetSynchronizationPoint, Seek and the
SubscriptionManager's Renew and Unsubscribe (on pull points and push subscriptions alike).
An address that names no live subscription answers ``wsrf-r:ResourceUnknownFault``.

Faults follow WS-BaseNotification (the fault's meaning is its Detail element) as Core §9.9
asks: ``env:Receiver``, HTTP 500, wsa:Action ``.../addressing/soap/fault``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import aiohttp
from lxml import etree

from onvif_nvr.clock import Clock
from onvif_nvr.config import EventSettings
from onvif_nvr.errors import InvalidArgument, NotSupported
from onvif_nvr.events import filters
from onvif_nvr.events.bus import EventBus, Subscription
from onvif_nvr.events.filters import EventFilter, FilterError
from onvif_nvr.events.notification import WSA, WSNT, pull_messages_response, topic_set
from onvif_nvr.events.termination import (
    format_duration,
    format_utc,
    parse_duration_ns,
    parse_termination,
)
from onvif_nvr.services.common import child_named, render_service_capabilities
from onvif_nvr.services.events_push import Pusher
from onvif_nvr.soap.dispatch import CallContext, Handler, RawBody, SoapFault
from onvif_nvr.wsdl import catalog
from onvif_nvr.wsdl.catalog import Binding

log = logging.getLogger(__name__)

TEV = catalog.EVENTS.namespace
WSRF_BF = "http://docs.oasis-open.org/wsrf/bf-2"
WSRF_R = "http://docs.oasis-open.org/wsrf/r-2"
TOPIC_NAMESPACE_LOCATION = "http://www.onvif.org/onvif/ver10/topics/topicns.xml"
SCHEMA_LOCATION = "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
#: Most messages one PullMessages answer carries (a larger MessageLimit is cut, §9.1).
MAX_MESSAGE_LIMIT = 1024
EXPIRY_INTERVAL_S = 1.0


@dataclasses.dataclass
class _Record:
    """A subscription as the SOAP side sees it: its lifetime and how it is delivered."""

    subscription: Subscription
    push: bool
    termination_ns: int
    #: ``scheme://host:port`` the subscriber used; addresses in messages are built on it.
    base_url: str
    pulling: bool = False
    pusher: Pusher | None = None

    @property
    def id(self) -> str:
        return self.subscription.id


def wsn_fault(
    name: str,
    reason: str,
    now_ns: int,
    *,
    namespace: str = WSNT,
    extra: tuple[tuple[str, str], ...] = (),
    nsmap: dict[str, str] | None = None,
) -> SoapFault:
    """A WS-BaseNotification/WSRF fault: ``<wsnt:{name}>`` with the BaseFault Timestamp
    and Description, then the fault type's own elements ``extra`` (local name, text)."""
    detail = etree.Element(
        f"{{{namespace}}}{name}",
        nsmap={"wsnt": WSNT, "wsrf-bf": WSRF_BF, "wsrf-r": WSRF_R, **(nsmap or {})},
    )
    etree.SubElement(detail, f"{{{WSRF_BF}}}Timestamp").text = format_utc(now_ns)
    etree.SubElement(detail, f"{{{WSRF_BF}}}Description").text = reason
    for local, text in extra:
        etree.SubElement(detail, f"{{{namespace}}}{local}").text = text
    return SoapFault("Receiver", reason, detail=detail)


def _text(parent: etree._Element | None, local: str) -> str | None:
    child = child_named(parent, local)
    if child is None:
        return None
    nil = child.get("{http://www.w3.org/2001/XMLSchema-instance}nil")
    if nil in ("true", "1"):
        return None
    return (child.text or "").strip()


class EventService:
    """Handlers of the four event bindings; ``start()`` runs the expiry sweep."""

    def __init__(
        self,
        bus: EventBus,
        settings: EventSettings,
        clock: Clock,
        bindings: dict[str, Binding] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.bindings = bindings or {}
        self._records: dict[str, _Record] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._session: Any = None  # aiohttp.ClientSession, made on the first Subscribe

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for record in list(self._records.values()):
            await self._end(record)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _sweep_forever(self) -> None:
        while True:
            await self.clock.sleep(EXPIRY_INTERVAL_S)
            await self.sweep()

    async def sweep(self) -> int:
        """End every subscription past its termination time (a pull point with a pull in
        progress lives until that pull answers)."""
        now = self.clock.wall_ns()
        expired = [r for r in self._records.values() if r.termination_ns <= now and not r.pulling]
        for record in expired:
            log.info("event subscription %s expired", record.id[:8])
            await self._end(record)
        return len(expired)

    async def _end(self, record: _Record) -> None:
        self._records.pop(record.id, None)
        self.bus.unsubscribe(record.id)
        if record.pusher is not None:
            await record.pusher.stop()

    # -- addresses -------------------------------------------------------------------------
    def subscription_address(self, record: _Record) -> str:
        return record.base_url + catalog.PULL_POINT.path + record.id

    def producer_address(self, base_url: str) -> str:
        return base_url + catalog.EVENTS.path

    def _record_for(self, ctx: CallContext) -> _Record:
        sub_id = ctx.path[len(catalog.PULL_POINT.path) :]
        record = self._records.get(sub_id)
        now = self.clock.wall_ns()
        if record is not None and record.termination_ns <= now and not record.pulling:
            self._records.pop(record.id, None)
            self.bus.unsubscribe(record.id)
            if record.pusher is not None:
                asyncio.get_running_loop().create_task(record.pusher.stop())
            record = None
        if record is None:
            raise wsn_fault(
                "ResourceUnknownFault",
                "no such subscription (unsubscribed, expired or never created)",
                now,
                namespace=WSRF_R,
            )
        return record

    # -- capabilities ----------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        return {
            "WSSubscriptionPolicySupport": True,
            "WSPausableSubscriptionManagerInterfaceSupport": False,
            "MaxNotificationProducers": self.settings.max_push_subscriptions,
            "MaxPullPoints": self.settings.max_pull_points,
            "PersistentNotificationStorage": False,
            "MaxEventBrokers": 0,
            "MetadataOverMQTT": False,
        }

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.capabilities()}

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        """``tev:Capabilities`` as GetServices(IncludeCapability=true) embeds it."""
        return render_service_capabilities(self.bindings[catalog.EVENTS.key], self.capabilities())

    def legacy_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Events`` part (besides XAddr)."""
        return {
            "WSSubscriptionPolicySupport": True,
            "WSPullPointSupport": True,
            "WSPausableSubscriptionManagerInterfaceSupport": False,
        }

    # -- topic set -------------------------------------------------------------------------
    async def get_event_properties(self, ctx: CallContext, req: Any) -> etree._Element:
        response = etree.Element(f"{{{TEV}}}GetEventPropertiesResponse", nsmap={"tev": TEV})
        etree.SubElement(
            response, f"{{{TEV}}}TopicNamespaceLocation"
        ).text = TOPIC_NAMESPACE_LOCATION
        etree.SubElement(response, f"{{{WSNT}}}FixedTopicSet", nsmap={"wsnt": WSNT}).text = "true"
        response.append(topic_set(self.bus.catalog))
        for dialect in filters.TOPIC_DIALECTS:
            etree.SubElement(response, f"{{{WSNT}}}TopicExpressionDialect").text = dialect
        for dialect in filters.CONTENT_DIALECTS:
            etree.SubElement(response, f"{{{TEV}}}MessageContentFilterDialect").text = dialect
        etree.SubElement(response, f"{{{TEV}}}MessageContentSchemaLocation").text = SCHEMA_LOCATION
        return response

    # -- subscribing -----------------------------------------------------------------------
    def _filter(self, request: etree._Element | None, now_ns: int) -> EventFilter:
        element = child_named(request, "Filter")
        if element is None:
            return EventFilter()
        try:
            return filters.parse_filter_element(element, self.bus.catalog)
        except FilterError as exc:
            if exc.unknown is not None:
                raise self._invalid_filter(str(exc), exc.unknown, now_ns) from None
            if exc.fault == "InvalidFilterFault" and exc.component == "MessageContent":
                raise self._invalid_filter(str(exc), None, now_ns) from None
            raise wsn_fault(exc.fault, str(exc), now_ns) from None

    @staticmethod
    def _invalid_filter(reason: str, unknown: etree._Element | None, now_ns: int) -> SoapFault:
        if unknown is None:
            return wsn_fault(
                "InvalidFilterFault",
                reason,
                now_ns,
                extra=(("UnknownFilter", "wsnt:MessageContent"),),
            )
        qname = etree.QName(unknown)
        return wsn_fault(
            "InvalidFilterFault",
            reason,
            now_ns,
            extra=(("UnknownFilter", f"uf:{qname.localname}"),),
            nsmap={"uf": qname.namespace or ""} if qname.namespace else None,
        )

    def _initial_termination(self, request: etree._Element | None, now_ns: int) -> int:
        text = _text(request, "InitialTerminationTime")
        if not text:
            return now_ns + self.settings.default_termination_s * 10**9
        return self._termination(text, now_ns, "UnacceptableInitialTerminationTimeFault")

    def _termination(self, text: str, now_ns: int, fault: str) -> int:
        try:
            when = parse_termination(text, now_ns)
        except ValueError as exc:
            raise wsn_fault(
                fault,
                f"termination time: {exc}",
                now_ns,
                extra=(("MinimumTime", format_utc(now_ns)),),
            ) from None
        latest = now_ns + self.settings.max_termination_s * 10**9
        if when <= now_ns:
            raise wsn_fault(
                fault,
                "termination time is not in the future",
                now_ns,
                extra=(("MinimumTime", format_utc(now_ns)), ("MaximumTime", format_utc(latest))),
            )
        return min(when, latest)

    def _policy(self, request: etree._Element | None, now_ns: int, *, push: bool) -> bool:
        """The subscription policy: True for tev:ChangedOnly; others are refused."""
        policy = child_named(request, "SubscriptionPolicy")
        changed_only = False
        for child in policy if policy is not None else ():
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if qname.namespace == TEV and qname.localname == "ChangedOnly":
                changed_only = True
                continue
            name = (
                "UnsupportedPolicyRequestFault"
                if qname.namespace == WSNT
                else ("UnrecognizedPolicyRequestFault")
            )
            element = "UnsupportedPolicy" if qname.namespace == WSNT else "UnrecognizedPolicy"
            raise wsn_fault(
                name,
                f"subscription policy {qname.localname} is not supported",
                now_ns,
                extra=((element, f"up:{qname.localname}"),),
                nsmap={"up": qname.namespace or ""},
            )
        return changed_only

    def _count(self, push: bool) -> int:
        return sum(1 for r in self._records.values() if r.push == push)

    def _subscribe_response(self, tag: str, record: _Record, now_ns: int) -> etree._Element:
        namespace = TEV if tag.startswith("CreatePullPoint") else WSNT
        response = etree.Element(
            f"{{{namespace}}}{tag}", nsmap={"tev": TEV, "wsnt": WSNT, "wsa": WSA}
        )
        reference = etree.SubElement(response, f"{{{namespace}}}SubscriptionReference")
        etree.SubElement(reference, f"{{{WSA}}}Address").text = self.subscription_address(record)
        etree.SubElement(response, f"{{{WSNT}}}CurrentTime").text = format_utc(now_ns)
        etree.SubElement(response, f"{{{WSNT}}}TerminationTime").text = format_utc(
            record.termination_ns
        )
        return response

    async def create_pull_point_subscription(self, ctx: CallContext, req: Any) -> etree._Element:
        now = self.clock.wall_ns()
        request = ctx.payload
        event_filter = self._filter(request, now)
        termination = self._initial_termination(request, now)
        changed_only = self._policy(request, now, push=False)
        if self._count(push=False) >= self.settings.max_pull_points:
            await self.sweep()
            if self._count(push=False) >= self.settings.max_pull_points:
                raise wsn_fault(
                    "SubscribeCreationFailedFault",
                    f"all {self.settings.max_pull_points} pull points are in use",
                    now,
                )
        subscription = self.bus.subscribe(event_filter, changed_only=changed_only)
        record = _Record(subscription, False, termination, ctx.base_url)
        self._records[record.id] = record
        return self._subscribe_response("CreatePullPointSubscriptionResponse", record, now)

    async def subscribe(self, ctx: CallContext, req: Any) -> etree._Element:
        now = self.clock.wall_ns()
        request = ctx.payload
        consumer = _text(child_named(request, "ConsumerReference"), "Address") or ""
        if not consumer.startswith(("http://", "https://")) or len(consumer) > 2048:
            raise wsn_fault(
                "SubscribeCreationFailedFault",
                "ConsumerReference must be an http(s) address",
                now,
            )
        if self.settings.max_push_subscriptions == 0:
            raise NotSupported("Basic Notification is turned off", "NotImplemented")
        event_filter = self._filter(request, now)
        termination = self._initial_termination(request, now)
        changed_only = self._policy(request, now, push=True)
        if self._count(push=True) >= self.settings.max_push_subscriptions:
            await self.sweep()
            if self._count(push=True) >= self.settings.max_push_subscriptions:
                raise wsn_fault(
                    "SubscribeCreationFailedFault",
                    f"all {self.settings.max_push_subscriptions} push subscriptions are in use",
                    now,
                )
        subscription = self.bus.subscribe(event_filter, changed_only=changed_only)
        record = _Record(subscription, True, termination, ctx.base_url)
        self._records[record.id] = record
        if self._session is None:
            self._session = aiohttp.ClientSession()
        record.pusher = Pusher(
            subscription,
            consumer,
            self._session,
            self.clock,
            subscription_address=self.subscription_address(record),
            producer_address=self.producer_address(ctx.base_url),
        )
        record.pusher.start()
        return self._subscribe_response("SubscribeResponse", record, now)

    async def get_current_message(self, ctx: CallContext, req: Any) -> None:
        # Core §9.3.2: a device may answer every GetCurrentMessage with this fault.
        raise wsn_fault(
            "NoCurrentMessageOnTopicFault", "no current message is kept", self.clock.wall_ns()
        )

    # -- a subscription's own address ------------------------------------------------------
    async def renew(self, ctx: CallContext, req: Any) -> etree._Element:
        record = self._record_for(ctx)
        now = self.clock.wall_ns()
        text = _text(ctx.payload, "TerminationTime") or ""
        record.termination_ns = self._termination(text, now, "UnacceptableTerminationTimeFault")
        response = etree.Element(f"{{{WSNT}}}RenewResponse", nsmap={"wsnt": WSNT})
        etree.SubElement(response, f"{{{WSNT}}}TerminationTime").text = format_utc(
            record.termination_ns
        )
        etree.SubElement(response, f"{{{WSNT}}}CurrentTime").text = format_utc(now)
        return response

    async def unsubscribe(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        record = self._record_for(ctx)
        await self._end(record)
        return {}

    async def set_synchronization_point(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        record = self._record_for(ctx)
        self.bus.synchronize(record.subscription)
        return {}

    async def seek(self, ctx: CallContext, req: Any) -> None:
        self._record_for(ctx)
        # Core §9.1.4: Seek belongs to persistent notification storage, which the
        # capabilities say this device has not.
        raise NotSupported("no persistent notification storage to seek in", "NotImplemented")

    async def pull_messages(self, ctx: CallContext, req: Any) -> RawBody:
        record = self._record_for(ctx)
        now = self.clock.wall_ns()
        if record.push:
            raise NotSupported("this is a push subscription: messages go to its consumer")
        text = _text(ctx.payload, "Timeout") or ""
        try:
            timeout_ns = parse_duration_ns(text)
        except ValueError as exc:
            raise InvalidArgument(f"Timeout: {exc}") from None
        max_timeout_ns = self.settings.max_pull_timeout_s * 10**9
        if timeout_ns > max_timeout_ns:
            raise self._pull_limits_fault(max_timeout_ns)
        limit = int(getattr(req, "MessageLimit", 1) or 1)
        limit = min(max(limit, 1), MAX_MESSAGE_LIMIT)
        if record.pulling:
            # Core §9.1.2: one blocking PullMessages per subscription.
            raise wsn_fault(
                "UnableToGetMessagesFault",
                "another PullMessages is waiting on this pull point",
                now,
            )
        subscription = record.subscription
        record.pulling = True
        try:
            if not subscription.queue:
                await subscription.wait(timeout_ns / 1e9)
            messages = subscription.take(limit)
        finally:
            record.pulling = False
        now = self.clock.wall_ns()
        # Core §9.1: after an answer the pull point lives at least the Timeout asked.
        record.termination_ns = max(record.termination_ns, now + timeout_ns)
        # 64 pull points wake on one event: each answer is the shared, pre-serialised
        # notifications between a few bytes of its own (notification.py).
        return RawBody(
            pull_messages_response(
                now,
                record.termination_ns,
                messages,
                subscription_address=self.subscription_address(record),
                producer_address=self.producer_address(ctx.base_url),
            )
        )

    @staticmethod
    def _pull_limits_fault(max_timeout_ns: int) -> SoapFault:
        detail = etree.Element(f"{{{TEV}}}PullMessagesFaultResponse", nsmap={"tev": TEV})
        etree.SubElement(detail, f"{{{TEV}}}MaxTimeout").text = format_duration(max_timeout_ns)
        etree.SubElement(detail, f"{{{TEV}}}MaxMessageLimit").text = str(MAX_MESSAGE_LIMIT)
        return SoapFault(
            "Receiver", f"Timeout longer than {format_duration(max_timeout_ns)}", detail=detail
        )

    # -- dispatch tables -------------------------------------------------------------------
    def handlers(self) -> dict[str, dict[str, Handler]]:
        """Handlers per binding (ServiceDef key)."""
        return {
            catalog.EVENTS.key: {
                "GetServiceCapabilities": self.get_service_capabilities,
                "GetEventProperties": self.get_event_properties,
                "CreatePullPointSubscription": self.create_pull_point_subscription,
            },
            catalog.NOTIFICATION_PRODUCER.key: {
                "Subscribe": self.subscribe,
                "GetCurrentMessage": self.get_current_message,
            },
            catalog.SUBSCRIPTION_MANAGER.key: {
                "Renew": self.renew,
                "Unsubscribe": self.unsubscribe,
            },
            catalog.PULL_POINT.key: {
                "PullMessages": self.pull_messages,
                "SetSynchronizationPoint": self.set_synchronization_point,
                "Seek": self.seek,
                "Unsubscribe": self.unsubscribe,
            },
        }

    @staticmethod
    def fast_decode() -> dict[str, tuple[str, ...]]:
        """Operations per binding whose plain requests skip zeep's parser (the handlers
        read them by attribute only): the pull that every pull point repeats."""
        return {catalog.PULL_POINT.key: ("PullMessages",)}

    def stats(self) -> dict[str, int]:
        return {
            **self.bus.stats(),
            "pull_points": self._count(push=False),
            "push_subscriptions": self._count(push=True),
        }
