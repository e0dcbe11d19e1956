"""Open the database, migrate it, and run synchronous SQLAlchemy work off the event loop.

All database work goes through :class:`Database.run`, one worker thread: SQLite allows
one writer at a time anyway, and one queue keeps write order obvious.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from onvif_nvr.db.models import Base

T = TypeVar("T")

#: The newest migration in ``migrations/versions``; a test checks it against Alembic's head.
#: Knowing it lets start-up skip importing Alembic (≈0.4 s) when the schema is current.
HEAD_REVISION = "0005"


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

    def session(self) -> Session:
        return self._sessions()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def migrate(self) -> None:
        await self.run(migrate, self.engine)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
