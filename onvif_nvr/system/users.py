"""User accounts: one set for SOAP, RTSP and the web UI (Core §5.9.4, §8.4).

Reads come from an in-memory copy (authentication is on every request's path); changes
are validated as a whole, written to the database, then swapped into memory, so a
failed request changes nothing ("either all users are created ... or a fault").
"""

from __future__ import annotations

import dataclasses
import secrets
import string
from collections.abc import Callable, Iterable

from sqlalchemy import delete, select

from onvif_nvr.auth.policy import UserLevel
from onvif_nvr.clock import Clock
from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import ActionFailed, InvalidArgument, OperationProhibited
from onvif_nvr.system.secrets import Sealer

_ASSIGNABLE = {UserLevel.ADMINISTRATOR, UserLevel.OPERATOR, UserLevel.USER}


@dataclasses.dataclass(frozen=True)
class Account:
    username: str
    level: UserLevel
    password: str = dataclasses.field(repr=False)
    bootstrap: bool = False


@dataclasses.dataclass(frozen=True)
class UserChange:
    """One entry of CreateUsers/SetUser; ``password`` None means "clear it" on SetUser."""

    username: str
    level: str
    password: str | None


@dataclasses.dataclass(frozen=True)
class UserLimits:
    max_users: int = 32
    max_username_length: int = 64
    min_password_length: int = 0
    max_password_length: int = 64


def generate_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


class UserStore:
    def __init__(self, db: Database, sealer: Sealer, clock: Clock, limits: UserLimits) -> None:
        self._db = db
        self._sealer = sealer
        self._clock = clock
        self.limits = limits
        self._accounts: dict[str, Account] = {}
        #: Told each username deleted or given a new password, after the write (the REST
        #: API's session cache; the rows of its sessions go in the same transaction).
        self.credential_listeners: list[Callable[[str], None]] = []

    # -- the UserDirectory protocol (hot path, memory only) -------------------------------
    def password_for(self, username: str) -> str | None:
        account = self._accounts.get(username)
        return account.password if account else None

    def level_for(self, username: str) -> UserLevel | None:
        account = self._accounts.get(username)
        return account.level if account else None

    def accounts(self) -> list[Account]:
        return sorted(self._accounts.values(), key=lambda a: a.username)

    # -- loading --------------------------------------------------------------------------
    async def load(self) -> None:
        rows = await self._db.run(self._read_rows)
        self._accounts = {
            r.username: Account(
                r.username,
                UserLevel(r.level),
                self._sealer.open(r.password_enc, r.username),
                r.bootstrap,
            )
            for r in rows
        }

    def _read_rows(self) -> list[models.User]:
        with self._db.session() as session:
            return list(session.scalars(select(models.User)))

    async def ensure_administrator(self, password: str | None) -> str | None:
        """On a box with no users, create ``admin``; return the password if it was generated."""
        if self._accounts:
            return None
        generated = None
        if not password:
            password = generated = generate_password()
        await self._write({"admin": Account("admin", UserLevel.ADMINISTRATOR, password, True)}, ())
        return generated

    # -- Core §8.4 operations -------------------------------------------------------------
    async def create(self, changes: Iterable[UserChange]) -> None:
        changes = list(changes)
        new: dict[str, Account] = {}
        for change in changes:
            self._check_name(change.username)
            if change.username in self._accounts or change.username in new:
                raise OperationProhibited(
                    f"user {change.username!r} already exists", "UsernameClash"
                )
            level = self._check_level(change.level)
            password = change.password or ""
            self._check_password(password)
            new[change.username] = Account(change.username, level, password)
        if len(self._accounts) + len(new) > self.limits.max_users:
            raise ActionFailed(
                f"at most {self.limits.max_users} users are supported", "TooManyUsers"
            )
        await self._write(new, ())

    async def delete(self, usernames: Iterable[str]) -> None:
        names = list(dict.fromkeys(usernames))
        for name in names:
            if name not in self._accounts:
                raise InvalidArgument(f"no user {name!r}", "UsernameMissing")
        remaining = {n: a for n, a in self._accounts.items() if n not in names}
        self._keep_an_administrator(remaining)
        await self._write({}, names)

    async def update(self, changes: Iterable[UserChange], *, may_change_level: bool = True) -> None:
        updated: dict[str, Account] = {}
        for change in changes:
            current = self._accounts.get(change.username)
            if current is None:
                raise InvalidArgument(f"no user {change.username!r}", "UsernameMissing")
            level = self._check_level(change.level) if may_change_level else current.level
            password = change.password if change.password is not None else ""
            if change.password is None and self.limits.min_password_length == 0:
                # Omitted password: Core lets the device clear it; an account without a
                # password would be an open door, so it counts as too weak.
                raise OperationProhibited("a password is required", "PasswordTooWeak")
            self._check_password(password)
            updated[change.username] = dataclasses.replace(current, level=level, password=password)
        self._keep_an_administrator({**self._accounts, **updated})
        await self._write(updated, ())

    async def reset(self) -> None:
        """Remove every account (hard factory default)."""
        await self._write({}, list(self._accounts))

    # -- rules ----------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not name:
            raise OperationProhibited("the username is empty", "UsernameTooShort")
        if len(name) > self.limits.max_username_length:
            raise OperationProhibited(
                f"usernames are at most {self.limits.max_username_length} characters",
                "UsernameTooLong",
            )
        if ":" in name or any(ord(c) < 0x20 or c == "\x7f" for c in name) or name != name.strip():
            # ':' would make the HTTP Digest HA1 (user:realm:password) ambiguous.
            raise InvalidArgument(
                "usernames may not contain ':', control characters or edge spaces"
            )

    def _check_level(self, text: str) -> UserLevel:
        if text == UserLevel.ANONYMOUS.value:
            raise OperationProhibited(
                "user level Anonymous cannot be assigned", "AnonymousNotAllowed"
            )
        try:
            level = UserLevel(text)
        except ValueError:
            raise InvalidArgument(f"unknown user level {text!r}") from None
        if level not in _ASSIGNABLE:
            raise OperationProhibited(
                f"user level {text} needs user roles, which are not supported"
            )
        return level

    def _check_password(self, password: str) -> None:
        if len(password.encode()) > self.limits.max_password_length:
            raise OperationProhibited(
                f"passwords are at most {self.limits.max_password_length} bytes", "PasswordTooLong"
            )
        if len(password) < max(self.limits.min_password_length, 1):
            raise OperationProhibited("the password is too weak", "PasswordTooWeak")
        if any(ord(c) < 0x20 or c == "\x7f" for c in password):
            raise OperationProhibited(
                "passwords may not contain control characters", "PasswordTooWeak"
            )

    @staticmethod
    def _keep_an_administrator(accounts: dict[str, Account]) -> None:
        if not any(a.level is UserLevel.ADMINISTRATOR for a in accounts.values()):
            raise InvalidArgument(
                "the last Administrator cannot be removed or demoted", "FixedUser"
            )

    # -- persistence ----------------------------------------------------------------------
    async def _write(self, upserts: dict[str, Account], deletions: Iterable[str]) -> None:
        deletions = list(deletions)
        now = self._clock.wall_ns()
        sealed = {name: self._sealer.seal(a.password, name) for name, a in upserts.items()}
        # Who must log in again: a deleted user, a changed password.
        revoked = deletions + [
            name
            for name, a in upserts.items()
            if name in self._accounts and self._accounts[name].password != a.password
        ]

        def work() -> None:
            with self._db.session() as session, session.begin():
                if revoked:
                    session.execute(
                        delete(models.ApiGrant).where(models.ApiGrant.username.in_(revoked))
                    )
                if deletions:
                    session.execute(delete(models.User).where(models.User.username.in_(deletions)))
                for name, account in upserts.items():
                    row = session.get(models.User, name)
                    if row is None:
                        row = models.User(
                            username=name, created_wall_ns=now, bootstrap=account.bootstrap
                        )
                        session.add(row)
                    row.level = account.level.value
                    row.password_enc = sealed[name]

        await self._db.run(work)
        accounts = {n: a for n, a in self._accounts.items() if n not in deletions}
        accounts.update(upserts)
        self._accounts = accounts
        for name in revoked:
            for listener in self.credential_listeners:
                listener(name)
