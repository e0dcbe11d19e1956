"""Server side of HTTP Digest access authentication (RFC 7616, usable by RFC 2617 clients).

Sans-IO: the SOAP HTTP front-end and the RTSP server pass in the request method, the
request-target and the ``Authorization`` value, and send :meth:`DigestAuthority.challenges`
back as ``WWW-Authenticate`` values (ONVIF Core §5.9.3: qop="auth", one challenge per enabled
algorithm, in preference order). RTSP uses the RTSP method and request URI the same way.

Nonces are stateless and unforgeable::

    base64url( issue_ms[8] | random[12] | HMAC-SHA256(secret, issue_ms | random | realm)[:16] )

The issue time is wall-clock ms, so a nonce keeps its meaning across restarts. For replay
protection, the highest nc of each nonce seen in a *valid* request is kept (bounded, oldest
forgotten first). A forgotten nonce, or one issued before this authority was created, is
answered as stale: the client re-authenticates instead of being able to replay a request.

Decisions:

* A missing qop (RFC 2069) and qop=auth-int are refused ('unsupported-qop'): ONVIF requires
  qop="auth", and without cnonce/nc there is no replay protection — except where the caller
  asks for it (``allow_no_qop``: the RTSP server, whose clients often speak only RFC 2069).
* ``userhash=true`` is refused ('unsupported-userhash'): the challenge never offers it, and
  resolving a hashed name would cost one hash per configured user on every request.
* ``username*`` (RFC 7616 §3.4.4, RFC 8187 ``UTF-8''percent-encoded``) is accepted.
* ``opaque`` is sent for clients that expect it but not checked: the nonce already
  authenticates the challenge.
* :meth:`challenges` makes a fresh nonce per call (about 5 us) rather than caching one per
  time bucket: nc is tracked per nonce, so clients sharing one would reject each other.

Not thread-safe: call from the event loop that owns the front-end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from onvif_nvr.clock import Clock

MAX_HEADER_BYTES = 4096

_TIME_BYTES = 8
_RANDOM_BYTES = 12
_MAC_BYTES = 16
_SIGNED_BYTES = _TIME_BYTES + _RANDOM_BYTES
_NONCE_BYTES = _SIGNED_BYTES + _MAC_BYTES  # 36 bytes: base64 without padding, 48 chars
_FUTURE_SKEW_MS = 5_000

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_PARAM_RE = re.compile(
    rf"[ \t,]*({_TOKEN})[ \t]*=[ \t]*(?:{_QUOTED}|({_TOKEN}))[ \t]*(?:,[ \t,]*|\Z)", re.DOTALL
)
_NAME_RE = re.compile(rf"[ \t,]*({_TOKEN})[ \t]*")
_QUOTED_RE = re.compile(_QUOTED, re.DOTALL)
_TOKEN_RE = re.compile(_TOKEN)
_END_RE = re.compile(r"[ \t]*(?:,|\Z)")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{48}")


class DigestError(ValueError):
    """A malformed ``Authorization: Digest`` header."""


def _md5(data: bytes) -> str:
    # Digest-MD5 is what the protocol mandates; the flag keeps FIPS builds working.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# upper-cased wire name -> (name as sent in challenges, hex hash function, session variant)
_ALGORITHMS: dict[str, tuple[str, Callable[[bytes], str], bool]] = {
    "MD5": ("MD5", _md5, False),
    "MD5-SESS": ("MD5-sess", _md5, True),
    "SHA-256": ("SHA-256", _sha256, False),
    "SHA-256-SESS": ("SHA-256-sess", _sha256, True),
}


def parse_authorization(value: str) -> dict[str, str]:
    """Parse an ``Authorization: Digest ...`` value into lower-cased parameter names and values.

    Values may be tokens or quoted strings (backslash escapes removed); duplicate names,
    control characters and values over :data:`MAX_HEADER_BYTES` are rejected.
    """
    if len(value) > MAX_HEADER_BYTES or (
        not value.isascii() and len(value.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES
    ):
        raise DigestError("Digest header is too long")
    if _CTL_RE.search(value):
        raise DigestError("Digest header has control character")
    scheme, _, rest = value.strip(" \t").partition(" ")
    if scheme.lower() != "digest":
        raise DigestError("Authorization header is not Digest")
    rest = rest.strip(" \t")
    if not rest:
        raise DigestError("Digest header has no parameters")
    params: dict[str, str] = {}
    pos, end = 0, len(rest)
    match = _PARAM_RE.match
    while pos < end:
        m = match(rest, pos)
        if m is None:
            raise DigestError(_diagnose(rest, pos))
        name, quoted, token = m.groups()
        name = name.lower()
        if name in params:
            raise DigestError(f'Digest header has duplicate parameter "{name[:40]}"')
        if quoted is None:
            params[name] = token
        else:
            params[name] = _UNESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
        pos = m.end()
    return params


def _diagnose(rest: str, pos: int) -> str:
    """Say why the parameter at ``pos`` did not match; only runs on the error path."""
    m = _NAME_RE.match(rest, pos)
    if m is None:
        return "Digest header has invalid parameter name"
    name = m.group(1).lower()[:40]  # hostile input ends up in logs: keep it short
    pos = m.end()
    if not rest.startswith("=", pos):
        return f'Digest header has parameter "{name}" without value'
    pos += 1
    while rest.startswith((" ", "\t"), pos):
        pos += 1
    value = (_QUOTED_RE if rest.startswith('"', pos) else _TOKEN_RE).match(rest, pos)
    if value is None:
        if rest.startswith('"', pos):
            return "Digest header has unterminated quoted string"
        return f'Digest header has missing value for parameter "{name}"'
    if _END_RE.match(rest, value.end()) is None:
        return f'Digest header has junk after value of parameter "{name}"'
    return "Digest header is malformed"  # not reached: kept so a regex change fails loudly


def _response_for(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The ``response`` a client computes (RFC 7616 §3.4.1), for any nonce."""
    _, h, sess = _ALGORITHMS[algorithm.upper()]
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def _response_rfc2069(
    algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str
) -> str:
    """The ``response`` of RFC 2069 (no qop, no session algorithms)."""
    _, h, _ = _ALGORITHMS[algorithm.upper()]
    ha1 = h(f"{username}:{realm}:{password}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


def _path_qs(uri: str) -> str | None:
    """The path?query a request-target or digest-uri names, or None if it names none."""
    if uri.startswith("/"):
        return uri
    if "://" not in uri:
        return None
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _quote(value: str) -> str:
    if _CTL_RE.search(value):
        raise ValueError("Digest challenge value has control character")
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class DigestResult:
    """Outcome of :meth:`DigestAuthority.verify`; never carries the password or HA1."""

    ok: bool
    username: str | None  # as claimed, also on failure (for logging and throttling)
    stale: bool  # our nonce, right credentials, but expired: re-challenge with stale=true
    reason: str  # 'ok' or a short machine-friendly failure reason


_MALFORMED = DigestResult(False, None, False, "malformed")


class DigestAuthority:
    """Issues Digest challenges for one realm and verifies the answers."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        clock: Clock,
        *,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
        nonce_lifetime_s: int = 300,
        max_tracked_nonces: int = 10000,
        opaque: str | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("Digest secret must be at least 16 bytes")
        if nonce_lifetime_s <= 0 or max_tracked_nonces <= 0:
            raise ValueError("Digest nonce lifetime and tracked nonces must be positive")
        if not algorithms:
            raise ValueError("Digest needs at least one algorithm")
        self.realm = realm
        self._realm_bytes = realm.encode()
        self._secret = secret
        self._clock = clock
        self._lifetime_ms = nonce_lifetime_s * 1000
        self._max_tracked = max_tracked_nonces
        if opaque is None:
            # Stable for a given secret and realm, and reveals neither.
            mac = hmac.digest(secret, b"opaque\0" + self._realm_bytes, "sha256")
            opaque = base64.urlsafe_b64encode(mac[:12]).decode("ascii")
        self._accepted: set[str] = set()
        self._heads: list[str] = []
        for name in algorithms:
            known = _ALGORITHMS.get(name.upper())
            if known is None:
                raise ValueError(f"unsupported Digest algorithm {name!r}")
            if name.upper() in self._accepted:
                raise ValueError(f"duplicate Digest algorithm {name!r}")
            self._accepted.add(name.upper())
            self._heads.append(
                f'Digest realm="{_quote(realm)}", qop="auth", algorithm={known[0]}, nonce="'
            )
        self._tail = f'", opaque="{_quote(opaque)}"'
        # Lets an unknown user cost the same hashing as a known one.
        self._dummy_password = os.urandom(16).hex()
        # nonce -> (issue_ms, highest nc accepted); insertion order = first valid use.
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Nonces issued before this instant and not in _seen may have been used already.
        self._forgotten_before_ms = clock.wall_ns() // 1_000_000

    def challenges(self, *, stale: bool = False) -> list[str]:
        """One ``WWW-Authenticate`` value per algorithm, in preference order, sharing a nonce."""
        signed = (self._clock.wall_ns() // 1_000_000).to_bytes(_TIME_BYTES, "big") + os.urandom(
            _RANDOM_BYTES
        )
        mac = hmac.digest(self._secret, signed + self._realm_bytes, "sha256")[:_MAC_BYTES]
        nonce = base64.urlsafe_b64encode(signed + mac).decode("ascii")
        tail = self._tail + ", stale=true" if stale else self._tail
        return [f"{head}{nonce}{tail}" for head in self._heads]

    def verify(
        self,
        method: str,
        uri: str,
        authorization: str,
        password_for: Callable[[str], str | None],
        *,
        allow_no_qop: bool = False,
    ) -> DigestResult:
        """Check an ``Authorization`` value sent with ``method`` to request-target ``uri``.

        ``password_for`` returns a user's plaintext password, or None for an unknown user.
        ``allow_no_qop`` also accepts RFC 2069 answers (no qop, nc, cnonce), which RTSP
        clients built on live555 (VLC) and GStreamer send; their nonce can be replayed
        within its lifetime, as there is no nonce count to track.
        """
        try:
            p = parse_authorization(authorization)
            username = _claimed_username(p)
        except ValueError:  # DigestError, or bad percent-encoding in username*
            return _MALFORMED
        realm = p.get("realm")
        nonce = p.get("nonce")
        digest_uri = p.get("uri")
        response = p.get("response")
        nc = p.get("nc")
        cnonce = p.get("cnonce")
        qop = p.get("qop")
        if realm is None or nonce is None or digest_uri is None or response is None:
            return DigestResult(False, username, False, "malformed")
        if p.get("userhash", "false").lower() != "false":
            return DigestResult(False, username, False, "unsupported-userhash")
        legacy = allow_no_qop and qop is None and nc is None and cnonce is None
        if not legacy and (qop is None or qop.lower() != "auth"):
            return DigestResult(False, username, False, "unsupported-qop")
        if not legacy and (nc is None or not cnonce or not _NC_RE.fullmatch(nc)):
            return DigestResult(False, username, False, "malformed")
        algorithm = p.get("algorithm", "MD5").upper()
        if algorithm not in self._accepted or (legacy and algorithm.endswith("-SESS")):
            return DigestResult(False, username, False, "unsupported-algorithm")
        if realm != self.realm:
            return DigestResult(False, username, False, "bad-realm")
        if digest_uri != uri:
            wanted = _path_qs(uri)
            if wanted is None or _path_qs(digest_uri) != wanted:
                return DigestResult(False, username, False, "bad-uri")
        issue_ms = self._issue_ms(nonce)
        if issue_ms is None:
            return DigestResult(False, username, False, "bad-nonce")

        password = password_for(username)
        try:
            pw = self._dummy_password if password is None else password
            if legacy:
                expected = _response_rfc2069(
                    algorithm, username, realm, pw, method, digest_uri, nonce
                )
            else:
                assert nc is not None and cnonce is not None and qop is not None
                args = (username, realm, pw, method, digest_uri, nonce, nc, cnonce, qop)
                expected = _response_for(algorithm, *args)
            given = response.lower().encode()
        except UnicodeEncodeError:  # lone surrogates from a lenient header decoder
            return DigestResult(False, username, False, "malformed")
        matched = hmac.compare_digest(expected.encode(), given)
        if password is None:
            return DigestResult(False, username, False, "unknown-user")
        if not matched:
            return DigestResult(False, username, False, "bad-response")

        now_ms = self._clock.wall_ns() // 1_000_000
        if issue_ms + self._lifetime_ms < now_ms or issue_ms > now_ms + _FUTURE_SKEW_MS:
            return DigestResult(False, username, True, "stale-nonce")
        if nc is None:  # RFC 2069: nothing to count
            return DigestResult(True, username, False, "ok")
        count = int(nc, 16)
        seen = self._seen.get(nonce)
        if seen is None:
            if issue_ms < self._forgotten_before_ms:
                return DigestResult(False, username, True, "stale-nonce")
            if count == 0:
                return DigestResult(False, username, False, "nonce-reuse")
            self._track(nonce, issue_ms, count, now_ms)
        elif count <= seen[1]:
            return DigestResult(False, username, False, "nonce-reuse")
        else:
            self._seen[nonce] = (issue_ms, count)
        return DigestResult(True, username, False, "ok")

    def _issue_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we made, or None for anything else."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        mac = hmac.digest(self._secret, raw[:_SIGNED_BYTES] + self._realm_bytes, "sha256")
        if not hmac.compare_digest(mac[:_MAC_BYTES], raw[_SIGNED_BYTES:]):
            return None
        return int.from_bytes(raw[:_TIME_BYTES], "big")

    def _track(self, nonce: str, issue_ms: int, count: int, now_ms: int) -> None:
        seen = self._seen
        # Drop expired entries from the front, then the oldest if still full; anything
        # dropped moves the watermark so that its nonce can only come back as stale.
        while seen:
            first_issue_ms = next(iter(seen.values()))[0]
            if first_issue_ms + self._lifetime_ms >= now_ms and len(seen) < self._max_tracked:
                break
            seen.popitem(last=False)
            self._forgotten_before_ms = max(self._forgotten_before_ms, first_issue_ms + 1)
        seen[nonce] = (issue_ms, count)


def _claimed_username(params: dict[str, str]) -> str:
    plain = params.get("username")
    extended = params.get("username*")
    if extended is None:
        if plain is None:
            raise DigestError("Digest header has no username")
        return plain
    if plain is not None:
        raise DigestError("Digest header has both username and username*")
    charset, _, rest = extended.partition("'")
    _language, quote, encoded = rest.partition("'")
    if not quote or charset.lower() != "utf-8":
        raise DigestError("Digest header has invalid username*")
    return unquote(encoded, encoding="utf-8", errors="strict")
