"""One client process of ``bench.events``: a share of the pull-point and push subscribers,
so that the clients (SOAP envelopes, WS-UsernameToken digests, XML parsing) are spread
over several processes and cores and do not bound the latency measured.

    python -m bench.events_client PORT PULLS PUSHES SECONDS (long|short) START_AT

Creates its subscriptions, prints ``ready``, waits until the wall clock reaches START_AT
(every client process starts together), pulls (long-poll PT5S, or PT0S once a second) for
SECONDS, and prints one JSON line: the latencies (ms, UtcTime of each event to its arrival)
of what its pull points and its Notify consumer received.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time

import aiohttp
from aiohttp import web
from lxml import etree

from tests.eventutil import TT, EventsClient
from tests.soaputil import envelope, username_token

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
#: What the bench publishes (bench/events_box.py); the recorders' own events stay out.
TOPICS = (
    '<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/'
    'ConcreteSet" xmlns:tns1="http://www.onvif.org/ver10/topics">tns1:RecordingConfig//.'
    "</wsnt:TopicExpression>"
)
_UTC_TIME = b'UtcTime="'


def latencies_ms(body: bytes, now: float, since: float) -> list[float]:
    """Latency of every tt:Message in ``body`` published from ``since`` on (what queued
    before the common start is not a delivery latency). The UtcTime attributes are found
    by bytes (a full parse of every answer would make the client the slow side)."""
    out = []
    start = body.find(_UTC_TIME)
    while start >= 0:
        end = body.index(b'"', start + len(_UTC_TIME))
        text = body[start + len(_UTC_TIME) : end].decode().replace("Z", "+00:00")
        utc = datetime.datetime.fromisoformat(text).timestamp()
        if utc >= since:
            out.append((now - utc) * 1000)
        start = body.find(_UTC_TIME, end)
    return out


def check_parse(body: bytes) -> int:
    """Messages in an answer, by a real parse (done once per client, as a check)."""
    return sum(1 for _ in etree.fromstring(body, PARSER).iter(f"{{{TT}}}Message"))


async def pull_loop(
    session: aiohttp.ClientSession,
    address: str,
    start_at: float,
    stop_at: float,
    results: list[float],
    long_poll: bool,
) -> None:
    body = EventsClient.pull_body("PT5S" if long_poll else "PT0S", 1000)
    checked = False
    while time.time() < stop_at:
        data = envelope(body, username_token("admin", "benchpw"))
        async with session.post(
            address, data=data, headers={"Content-Type": "application/soap+xml"}
        ) as response:
            payload = await response.read()
        got = latencies_ms(payload, time.time(), start_at)
        if got and not checked:
            assert check_parse(payload) >= len(got)
            checked = True
        results += got
        if not long_poll:
            await asyncio.sleep(1.0)


async def main(port: int, pulls: int, pushes: int, seconds: float, mode: str, start_at: float):
    client = EventsClient(f"http://127.0.0.1:{port}", "admin", "benchpw")
    pull_results: list[float] = []
    push_results: list[float] = []

    async def consumer(request: web.Request) -> web.Response:
        push_results.extend(latencies_ms(await request.read(), time.time(), start_at))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/notify", consumer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    consumer_url = f"http://127.0.0.1:{runner.addresses[0][1]}/notify"
    addresses = [await asyncio.to_thread(client.create, TOPICS, "PT300S") for _ in range(pulls)]
    subs = [
        await asyncio.to_thread(client.subscribe, consumer_url, TOPICS, "PT300S")
        for _ in range(pushes)
    ]
    print("ready", flush=True)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(
            *(
                pull_loop(session, a, start_at, start_at + seconds, pull_results, mode == "long")
                for a in addresses
            )
        )
    pushed = list(push_results)
    for address in addresses + subs:
        await asyncio.to_thread(client.unsubscribe_call, address)
    await runner.cleanup()
    print(json.dumps({"pull": pull_results, "push": pushed}), flush=True)


if __name__ == "__main__":
    port_arg, pulls_arg, pushes_arg, seconds_arg, mode_arg, start_arg = sys.argv[1:7]
    asyncio.run(
        main(
            int(port_arg),
            int(pulls_arg),
            int(pushes_arg),
            float(seconds_arg),
            mode_arg,
            float(start_arg),
        )
    )
