"""Basic Notification delivery: ``wsnt:Notify`` POSTed to a subscriber's consumer address.

One task per push subscription takes a batch from the head of the subscription's queue,
posts it, and drops it from the queue only once the consumer answered 2xx. A consumer that
fails is retried with capped exponential backoff while its queue (bounded, oldest dropped)
keeps filling; it is dropped altogether when its subscription terminates. Nothing here
ever makes the publisher wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import aiohttp
from lxml import etree

from onvif_nvr.clock import Clock
from onvif_nvr.events.bus import Subscription
from onvif_nvr.events.message import Message
from onvif_nvr.events.notification import WSA, WSNT, notify_body
from onvif_nvr.soap import envelope as env

log = logging.getLogger(__name__)

NOTIFY_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"
BATCH = 100
POST_TIMEOUT_S = 5.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0
#: How long an idle pusher sleeps before looking again (it is woken by new messages).
IDLE_WAIT_S = 30.0


def _notify_envelope_parts() -> list[bytes]:
    """The envelope of a Notify cut at wsa:MessageID's text, wsa:To's text and the Body's
    content: the bytes lxml writes for it (SOAP 1.2, wsa headers)."""
    envelope, body = env.new_envelope(env.SOAP12, {"wsnt": WSNT, "wsa": WSA})
    header = etree.Element(f"{{{env.SOAP12}}}Header")
    envelope.insert(0, header)
    etree.SubElement(header, f"{{{WSA}}}Action").text = NOTIFY_ACTION
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = "@@id@@"
    etree.SubElement(header, f"{{{WSA}}}To").text = "@@to@@"
    body.text = "@@body@@"
    head, rest = env.serialize(envelope).split(b"@@id@@")
    before_to, rest = rest.split(b"@@to@@")
    after_to, tail = rest.split(b"@@body@@")
    return [head, before_to, after_to, tail]


_HEAD, _BEFORE_TO, _AFTER_TO, _TAIL = _notify_envelope_parts()


def notify_envelope(
    messages: list[Message], consumer: str, subscription_address: str, producer_address: str
) -> bytes:
    """A SOAP 1.2 ``wsnt:Notify`` with WS-Addressing headers (Core §9: WS-Addressing is
    mandatory for the event service in both directions), from the messages' shared,
    pre-serialised notifications."""
    return b"".join(
        (
            _HEAD,
            f"urn:uuid:{uuid.uuid4()}".encode(),
            _BEFORE_TO,
            env.escape_text(consumer).encode(),
            _AFTER_TO,
            notify_body(
                messages,
                subscription_address=subscription_address,
                producer_address=producer_address,
            ),
            _TAIL,
        )
    )


class Pusher:
    def __init__(
        self,
        subscription: Subscription,
        consumer: str,
        session: Any,
        clock: Clock,
        *,
        subscription_address: str,
        producer_address: str,
    ) -> None:
        self.subscription = subscription
        self.consumer = consumer
        self.session = session
        self.clock = clock
        self.subscription_address = subscription_address
        self.producer_address = producer_address
        self.sent = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures_in_a_row = 0
        subscription = self.subscription
        while not subscription.closed:
            if not await subscription.wait(IDLE_WAIT_S):
                continue
            batch = subscription.peek(BATCH)
            data = notify_envelope(
                [m for _, m in batch],
                self.consumer,
                self.subscription_address,
                self.producer_address,
            )
            if await self._post(data):
                subscription.ack(batch[-1][0])
                self.sent += len(batch)
                failures_in_a_row = 0
                continue
            self.failures += 1
            failures_in_a_row += 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures_in_a_row - 1))
            await self.clock.sleep(delay)

    async def _post(self, data: bytes) -> bool:
        try:
            async with self.session.post(
                self.consumer,
                data=data,
                headers={
                    "Content-Type": f'application/soap+xml; charset=utf-8; action="{NOTIFY_ACTION}"'
                },
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
                allow_redirects=False,
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return True
                log.info("Notify to %s answered HTTP %d", self.consumer, response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("Notify to %s failed: %s", self.consumer, exc or type(exc).__name__)
        return False
