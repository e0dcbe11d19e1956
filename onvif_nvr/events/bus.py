"""The event bus: publish messages, keep the state of every property, hand each message
to the subscriptions whose filter it passes.

Property semantics (Core §9.4.2): a property instance is its topic plus Source and Key
items. Publishing a property with no explicit operation yields ``Initialized`` the first
time, ``Changed`` when its Data differ from the stored state and nothing at all when they
do not (a recorder reporting "still failed" every few seconds is not an event); ``Deleted``
removes the instance. New subscriptions and SetSynchronizationPoint get the stored state
as ``Initialized`` messages.

Each subscription has a bounded queue: when a subscriber does not keep up, the oldest
messages go and are counted, so a client that never pulls costs at most ``limit``
messages of memory. Publishing never waits for a subscriber.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Callable, Iterable

from onvif_nvr.clock import Clock
from onvif_nvr.events.filters import EventFilter
from onvif_nvr.events.message import InstanceKey, Item, Message, PropertyOperation, SimpleItem
from onvif_nvr.events.topics import Topic, TopicCatalog

log = logging.getLogger(__name__)

DEFAULT_QUEUE_LIMIT = 1000


class Subscription:
    """One subscriber's filter and queue. ``seq`` numbers let a pusher send a batch and
    drop it from the queue only once it was delivered."""

    def __init__(
        self, sub_id: str, event_filter: EventFilter, limit: int, *, changed_only: bool = False
    ) -> None:
        if limit < 1:
            raise ValueError("a subscription queue holds at least one message")
        self.id = sub_id
        self.filter = event_filter
        self.limit = limit
        self.changed_only = changed_only
        self.queue: collections.deque[tuple[int, Message]] = collections.deque()
        #: Messages dropped because the queue was full (oldest first).
        self.dropped = 0
        self.delivered = 0
        self._seq = 0
        # Futures of the waiters (a pull, a pusher): woken directly, no Task per wait.
        self._waiters: list[asyncio.Future[None]] = []
        self.closed = False

    def close(self) -> None:
        """Ended: wake whoever waits on it."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def offer(self, message: Message) -> None:
        if len(self.queue) >= self.limit:
            self.queue.popleft()
            self.dropped += 1
        self._seq += 1
        self.queue.append((self._seq, message))
        if self._waiters:
            self._wake()

    def take(self, limit: int) -> list[Message]:
        out: list[Message] = []
        while self.queue and len(out) < limit:
            out.append(self.queue.popleft()[1])
        self.delivered += len(out)
        return out

    def peek(self, limit: int) -> list[tuple[int, Message]]:
        return [entry for entry, _ in zip(self.queue, range(limit), strict=False)]

    def ack(self, seq: int) -> None:
        """Drop the queued messages up to ``seq`` (delivered by a pusher)."""
        while self.queue and self.queue[0][0] <= seq:
            self.queue.popleft()
            self.delivered += 1

    async def wait(self, timeout_s: float) -> bool:
        """Until a message is queued or ``timeout_s`` passed; True if one is."""
        if self.queue or self.closed:
            return bool(self.queue)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:  # timed out or cancelled: not woken by offer()
                self._waiters.remove(waiter)
        return bool(self.queue)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EventBus:
    def __init__(
        self, catalog: TopicCatalog, clock: Clock, *, queue_limit: int = DEFAULT_QUEUE_LIMIT
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.queue_limit = queue_limit
        self._properties: dict[InstanceKey, Message] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._listeners: list[Callable[[Message], None]] = []
        self.published = 0

    # -- publishing ------------------------------------------------------------------------
    def publish(
        self,
        topic: Topic,
        *,
        source: Iterable[Item] = (),
        key: Iterable[Item] = (),
        data: Iterable[Item] = (),
        utc_ns: int | None = None,
        operation: PropertyOperation | None = None,
    ) -> Message | None:
        """Publish one event; returns the message sent, or None for an unchanged property.

        ``utc_ns`` is when it happened (default: now). Raise ValueError for a topic the
        catalogue does not describe, or items it does not list for that topic."""
        description = self.catalog.get(topic)
        if description is None:
            raise ValueError(f"topic {topic} is not in the topic catalogue")
        message = Message(
            topic,
            self.clock.wall_ns() if utc_ns is None else utc_ns,
            tuple(source),
            tuple(key),
            tuple(data),
        )
        for group, described in (
            (message.source, description.source),
            (message.key, description.key),
            (message.data, description.data),
        ):
            names = {d.name for d in described}
            for item in group:
                if item.name not in names:
                    raise ValueError(f"{topic} has no item {item.name!r} there")
        if not description.is_property:
            if operation is not None:
                raise ValueError(f"{topic} is not a property: no PropertyOperation")
            self._deliver(message)
            return message
        instance = message.instance
        current = self._properties.get(instance)
        if operation is PropertyOperation.DELETED:
            if current is None:
                return None
            del self._properties[instance]
        elif operation is None:
            if current is not None and current.data == message.data:
                return None
            operation = (
                PropertyOperation.INITIALIZED if current is None else PropertyOperation.CHANGED
            )
        message = message.as_operation(operation)
        if operation is not PropertyOperation.DELETED:
            self._properties[instance] = message
        self._deliver(message)
        return message

    def publish_simple(
        self,
        topic: Topic,
        source: dict[str, str],
        data: dict[str, str] | None = None,
        *,
        utc_ns: int | None = None,
    ) -> Message | None:
        """Shorthand for topics whose items are all SimpleItems."""
        return self.publish(
            topic,
            source=[SimpleItem(k, v) for k, v in source.items()],
            data=[SimpleItem(k, v) for k, v in (data or {}).items()],
            utc_ns=utc_ns,
        )

    def _deliver(self, message: Message) -> None:
        self.published += 1
        initial_or_deleted = message.operation in (
            PropertyOperation.INITIALIZED,
            PropertyOperation.DELETED,
        )
        for subscription in self._subscriptions.values():
            if initial_or_deleted and subscription.changed_only:
                continue
            if subscription.filter.matches(message):
                subscription.offer(message)
        for listener in self._listeners:
            listener(message)

    def listen(self, listener: Callable[[Message], None]) -> None:
        """Call ``listener`` with every message published (e.g. an event recorder)."""
        self._listeners.append(listener)

    # -- properties ------------------------------------------------------------------------
    def properties(self) -> list[Message]:
        """The current state of every property instance."""
        return list(self._properties.values())

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(
        self,
        event_filter: EventFilter,
        *,
        changed_only: bool = False,
        queue_limit: int | None = None,
    ) -> Subscription:
        """A new subscription, its queue primed with the current properties it matches."""
        subscription = Subscription(
            secrets.token_hex(16),
            event_filter,
            queue_limit or self.queue_limit,
            changed_only=changed_only,
        )
        self._subscriptions[subscription.id] = subscription
        if not changed_only:
            self.synchronize(subscription)
        return subscription

    def synchronize(self, subscription: Subscription) -> int:
        """SetSynchronizationPoint: queue every current property the filter matches as
        ``Initialized``; returns how many."""
        count = 0
        for message in self._properties.values():
            if subscription.filter.matches(message):
                subscription.offer(message.as_operation(PropertyOperation.INITIALIZED))
                count += 1
        return count

    def get(self, sub_id: str) -> Subscription | None:
        return self._subscriptions.get(sub_id)

    def unsubscribe(self, sub_id: str) -> Subscription | None:
        subscription = self._subscriptions.pop(sub_id, None)
        if subscription is not None:
            subscription.close()
        if subscription is not None and subscription.dropped:
            log.warning(
                "event subscription %s ended having dropped %d messages (queue of %d full)",
                sub_id[:8],
                subscription.dropped,
                subscription.limit,
            )
        return subscription

    def __len__(self) -> int:
        return len(self._subscriptions)

    def per_subscription(self) -> list[tuple[str, int, int, int]]:
        """(id, queued, delivered, dropped) of every subscription, for /metrics."""
        return [(s.id, len(s.queue), s.delivered, s.dropped) for s in self._subscriptions.values()]

    def stats(self) -> dict[str, int]:
        subs = self._subscriptions.values()
        return {
            "subscriptions": len(self._subscriptions),
            "published": self.published,
            "queued": sum(len(s.queue) for s in subs),
            "dropped": sum(s.dropped for s in subs),
            "properties": len(self._properties),
        }
