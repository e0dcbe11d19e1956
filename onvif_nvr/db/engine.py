"""Open the database, migrate it, and run synchronous SQLAlchemy work off the event loop.

All database work goes through :class:`Database.run`, one worker thread: SQLite allows
one writer at a time anyway, and one queue keeps write order obvious. Frequent small writes
whose commit may lag a little (the segment index's fragment rows) are batched with
:meth:`Database.defer` instead: one transaction for every stream's rows, applied before any
later job, so no job ever sees the database without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from onvif_nvr.db.models import Base

T = TypeVar("T")
log = logging.getLogger(__name__)

#: A deferred write waits at most this long for company before it is applied.
DEFER_S = 0.5
#: A batch of deferred writes that failed this many times is dropped (and logged).
DEFER_ATTEMPTS = 3

BatchFn = Callable[[list[Any]], None]

#: The newest migration in ``migrations/versions``; a test checks it against Alembic's head.
#: Knowing it lets start-up skip importing Alembic (≈0.4 s) when the schema is current.
HEAD_REVISION = "0012"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    engine = create_engine(url, future=True, pool_pre_ping=url.startswith("postgresql"))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (runs at every start; a no-op when current).

    An empty database gets the models' schema directly and is stamped with the head
    revision (a test checks that this equals running every migration); a database at an
    older revision is upgraded by Alembic.
    """
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision is None:
        with engine.begin() as connection:
            if not inspect(connection).get_table_names():
                Base.metadata.create_all(connection)
                connection.execute(
                    text(
                        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
                    )
                )
                connection.execute(
                    text("INSERT INTO alembic_version VALUES (:v)"), {"v": HEAD_REVISION}
                )
                return
    import alembic.command  # only when there is something to do
    import alembic.config

    cfg = alembic.config.Config()
    cfg.set_main_option("script_location", str(resources.files("onvif_nvr.db") / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "head")


class Database:
    """The engine plus the single worker thread that all SQL runs on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="db"
        )
        self._deferred: list[tuple[BatchFn, Any]] = []  # event loop side
        self._defer_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Future[None]] = set()
        #: Batches that failed, with their attempts so far (worker thread side).
        self._retry: list[tuple[BatchFn, list[Any], int]] = []

    def session(self) -> Session:
        return self._sessions()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread, after every write deferred before."""
        loop = asyncio.get_running_loop()
        deferred = self._take_deferred()
        if deferred or self._retry:
            # A job of its own, ahead of ``fn`` on the one worker: cancelling the caller
            # (a task cancelled at shutdown while its job still waits in the queue) cancels
            # only its own job, never the writes it happened to carry.
            self._executor.submit(self._apply, deferred)
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def defer(self, batch_fn: BatchFn, item: Any) -> None:
        """Queue ``item`` for ``batch_fn(items)``: applied on the worker thread within
        ``DEFER_S`` together with the items queued meanwhile (consecutive items of one
        function in one call), and before any job submitted later. A batch that raises is
        logged and retried with the next jobs, up to ``DEFER_ATTEMPTS`` times."""
        self._deferred.append((batch_fn, item))
        if self._defer_timer is None:
            self._defer_timer = asyncio.get_running_loop().call_later(DEFER_S, self._flush_soon)

    async def flush(self) -> None:
        """Apply every deferred write now."""
        await self.run(_nothing)

    def _take_deferred(self) -> list[tuple[BatchFn, Any]]:
        deferred, self._deferred = self._deferred, []
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        return deferred

    def _flush_soon(self) -> None:
        self._defer_timer = None
        flush = asyncio.ensure_future(self.flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    def _apply(self, deferred: list[tuple[BatchFn, Any]]) -> None:
        """Worker thread: the failed batches again, then ``deferred`` grouped by function."""
        batches, self._retry = self._retry, []
        for batch_fn, item in deferred:
            # ``==``, not ``is``: a bound method is a new object at every attribute access.
            if batches and batches[-1][0] == batch_fn and batches[-1][2] == 0:
                batches[-1][1].append(item)
            else:
                batches.append((batch_fn, [item], 0))
        for batch_fn, items, attempts in batches:
            try:
                batch_fn(items)
            except Exception:
                if attempts + 1 < DEFER_ATTEMPTS:
                    log.warning("deferred database write failed; retrying", exc_info=True)
                    self._retry.append((batch_fn, items, attempts + 1))
                else:
                    log.error(
                        "deferred database write of %d items dropped", len(items), exc_info=True
                    )

    async def migrate(self) -> None:
        await self.run(migrate, self.engine)

    def close(self) -> None:
        deferred = self._take_deferred()
        if deferred or self._retry:
            self._executor.submit(self._apply, deferred).result()
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _nothing() -> None:
    pass
