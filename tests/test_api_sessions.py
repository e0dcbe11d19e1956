"""REST API sessions and bearer tokens kept in the database (``api_grants``, migration 0012):
they survive a restart of the box; logout, deleting the user and changing the password end
them; they expire by the wall clock and their rows are swept; only the SHA-256 of a secret
is stored."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess


@pytest.fixture(scope="module")
def nvr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NvrProcess]:
    box = NvrProcess(tmp_path_factory.mktemp("sessions") / "data", ADMIN_PASSWORD)
    box.start()
    try:
        yield box
    finally:
        box.stop()
    assert not box.blocking_calls(), box.blocking_calls()


def _login(base: str, user: str, password: str) -> tuple[httpx.Client, str]:
    """A client holding a session cookie, and the session's CSRF token."""
    c = httpx.Client(base_url=base, timeout=20)
    r = c.post("/api/v1/session", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return c, str(r.json()["csrf_token"])


def _token(c: httpx.Client, csrf: str) -> str:
    r = c.post("/api/v1/tokens", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 or r.status_code == 200, r.text
    return str(r.json()["token"])


def _bearer(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20)


def _stored(nvr: NvrProcess) -> list[tuple[str, str, str, str]]:
    db = sqlite3.connect(nvr.data_dir / "nvr.sqlite3")
    try:
        return list(db.execute("SELECT secret_sha256, kind, username, csrf FROM api_grants"))
    finally:
        db.close()


def test_session_and_token_survive_a_restart_and_end_on_logout(nvr: NvrProcess) -> None:
    session, csrf = _login(nvr.base, "admin", ADMIN_PASSWORD)
    token = _token(session, csrf)
    sid = session.cookies["nvr_session"]
    stored = _stored(nvr)
    digests = {row[0] for row in stored}
    assert hashlib.sha256(sid.encode()).hexdigest() in digests
    assert hashlib.sha256(token.encode()).hexdigest() in digests
    assert not any(sid in str(row) or token in str(row) for row in stored)

    nvr.restart()
    with contextlib.closing(session), _bearer(nvr.base, token) as bearer:
        assert session.get("/api/v1/cameras").status_code == 200
        again = session.get("/api/v1/session")
        assert again.status_code == 200 and again.json()["csrf_token"] == csrf
        # An unsafe call still takes the session's CSRF token (and only it).
        body = {"username": "carol", "password": "pw-123456", "level": "User"}
        assert session.post("/api/v1/users", json=body).status_code == 403
        r = session.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        assert bearer.get("/api/v1/cameras").status_code == 200
        # A token is not a session cookie, nor the other way round.
        with _bearer(nvr.base, sid) as wrong:
            assert wrong.get("/api/v1/cameras").status_code == 401

        assert session.delete("/api/v1/session").status_code == 204
        session.cookies.set("nvr_session", sid)
        assert session.get("/api/v1/cameras").status_code == 401
        assert bearer.get("/api/v1/cameras").status_code == 200
    nvr.restart()
    with httpx.Client(base_url=nvr.base, timeout=20) as c:
        c.cookies.set("nvr_session", sid)
        assert c.get("/api/v1/cameras").status_code == 401
    assert hashlib.sha256(sid.encode()).hexdigest() not in {row[0] for row in _stored(nvr)}


def test_deleting_a_user_or_changing_a_password_ends_its_grants(nvr: NvrProcess) -> None:
    admin, admin_csrf = _login(nvr.base, "admin", ADMIN_PASSWORD)
    headers = {"X-CSRF-Token": admin_csrf}
    with contextlib.closing(admin):
        for name in ("bob", "dave"):
            body = {"username": name, "password": "pw-123456", "level": "Operator"}
            assert admin.post("/api/v1/users", json=body, headers=headers).status_code == 201
        bob, bob_csrf = _login(nvr.base, "bob", "pw-123456")
        bob_token = _token(bob, bob_csrf)
        dave, dave_csrf = _login(nvr.base, "dave", "pw-123456")
        dave_token = _token(dave, dave_csrf)
        with (
            contextlib.closing(bob),
            contextlib.closing(dave),
            _bearer(nvr.base, bob_token) as b,
            _bearer(nvr.base, dave_token) as d,
        ):
            # Used once, so the box has them in its cache as well as in the table.
            for c in (bob, dave, b, d):
                assert c.get("/api/v1/cameras").status_code == 200
            assert admin.delete("/api/v1/users/bob", headers=headers).status_code == 204
            assert b.get("/api/v1/cameras").status_code == 401
            assert bob.get("/api/v1/cameras").status_code == 401
            r = admin.patch("/api/v1/users/dave", json={"password": "pw-654321"}, headers=headers)
            assert r.status_code == 200, r.text
            assert d.get("/api/v1/cameras").status_code == 401
            assert dave.get("/api/v1/cameras").status_code == 401
            # The admin's own session is untouched.
            assert admin.get("/api/v1/cameras").status_code == 200
        assert {row[2] for row in _stored(nvr)} <= {"admin"}
        nvr.restart()
        with _bearer(nvr.base, bob_token) as b, _bearer(nvr.base, dave_token) as d:
            assert b.get("/api/v1/cameras").status_code == 401
            assert d.get("/api/v1/cameras").status_code == 401


def test_grants_expire_by_wall_clock_and_are_swept(tmp_path: Path) -> None:
    """In process, with a manual clock: a token past its lifetime and a session past 12 h no
    longer open anything; a later grant sweeps their rows; a second Gate on the same
    database (a restart: empty cache) finds a live session."""
    from aiohttp.test_utils import make_mocked_request

    from onvif_nvr.api.server import SESSION_LIFETIME_S, SWEEP_EVERY_S, ApiError, Gate
    from onvif_nvr.auth.digest import DigestAuthority
    from onvif_nvr.auth.policy import UserLevel
    from onvif_nvr.auth.throttle import LoginThrottle
    from onvif_nvr.clock import ManualClock
    from onvif_nvr.db.engine import Database
    from onvif_nvr.system.secrets import Sealer
    from onvif_nvr.system.users import UserChange, UserLimits, UserStore

    clock = ManualClock()
    db = Database(f"sqlite:///{tmp_path / 'nvr.sqlite3'}")

    def gate(users: UserStore) -> Gate:
        throttle = LoginThrottle(clock, max_failures=3, window_s=60, lockout_s=1)
        return Gate(users, DigestAuthority("nvr", b"k" * 32, clock), throttle, clock, db)

    def rows() -> list[str]:
        with db.engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql("SELECT kind FROM api_grants ORDER BY 1")]

    async def caller(g: Gate, token: str) -> str:
        request = make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})
        try:
            return (await g.authenticate(request)).username
        except ApiError as err:
            return str(err.status)

    async def run() -> None:
        await db.migrate()
        users = UserStore(db, Sealer(b"s" * 32), clock, UserLimits())
        await users.load()
        await users.create([UserChange("eve", UserLevel.OPERATOR.value, "pw-123456")])
        first = gate(users)
        sid, csrf = await first.open_session("eve")
        token = await first.issue_token("eve", 60)
        assert await caller(first, token) == "eve"
        assert await caller(first, sid) == "401"  # a session id is no bearer token
        clock.advance(61)
        assert await caller(first, token) == "401"
        assert await first.csrf_for(sid) == csrf
        second = gate(users)  # a restart: nothing cached
        assert await second.csrf_for(sid) == csrf
        clock.advance(SESSION_LIFETIME_S)
        assert await second.csrf_for(sid) == ""
        assert rows() == ["session", "token"]
        clock.advance(SWEEP_EVERY_S)
        await second.issue_token("eve", 3600)
        assert rows() == ["token"]

    try:
        asyncio.run(run())
    finally:
        db.close()
