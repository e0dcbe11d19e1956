"""REST API sessions and bearer tokens kept in the database (``api_grants``, migration 0012):
they survive a restart of the box; logout, deleting the user and changing the password end
them; only the SHA-256 of a secret is stored."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator

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
