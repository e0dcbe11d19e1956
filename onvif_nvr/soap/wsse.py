"""WS-Security UsernameToken (OASIS UsernameToken Profile 1.0), sans-IO.

ONVIF (Core §5.9.5) requires PasswordDigest with both Nonce and Created; a token
missing either, or without a Password Type, is rejected. Freshness: Created must lie
within ``max_skew_s`` of the box's clock, and a nonce is accepted once within that window.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime
import hashlib
import hmac
from collections.abc import Callable

from lxml import etree

from onvif_nvr.clock import Clock

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
_BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)


class TokenError(ValueError):
    """The UsernameToken is malformed, stale, replayed or wrong. ``username`` is the
    claimed name (for throttling and the access log), never the password."""

    def __init__(self, message: str, username: str | None = None) -> None:
        super().__init__(message)
        self.username = username


@dataclasses.dataclass(frozen=True)
class UsernameToken:
    username: str
    password: str
    password_type: str | None
    nonce: bytes | None
    created: str | None


def find_security_header(header: etree._Element | None) -> etree._Element | None:
    if header is None:
        return None
    for child in header:
        if isinstance(child.tag, str) and child.tag == f"{{{WSSE}}}Security":
            return child
    return None


_TOKEN_TAG = f"{{{WSSE}}}UsernameToken"
_TOKEN_PARTS = frozenset(
    (f"{{{WSSE}}}Username", f"{{{WSSE}}}Password", f"{{{WSSE}}}Nonce", f"{{{WSU}}}Created")
)


def _first_children(parent: etree._Element) -> dict[str, etree._Element]:
    """The first child of each UsernameToken part, in one pass (``find`` per name costs
    several µs each, on every request)."""
    found: dict[str, etree._Element] = {}
    for child in parent:
        tag = child.tag
        if tag in _TOKEN_PARTS and tag not in found:
            found[tag] = child
    return found


def parse_username_token(security: etree._Element) -> UsernameToken:
    token = next((c for c in security if c.tag == _TOKEN_TAG), None)
    if token is None:
        raise TokenError("Security header has no UsernameToken")
    parts = _first_children(token)
    username_el = parts.get(f"{{{WSSE}}}Username")
    if username_el is None or not (username_el.text or "").strip():
        raise TokenError("UsernameToken has no Username")
    username = username_el.text.strip()
    password_el = parts.get(f"{{{WSSE}}}Password")
    if password_el is None:
        raise TokenError("UsernameToken has no Password", username)
    nonce: bytes | None = None
    nonce_el = parts.get(f"{{{WSSE}}}Nonce")
    if nonce_el is not None:
        encoding = nonce_el.get("EncodingType", _BASE64_BINARY)
        if encoding != _BASE64_BINARY:
            raise TokenError("UsernameToken Nonce has an unsupported EncodingType", username)
        try:
            nonce = base64.b64decode((nonce_el.text or "").strip(), validate=True)
        except (binascii.Error, ValueError):
            raise TokenError("UsernameToken Nonce is not valid base64", username) from None
    created_el = parts.get(f"{{{WSU}}}Created")
    created = (created_el.text or "").strip() if created_el is not None else None
    return UsernameToken(
        username=username,
        password=password_el.text or "",
        password_type=password_el.get("Type"),
        nonce=nonce,
        created=created,
    )


def parse_created(text: str) -> int:
    """``wsu:Created`` (xs:dateTime, UTC) to ns since the Unix epoch."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"Created is not an xs:dateTime: {text!r}") from None
    if parsed.tzinfo is None:
        # WSS says Created is UTC; a value without a zone is read as UTC.
        parsed = parsed.replace(tzinfo=datetime.UTC)
    delta = parsed - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def password_digest(nonce: bytes, created: str, password: str) -> str:
    return base64.b64encode(
        hashlib.sha1(nonce + created.encode() + password.encode()).digest()
    ).decode()


class UsernameTokenVerifier:
    """Checks tokens against the user store; remembers nonces to refuse replays."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_skew_s: int = 300,
        allow_password_text: bool = False,
        max_tracked_nonces: int = 500_000,
    ) -> None:
        self._clock = clock
        self._max_skew_ns = max_skew_s * 10**9
        self._allow_text = allow_password_text
        self._max_nonces = max_tracked_nonces
        # nonce -> wall_ns of its Created; insertion-ordered so expiry pops from the left.
        self._seen: collections.OrderedDict[bytes, int] = collections.OrderedDict()

    def verify(self, token: UsernameToken, password_for: Callable[[str], str | None]) -> str:
        """Return the authenticated username or raise :class:`TokenError`."""
        name = token.username
        if token.password_type is None:
            raise TokenError("UsernameToken Password has no Type", name)
        if token.password_type == PASSWORD_TEXT:
            if not self._allow_text:
                raise TokenError("PasswordText is not accepted; use PasswordDigest", name)
            expected = password_for(name)
            if expected is None or not hmac.compare_digest(
                expected.encode(), token.password.encode()
            ):
                raise TokenError("wrong username or password", name)
            return name
        if token.password_type != PASSWORD_DIGEST:
            raise TokenError("UsernameToken Password Type is not supported", name)
        if token.nonce is None:
            raise TokenError("UsernameToken has no Nonce", name)
        if token.created is None:
            raise TokenError("UsernameToken has no Created", name)
        if not 8 <= len(token.nonce) <= 128:
            raise TokenError("UsernameToken Nonce must be 8 to 128 bytes", name)
        try:
            created_ns = parse_created(token.created)
        except ValueError as exc:
            raise TokenError(str(exc), name) from None
        now = self._clock.wall_ns()
        if abs(now - created_ns) > self._max_skew_ns:
            raise TokenError("UsernameToken Created is outside the accepted time window", name)
        expected = password_for(name)
        # Compute a digest even for unknown users so timing says nothing about names.
        candidate = password_digest(
            token.nonce, token.created, expected if expected is not None else ""
        )
        if expected is None or not hmac.compare_digest(candidate, token.password.strip()):
            raise TokenError("wrong username or password", name)
        self._expire(now)
        if token.nonce in self._seen:
            raise TokenError("UsernameToken Nonce was already used", name)
        self._seen[token.nonce] = created_ns
        return name

    def _expire(self, now_ns: int) -> None:
        horizon = now_ns - self._max_skew_ns
        seen = self._seen
        while seen:
            nonce, created = next(iter(seen.items()))
            if created >= horizon and len(seen) < self._max_nonces:
                break
            seen.popitem(last=False)
