"""HTTP Digest (RFC 7616) server side: exact parsing, verification rules and real clients.

Client responses are computed here with plain hashlib from the RFC 7616 §3.4.1 formula,
independently of the module under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from requests.auth import HTTPDigestAuth

from onvif_nvr.auth.digest import (
    DigestAuthority,
    DigestError,
    DigestResult,
    _response_for,
    parse_authorization,
)
from onvif_nvr.clock import ManualClock

REALM = "onvif_nvr"
SECRET = b"0123456789abcdef0123456789abcdef"
USERS = {"admin": "s3cret", "Jäsøn Doe": "pässwörd", "empty": ""}
METHOD = "POST"
URI = "/onvif/device_service"


def hexdigest(algorithm: str, data: str) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm.upper().removesuffix("-SESS")]
    return hashlib.new(name, data.encode()).hexdigest()


def client_response(
    algorithm: str,
    *,
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
    ha1 = hexdigest(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = hexdigest(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = hexdigest(algorithm, f"{method}:{uri}")
    return hexdigest(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def answer(
    nonce: str,
    *,
    algorithm: str | None = "MD5",
    username: str = "admin",
    password: str = "s3cret",
    method: str = METHOD,
    uri: str = URI,
    realm: str = REALM,
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    qop: str | None = "auth",
    drop: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> str:
    """An ``Authorization`` value as a well-behaved client would send it."""
    response = client_response(
        algorithm or "MD5",
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc,
        cnonce=cnonce,
        qop=qop or "auth",
    )
    fields = {
        "username": f'"{username}"',
        "realm": f'"{realm}"',
        "nonce": f'"{nonce}"',
        "uri": f'"{uri}"',
        "algorithm": algorithm,
        "response": f'"{response}"',
        "opaque": '"whatever"',
        "qop": qop,
        "nc": nc,
        "cnonce": f'"{cnonce}"',
        **(extra or {}),
    }
    return "Digest " + ", ".join(
        f"{k}={v}" for k, v in fields.items() if v is not None and k not in drop
    )


def make(clock: ManualClock, **kwargs: Any) -> DigestAuthority:
    return DigestAuthority(REALM, SECRET, clock, **kwargs)


def nonce_of(authority: DigestAuthority, *, stale: bool = False) -> str:
    return parse_authorization(authority.challenges(stale=stale)[0])["nonce"]


def verify(authority: DigestAuthority, authorization: str, uri: str = URI) -> DigestResult:
    return authority.verify(METHOD, uri, authorization, USERS.get)


def reason(result: DigestResult) -> tuple[bool, str | None, bool, str]:
    return (result.ok, result.username, result.stale, result.reason)


# --- RFC 7616 §3.9.1 example -------------------------------------------------------------

RFC_EXAMPLE = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "qop": "auth",
}
RFC_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
RFC_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
# The example's Authorization header, its line folding turned into spaces.
RFC_AUTHORIZATION = (
    'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
    'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
    'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
    f'response="{RFC_SHA256}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(("algorithm", "expected"), [("SHA-256", RFC_SHA256), ("MD5", RFC_MD5)])
def test_rfc7616_example_responses(algorithm: str, expected: str) -> None:
    assert client_response(algorithm, **RFC_EXAMPLE) == expected
    assert _response_for(algorithm, **RFC_EXAMPLE) == expected


def test_rfc7616_example_header_parses_and_is_a_foreign_nonce() -> None:
    params = parse_authorization(RFC_AUTHORIZATION)
    assert params["algorithm"] == "SHA-256"
    assert params["qop"] == "auth"
    fields = {k: params[k] for k in ("username", "realm", "uri", "nonce", "nc", "cnonce", "qop")}
    computed = _response_for(params["algorithm"], password="Circle of Life", method="GET", **fields)
    assert computed == params["response"]
    # The authority accepts only nonces it made itself.
    authority = DigestAuthority("http-auth@example.org", SECRET, ManualClock())
    result = authority.verify("GET", "/dir/index.html", RFC_AUTHORIZATION, {"Mufasa": "x"}.get)
    assert reason(result) == (False, "Mufasa", False, "bad-nonce")


def test_response_for_sess_variant_matches_independent_formula() -> None:
    for algorithm in ("MD5-sess", "SHA-256-sess"):
        assert _response_for(algorithm, **RFC_EXAMPLE) == client_response(algorithm, **RFC_EXAMPLE)


# --- challenges ---------------------------------------------------------------------------


def test_challenges_one_per_algorithm_in_order_sharing_a_nonce() -> None:
    authority = make(ManualClock(), algorithms=("SHA-256", "MD5"), opaque="op")
    values = authority.challenges()
    assert len(values) == 2
    nonce = parse_authorization(values[0])["nonce"]
    assert values == [
        f'Digest realm="onvif_nvr", qop="auth", algorithm=SHA-256, nonce="{nonce}", opaque="op"',
        f'Digest realm="onvif_nvr", qop="auth", algorithm=MD5, nonce="{nonce}", opaque="op"',
    ]
    assert len(nonce) == 48


def test_challenges_stale_flag_and_fresh_nonce_per_call() -> None:
    authority = make(ManualClock())
    first, second = authority.challenges(), authority.challenges(stale=True)
    assert [parse_authorization(v)["algorithm"] for v in first] == ["MD5", "SHA-256"]
    assert all("stale" not in parse_authorization(v) for v in first)
    assert all(v.endswith(", stale=true") for v in second)
    assert parse_authorization(first[0])["nonce"] != parse_authorization(second[0])["nonce"]


def test_challenge_quotes_realm_and_derives_stable_opaque() -> None:
    clock = ManualClock()
    odd = DigestAuthority('a "b" \\c', SECRET, clock)
    assert parse_authorization(odd.challenges()[0])["realm"] == 'a "b" \\c'
    opaque = parse_authorization(make(clock).challenges()[0])["opaque"]
    assert opaque == parse_authorization(make(clock).challenges()[0])["opaque"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": b"short"}, "Digest secret must be at least 16 bytes"),
        ({"algorithms": ()}, "Digest needs at least one algorithm"),
        ({"algorithms": ("SHA-512",)}, "unsupported Digest algorithm 'SHA-512'"),
        ({"algorithms": ("MD5", "md5")}, "duplicate Digest algorithm 'md5'"),
        ({"nonce_lifetime_s": 0}, "Digest nonce lifetime and tracked nonces must be positive"),
        ({"realm": "a\r\nb"}, "Digest challenge value has control character"),
    ],
)
def test_constructor_rejects_bad_configuration(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"realm": REALM, "secret": SECRET, "clock": ManualClock()}
    with pytest.raises(ValueError) as info:
        DigestAuthority(**{**args, **kwargs})  # type: ignore[arg-type]
    assert str(info.value) == message


# --- verification -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_accepts_each_enabled_algorithm(algorithm: str) -> None:
    authority = make(ManualClock(), algorithms=(algorithm,))
    challenge = parse_authorization(authority.challenges()[0])
    assert challenge["algorithm"] == algorithm
    result = verify(authority, answer(challenge["nonce"], algorithm=algorithm))
    assert result == DigestResult(True, "admin", False, "ok")


def test_algorithm_defaults_to_md5_and_matches_case_insensitively() -> None:
    authority = make(ManualClock())
    nonce = nonce_of(authority)
    assert verify(authority, answer(nonce, algorithm=None)).ok
    assert verify(authority, answer(nonce, algorithm="sha-256", nc="00000002")).ok


@pytest.mark.parametrize(
    ("enabled", "sent"),
    [(("MD5",), "SHA-256"), (("MD5", "SHA-256"), "MD5-sess"), (("MD5",), "SHA-512-256")],
)
def test_algorithm_not_enabled(enabled: tuple[str, ...], sent: str) -> None:
    authority = make(ManualClock(), algorithms=enabled)
    header = answer(nonce_of(authority)).replace("algorithm=MD5", f"algorithm={sent}")
    assert reason(verify(authority, header)) == (False, "admin", False, "unsupported-algorithm")


def test_wrong_password_and_unknown_user() -> None:
    authority = make(ManualClock())
    nonce = nonce_of(authority)
    wrong = verify(authority, answer(nonce, password="guess"))
    assert reason(wrong) == (False, "admin", False, "bad-response")
    asked: list[str] = []

    def password_for(name: str) -> str | None:
        asked.append(name)
        return None

    unknown = authority.verify(METHOD, URI, answer(nonce, username="mallory"), password_for)
    assert reason(unknown) == (False, "mallory", False, "unknown-user")
    assert asked == ["mallory"]
    assert "s3cret" not in repr(wrong)


def test_empty_password_is_a_password() -> None:
    authority = make(ManualClock())
    assert verify(authority, answer(nonce_of(authority), username="empty", password="")).ok


def test_bad_realm() -> None:
    authority = make(ManualClock())
    result = verify(authority, answer(nonce_of(authority), realm="other"))
    assert reason(result) == (False, "admin", False, "bad-realm")


@pytest.mark.parametrize(
    ("request_target", "digest_uri", "ok"),
    [
        (URI, URI, True),
        ("/onvif/media?x=1", "/onvif/media?x=1", True),
        ("/onvif/media?x=1", "http://10.0.0.5/onvif/media?x=1", True),
        ("http://10.0.0.5:8080/onvif/media", "/onvif/media", True),
        ("rtsp://10.0.0.5:554/stream/1", "rtsp://10.0.0.5:554/stream/1", True),
        ("rtsp://10.0.0.5/", "rtsp://10.0.0.5", True),
        ("*", "*", True),
        (URI, "/onvif/media_service", False),
        ("/onvif/media?x=1", "/onvif/media?x=2", False),
        ("/onvif/media?x=1", "/onvif/media", False),
        ("rtsp://10.0.0.5/stream/1", "rtsp://10.0.0.5/stream/2", False),
        ("*", "/", False),
        ("/a", "a", False),
    ],
)
def test_digest_uri_must_name_the_request_target(
    request_target: str, digest_uri: str, ok: bool
) -> None:
    authority = make(ManualClock())
    result = verify(authority, answer(nonce_of(authority), uri=digest_uri), uri=request_target)
    assert reason(result) == (
        (True, "admin", False, "ok") if ok else (False, "admin", False, "bad-uri")
    )


def test_tampered_and_foreign_nonces_are_bad() -> None:
    clock = ManualClock()
    authority = make(clock)
    nonce = nonce_of(authority)
    assert nonce.startswith("AAABi8_")  # the issue time of ManualClock's default wall clock
    flipped = nonce[:30] + ("A" if nonce[30] != "A" else "B") + nonce[31:]
    standard_alphabet = nonce.replace("_", "/")  # decodes to the same bytes if allowed
    other_secret = nonce_of(DigestAuthority(REALM, b"x" * 32, clock))
    other_realm = nonce_of(DigestAuthority("other", SECRET, clock))
    for bad in (flipped, standard_alphabet, other_secret, other_realm, nonce[:-1], nonce + "A"):
        result = verify(authority, answer(bad))
        assert reason(result) == (False, "admin", False, "bad-nonce"), bad
    for bad in ("", "é" * 48, "=" * 48):
        assert verify(authority, answer(bad)).reason == "bad-nonce", bad


def test_stale_after_lifetime_only_with_right_credentials() -> None:
    clock = ManualClock()
    authority = make(clock, nonce_lifetime_s=300)
    nonce = nonce_of(authority)
    clock.advance(300)
    assert verify(authority, answer(nonce)).ok
    clock.advance(1.001)
    assert reason(verify(authority, answer(nonce, nc="00000002"))) == (
        False,
        "admin",
        True,
        "stale-nonce",
    )
    wrong = verify(authority, answer(nonce, nc="00000003", password="guess"))
    assert reason(wrong) == (False, "admin", False, "bad-response")
    assert verify(authority, answer(nonce_of(authority, stale=True))).ok


def test_nonce_from_the_future_is_stale() -> None:
    clock = ManualClock()
    authority = make(clock)
    nonce = nonce_of(authority)
    clock.set_wall_ns(clock.wall_ns() - 4 * 10**9)  # small step back: tolerated
    assert verify(authority, answer(nonce)).ok
    clock.set_wall_ns(clock.wall_ns() - 2 * 10**9)
    assert verify(authority, answer(nonce, nc="00000002")).reason == "stale-nonce"


def test_nonce_count_must_strictly_increase() -> None:
    authority = make(ManualClock())
    nonce = nonce_of(authority)
    assert verify(authority, answer(nonce, nc="00000001")).ok
    assert verify(authority, answer(nonce, nc="00000001")).reason == "nonce-reuse"
    assert verify(authority, answer(nonce, nc="00000005", cnonce="other")).ok
    assert verify(authority, answer(nonce, nc="00000003")).reason == "nonce-reuse"
    assert verify(authority, answer(nonce, nc="0000000A")).ok
    assert verify(authority, answer(nonce, nc="0000000a")).reason == "nonce-reuse"
    fresh = nonce_of(authority)
    assert verify(authority, answer(fresh, nc="00000000")).reason == "nonce-reuse"
    assert verify(authority, answer(fresh, nc="00000007")).ok  # clients may skip counts


def test_failed_attempt_does_not_advance_the_nonce_count() -> None:
    authority = make(ManualClock())
    nonce = nonce_of(authority)
    forged = verify(authority, answer(nonce, nc="ffffffff", password="guess"))
    assert forged.reason == "bad-response"
    assert verify(authority, answer(nonce, nc="00000001")).ok


def test_forgotten_nonce_comes_back_stale() -> None:
    clock = ManualClock()
    authority = make(clock, max_tracked_nonces=2)
    issued = []
    for _ in range(4):
        issued.append(nonce_of(authority))
        clock.advance(1)
    first, second, third, unused_later = issued
    for nonce in (first, second, third):
        assert verify(authority, answer(nonce)).ok
    # `first` was evicted to make room for `third`: a replay can only be answered stale.
    assert reason(verify(authority, answer(first))) == (False, "admin", True, "stale-nonce")
    assert reason(verify(authority, answer(first, nc="00000002"))) == (
        False,
        "admin",
        True,
        "stale-nonce",
    )
    assert verify(authority, answer(third, nc="00000002")).ok
    assert verify(authority, answer(unused_later)).ok


def test_expired_entries_are_pruned_from_the_replay_map() -> None:
    clock = ManualClock()
    authority = make(clock, nonce_lifetime_s=10)
    for _ in range(5):
        assert verify(authority, answer(nonce_of(authority))).ok
    clock.advance(11)
    assert verify(authority, answer(nonce_of(authority))).ok
    assert len(authority._seen) == 1


def test_restart_with_same_secret_treats_earlier_nonces_as_stale() -> None:
    clock = ManualClock()
    before = make(clock)
    nonce = nonce_of(before)
    assert verify(before, answer(nonce)).ok
    clock.advance(2)
    after = make(clock)  # the replay map did not survive; the secret did
    assert reason(verify(after, answer(nonce, nc="00000002"))) == (
        False,
        "admin",
        True,
        "stale-nonce",
    )


@pytest.mark.parametrize("qop", [None, "auth-int", '"auth-int"', '"auth,auth-int"', "AUTHX"])
def test_qop_other_than_auth_is_unsupported(qop: str | None) -> None:
    # qop=None is an RFC 2069 client: no nc/cnonce, hence no replay protection.
    authority = make(ManualClock())
    header = answer(nonce_of(authority), qop=qop, drop=("nc", "cnonce") if qop is None else ())
    assert reason(verify(authority, header)) == (False, "admin", False, "unsupported-qop")


def test_quoted_qop_and_algorithm_as_sent_by_requests_are_accepted() -> None:
    authority = make(ManualClock())
    header = answer(nonce_of(authority), algorithm="SHA-256")
    header = header.replace("qop=auth", 'qop="auth"').replace("SHA-256,", '"SHA-256",')
    assert verify(authority, header).ok


@pytest.mark.parametrize("field", ["username", "realm", "nonce", "uri", "response", "nc", "cnonce"])
def test_missing_field_is_malformed(field: str) -> None:
    authority = make(ManualClock())
    result = verify(authority, answer(nonce_of(authority), drop=(field,)))
    assert reason(result) == (False, None if field == "username" else "admin", False, "malformed")


@pytest.mark.parametrize("nc", ["1", "0x000001", "000_0001", "+0000001", "0000000g", "000000001"])
def test_nonce_count_must_be_eight_hex_digits(nc: str) -> None:
    authority = make(ManualClock())
    assert verify(authority, answer(nonce_of(authority), nc=nc)).reason == "malformed"


def test_malformed_header_reports_no_username() -> None:
    authority = make(ManualClock())
    assert verify(authority, 'Digest username="admin", realm="x') == DigestResult(
        False, None, False, "malformed"
    )
    assert verify(authority, "Basic YWRtaW46czNjcmV0").reason == "malformed"
    # aiohttp decodes undecodable header bytes as lone surrogates.
    undecodable = answer(nonce_of(authority)).replace('username="admin"', 'username="\udcff"')
    assert reason(verify(authority, undecodable)) == (False, "\udcff", False, "malformed")


def test_extended_username_notation() -> None:
    authority = make(ManualClock())
    nonce = nonce_of(authority)
    extended = {"username*": "UTF-8''J%C3%A4s%C3%B8n%20Doe"}
    header = answer(
        nonce, username="Jäsøn Doe", password="pässwörd", drop=("username",), extra=extended
    )
    assert verify(authority, header) == DigestResult(True, "Jäsøn Doe", False, "ok")
    both = answer(nonce, nc="00000002", extra=extended)
    assert reason(verify(authority, both)) == (False, None, False, "malformed")
    for bad in ("ISO-8859-1''J%E4son", "J%C3%A4son", "UTF-8''J%E4son"):
        header = answer(nonce, drop=("username",), extra={"username*": bad})
        assert verify(authority, header).reason == "malformed", bad


def test_plain_utf8_username_in_quoted_string() -> None:
    authority = make(ManualClock())
    header = answer(nonce_of(authority), username="Jäsøn Doe", password="pässwörd")
    assert verify(authority, header) == DigestResult(True, "Jäsøn Doe", False, "ok")


def test_userhash_is_refused() -> None:
    authority = make(ManualClock())
    nonce = nonce_of(authority)
    hashed = hashlib.sha256(f"admin:{REALM}".encode()).hexdigest()
    header = answer(nonce, username=hashed, extra={"userhash": "true"})
    assert reason(verify(authority, header)) == (False, hashed, False, "unsupported-userhash")
    assert verify(authority, answer(nonce, extra={"userhash": "false"})).ok


# --- parse_authorization -----------------------------------------------------------------


def test_parse_tokens_quoted_strings_and_escapes() -> None:
    value = (
        'dIgEsT  Username="a\\"b\\\\c" ,realm="", nc=00000001,, qop=auth ,'
        "  uri = \"/p?q=\\1\" , username*=UTF-8''%C3%A4 ,"
    )
    assert parse_authorization(value) == {
        "username": 'a"b\\c',
        "realm": "",
        "nc": "00000001",
        "qop": "auth",
        "uri": "/p?q=1",
        "username*": "UTF-8''%C3%A4",
    }
    assert parse_authorization('Digest realm="tab\tand é"') == {"realm": "tab\tand é"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Digest realm="abc', "Digest header has unterminated quoted string"),
        ('Digest realm="abc\\"', "Digest header has unterminated quoted string"),
        ('Digest a=1, b="x', "Digest header has unterminated quoted string"),
        ('Basic realm="x"', "Authorization header is not Digest"),
        ("Digestrealm=x", "Authorization header is not Digest"),
        ("", "Authorization header is not Digest"),
        ("Digest", "Digest header has no parameters"),
        ("Digest   ", "Digest header has no parameters"),
        ("Digest a=1, a=2", 'Digest header has duplicate parameter "a"'),
        ('Digest Realm="x", realm="y"', 'Digest header has duplicate parameter "realm"'),
        ("Digest a=1, =2", "Digest header has invalid parameter name"),
        ("Digest a=1, @=2", "Digest header has invalid parameter name"),
        ("Digest a=1, b", 'Digest header has parameter "b" without value'),
        ("Digest a b=1", 'Digest header has parameter "a" without value'),
        (
            "Digest YWRtaW46czNjcmV0==",
            'Digest header has missing value for parameter "ywrtaw46cznjcmv0"',
        ),
        ("Digest a=1, b=", 'Digest header has missing value for parameter "b"'),
        ("Digest a=, b=1", 'Digest header has missing value for parameter "a"'),
        ("Digest a=@x", 'Digest header has missing value for parameter "a"'),
        ('Digest a="x"y, b=1', 'Digest header has junk after value of parameter "a"'),
        ("Digest a=x y", 'Digest header has junk after value of parameter "a"'),
        ("Digest a=x@y", 'Digest header has junk after value of parameter "a"'),
        ('Digest a="x\r\ny"', "Digest header has control character"),
        ("Digest a=x\x00", "Digest header has control character"),
        ("Digest a=" + "x" * 4090, "Digest header is too long"),
        ('Digest a="' + "é" * 2045 + '"', "Digest header is too long"),
    ],
)
def test_parse_errors_have_exact_messages(value: str, message: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_authorization(value)
    assert str(info.value) == message


def test_parse_accepts_exactly_the_size_limit_and_truncates_names_in_messages() -> None:
    value = "Digest a=" + "x" * (4096 - len("Digest a="))
    assert parse_authorization(value) == {"a": "x" * 4087}
    with pytest.raises(DigestError) as info:
        parse_authorization("Digest " + "n" * 100)
    assert str(info.value) == f'Digest header has parameter "{"n" * 40}" without value'


# --- real clients over loopback -----------------------------------------------------------


@contextlib.asynccontextmanager
async def digest_server(authority: DigestAuthority) -> AsyncIterator[tuple[TestServer, list[str]]]:
    """An aiohttp server that answers 401 + one WWW-Authenticate header per algorithm."""
    received: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        stale = False
        header = request.headers.get("Authorization")
        if header is not None:
            received.append(header)
            result = authority.verify(request.method, request.raw_path, header, USERS.get)
            if result.ok:
                return web.Response(text=f"hello {result.username}")
            stale = result.stale
        headers: CIMultiDict[str] = CIMultiDict()
        for value in authority.challenges(stale=stale):
            headers.add("WWW-Authenticate", value)
        return web.Response(status=401, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server, received


def algorithms_used(received: list[str]) -> list[str]:
    return [parse_authorization(h).get("algorithm", "MD5").strip('"') for h in received]


ORDERS = [("MD5", "SHA-256"), ("SHA-256", "MD5"), ("SHA-256",), ("MD5",)]
NC_SEQUENCE = ["00000001", "00000002", "00000003", "00000001"]


@pytest.mark.parametrize("order", ORDERS)
async def test_httpx_digest_auth_picks_the_first_challenge(order: tuple[str, ...]) -> None:
    clock = ManualClock()
    authority = make(clock, algorithms=order)
    async with digest_server(authority) as (server, received):
        url = str(server.make_url("/onvif/device_service?probe=1"))
        auth = httpx.DigestAuth("admin", "s3cret")
        async with httpx.AsyncClient(auth=auth) as client:
            first = await client.post(url, content=b"<x/>")
            second = await client.post(url, content=b"<y/>")  # reuses the nonce, nc=2
            clock.advance(301)
            third = await client.post(url, content=b"<z/>")  # stale -> re-challenged
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    assert first.text == "hello admin"
    assert [r.status_code for r in third.history] == [401]
    assert all(
        v.endswith("stale=true") for v in third.history[0].headers.get_list("www-authenticate")
    )
    # Sent: 401 then nc=1; nc=2 up front; nc=3 up front -> stale -> nc=1 on the new nonce.
    assert [parse_authorization(h)["nc"] for h in received] == NC_SEQUENCE
    # httpx takes the first WWW-Authenticate header that starts with "Digest ".
    assert algorithms_used(received) == [order[0]] * 4


@pytest.mark.parametrize("order", ORDERS)
async def test_requests_digest_auth_with_one_header_per_algorithm(order: tuple[str, ...]) -> None:
    clock = ManualClock()
    authority = make(clock, algorithms=order)
    async with digest_server(authority) as (server, received):
        url = str(server.make_url("/onvif/device_service?probe=1"))

        def fetch() -> list[requests.Response]:
            with requests.Session() as session:
                session.auth = HTTPDigestAuth("admin", "s3cret")
                responses = [session.post(url, data=b"<x/>"), session.post(url, data=b"<y/>")]
                clock.advance(301)
                responses.append(session.post(url, data=b"<z/>"))
                return responses

        first, second, third = await asyncio.to_thread(fetch)
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    assert first.text == "hello admin"
    assert [r.status_code for r in third.history] == [401]
    assert third.history[0].headers["www-authenticate"].endswith("stale=true")
    assert [parse_authorization(h)["nc"] for h in received] == NC_SEQUENCE
    # requests reads the headers joined with ", " and parses them as one dict, so for
    # repeated keys the last challenge wins: it uses the *last* algorithm offered.
    assert algorithms_used(received) == [order[-1]] * 4


def test_how_requests_reads_two_challenge_headers() -> None:
    """Why requests copes with one header per algorithm, and what would break it.

    urllib3 joins repeated headers with ", " and requests parses the result as one dict. The
    parameter right after "Digest " (realm) is kept from the *first* challenge (later ones
    become a "Digest realm" key); every other parameter is taken from the *last* one. This is
    consistent only because realm is the same in every challenge and the nonce is not tied to
    an algorithm (they even share it); a server whose challenges differed in realm, or put
    algorithm first with per-algorithm nonces, would get mismatched answers from requests.
    """
    values = make(ManualClock(), algorithms=("MD5", "SHA-256")).challenges()
    joined = ", ".join(values)
    chal = requests.utils.parse_dict_header(joined[len("Digest ") :])
    nonce = parse_authorization(values[0])["nonce"]
    assert chal["algorithm"] == "SHA-256"
    assert chal["realm"] == chal["Digest realm"] == REALM
    assert chal["nonce"] == nonce
    # Algorithm first (as in the ONVIF Core example) with one nonce per algorithm: requests
    # would answer with the first algorithm but the last nonce.
    onvif_style = (
        'algorithm=MD5, realm="r", nonce="n1", Digest algorithm=SHA-256, realm="r", nonce="n2"'
    )
    mixed = requests.utils.parse_dict_header(onvif_style)
    assert (mixed["algorithm"], mixed["nonce"]) == ("MD5", "n2")
