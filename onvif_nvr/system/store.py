"""Persisted device settings as JSON values, cached in memory, written through the DB thread."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select

from onvif_nvr.clock import Clock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database


class SettingsStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._values: dict[str, Any] = {}
        self._listeners: list[Callable[[frozenset[str]], None]] = []

    def listen(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call ``callback(changed_keys)`` after every successful change."""
        self._listeners.append(callback)

    def _notify(self, keys: frozenset[str]) -> None:
        for callback in list(self._listeners):
            callback(keys)

    async def load(self) -> None:
        def read() -> dict[str, Any]:
            with self._db.session() as session:
                return {row.key: row.value for row in session.scalars(select(models.Setting))}

        self._values = await self._db.run(read)

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the stored value (callers may not mutate the cache)."""
        if key not in self._values:
            return copy.deepcopy(default)
        return copy.deepcopy(self._values[key])

    async def put(self, key: str, value: Any) -> None:
        await self.set_many({key: value})

    async def set_many(self, values: dict[str, Any]) -> None:
        now = self._clock.wall_ns()
        stored = copy.deepcopy(values)

        def write() -> None:
            with self._db.session() as session, session.begin():
                for key, value in stored.items():
                    row = session.get(models.Setting, key)
                    if row is None:
                        session.add(models.Setting(key=key, value=value, updated_wall_ns=now))
                    else:
                        row.value = value
                        row.updated_wall_ns = now

        await self._db.run(write)
        self._values.update(stored)
        self._notify(frozenset(stored))

    async def clear(self, keep: frozenset[str] = frozenset()) -> None:
        """Forget every setting except ``keep`` (factory default)."""

        def wipe() -> None:
            with self._db.session() as session, session.begin():
                session.execute(delete(models.Setting).where(models.Setting.key.not_in(list(keep))))

        await self._db.run(wipe)
        removed = frozenset(k for k in self._values if k not in keep)
        self._values = {k: v for k, v in self._values.items() if k in keep}
        self._notify(removed)
