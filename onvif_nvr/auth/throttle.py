"""Slow down password guessing: per remote address, after ``max_failures`` failed logins
within ``window_s``, refuse further attempts for a lock-out that doubles up to a cap."""

from __future__ import annotations

import collections
import dataclasses

from onvif_nvr.clock import Clock


@dataclasses.dataclass
class _Entry:
    failures: collections.deque[int]
    locked_until_ns: int = 0
    lockouts: int = 0


class LoginThrottle:
    def __init__(
        self,
        clock: Clock,
        *,
        max_failures: int = 5,
        window_s: int = 60,
        lockout_s: int = 30,
        lockout_max_s: int = 900,
        max_addresses: int = 10_000,
    ) -> None:
        self._clock = clock
        self._max = max_failures
        self._window_ns = window_s * 10**9
        self._lockout_ns = lockout_s * 10**9
        self._lockout_max_ns = lockout_max_s * 10**9
        self._max_addresses = max_addresses
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def retry_after_s(self, address: str) -> int:
        """Seconds until ``address`` may try again; 0 when it may try now."""
        entry = self._entries.get(address)
        if entry is None:
            return 0
        remaining = entry.locked_until_ns - self._clock.monotonic_ns()
        return max(0, -(-remaining // 10**9))

    def failure(self, address: str) -> None:
        now = self._clock.monotonic_ns()
        entry = self._entries.get(address)
        if entry is None:
            entry = _Entry(collections.deque())
            self._entries[address] = entry
            if len(self._entries) > self._max_addresses:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(address)
        entry.failures.append(now)
        while entry.failures and entry.failures[0] < now - self._window_ns:
            entry.failures.popleft()
        if len(entry.failures) >= self._max:
            duration = min(self._lockout_ns * (2**entry.lockouts), self._lockout_max_ns)
            entry.locked_until_ns = now + duration
            entry.lockouts += 1
            entry.failures.clear()

    def success(self, address: str) -> None:
        self._entries.pop(address, None)
