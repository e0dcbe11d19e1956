"""Who is calling: HTTP Digest and WS-UsernameToken on one request (Core §5.9.1).

No credentials on a protected operation → HTTP 401 with a Digest challenge per offered
algorithm. Credentials on both layers: HTTP is checked first, then WS-Security, and both
must pass. Failed logins are counted per remote address by the throttle.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from onvif_nvr.auth.digest import DigestAuthority
from onvif_nvr.auth.policy import UserLevel
from onvif_nvr.auth.throttle import LoginThrottle
from onvif_nvr.soap import wsse
from onvif_nvr.soap.envelope import Request

if TYPE_CHECKING:
    from onvif_nvr.soap.dispatch import HttpRequest


class UserDirectory(Protocol):
    def password_for(self, username: str) -> str | None: ...

    def level_for(self, username: str) -> UserLevel | None: ...


@dataclasses.dataclass(frozen=True)
class Identity:
    username: str | None
    level: UserLevel


class AuthChallenge(Exception):
    """Authentication failed or is missing; the front-end answers with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        *,
        username: str | None = None,
        www_authenticate: list[str] | None = None,
        retry_after_s: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.username = username
        self.www_authenticate = www_authenticate or []
        self.retry_after_s = retry_after_s


class Authenticator:
    def __init__(
        self,
        users: UserDirectory,
        digest: DigestAuthority,
        tokens: wsse.UsernameTokenVerifier,
        throttle: LoginThrottle,
    ) -> None:
        self._users = users
        self._digest = digest
        self._tokens = tokens
        self._throttle = throttle

    @property
    def digest(self) -> DigestAuthority:
        return self._digest

    def missing_credentials(self) -> AuthChallenge:
        return AuthChallenge(
            401,
            "authentication required",
            "no-credentials",
            www_authenticate=self._digest.challenges(),
        )

    def authenticate(self, request: HttpRequest, soap: Request) -> Identity:
        remote = request.remote
        retry = self._throttle.retry_after_s(remote)
        if retry:
            raise AuthChallenge(
                429, f"too many failed logins; retry in {retry} s", "throttled", retry_after_s=retry
            )
        username: str | None = None
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() == "digest ":
            result = self._digest.verify(
                request.method,
                request.target or request.path,
                authorization,
                self._users.password_for,
            )
            if result.stale:
                raise AuthChallenge(
                    401,
                    "the Digest nonce has expired",
                    "stale-nonce",
                    username=result.username,
                    www_authenticate=self._digest.challenges(stale=True),
                )
            if not result.ok:
                self._throttle.failure(remote)
                raise AuthChallenge(
                    401,
                    "wrong username or password",
                    "digest:" + result.reason,
                    username=result.username,
                    www_authenticate=self._digest.challenges(),
                )
            username = result.username
        security = wsse.find_security_header(soap.header)
        if security is not None:
            try:
                token = wsse.parse_username_token(security)
                ws_user = self._tokens.verify(token, self._users.password_for)
            except wsse.TokenError as exc:
                self._throttle.failure(remote)
                raise AuthChallenge(400, str(exc), "wsse", username=exc.username) from None
            if username is None:
                username = ws_user
        if username is None:
            raise self.missing_credentials()
        level = self._users.level_for(username)
        if level is None:  # deleted between the password lookup and now
            self._throttle.failure(remote)
            raise AuthChallenge(
                401, "wrong username or password", "unknown-user", username=username
            )
        self._throttle.success(remote)
        return Identity(username, level)
