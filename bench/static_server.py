"""Trivial aiohttp server for calibrating the load generator; never a measured peer.

Default mode answers every POST with one canned SOAP body (after a Digest 401 for a bare
GetDeviceInformation, so the Digest client can get its nonce): the cheapest server aiohttp
allows, so the load generator's rate against it is its ceiling on this machine.

``--verify-auth`` turns it into a stand-in that checks what the load generator sends:
Digest responses with nc replay detection (and a ``stale=true`` every few hundred uses
of a nonce, to exercise the client's retry) and UsernameToken PasswordDigest with nonce
replay detection. ``python -m bench.soap --selftest`` uses it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import secrets
import time

from aiohttp import web
from multidict import CIMultiDict

NS = "http://www.onvif.org/ver10/device/wsdl"
CANNED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
    f'<tds:GetSystemDateAndTimeResponse xmlns:tds="{NS}"/>'
    f'<tds:GetDeviceInformationResponse xmlns:tds="{NS}"/>'
    f'<tds:GetServicesResponse xmlns:tds="{NS}"/>'
    "</env:Body></env:Envelope>"
).encode()
REALM = "bench"
STALE_EVERY = 300


def challenge_headers(nonce: str, stale: bool = False) -> CIMultiDict[str]:
    extra = ", stale=true" if stale else ""
    # SHA-256 first, as a real device may offer it first; the client must pick MD5.
    return CIMultiDict(
        (
            (
                "WWW-Authenticate",
                f'Digest realm="{REALM}", qop="auth", algorithm=SHA-256, '
                f'nonce="{nonce}", opaque="abc"{extra}',
            ),
            (
                "WWW-Authenticate",
                f'Digest realm="{REALM}", qop="auth", algorithm=MD5, '
                f'nonce="{nonce}", opaque="abc"{extra}',
            ),
        )
    )


def static_app() -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if (
            b"GetDeviceInformation" in body
            and "Authorization" not in request.headers
            and b"UsernameToken" not in body
        ):
            return web.Response(status=401, headers=challenge_headers("static-nonce"))
        return web.Response(body=CANNED, content_type="application/soap+xml", charset="utf-8")

    app = web.Application()
    app.router.add_post("/onvif/device_service", handle)
    return app


_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
_WSSE = {
    name: re.compile(rb"<(?:\w+:)?" + name.encode() + rb"\b[^>]*>([^<]*)<")
    for name in ("Username", "Password", "Nonce", "Created")
}


class AuthVerifier:
    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password
        self.ha1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
        self.nonces: dict[str, int] = {}  # nonce -> highest nc seen
        self.wsse_nonces: set[bytes] = set()

    def new_nonce(self) -> str:
        nonce = secrets.token_hex(16)
        self.nonces[nonce] = 0
        return nonce

    def digest(self, request: web.Request, header: str) -> web.Response | None:
        p = {m.group(1): m.group(2) or m.group(3) for m in _PARAM.finditer(header[7:])}
        last = self.nonces.get(p.get("nonce", ""))
        if last is None:
            return web.Response(status=401, headers=challenge_headers(self.new_nonce(), True))
        nc = int(p["nc"], 16)
        if p.get("username") != self.user or p.get("algorithm") != "MD5" or nc <= last:
            return web.Response(status=401, text=f"bad digest fields or replayed nc {nc}")
        ha2 = hashlib.md5(f"{request.method}:{p['uri']}".encode()).hexdigest()
        want = hashlib.md5(
            f"{self.ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}".encode()
        ).hexdigest()
        if p.get("response") != want:
            return web.Response(status=401, text="wrong digest response")
        self.nonces[p["nonce"]] = nc
        if nc >= STALE_EVERY:
            del self.nonces[p["nonce"]]
            return web.Response(status=401, headers=challenge_headers(self.new_nonce(), True))
        return None

    def wsse(self, body: bytes) -> web.Response | None:
        f = {k: (m.group(1) if (m := r.search(body)) else b"") for k, r in _WSSE.items()}
        if f["Username"].decode() != self.user:
            return web.Response(status=401, text="unknown user")
        nonce = base64.b64decode(f["Nonce"])
        want = base64.b64encode(
            hashlib.sha1(nonce + f["Created"] + self.password.encode()).digest()
        )
        if want != f["Password"]:
            return web.Response(status=401, text="wrong PasswordDigest")
        if nonce in self.wsse_nonces:
            return web.Response(status=401, text="replayed nonce")
        created = time.mktime(time.strptime(f["Created"][:19].decode(), "%Y-%m-%dT%H:%M:%S"))
        if abs(created - time.mktime(time.gmtime())) > 300:
            return web.Response(status=401, text="Created too far from now")
        self.wsse_nonces.add(nonce)
        return None


def verifying_app(user: str, password: str) -> web.Application:
    verifier = AuthVerifier(user, password)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if b"GetDeviceInformation" in body:
            header = request.headers.get("Authorization", "")
            if header.startswith("Digest "):
                denied = verifier.digest(request, header)
            elif b"UsernameToken" in body:
                denied = verifier.wsse(body)
            else:
                denied = web.Response(status=401, headers=challenge_headers(verifier.new_nonce()))
            if denied is not None:
                return denied
        return web.Response(body=CANNED, content_type="application/soap+xml", charset="utf-8")

    app = web.Application()
    app.router.add_post("/onvif/device_service", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.static_server", description=__doc__)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--verify-auth", action="store_true")
    args = p.parse_args(argv)
    if args.verify_auth:
        app = verifying_app("admin", os.environ.get("BENCH_PASSWORD", ""))
    else:
        app = static_app()
    web.run_app(app, host=args.bind, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
