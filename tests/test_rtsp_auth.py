"""RTSP client authentication: RFC 7616 vectors, camera challenge quirks, and interop with the
project's own server-side verifier (``onvif_nvr.auth.digest``) as the real peer."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from onvif_nvr.auth.digest import DigestAuthority, parse_authorization
from onvif_nvr.clock import ManualClock
from onvif_nvr.rtsp.auth import Challenge, ClientAuthenticator, choose_challenge, parse_challenges

# RFC 7616 §3.9.1
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_CHALLENGES = [
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"',
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"',
]

REALM = "onvif_nvr"
SECRET = b"0123456789abcdef0123456789abcdef"
USERS = {"admin": "s3cret", "Jäsøn Doe": "pässwörd", 'we"ird\\name': "x"}
URI = "rtsp://127.0.0.1:8554/recording/1"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def rfc_client() -> ClientAuthenticator:
    return ClientAuthenticator("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC_CNONCE)


def test_rfc7616_sha256_vector() -> None:
    client = rfc_client()
    assert client.challenge(RFC_CHALLENGES)
    assert client.algorithm == "SHA-256"  # preferred over MD5
    header = client.authorization("GET", "/dir/index.html")
    assert header is not None
    params = parse_authorization(header)
    assert params["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert params == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "nonce": RFC_NONCE,
        "uri": "/dir/index.html",
        "algorithm": "SHA-256",
        "response": params["response"],
        "opaque": RFC_OPAQUE,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": RFC_CNONCE,
    }


def test_rfc7616_md5_vector() -> None:
    client = rfc_client()
    assert client.challenge(RFC_CHALLENGES[1:])
    header = client.authorization("GET", "/dir/index.html")
    assert header is not None
    assert parse_authorization(header)["response"] == "8ca523f5e9506fed4657c9700eebdbec"
    assert 'algorithm=MD5, response="8ca523f5e9506fed4657c9700eebdbec"' in header


def test_nc_increments_and_cnonce_is_fresh() -> None:
    client = ClientAuthenticator("Mufasa", "Circle of Life")
    client.challenge(RFC_CHALLENGES)
    seen = [parse_authorization(client.authorization("OPTIONS", "*") or "") for _ in range(3)]
    assert [p["nc"] for p in seen] == ["00000001", "00000002", "00000003"]
    assert len({p["cnonce"] for p in seen}) == 3
    client.challenge(RFC_CHALLENGES)  # a new challenge starts counting again
    assert parse_authorization(client.authorization("OPTIONS", "*") or "")["nc"] == "00000001"


def test_rfc2069_challenge_without_qop() -> None:
    client = ClientAuthenticator("admin", "12345")
    assert client.challenge(['Digest realm="IP Camera(C6188)", nonce="3f2ad5c1e0b97d6a"'])
    header = client.authorization("DESCRIBE", URI) or ""
    params = parse_authorization(header)
    assert set(params) == {"username", "realm", "nonce", "uri", "response"}
    ha1, ha2 = md5(b"admin:IP Camera(C6188):12345"), md5(f"DESCRIBE:{URI}".encode())
    assert params["response"] == md5(f"{ha1}:3f2ad5c1e0b97d6a:{ha2}".encode())


def test_auth_int_when_only_auth_int_is_offered() -> None:
    client = ClientAuthenticator("admin", "12345", cnonce_factory=lambda: "c0ffee")
    client.challenge(['Digest realm="r", nonce="n", qop="auth-int"'])
    body = b"barparam: barstuff\r\n"
    params = parse_authorization(client.authorization("SET_PARAMETER", URI, body) or "")
    ha1 = md5(b"admin:r:12345")
    ha2 = md5(f"SET_PARAMETER:{URI}:{md5(body)}".encode())
    assert params["qop"] == "auth-int"
    assert params["response"] == md5(f"{ha1}:n:00000001:c0ffee:auth-int:{ha2}".encode())


def test_basic_only_when_no_digest_is_offered() -> None:
    client = ClientAuthenticator("admin", "pa:ss wörd")
    assert client.authorization("DESCRIBE", URI) is None  # never pre-emptive
    assert client.challenge(['Basic realm="AXIS_ACCC8E000000"'])
    header = client.authorization("DESCRIBE", URI) or ""
    assert header == "Basic " + base64.b64encode("admin:pa:ss wörd".encode()).decode()

    client = ClientAuthenticator("admin", "x")
    assert client.challenge(['Basic realm="cam"', 'Digest realm="cam", nonce="abc"'])
    assert client.scheme == "Digest" and client.algorithm == "MD5"

    # A Digest we cannot compute does not unlock Basic.
    client = ClientAuthenticator("admin", "x")
    assert not client.challenge(
        ['Digest realm="c", nonce="n", algorithm=SHA-512-256, Basic realm="c"']
    )
    assert client.scheme is None and client.authorization("DESCRIBE", URI) is None


def test_parse_challenges_quirks() -> None:
    challenges = parse_challenges(
        [
            # Two challenges in one value, unquoted values with spaces and '/', lower-case
            # algorithm, an unquoted qop list, stale in upper case.
            "Digest realm=IP Camera(12345), nonce=ab/c+d==, qop=auth,auth-int, algorithm=md5, "
            'stale=TRUE, Basic realm="IP Camera(12345)"',
            'digest realm="a \\"quoted\\" realm", nonce="n2", opaque="o", algorithm="SHA-256-sess"',
            "Negotiate",
            'realm="orphan"',  # no scheme: ignored
            "",
        ]
    )
    assert [c.scheme for c in challenges] == ["Digest", "Basic", "Digest", "Negotiate"]
    camera, basic, quoted, negotiate = challenges
    assert camera.realm == "IP Camera(12345)" and camera.nonce == "ab/c+d=="
    assert camera.qops == ("auth", "auth-int") and camera.algorithm == "MD5" and camera.stale
    assert basic == Challenge("Basic", {"realm": "IP Camera(12345)"})
    assert quoted.realm == 'a "quoted" realm' and quoted.opaque == "o"
    assert quoted.algorithm == "SHA-256-SESS" and quoted.qops == () and not quoted.stale
    assert negotiate.params == {}
    assert parse_challenges(['Digest realm="x", nonce="unterminated']) == [
        Challenge("Digest", {"realm": "x", "nonce": "unterminated"})
    ]


def test_choose_prefers_sha256_then_md5() -> None:
    offered = parse_challenges(
        [
            'Digest realm="r", nonce="1", algorithm=MD5-sess, qop="auth"',
            'Digest realm="r", nonce="2", algorithm=MD5, qop="auth"',
            'Digest realm="r", nonce="3", algorithm=SHA-256-sess, qop="auth"',
            'Digest realm="r", nonce="4", algorithm=SHA-256, qop="auth"',
            'Digest realm="r", nonce="5", algorithm=SHA-256, qop="auth"',
        ]
    )
    chosen = [choose_challenge(offered[:n]) for n in (1, 2, 3, 4, 5)]
    assert [c.nonce if c else None for c in chosen] == ["1", "2", "3", "4", "4"]
    # No usable qop, or no nonce: not answerable.
    assert choose_challenge(parse_challenges(['Digest realm="r", nonce="1", qop="x"'])) is None
    assert choose_challenge(parse_challenges(['Digest realm="r"'])) is None


def test_password_never_shown() -> None:
    client = ClientAuthenticator("admin", "hunter2-secret")
    client.challenge(['Basic realm="cam"'])
    for text in (repr(client), str(client), f"{client}"):
        assert "hunter2" not in text and "admin" in text
    with pytest.raises(ValueError, match="^username has control character$"):
        ClientAuthenticator("ad\r\nmin", "x")


# ---- interop with the server-side verifier -----------------------------------------------


def authority(clock: ManualClock, *algorithms: str) -> DigestAuthority:
    return DigestAuthority(REALM, SECRET, clock, algorithms=algorithms or ("MD5", "SHA-256"))


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
@pytest.mark.parametrize("username", list(USERS))
def test_interop_with_digest_authority(algorithm: str, username: str) -> None:
    clock = ManualClock()
    server = authority(clock, algorithm)
    client = ClientAuthenticator(username, USERS[username])
    assert client.challenge(server.challenges())
    assert client.algorithm == algorithm.upper()
    cnonces = []
    for n, method in enumerate(["DESCRIBE", "SETUP", "SETUP", "PLAY", "GET_PARAMETER"], 1):
        header = client.authorization(method, URI)
        assert header is not None
        result = server.verify(method, URI, header, USERS.get)
        assert result.ok and result.username == username, result
        params = parse_authorization(header)
        assert params["nc"] == f"{n:08x}"
        cnonces.append(params["cnonce"])
        clock.advance(10)
    # -sess keeps the cnonce that keyed the session; the others use a fresh one each time.
    assert len(set(cnonces)) == (1 if algorithm.endswith("-sess") else 5)
    # The verifier refuses a replay: nc must grow.
    assert header is not None
    assert not server.verify("GET_PARAMETER", URI, header, USERS.get).ok


def test_client_picks_sha256_from_the_default_challenges() -> None:
    server = authority(ManualClock())
    client = ClientAuthenticator("admin", "s3cret")
    assert client.challenge(server.challenges())
    assert client.algorithm == "SHA-256"
    assert server.verify("OPTIONS", URI, client.authorization("OPTIONS", URI) or "", USERS.get).ok


def test_stale_nonce_rechallenge() -> None:
    clock = ManualClock()
    server = authority(clock)
    client = ClientAuthenticator("admin", "s3cret")
    assert client.challenge(server.challenges())
    for _ in range(2):
        assert server.verify(
            "OPTIONS", URI, client.authorization("OPTIONS", URI) or "", USERS.get
        ).ok
    clock.advance(301)  # past the nonce lifetime
    result = server.verify(
        "GET_PARAMETER", URI, client.authorization("GET_PARAMETER", URI) or "", USERS.get
    )
    assert not result.ok and result.stale
    values = server.challenges(stale=result.stale)
    assert all(re.search(r"stale=true", v) for v in values)
    assert client.challenge(values)
    header = client.authorization("GET_PARAMETER", URI) or ""
    assert parse_authorization(header)["nc"] == "00000001"
    assert server.verify("GET_PARAMETER", URI, header, USERS.get).ok


def test_wrong_password_is_not_retried_forever() -> None:
    server = authority(ManualClock())
    client = ClientAuthenticator("admin", "wrong")
    assert client.challenge(server.challenges())  # first 401: try the credentials
    result = server.verify("DESCRIBE", URI, client.authorization("DESCRIBE", URI) or "", USERS.get)
    assert not result.ok and not result.stale
    assert not client.challenge(server.challenges())  # refused again: stop


def test_nonce_expiry_without_stale_flag_is_retried_after_success() -> None:
    # Cameras often answer an expired nonce with a plain new 401 (no stale=true).
    client = ClientAuthenticator("admin", "12345")
    assert client.challenge(['Digest realm="cam", nonce="n1", qop="auth"'])
    client.authorization("DESCRIBE", URI)  # 200
    client.authorization("SETUP", URI)  # 401 with a new nonce
    assert client.challenge(['Digest realm="cam", nonce="n2", qop="auth"'])
    client.authorization("SETUP", URI)  # 401 again: the credentials are the problem now
    assert not client.challenge(['Digest realm="cam", nonce="n3", qop="auth"'])
