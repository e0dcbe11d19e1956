"""The box under test for bench/events.py: the real NvrApp plus a publisher task that
emits ``tns1:RecordingConfig/CreateRecording`` at a steady rate (in-process only: nothing
on the network can make it publish); with CAMERA_BASE and N, it also records N cameras
``CAMERA_BASE1`` .. ``CAMERA_BASEN`` (the cameras the bench serves).

    python -m bench.events_box DATA_DIR PORT RATE_PER_S [CAMERA_BASE N]

With ``BENCH_LOOP_PROBE=FILE`` in the environment it also times every callback the event
loop runs and how late a 5 ms timer fires (the loop lag a waiting answer sees), and
rewrites FILE every second with the figures of the last second (bench.events --probe).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
from pathlib import Path

from onvif_nvr.app import NvrApp
from onvif_nvr.config import load_settings
from onvif_nvr.events.message import SimpleItem
from onvif_nvr.events.topics import Topic

TOPIC = Topic.onvif("RecordingConfig/CreateRecording")
PROBE_TIMER_S = 0.005


class LoopProbe:
    """Durations of the loop's callbacks (by the code they run) and the lag of a timer.
    Diagnostic only: it wraps ``asyncio.Handle._run`` for this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.durations: collections.Counter[str] = collections.Counter()
        self.longest: dict[str, float] = {}
        self.lags: list[float] = []
        self.callbacks: list[float] = []
        self.windows: list[dict[str, object]] = []

    def install(self) -> None:
        original = asyncio.events.Handle._run
        probe = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            start = time.perf_counter()
            original(handle)
            spent = time.perf_counter() - start
            probe.callbacks.append(spent)
            if spent > 0.002:
                callback = getattr(handle, "_callback", None)
                owner = getattr(callback, "__self__", None)
                coro = getattr(owner, "get_coro", lambda: None)()
                name = getattr(coro, "__qualname__", None) or getattr(
                    callback, "__qualname__", repr(callback)
                )
                probe.durations[name] += 1
                probe.longest[name] = max(probe.longest.get(name, 0.0), spent)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        window_end = loop.time() + 1.0
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_TIMER_S)
            self.lags.append(loop.time() - before - PROBE_TIMER_S)
            if loop.time() >= window_end:
                window_end += 1.0
                self.flush()

    def flush(self) -> None:
        def ms(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2)

        if self.lags and self.callbacks:
            self.windows.append(
                {
                    "lag_p50_ms": ms(self.lags, 0.5),
                    "lag_p99_ms": ms(self.lags, 0.99),
                    "lag_max_ms": ms(self.lags, 1.0),
                    "callbacks": len(self.callbacks),
                    "callback_p99_ms": ms(self.callbacks, 0.99),
                    "callback_max_ms": ms(self.callbacks, 1.0),
                }
            )
        self.lags, self.callbacks = [], []
        slow = {
            name: {"over_2ms": n, "longest_ms": round(self.longest[name] * 1000, 2)}
            for name, n in self.durations.most_common(15)
        }
        self.path.write_text(json.dumps({"windows": self.windows, "slow": slow}, indent=1))


async def main(data_dir: Path, port: int, rate: float, base: str = "", cameras: int = 0) -> None:
    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "bind": "127.0.0.1",
            "http_port": port,
            "admin_password": "benchpw",
        },
        environ={
            "ONVIF_NVR_DISCOVERY_ENABLED": "false",
            "ONVIF_NVR_STORAGE_RECORD": "true" if cameras else "false",
            "ONVIF_NVR_EVENTS_MAX_PULL_POINTS": "256",
        },
    )
    probe_file = os.environ.get("BENCH_LOOP_PROBE")
    probe = LoopProbe(Path(probe_file)) if probe_file else None
    if probe is not None:
        probe.install()
    app = NvrApp(settings)
    await app.start()
    for i in range(1, cameras + 1):
        await app.camera_setup.add(f"bench-{i}", f"{base}{i}", origin="cli")
    if cameras:  # every recorder writing before the measurement starts
        assert app.recording is not None
        recorders = app.recording.recorders.values()
        while sum(r.state == "recording" for r in recorders) < cameras:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    if probe is not None:
        probe_task = asyncio.get_running_loop().create_task(probe.run())  # noqa: F841
    print(f"ready {app.bound_port}", flush=True)
    n = 0
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    try:
        while True:
            n += 1
            app.events.publish(TOPIC, source=[SimpleItem("RecordingToken", f"bench{n}")])
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    finally:
        await app.close()


if __name__ == "__main__":
    extra = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else ("", 0)
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), *extra))
