"""The one place that reads the wall clock.

Everything that needs the time takes a :class:`Clock` in its constructor, so tests
can inject :class:`ManualClock` instead of patching ``time``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch (UTC)."""

    def monotonic_ns(self) -> int:
        """Nanoseconds on a clock that never goes backwards; unrelated to the wall."""

    async def sleep(self, seconds: float) -> None:
        """Wait, cooperatively."""


class SystemClock:
    """The host's clocks (the wall clock follows NTP through the OS)."""

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; for tests of time-dependent rules."""

    def __init__(self, wall_ns: int = 1_700_000_000 * 10**9, monotonic_ns: int = 10**12) -> None:
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns

    def wall_ns(self) -> int:
        return self._wall_ns

    def monotonic_ns(self) -> int:
        return self._monotonic_ns

    def advance(self, seconds: float) -> None:
        step = int(seconds * 1e9)
        self._wall_ns += step
        self._monotonic_ns += step

    def set_wall_ns(self, wall_ns: int) -> None:
        self._wall_ns = wall_ns

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)
