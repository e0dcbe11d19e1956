"""In-memory fan-out of one stream's access units to its consumers.

The ingest publishes; the segment writer, live viewers and snapshot makers subscribe.
Publishing never blocks and never waits for a consumer: each subscription has a bounded
queue, and a consumer that falls behind is dropped (viewers) or loses the oldest units with
a count (the recorder, which must keep going). A small cache of the current GOP lets a late
joiner start at the last keyframe instead of waiting for the next one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable

from onvif_nvr.media.units import TimedUnit

log = logging.getLogger(__name__)

#: Cap of the late-joiner cache (units of the current GOP). A GOP longer than this is not
#: cached at all (late joiners wait for the next keyframe): a cache that dropped its oldest
#: units would start them without the keyframe, on pictures they cannot decode.
GOP_CACHE_UNITS = 600
#: Length of one rate measurement window, in media time.
RATE_WINDOW_90K = 2 * 90_000
#: The peak bit rate is taken over this many windows.
PEAK_WINDOWS = 5


class RateMeter:
    """Frame rate, bit rate and keyframe interval of one track, measured from its units
    over windows of media time (what the Media service reports as the stream's encoder
    settings: the box does not encode, so it measures)."""

    __slots__ = (
        "_bytes",
        "_recent",
        "_since_key",
        "_start",
        "_units",
        "bitrate_bps",
        "gov_length",
        "peak_bitrate_bps",
        "rate",
        "total_bytes",
        "total_units",
    )

    def __init__(self) -> None:
        self._start: int | None = None
        self._units = 0
        self._bytes = 0
        self._since_key: int | None = None
        #: Units per second and bits per second of the last complete window (None before).
        self.rate: float | None = None
        self.bitrate_bps: int | None = None
        #: The highest window bit rate of the last few (what a bit-rate limit must allow).
        self.peak_bitrate_bps: int | None = None
        self._recent: collections.deque[int] = collections.deque(maxlen=PEAK_WINDOWS)
        #: Units from one keyframe to the next, as last seen.
        self.gov_length: int | None = None
        #: Everything this track delivered since the hub started (for /metrics).
        self.total_bytes = 0
        self.total_units = 0

    def add(self, unit: TimedUnit) -> None:
        dts = unit.dts_90k
        start = self._start
        if start is None or dts < start:
            self._start, self._units, self._bytes = dts, 0, 0
        elif dts - start >= RATE_WINDOW_90K:
            seconds = (dts - start) / 90_000
            self.rate = self._units / seconds
            self.bitrate_bps = int(self._bytes * 8 / seconds)
            self._recent.append(self.bitrate_bps)
            self.peak_bitrate_bps = max(self._recent)
            self._start, self._units, self._bytes = dts, 0, 0
        size = unit.unit.size
        self._units += 1
        self._bytes += size
        self.total_units += 1
        self.total_bytes += size
        if unit.unit.keyframe and unit.track == 0:
            if self._since_key:
                self.gov_length = self._since_key
            self._since_key = 0
        if self._since_key is not None:
            self._since_key += 1


class Subscription:
    """One consumer's view of a hub. Iterate it (``async for unit in sub``) or ``await get()``."""

    def __init__(self, hub: Hub, name: str, maxsize: int, lossy: bool) -> None:
        self.name = name
        self._hub = hub
        self._queue: collections.deque[TimedUnit] = collections.deque()
        self._maxsize = maxsize
        #: True: on overflow drop the oldest unit and count it (the recorder). False: on
        #: overflow the subscription ends (a slow viewer).
        self._lossy = lossy
        self._waiter: asyncio.Future[None] | None = None
        self.closed_reason: str | None = None
        self.lost = 0
        self.delivered = 0

    def _push(self, unit: TimedUnit) -> None:
        if self.closed_reason is not None:
            return
        if len(self._queue) >= self._maxsize:
            if not self._lossy:
                self._close("slow consumer")
                return
            self._queue.popleft()
            self.lost += 1
        self._queue.append(unit)
        self._wake()

    def _close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._hub._detach(self)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self._close("closed by consumer")

    async def get(self) -> TimedUnit | None:
        """The next unit, or None once the subscription has ended (and is drained)."""
        while not self._queue:
            if self.closed_reason is not None:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.delivered += 1
        return self._queue.popleft()

    async def get_batch(self, limit: int = 1024) -> list[TimedUnit]:
        """Every queued unit (at most ``limit``), waiting for one if none is queued; an
        empty list once the subscription has ended and is drained. A consumer that takes
        batches wakes once per batch the source delivered, not once per unit."""
        while not self._queue:
            if self.closed_reason is not None:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        queue = self._queue
        if len(queue) <= limit:
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(limit)]
        self.delivered += len(batch)
        return batch

    def batches(self, limit: int = 1024) -> AsyncIterator[list[TimedUnit]]:
        """``async for batch in sub.batches()``: :meth:`get_batch` until the end."""
        return self._iterate_batches(limit)

    async def _iterate_batches(self, limit: int) -> AsyncIterator[list[TimedUnit]]:
        while batch := await self.get_batch(limit):
            yield batch

    def __aiter__(self) -> AsyncIterator[TimedUnit]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TimedUnit]:
        while (unit := await self.get()) is not None:
            yield unit


class Hub:
    """The fan-out point of one stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscriptions: list[Subscription] = []
        self._gop: list[TimedUnit] = []
        self.published = 0
        self.ended = False
        #: Measured rates by track (0 = video, 1 = audio).
        self.meters: dict[int, RateMeter] = {}
        #: Called with the new count whenever a consumer subscribes or goes (the source
        #: reads with less latency while someone watches live).
        self.on_subscribers: Callable[[int], None] | None = None

    def publish(self, unit: TimedUnit) -> None:
        """Hand a unit to every consumer; never blocks."""
        self.published += 1
        meter = self.meters.get(unit.track)
        if meter is None:
            meter = self.meters[unit.track] = RateMeter()
        meter.add(unit)
        gop = self._gop
        if unit.track == 0 and unit.unit.keyframe:
            gop.clear()
            gop.append(unit)
        elif gop:
            if len(gop) < GOP_CACHE_UNITS:
                gop.append(unit)
            else:
                gop.clear()
        for subscription in list(self._subscriptions):
            subscription._push(unit)

    def publish_many(self, units: list[TimedUnit]) -> None:
        """:meth:`publish` each of ``units`` in order (one source read's worth)."""
        for unit in units:
            self.publish(unit)

    def subscribe(
        self, name: str, *, maxsize: int = 256, lossy: bool = False, from_keyframe: bool = True
    ) -> Subscription:
        """``from_keyframe``: start with the cached GOP (so decoding can begin at once)."""
        subscription = Subscription(self, name, maxsize, lossy)
        if from_keyframe:
            for unit in self._gop:
                subscription._push(unit)
        self._subscriptions.append(subscription)
        self._changed()
        return subscription

    def end(self, reason: str = "stream ended") -> None:
        """The source is gone for good (camera removed, shutdown): end every subscription."""
        self.ended = True
        for subscription in list(self._subscriptions):
            subscription._close(reason)

    def _detach(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._changed()
            if subscription.closed_reason == "slow consumer":
                log.info("%s: dropped slow consumer %s", self.name, subscription.name)

    def _changed(self) -> None:
        if self.on_subscribers is not None:
            self.on_subscribers(len(self._subscriptions))

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)
