"""Search sessions (RecordingSearch "Search Session"): a Find operation opens one, its
results are taken in increments, and it ends in one of three ways — the answer that carries
the last result says ``Completed``, EndSearch, or KeepAliveTime passes without a request.

* Tokens are never given twice by one process (a per-start prefix and a counter), so a
  client holding an ended session's token gets ``ter:InvalidToken``, never another search.
* A result answer blocks until MaxResults results are there, or MinResults, or WaitTime has
  passed, or the search is over (completed or ended). Results come from the scan in order and
  each exactly once. WaitTime and MaxResults beyond what the box supports are adapted
  (``max_wait_s``, ``max_results``), never refused.
* At most ``max_sessions`` live sessions: one more is ``ter:ResourceProblem``. Expired
  sessions are swept every second and whenever a session is looked up; a session with an
  answer in progress never expires under it.

The scans themselves (recordings, events, PTZ, metadata) are in ``search`` and
``event_search``; this module only keeps their state between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Sequence
from typing import Any, Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.errors import ResourceProblem
from onvif_nvr.recording.search import RecordingSearch, invalid_token

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
#: KeepAliveTime is taken between these (the specification asks for at least 10 s).
MIN_KEEPALIVE_S = 1
RECORDINGS, EVENTS, PTZ, METADATA = "recordings", "events", "ptz", "metadata"
COMPLETED, SEARCHING = "Completed", "Searching"


class Scan(Protocol):
    """A search in progress: results in order, each once."""

    @property
    def done(self) -> bool: ...

    async def fetch(self, limit: int) -> list[Any]: ...

    def end_point(self, now_ns: int) -> int:
        """What EndSearch answers: the point reached, the end point once done."""
        ...


class RecordingScan:
    """FindRecordings: the RecordingInformation of each recording of the scope (already
    filtered), in token order, computed a page at a time."""

    def __init__(self, search: RecordingSearch, ids: Sequence[int]) -> None:
        self._search = search
        self._ids = list(ids)
        self.done = not self._ids

    async def fetch(self, limit: int) -> list[Any]:
        batch, self._ids = self._ids[:limit], self._ids[limit:]
        self.done = not self._ids
        return list(await self._search.informations(batch)) if batch else []

    def end_point(self, now_ns: int) -> int:
        # "Undefined and shall not be used" for FindRecordings: the time of the answer.
        return now_ns


class EmptyScan:
    """A search over data the box never records (PTZ positions, metadata): it completes at
    once with no result."""

    done = True

    def __init__(self, start_ns: int, end_ns: int | None) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns

    async def fetch(self, limit: int) -> list[Any]:
        return []

    def end_point(self, now_ns: int) -> int:
        return now_ns if self.end_ns is None else self.end_ns


@dataclasses.dataclass
class _Session:
    token: str
    kind: str
    scan: Scan
    keepalive_ns: int
    max_matches: int | None
    expires_ns: int
    delivered: int = 0
    busy: int = 0
    ended: bool = False
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class SearchSessions:
    """The live search sessions of the box (one per Find operation)."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_sessions: int = 16,
        max_keepalive_s: int = 300,
        max_wait_s: int = 10,
        max_results: int = 1000,
    ) -> None:
        self.clock = clock
        self.max_sessions = max_sessions
        self.max_keepalive_s = max_keepalive_s
        self.max_wait_s = max_wait_s
        self.max_results = max_results
        self._sessions: dict[str, _Session] = {}
        self._prefix = secrets.token_hex(3)
        self._count = 0
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for session in self._sessions.values():
            session.ended = True
        self._sessions.clear()

    async def _sweep_forever(self) -> None:
        while True:
            await self.clock.sleep(SWEEP_INTERVAL_S)
            self.sweep()

    def sweep(self) -> int:
        """End every session whose KeepAliveTime has passed since its last request."""
        now = self.clock.monotonic_ns()
        expired = [s for s in self._sessions.values() if s.expires_ns <= now and not s.busy]
        for session in expired:
            log.info("search session %s expired", session.token)
            self._drop(session)
        return len(expired)

    def __len__(self) -> int:
        return len(self._sessions)

    # -- the operations ----------------------------------------------------------------------
    def open(self, kind: str, scan: Scan, keepalive_ns: int, max_matches: int | None) -> str:
        """A new session (a Find operation); ``ter:ResourceProblem`` beyond the bound."""
        self.sweep()
        if len(self._sessions) >= self.max_sessions:
            raise ResourceProblem(
                f"{self.max_sessions} search sessions are open: end one (EndSearch) first"
            )
        self._count += 1
        token = f"SEARCH_{self._prefix}_{self._count}"
        keepalive_ns = min(max(keepalive_ns, MIN_KEEPALIVE_S * 10**9), self.max_keepalive_s * 10**9)
        self._sessions[token] = _Session(
            token,
            kind,
            scan,
            keepalive_ns,
            max_matches,
            self.clock.monotonic_ns() + keepalive_ns,
        )
        return token

    async def results(
        self,
        token: str,
        kind: str,
        *,
        min_results: int | None = None,
        max_results: int | None = None,
        wait_ns: int | None = None,
    ) -> tuple[str, list[Any]]:
        """The next results and the search state; the answer that says ``Completed`` ends
        the session."""
        session = self._get(token, kind)
        session.busy += 1
        try:
            async with session.lock:  # one answer at a time: never the same result twice
                if session.ended:
                    raise invalid_token(f"search {token!r} has ended")
                found = await self._collect(session, min_results, max_results, wait_ns)
        finally:
            session.busy -= 1
            session.expires_ns = self.clock.monotonic_ns() + session.keepalive_ns
        session.delivered += len(found)
        limit_reached = session.max_matches is not None and session.delivered >= session.max_matches
        if session.scan.done or limit_reached or session.ended:
            self._drop(session)
            return COMPLETED, found
        return SEARCHING, found

    async def _collect(
        self,
        session: _Session,
        min_results: int | None,
        max_results: int | None,
        wait_ns: int | None,
    ) -> list[Any]:
        cap = (
            self.max_results if max_results is None else max(1, min(max_results, self.max_results))
        )
        if session.max_matches is not None:
            cap = max(0, min(cap, session.max_matches - session.delivered))
        enough = cap if min_results is None else max(1, min(min_results, cap))
        max_wait_ns = self.max_wait_s * 10**9
        wait = max_wait_ns if wait_ns is None else min(max(wait_ns, 0), max_wait_ns)
        deadline = self.clock.monotonic_ns() + wait
        found: list[Any] = []
        while len(found) < cap and not session.scan.done and not session.ended:
            found += await session.scan.fetch(cap - len(found))
            if len(found) >= enough or self.clock.monotonic_ns() >= deadline:
                break
        return found

    def state(self, token: str) -> str:
        """GetSearchState: a live session is still searching (the answer that completes
        one ends it)."""
        session = self._get(token, None)
        session.expires_ns = self.clock.monotonic_ns() + session.keepalive_ns
        return SEARCHING

    def end(self, token: str) -> int:
        """EndSearch: end the session (a blocked answer returns) and say where it was."""
        session = self._get(token, None)
        self._drop(session)
        return session.scan.end_point(self.clock.wall_ns())

    # -- internals ---------------------------------------------------------------------------
    def _get(self, token: str, kind: str | None) -> _Session:
        session = self._sessions.get(token)
        if (
            session is not None
            and session.expires_ns <= self.clock.monotonic_ns()
            and not session.busy
        ):
            self._drop(session)
            session = None
        if session is None or (kind is not None and session.kind != kind):
            raise invalid_token(f"no search session {token!r} (ended, expired or never made)")
        return session

    def _drop(self, session: _Session) -> None:
        session.ended = True
        self._sessions.pop(session.token, None)
