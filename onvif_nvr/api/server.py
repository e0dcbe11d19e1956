"""Dispatch of the route table on aiohttp: authentication, CSRF, input validation and the
one JSON error shape.

Credentials, in the order they are looked at: the session cookie (browser; unsafe methods
also need the session's CSRF token in ``X-CSRF-Token``), ``Authorization: Bearer`` (tokens
from ``POST /api/v1/tokens``), ``Authorization: Digest`` (the ONVIF Digest authority, the
same nonces and users as SOAP and /snapshot) and ``Authorization: Basic`` over TLS only.
Every failed password check counts in the box's one per-address login throttle.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, delete, select, update

from onvif_nvr.api.routes import ErrorBody, ErrorResponse, FieldError, Route
from onvif_nvr.auth.digest import DigestAuthority
from onvif_nvr.auth.policy import UserLevel
from onvif_nvr.auth.throttle import LoginThrottle
from onvif_nvr.clock import Clock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import (
    InvalidArgs,
    InvalidArgument,
    NoReceiver,
    NoRecording,
    NoRecordingJob,
    NotAuthorized,
    NoTrack,
    NotSupported,
    NvrError,
    OperationProhibited,
)
from onvif_nvr.system.users import UserStore

log = logging.getLogger(__name__)

SESSION_COOKIE = "nvr_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_RANK = {UserLevel.USER: 1, UserLevel.OPERATOR: 2, UserLevel.ADMINISTRATOR: 3}
#: Sessions and bearer tokens are rows of ``api_grants`` (migration 0012): a restart keeps
#: them. Expiry is wall-clock time, so it holds across restarts too.
SESSION_LIFETIME_S = 12 * 3600
TOKEN_LIFETIME_S = 30 * 24 * 3600
#: Grants kept in memory in front of the table (a hit costs no database round trip).
GRANT_CACHE = 1024
#: ``last_used_s`` is written at most this often per grant.
TOUCH_EVERY_S = 60
#: Expired rows are deleted at most this often (when a grant is made).
SWEEP_EVERY_S = 600


class ApiError(Exception):
    """A failure with its HTTP status, raised by handlers and the dispatcher."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.headers = headers or {}


#: Subcodes that say "not in the box's present state" rather than "bad input".
_CONFLICTS = frozenset(
    {
        "FixedUser",
        "UsernameClash",
        "TooManyUsers",
        "CannotDelete",
        "CannotDeleteReceiver",
        "MaxReceivers",
        "MaxRecordings",
        "MaxTracks",
        "MaxRecordingJobs",
    }
)


def error_from_domain(exc: NvrError) -> ApiError:
    """The HTTP side of the error taxonomy (errors.py): one small table."""
    detail = exc.subcodes[-1]
    if detail in _CONFLICTS:
        return ApiError(409, detail, exc.message)
    if isinstance(exc, NoReceiver | NoRecording | NoTrack | NoRecordingJob):
        return ApiError(404, detail, exc.message)
    if isinstance(exc, NotAuthorized):
        return ApiError(403, detail, exc.message)
    if isinstance(exc, OperationProhibited):
        return ApiError(409, detail, exc.message)
    if isinstance(exc, InvalidArgument | InvalidArgs):
        return ApiError(422, detail, exc.message)
    if isinstance(exc, NotSupported):
        return ApiError(501, detail, exc.message)
    if exc.side == "Sender":
        return ApiError(400, detail, exc.message)
    return ApiError(
        409 if detail in ("MaxReceivers", "MaxRecordings") else 503, detail, exc.message
    )


def error_response(err: ApiError) -> web.Response:
    body = ErrorResponse(error=ErrorBody(code=err.code, message=err.message, fields=err.fields))
    return web.Response(
        status=err.status,
        body=body.model_dump_json().encode(),
        content_type="application/json",
        headers=err.headers,
    )


def _field_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    return [
        FieldError(
            field=".".join([prefix, *(str(p) for p in e["loc"])]) if e["loc"] else prefix,
            message=e["msg"],
        )
        for e in exc.errors(include_url=False)
    ]


@dataclasses.dataclass
class _Grant:
    kind: str  # session, token
    username: str
    expires_s: int
    csrf: str = ""
    #: When ``last_used_s`` was last written (wall seconds).
    touched_s: int = 0


_TOUCH = (
    update(models.ApiGrant)
    .where(models.ApiGrant.secret_sha256 == bindparam("b_key"))
    .values(last_used_s=bindparam("b_used"))
)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who made the request and how."""

    username: str
    level: UserLevel
    via: str  # session, bearer, digest, basic

    def at_least(self, level: UserLevel) -> bool:
        return _RANK.get(self.level, 0) >= _RANK[level]


@dataclasses.dataclass
class Call:
    """One request as a handler sees it: validated inputs and the caller."""

    request: web.Request
    caller: Caller | None
    params: dict[str, str]
    query: Any = None
    body: Any = None


class Gate:
    """Sessions, bearer tokens, Digest and Basic against the ONVIF users.

    Sessions and tokens are rows of ``api_grants`` keyed by the SHA-256 of the secret, read
    and written on the database worker; a bounded cache in front answers most requests
    without it. Deleting a user or changing a password deletes that user's rows in the same
    transaction (system/users.py) and tells :meth:`forget_user`, which empties the cache."""

    def __init__(
        self,
        users: UserStore,
        digest: DigestAuthority,
        throttle: LoginThrottle,
        clock: Clock,
        db: Database,
    ) -> None:
        self.users = users
        self.digest = digest
        self.throttle = throttle
        self.clock = clock
        self.db = db
        self._cache: dict[str, _Grant] = {}
        self._swept_s = 0
        users.credential_listeners.append(self.forget_user)

    def _now(self) -> int:
        return self.clock.wall_ns() // 10**9

    # -- passwords ------------------------------------------------------------------------
    def _locked(self, remote: str) -> None:
        retry = self.throttle.retry_after_s(remote)
        if retry:
            raise ApiError(
                429,
                "TooManyFailedLogins",
                f"too many failed logins from this address; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def check_password(self, username: str, password: str, remote: str) -> UserLevel:
        self._locked(remote)
        stored = self.users.password_for(username)
        level = self.users.level_for(username)
        if (
            stored is None
            or level is None
            or not hmac.compare_digest(stored.encode(), password.encode())
        ):
            self.throttle.failure(remote)
            log.info("API login of %r from %s refused", username, remote)
            raise ApiError(401, "NotAuthorized", "wrong username or password")
        self.throttle.success(remote)
        return level

    # -- sessions and tokens ----------------------------------------------------------------
    async def open_session(self, username: str) -> tuple[str, str]:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await self._add(sid, _Grant("session", username, self._now() + SESSION_LIFETIME_S, csrf))
        return sid, csrf

    async def csrf_for(self, sid: str | None) -> str:
        grant = await self._grant("session", sid) if sid else None
        return grant.csrf if grant is not None else ""

    async def close_session(self, sid: str | None) -> None:
        if sid:
            key = _digest(sid)
            self._cache.pop(key, None)

            def work() -> None:
                with self.db.session() as session, session.begin():
                    session.execute(
                        delete(models.ApiGrant).where(
                            models.ApiGrant.secret_sha256 == key,
                            models.ApiGrant.kind == "session",
                        )
                    )

            await self.db.run(work)

    async def issue_token(self, username: str, lifetime_s: int) -> str:
        token = secrets.token_urlsafe(32)
        await self._add(token, _Grant("token", username, self._now() + lifetime_s))
        return token

    def forget_user(self, username: str) -> None:
        """``username`` was deleted or got a new password (its rows are already gone)."""
        for key in [k for k, g in self._cache.items() if g.username == username]:
            del self._cache[key]

    async def _add(self, secret: str, grant: _Grant) -> None:
        key, now = _digest(secret), self._now()
        sweep = now - self._swept_s >= SWEEP_EVERY_S
        if sweep:
            self._swept_s = now

        def work() -> None:
            with self.db.session() as session, session.begin():
                if sweep:
                    session.execute(delete(models.ApiGrant).where(models.ApiGrant.expires_s <= now))
                session.add(
                    models.ApiGrant(
                        secret_sha256=key,
                        kind=grant.kind,
                        username=grant.username,
                        expires_s=grant.expires_s,
                        csrf=grant.csrf,
                        created_s=now,
                        last_used_s=now,
                    )
                )

        await self.db.run(work)
        grant.touched_s = now
        self._remember(key, grant)

    def _remember(self, key: str, grant: _Grant) -> None:
        if len(self._cache) >= GRANT_CACHE:
            del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[key] = grant

    async def _grant(self, kind: str, secret: str) -> _Grant | None:
        key, now = _digest(secret), self._now()
        grant = self._cache.get(key)
        if grant is None:

            def read() -> _Grant | None:
                with self.db.session() as session:
                    row = session.scalar(
                        select(models.ApiGrant).where(models.ApiGrant.secret_sha256 == key)
                    )
                    if row is None:
                        return None
                    return _Grant(row.kind, row.username, row.expires_s, row.csrf, row.last_used_s)

            grant = await self.db.run(read)
            if grant is None:
                return None
            self._remember(key, grant)
        if grant.kind != kind or grant.expires_s <= now:
            return None
        if now - grant.touched_s >= TOUCH_EVERY_S:
            grant.touched_s = now
            self.db.defer(self._touch, {"b_key": key, "b_used": now})
        return grant

    def _touch(self, items: list[dict[str, Any]]) -> None:
        """Worker thread: last uses, batched with the index's deferred writes."""
        with self.db.engine.begin() as connection:
            connection.execute(_TOUCH, items)

    def _caller(self, username: str, via: str) -> Caller:
        level = self.users.level_for(username)
        if level is None:  # the user was deleted meanwhile
            raise ApiError(401, "NotAuthorized", "the user no longer exists")
        return Caller(username, level, via)

    # -- per request ------------------------------------------------------------------------
    async def authenticate(self, request: web.Request) -> Caller:
        remote = request.remote or ""
        sid = request.cookies.get(SESSION_COOKIE)
        authorization = request.headers.get("Authorization", "")
        scheme = authorization.split(" ", 1)[0].lower()
        if sid and not authorization:
            grant = await self._grant("session", sid)
            if grant is None:
                raise self.challenge("the session expired or was closed")
            if request.method not in _SAFE:
                sent = request.headers.get(CSRF_HEADER, "")
                if not hmac.compare_digest(sent.encode(), grant.csrf.encode()):
                    raise ApiError(403, "CsrfTokenMissing", f"{CSRF_HEADER} is missing or wrong")
            return self._caller(grant.username, "session")
        if scheme == "bearer":
            # Guessing tokens is guessing passwords: the same per-address throttle.
            self._locked(remote)
            grant = await self._grant("token", authorization[7:].strip())
            if grant is None:
                self.throttle.failure(remote)
                raise self.challenge("unknown or expired token")
            return self._caller(grant.username, "bearer")
        if scheme == "digest":
            self._locked(remote)
            result = self.digest.verify(
                request.method, request.raw_path, authorization, self.users.password_for
            )
            if result.stale:
                raise self.challenge("stale nonce", stale=True)
            if not result.ok or result.username is None:
                self.throttle.failure(remote)
                raise self.challenge("wrong Digest credentials")
            self.throttle.success(remote)
            return self._caller(result.username, "digest")
        if scheme == "basic":
            if not request.secure:
                raise ApiError(401, "NotAuthorized", "Basic authentication needs TLS")
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise self.challenge("malformed Basic credentials") from None
            username, _, password = decoded.partition(":")
            self.check_password(username, password, remote)
            return self._caller(username, "basic")
        raise self.challenge("authentication required")

    def challenge(self, message: str, *, stale: bool = False) -> ApiError:
        err = ApiError(401, "NotAuthorized", message)
        # aiohttp headers are one value per name here: offer the first Digest challenge.
        challenges = self.digest.challenges(stale=stale)
        if challenges:
            err.headers["WWW-Authenticate"] = challenges[0]
        return err


class Dispatcher:
    """Mounts the routes on an aiohttp router."""

    def __init__(self, routes: Sequence[Route], gate: Gate) -> None:
        self.routes = list(routes)
        self.gate = gate

    def mount(self, router: web.UrlDispatcher) -> None:
        for route in self.routes:
            router.add_route(route.method, route.path, self._handler(route))

    def _handler(self, route: Route) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await self._serve(route, request)
            except ApiError as err:
                if request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
                    # A page's fetch(): a challenge would make the browser open its own
                    # login dialog over the web UI's (and block the call until it closes).
                    err.headers.pop("WWW-Authenticate", None)
                return error_response(err)
            except NvrError as exc:
                return error_response(error_from_domain(exc))
            except Exception:
                log.exception("API %s %s failed", route.method, route.path)
                return error_response(ApiError(500, "Internal", "internal error (see the log)"))

        return handle

    async def _serve(self, route: Route, request: web.Request) -> web.StreamResponse:
        caller = None
        if route.access is not None:
            caller = await self.gate.authenticate(request)
            if not caller.at_least(route.access):
                raise ApiError(
                    403, "Forbidden", f"{route.operation_id} needs the {route.access.value} level"
                )
        call = Call(request, caller, dict(request.match_info))
        if route.query is not None:
            try:
                call.query = route.query.model_validate(dict(request.query))
            except ValidationError as exc:
                raise ApiError(
                    422, "InvalidArgVal", "invalid query", _field_errors(exc, "query")
                ) from None
        if route.body is not None:
            raw = await request.read()
            try:
                data = json.loads(raw) if raw else None
                call.body = route.body.model_validate(data)
            except ValueError as exc:
                fields = (
                    _field_errors(exc, "body")
                    if isinstance(exc, ValidationError)
                    else [FieldError(field="body", message=f"not JSON: {exc}")]
                )
                raise ApiError(422, "InvalidArgVal", "invalid request body", fields) from None
        result = await route.handler(call)
        if isinstance(result, web.StreamResponse):
            return result
        if route.status == 204:
            return web.Response(status=204)
        assert isinstance(result, BaseModel)
        return web.Response(
            status=route.status,
            body=result.model_dump_json().encode(),
            content_type="application/json",
        )
