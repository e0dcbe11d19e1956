"""Event delivery under load: 64 pull-point subscribers (long-poll PullMessages, as
Core §9.1 and onvif-zeep-async/Home Assistant do) and 8 Basic Notification consumers
while the box publishes at a steady rate; then the same 64 pull points polled the way
naive clients do (PullMessages with a zero Timeout once a second). Prints delivery latency
(UtcTime of the event to its arrival) p50/p99 and the server's CPU.

    python -m bench.events --seconds 20 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
from aiohttp import web
from lxml import etree

from bench.common import RESULTS, free_port, machine_info, proc_cpu_s
from tests.eventutil import TT, EventsClient
from tests.soaputil import envelope, username_token

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def latencies_ms(body: bytes, now: float) -> list[float]:
    root = etree.fromstring(body, PARSER)
    out = []
    for message in root.iter(f"{{{TT}}}Message"):
        utc = datetime.datetime.fromisoformat(message.get("UtcTime", "").replace("Z", "+00:00"))
        out.append((now - utc.timestamp()) * 1000)
    return out


async def pull_loop(session, address, stop_at, results, wait: str, pause_s: float) -> None:
    body = EventsClient.pull_body(wait, 1000)
    while time.time() < stop_at:
        data = envelope(body, username_token("admin", "benchpw"))
        async with session.post(
            address, data=data, headers={"Content-Type": "application/soap+xml"}
        ) as response:
            payload = await response.read()
        results += latencies_ms(payload, time.time())
        if pause_s:
            await asyncio.sleep(pause_s)


async def phase(port: int, seconds: float, pulls: int, pushes: int, long_poll: bool, pid: int):
    client = EventsClient(f"http://127.0.0.1:{port}", "admin", "benchpw")
    pull_results: list[float] = []
    push_results: list[float] = []

    async def consumer(request: web.Request) -> web.Response:
        push_results.extend(latencies_ms(await request.read(), time.time()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/notify", consumer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    consumer_url = f"http://127.0.0.1:{runner.addresses[0][1]}/notify"
    topics = (
        '<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/'
        'ConcreteSet" xmlns:tns1="http://www.onvif.org/ver10/topics">tns1:RecordingConfig//.'
        "</wsnt:TopicExpression>"
    )
    addresses = [await asyncio.to_thread(client.create, topics, "PT300S") for _ in range(pulls)]
    subs = [
        await asyncio.to_thread(client.subscribe, consumer_url, topics, "PT300S")
        for _ in range(pushes)
    ]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu0, t0 = proc_cpu_s(pid), time.monotonic()
        stop_at = time.time() + seconds
        await asyncio.gather(
            *(
                pull_loop(
                    session,
                    a,
                    stop_at,
                    pull_results,
                    "PT5S" if long_poll else "PT0S",
                    0.0 if long_poll else 1.0,
                )
                for a in addresses
            )
        )
        cpu = (proc_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
    for address in addresses + subs:
        await asyncio.to_thread(client.unsubscribe_call, address)
    await runner.cleanup()
    return pull_results, push_results, cpu


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


async def run(args: argparse.Namespace) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        box = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "bench.events_box", tmp, str(port), str(args.rate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert box.stdout is not None
            line = await asyncio.to_thread(box.stdout.readline)
            assert line.startswith("ready"), line
            pulls, pushes, cpu = await phase(port, args.seconds, 64, 8, True, box.pid)
            naive, _, naive_cpu = await phase(port, args.seconds, 64, 0, False, box.pid)
        finally:
            box.terminate()
            await asyncio.to_thread(box.wait, 10)
    return {
        "params": {"seconds": args.seconds, "rate_per_s": args.rate, "pull": 64, "push": 8},
        "long_poll": {**summary(pulls), "server_cpu": round(cpu, 3)},
        "push": summary(pushes),
        "naive_1s_poll": {**summary(naive), "server_cpu": round(naive_cpu, 3)},
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20, help="events published per second")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lp, push, naive = result["long_poll"], result["push"], result["naive_1s_poll"]
    long_ratio = naive.get("p50_ms", 0) / lp["p50_ms"] if lp.get("p50_ms") else None
    result["ratio_naive_over_long_poll_p50"] = round(long_ratio, 1) if long_ratio else None
    print(f"{'pattern':<32}{'msgs':>9}{'p50 ms':>10}{'p99 ms':>10}{'server CPU':>12}")
    print(
        f"{'64 pull points, long-poll':<32}{lp['count']:>9}{lp['p50_ms']:>10}{lp['p99_ms']:>10}{lp['server_cpu']:>12.1%}"
    )
    print(
        f"{'8 push (Notify) consumers':<32}{push['count']:>9}{push.get('p50_ms', '-'):>10}{push.get('p99_ms', '-'):>10}{'(same run)':>12}"
    )
    print(
        f"{'64 pull points, 1 s short poll':<32}{naive['count']:>9}{naive['p50_ms']:>10}{naive['p99_ms']:>10}{naive['server_cpu']:>12.1%}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "events.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
