"""Client side of RTSP (and HTTP) authentication: answering a camera's 401 challenge.

Sans-IO. The ingest client passes the ``WWW-Authenticate`` values of a 401 to
:meth:`ClientAuthenticator.challenge` and puts :meth:`ClientAuthenticator.authorization` into
every later request. The server side (verifying our own users) is ``onvif_nvr.auth.digest``.

Decisions:

* Preference: Digest SHA-256 > SHA-256-sess > MD5 > MD5-sess. Basic is used only when no
  Digest challenge is offered at all (a Digest we cannot compute, e.g. SHA-512-256, does not
  unlock Basic: that would hand the password to whoever stripped the other challenges).
* Credentials are never sent before a challenge (no pre-emptive Basic).
* qop=auth when offered, auth-int when only that is offered, RFC 2069 style (no qop, nc,
  cnonce) when the challenge names no qop; nc counts requests per nonce.
* A fresh cnonce per request, except for ``-sess`` algorithms, whose session key
  H(HA1:nonce:cnonce) is fixed by the first cnonce after the challenge (RFC 7616 §3.4.2):
  servers may cache that key.
* The password lives in one private attribute and appears in no repr, str or exception.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A parameter: quoted value, or (camera quirk) anything unquoted up to the next comma.
_PARAM_RE = re.compile(rf'[ \t,]*({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"?|([^,]*))', re.S)
_SCHEME_RE = re.compile(rf"[ \t,]*({_TOKEN})(?=[ \t,]|\Z)")
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
_QOP_VALUES = ("auth", "auth-int")

# upper-cased algorithm -> preference rank (lower is better)
_RANK = {"SHA-256": 0, "SHA-256-SESS": 1, "MD5": 2, "MD5-SESS": 3}


def _md5(data: bytes) -> str:
    # MD5 is what the camera asks for; the flag keeps FIPS builds working.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_HASHES: dict[str, Callable[[bytes], str]] = {"MD5": _md5, "SHA-256": _sha256}


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` value; ``params`` names are lower-cased."""

    scheme: str  # "Digest" and "Basic" normalized to that spelling, others as sent
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    @property
    def opaque(self) -> str | None:
        return self.params.get("opaque")

    @property
    def algorithm(self) -> str:
        """Upper-cased (cameras send ``md5`` too); MD5 when absent (RFC 7616 §3.3)."""
        return self.params.get("algorithm", "MD5").strip().upper()

    @property
    def qops(self) -> tuple[str, ...]:
        """Offered qop values, lower-cased; empty for an RFC 2069 challenge."""
        raw = self.params.get("qop", "")
        return tuple(q.strip().lower() for q in raw.split(",") if q.strip())

    @property
    def stale(self) -> bool:
        return self.params.get("stale", "").strip().lower() == "true"


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """All challenges of some ``WWW-Authenticate`` (or ``Proxy-Authenticate``) values.

    Lenient, because cameras are: several challenges in one value, unquoted values (even with
    spaces or '/'), an unquoted ``qop=auth,auth-int`` list, any case of scheme and names.
    Unparseable text ends that value's parsing; what was understood before it is kept.
    """
    challenges: list[Challenge] = []
    for value in values:
        current: Challenge | None = None
        last_name = ""
        pos, end = 0, len(value)
        while pos < end:
            param = _PARAM_RE.match(value, pos)
            if param is not None and current is not None:
                name, quoted, bare = param.groups()
                name = name.lower()
                text = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else bare.strip()
                current.params.setdefault(name, text)
                last_name, pos = name, param.end()
                continue
            scheme = _SCHEME_RE.match(value, pos)
            if scheme is None:
                break
            token = scheme.group(1)
            if current is not None and last_name == "qop" and token.lower() in _QOP_VALUES:
                # "qop=auth,auth-int" unquoted: the comma split the list, not the challenge.
                current.params["qop"] += "," + token
            else:
                normalized = {"digest": "Digest", "basic": "Basic"}.get(token.lower(), token)
                current = Challenge(normalized, {})
                challenges.append(current)
                last_name = ""
            pos = scheme.end()
    return challenges


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _usable(challenge: Challenge) -> bool:
    return (
        challenge.scheme == "Digest"
        and bool(challenge.nonce)
        and challenge.algorithm in _RANK
        and not _CTL_RE.search(challenge.nonce or "")
        and not _CTL_RE.search(challenge.realm or "")
        and not _CTL_RE.search(challenge.opaque or "")
        and (not challenge.qops or any(q in _QOP_VALUES for q in challenge.qops))
    )


def choose_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer (see the module's preference order), or None."""
    challenges = list(challenges)
    digests = [c for c in challenges if _usable(c)]
    if digests:
        return min(digests, key=lambda c: _RANK[c.algorithm])  # first of the best rank
    if any(c.scheme == "Digest" for c in challenges):
        return None
    return next((c for c in challenges if c.scheme == "Basic"), None)


class ClientAuthenticator:
    """Credentials for one camera and the challenge they currently answer.

    ``cnonce_factory`` is the seam for deterministic tests; by default 128 random bits.
    Not thread-safe: one instance per connection, used from its event loop.
    """

    def __init__(
        self, username: str, password: str, *, cnonce_factory: Callable[[], str] | None = None
    ) -> None:
        if _CTL_RE.search(username):
            raise ValueError("username has control character")
        self.username = username
        self._password = password
        self._new_cnonce = cnonce_factory or (lambda: secrets.token_hex(16))
        self._challenge: Challenge | None = None
        self._nc = 0
        self._session_cnonce: str | None = None
        self._sent = 0  # authorizations computed since the current challenge

    @property
    def scheme(self) -> str | None:
        """The scheme answered ("Digest" or "Basic"); None before a usable challenge."""
        return None if self._challenge is None else self._challenge.scheme

    @property
    def algorithm(self) -> str | None:
        c = self._challenge
        return c.algorithm if c is not None and c.scheme == "Digest" else None

    def __repr__(self) -> str:
        return (
            f"ClientAuthenticator(username={self.username!r}, scheme={self.scheme!r}, "
            f"algorithm={self.algorithm!r})"
        )

    __str__ = __repr__

    def challenge(self, values: Iterable[str]) -> bool:
        """Take the ``WWW-Authenticate`` values of a 401; True if a retry can succeed.

        False when nothing usable is offered, or when the one request answered with the
        previous challenge was refused and the server does not call the nonce stale (wrong
        credentials: retrying would loop). After two or more answered requests a new,
        non-stale challenge is still retried, because cameras expire nonces without saying
        stale=true; this assumes requests wait for their response, as the ingest's do.
        """
        chosen = choose_challenge(parse_challenges(values))
        answered, self._sent = self._sent, 0
        self._challenge = chosen
        self._nc = 0
        self._session_cnonce = None
        if chosen is None:
            return False
        return chosen.stale or answered != 1

    def authorization(self, method: str, uri: str, body: bytes = b"") -> str | None:
        """The ``Authorization`` value for the next request, or None before any challenge.

        ``uri`` is the request URI exactly as sent; ``body`` matters only for qop=auth-int.
        """
        c = self._challenge
        if c is None:
            return None
        self._sent += 1
        if c.scheme == "Basic":
            pair = f"{self.username}:{self._password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        if _CTL_RE.search(method) or _CTL_RE.search(uri):
            raise ValueError("method or URI has control character")
        algorithm = c.algorithm
        sess = algorithm.endswith("-SESS")
        h = _HASHES[algorithm.removesuffix("-SESS")]
        realm, nonce = c.realm or "", c.nonce or ""
        qops = c.qops
        qop = "auth" if "auth" in qops else ("auth-int" if qops else None)
        self._nc += 1
        nc = f"{self._nc:08x}"
        if sess:
            if self._session_cnonce is None:
                self._session_cnonce = self._new_cnonce()
            cnonce = self._session_cnonce
        else:
            cnonce = self._new_cnonce()
        ha1 = h(f"{self.username}:{realm}:{self._password}".encode())
        if sess:
            ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
        ha2_input = f"{method}:{uri}" + (f":{h(body)}" if qop == "auth-int" else "")
        ha2 = h(ha2_input.encode())
        if qop is None:
            response = h(f"{ha1}:{nonce}:{ha2}".encode())
        else:
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
        parts = [
            f'username="{_quote(self.username)}"',
            f'realm="{_quote(realm)}"',
            f'nonce="{_quote(nonce)}"',
            f'uri="{_quote(uri)}"',
        ]
        if "algorithm" in c.params:
            # Echo the server's spelling: some firmware compares it case-sensitively.
            parts.append(f"algorithm={c.params['algorithm'].strip()}")
        parts.append(f'response="{response}"')
        if c.opaque is not None:
            parts.append(f'opaque="{_quote(c.opaque)}"')
        if qop is not None:
            parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{_quote(cnonce)}"']
        elif sess:
            parts.append(f'cnonce="{_quote(cnonce)}"')
        return "Digest " + ", ".join(parts)
