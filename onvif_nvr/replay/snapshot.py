"""JPEG snapshots of live streams (Media GetSnapshotUri's target).

A snapshot is the stream's latest keyframe, decoded and encoded as JPEG in a worker thread.
Per stream the last JPEG is kept: it is answered again without looking at the stream for
``max_age_s`` (1 s), and after that for as long as the stream's newest keyframe is the one
it was made from (a camera with a 4 s GOP costs one decode per 4 s however often it is
polled). Concurrent requests for a stream that needs a new picture share one decode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from onvif_nvr.clock import Clock
from onvif_nvr.media.units import TimedUnit, VideoParameters
from onvif_nvr.replay.mjpeg import DEFAULT_QSCALE, snapshot_jpeg

log = logging.getLogger(__name__)

MAX_AGE_S = 1.0
#: Streams whose last picture is kept (more streams than that: the oldest are forgotten).
MAX_STREAMS = 1024

#: The stream's current video parameters and its latest keyframe, or None (no picture yet).
KeyframeSource = Callable[[], Awaitable[tuple[VideoParameters, TimedUnit] | None]]


class NoPicture(Exception):
    """The stream has no decodable picture yet (HTTP 503)."""


@dataclasses.dataclass
class _Picture:
    keyframe: TimedUnit
    jpeg: bytes
    checked_ns: int


class Snapshots:
    """The JPEG snapshot of each stream, made on demand and cached."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_age_s: float = MAX_AGE_S,
        qscale: int = DEFAULT_QSCALE,
        to_thread: Callable[..., Any] = asyncio.to_thread,
    ) -> None:
        self._clock = clock
        self._max_age_ns = int(max_age_s * 1e9)
        self._qscale = qscale
        self._to_thread = to_thread
        self._pictures: dict[str, _Picture] = {}
        self._making: dict[str, asyncio.Task[bytes]] = {}
        #: Keyframes decoded so far (a cached or shared answer does not count).
        self.decodes = 0

    async def jpeg(self, key: str, source: KeyframeSource) -> bytes:
        """The snapshot of stream ``key``; :class:`NoPicture` when it has none yet."""
        picture = self._pictures.get(key)
        if (
            picture is not None
            and self._clock.monotonic_ns() - picture.checked_ns < self._max_age_ns
        ):
            return picture.jpeg
        task = self._making.get(key)
        if task is None:
            task = asyncio.ensure_future(self._make(key, source))
            self._making[key] = task
            task.add_done_callback(lambda done: self._made(key, done))
        # Shielded: one caller going away does not cancel the others' decode.
        return await asyncio.shield(task)

    def _made(self, key: str, task: asyncio.Task[bytes]) -> None:
        if self._making.get(key) is task:
            del self._making[key]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have gone already

    async def _make(self, key: str, source: KeyframeSource) -> bytes:
        found = await source()
        if found is None:
            raise NoPicture("the stream has no picture yet")
        params, keyframe = found
        now_ns = self._clock.monotonic_ns()
        picture = self._pictures.get(key)
        if picture is not None and picture.keyframe is keyframe:
            picture.checked_ns = now_ns
            return picture.jpeg
        try:
            jpeg: bytes = await self._to_thread(snapshot_jpeg, params, keyframe.unit, self._qscale)
        except ValueError as exc:
            log.debug("snapshot of %s failed: %s", key, exc)
            raise NoPicture(str(exc)) from None
        self.decodes += 1
        self._pictures.pop(key, None)
        self._pictures[key] = _Picture(keyframe, jpeg, now_ns)
        while len(self._pictures) > MAX_STREAMS:
            del self._pictures[next(iter(self._pictures))]
        return jpeg

    def forget(self, key: str) -> None:
        """Drop the picture kept for ``key`` (the stream is gone)."""
        self._pictures.pop(key, None)
