"""RTSP Digest authentication with the box's ONVIF users (READ_MEDIA access class).

The same :class:`~onvif_nvr.auth.digest.DigestAuthority` (realm, nonces) as the SOAP
endpoint, so a client that knows the ONVIF credentials plays the streams; RFC 2069 answers
(no qop) are accepted because live555- and GStreamer-based players send them. Failed logins
count towards the same per-address throttle as SOAP. With ``rtsp=False`` the same gate
guards plain HTTP media requests (snapshots) as the SOAP endpoint's HTTP Digest does: every
offered algorithm is challenged and answers without qop are refused.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from onvif_nvr.auth.digest import DigestAuthority
from onvif_nvr.auth.policy import AccessClass, UserLevel, allowed

log = logging.getLogger(__name__)


class Users(Protocol):
    def password_for(self, username: str) -> str | None: ...

    def level_for(self, username: str) -> UserLevel | None: ...


class Throttle(Protocol):
    def retry_after_s(self, remote: str) -> int: ...

    def failure(self, remote: str) -> None: ...


class DigestGate:
    """Implements ``rtsp_server.Gate``."""

    def __init__(
        self,
        digest: DigestAuthority,
        users: Users,
        throttle: Throttle | None = None,
        *,
        rtsp: bool = True,
    ) -> None:
        self._digest = digest
        self._users = users
        self._throttle = throttle
        self._rtsp = rtsp

    def challenges(self, *, stale: bool = False) -> list[str]:
        offered = self._digest.challenges(stale=stale)
        if not self._rtsp:
            return offered
        # Only MD5 when offered: FFmpeg and live555 answer the last challenge they see and
        # know no other algorithm, so a SHA-256 challenge after it locks them out.
        md5 = [c for c in offered if "algorithm=MD5," in c]
        return md5 or offered

    def check(
        self, method: str, uri: str, authorization: str | None, remote: str
    ) -> Literal["ok", "stale", "denied"]:
        if self._throttle is not None and self._throttle.retry_after_s(remote):
            return "denied"
        if not authorization or authorization[:7].lower() != "digest ":
            return "denied"
        result = self._digest.verify(
            method, uri, authorization, self._users.password_for, allow_no_qop=self._rtsp
        )
        if result.stale:
            return "stale"
        if not result.ok or result.username is None:
            if self._throttle is not None:
                self._throttle.failure(remote)
            log.info("RTSP login of %r from %s refused: %s", result.username, remote, result.reason)
            return "denied"
        level = self._users.level_for(result.username)
        if level is None or not allowed(level, AccessClass.READ_MEDIA):
            return "denied"
        return "ok"
