"""The hub never blocks the publisher: slow viewers are dropped, the recorder loses the
oldest units with a count, late joiners start at the cached keyframe."""

from __future__ import annotations

import asyncio

from onvif_nvr.media.units import AccessUnit, TimedUnit
from onvif_nvr.recording.hub import GOP_CACHE_UNITS, Hub


def unit(i: int, key: bool = False, track: int = 0) -> TimedUnit:
    return TimedUnit(AccessUnit("H264", (bytes([i % 256]),), i * 3000, key), track, i * 3000, i)


async def test_fan_out_in_order():
    hub = Hub("cam")
    a, b = hub.subscribe("a"), hub.subscribe("b")
    for i in range(10):
        hub.publish(unit(i, key=i == 0))
    hub.end()
    got_a = [u.dts_90k async for u in a]
    got_b = [u.dts_90k async for u in b]
    assert got_a == got_b == [i * 3000 for i in range(10)]
    assert a.closed_reason == "stream ended"


async def test_slow_viewer_is_dropped_recorder_counts_losses():
    hub = Hub("cam")
    viewer = hub.subscribe("viewer", maxsize=5)
    recorder = hub.subscribe("recorder", maxsize=5, lossy=True)
    for i in range(12):
        hub.publish(unit(i))
    assert viewer.closed_reason == "slow consumer"
    assert hub.subscriber_count == 1
    assert recorder.lost == 7
    assert [(await recorder.get()).dts_90k for _ in range(5)] == [i * 3000 for i in range(7, 12)]
    # The viewer drains what it had, then ends.
    drained = [u async for u in viewer]
    assert len(drained) == 5


async def test_late_joiner_starts_at_the_last_keyframe():
    hub = Hub("cam")
    for i in range(20):
        hub.publish(unit(i, key=i % 8 == 0))
    hub.publish(unit(100, track=1))  # audio joins the cached GOP too
    late = hub.subscribe("late")
    first = await late.get()
    assert first.unit.keyframe and first.dts_90k == 16 * 3000
    rest = [(await late.get()).dts_90k for _ in range(4)]
    assert rest == [17 * 3000, 18 * 3000, 19 * 3000, 100 * 3000]
    fresh = hub.subscribe("fresh", from_keyframe=False)
    hub.publish(unit(21))
    assert (await fresh.get()).dts_90k == 21 * 3000


async def test_a_gop_longer_than_the_cache_is_not_cached_so_joiners_wait_for_a_keyframe():
    hub = Hub("cam")
    hub.publish(unit(0, key=True))
    for i in range(1, GOP_CACHE_UNITS + 5):
        hub.publish(unit(i))
    # Starting at unit 5 of the GOP would hand the joiner pictures it cannot decode.
    late = hub.subscribe("late", lossy=True, maxsize=10_000)
    next_key = GOP_CACHE_UNITS + 5
    hub.publish(unit(next_key, key=True))
    first = await late.get()
    assert first.unit.keyframe and first.dts_90k == next_key * 3000
    # The next GOP (short) is cached again.
    hub.publish(unit(next_key + 1))
    again = hub.subscribe("again")
    assert [(await again.get()).dts_90k for _ in range(2)] == [
        next_key * 3000,
        (next_key + 1) * 3000,
    ]


async def test_waiting_consumer_wakes_up():
    hub = Hub("cam")
    sub = hub.subscribe("s")
    task = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    assert not task.done()
    hub.publish(unit(1))
    assert (await task).dts_90k == 3000
    sub.close()
    assert await sub.get() is None


async def test_batches_take_what_is_queued_and_wait_for_more():
    hub = Hub("cam")
    sub = hub.subscribe("writer", maxsize=100, lossy=True)
    hub.publish_many([unit(i, key=i == 0) for i in range(5)])
    assert [u.dts_90k for u in await sub.get_batch(limit=3)] == [0, 3000, 6000]
    assert [u.dts_90k for u in await sub.get_batch()] == [9000, 12000]
    waiting = asyncio.ensure_future(sub.get_batch())
    await asyncio.sleep(0)
    assert not waiting.done()
    hub.publish_many([unit(5), unit(6)])
    assert [u.dts_90k for u in await waiting] == [15000, 18000]
    assert sub.delivered == 7
    hub.publish(unit(7))
    hub.end()
    assert [[u.dts_90k for u in b] async for b in sub.batches()] == [[21000]]
    assert await sub.get_batch() == []


async def test_subscriber_changes_are_reported():
    hub = Hub("cam")
    counts: list[int] = []
    hub.on_subscribers = counts.append
    recorder = hub.subscribe("recorder", lossy=True)
    viewer = hub.subscribe("viewer", maxsize=1)
    hub.publish(unit(0, key=True))
    hub.publish(unit(1))  # the viewer overflows and is dropped
    recorder.close()
    assert counts == [1, 2, 1, 0]
    assert viewer.closed_reason == "slow consumer"
