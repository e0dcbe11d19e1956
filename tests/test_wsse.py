"""WS-UsernameToken verification, sans-IO, with a manual clock."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from onvif_nvr.clock import ManualClock
from onvif_nvr.soap import wsse
from tests.soaputil import username_token

NOW_NS = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z
CREATED = "2027-01-15T08:00:00.000Z"


def token(**kwargs) -> wsse.UsernameToken:
    header = etree.fromstring(f"<h>{username_token('admin', 'pw', **kwargs)}</h>")
    return wsse.parse_username_token(wsse.find_security_header(header))


def verifier(**kwargs) -> wsse.UsernameTokenVerifier:
    return wsse.UsernameTokenVerifier(ManualClock(wall_ns=NOW_NS), **kwargs)


def users(name: str) -> str | None:
    return {"admin": "pw"}.get(name)


def test_known_digest_vector():
    # The digest is Base64(SHA-1(nonce + created + password)).
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert (
        wsse.password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword")
        == "tuOSpGlFlIXsozq4HFNeeGeFLEI="
    )


def test_valid_token_and_replay():
    v = verifier()
    t = token(nonce=b"0123456789abcdef", created=CREATED)
    assert v.verify(t, users) == "admin"
    with pytest.raises(wsse.TokenError, match="UsernameToken Nonce was already used"):
        v.verify(t, users)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": ("Nonce",)}, "UsernameToken has no Nonce"),
        ({"drop": ("Created",)}, "UsernameToken has no Created"),
        ({"drop": ("Type",)}, "UsernameToken Password has no Type"),
        ({"password_type": "urn:other"}, "UsernameToken Password Type is not supported"),
        (
            {
                "password_type": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
            },
            "PasswordText is not accepted; use PasswordDigest",
        ),
        (
            {"created": "2027-01-15T07:54:59Z"},
            "UsernameToken Created is outside the accepted time window",
        ),
        (
            {"created": "2027-01-15T08:05:01Z"},
            "UsernameToken Created is outside the accepted time window",
        ),
        ({"created": "noon"}, "Created is not an xs:dateTime: 'noon'"),
        ({"nonce": b"short"}, "UsernameToken Nonce must be 8 to 128 bytes"),
    ],
)
def test_rejections(kwargs, message):
    kwargs.setdefault("created", CREATED)
    with pytest.raises(wsse.TokenError) as info:
        verifier().verify(token(**kwargs), users)
    assert str(info.value) == message
    assert info.value.username == "admin"


def test_wrong_password_and_unknown_user():
    v = verifier()
    header = etree.fromstring(f"<h>{username_token('admin', 'nope', created=CREATED)}</h>")
    with pytest.raises(wsse.TokenError, match="wrong username or password"):
        v.verify(wsse.parse_username_token(wsse.find_security_header(header)), users)
    header = etree.fromstring(f"<h>{username_token('ghost', 'pw', created=CREATED)}</h>")
    with pytest.raises(wsse.TokenError, match="wrong username or password"):
        v.verify(wsse.parse_username_token(wsse.find_security_header(header)), users)


def test_password_text_when_allowed():
    t = token(
        created=CREATED,
        password_type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText",
    )
    assert verifier(allow_password_text=True).verify(t, users) == "admin"


def test_malformed_tokens():
    ns = f'xmlns:wsse="{wsse.WSSE}"'
    for inner, message in [
        ("", "Security header has no UsernameToken"),
        ("<wsse:UsernameToken/>", "UsernameToken has no Username"),
        (
            "<wsse:UsernameToken><wsse:Username>a</wsse:Username></wsse:UsernameToken>",
            "UsernameToken has no Password",
        ),
        (
            "<wsse:UsernameToken><wsse:Username>a</wsse:Username><wsse:Password>x</wsse:Password><wsse:Nonce>@@@</wsse:Nonce></wsse:UsernameToken>",
            "UsernameToken Nonce is not valid base64",
        ),
    ]:
        security = etree.fromstring(f"<wsse:Security {ns}>{inner}</wsse:Security>")
        with pytest.raises(wsse.TokenError) as info:
            wsse.parse_username_token(security)
        assert str(info.value) == message


def test_nonce_memory_expires_with_the_window():
    clock = ManualClock(wall_ns=NOW_NS)
    v = wsse.UsernameTokenVerifier(clock, max_skew_s=300)
    v.verify(token(nonce=b"A" * 16, created=CREATED), users)
    clock.advance(301)
    # A replay is now refused by the window itself, and the memory has been trimmed.
    with pytest.raises(wsse.TokenError, match="outside the accepted time window"):
        v.verify(token(nonce=b"A" * 16, created=CREATED), users)
    v.verify(token(nonce=b"B" * 16, created="2027-01-15T08:05:01.000Z"), users)
    assert len(v._seen) == 1
