"""Closed-loop SOAP-over-HTTP load generator on bare asyncio.

Each client is one keep-alive TCP connection with one request in flight. It is written so
that it is not the bottleneck of the measurement: requests are pre-built bytes (only the
per-request auth fields are formatted), responses are framed by the status line and
``Content-Length`` alone, and the next request is sent from ``data_received`` without a
task switch. ``python -m bench.loadgen`` runs one cell and prints its figures as JSON;
``bench.soap`` runs it pinned to its own core.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import ipaddress
import json
import os
import re
import resource
import sys
import time
from dataclasses import dataclass

from bench.common import DEVICE_PATH, cores_busy_s, proc_cpu_s

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)

BODIES = {
    "GetSystemDateAndTime": f'<tds:GetSystemDateAndTime xmlns:tds="{NS_DEVICE}"/>',
    "GetDeviceInformation": f'<tds:GetDeviceInformation xmlns:tds="{NS_DEVICE}"/>',
    "GetServices": (
        f'<tds:GetServices xmlns:tds="{NS_DEVICE}">'
        "<tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>"
    ),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    operation: str
    #: "none", "digest" (HTTP Digest, MD5, qop=auth) or "wsse" (UsernameToken PasswordDigest).
    auth: str
    description: str

    @property
    def expected(self) -> bytes:
        """Element name a correct answer's body must contain."""
        return (self.operation + "Response").encode()


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "devinfo-digest",
            "GetDeviceInformation",
            "digest",
            "GetDeviceInformation, HTTP Digest MD5 qop=auth",
        ),
        Scenario(
            "devinfo-wsse",
            "GetDeviceInformation",
            "wsse",
            "GetDeviceInformation, WS-UsernameToken PasswordDigest",
        ),
        Scenario("getservices", "GetServices", "none", "GetServices IncludeCapability=false"),
        Scenario("gsdt", "GetSystemDateAndTime", "none", "GetSystemDateAndTime"),
        Scenario("devinfo-noauth", "GetDeviceInformation", "none", "GetDeviceInformation, no auth"),
    )
}


def envelope(body: str, header: str = "") -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope xmlns:s="{NS_SOAP12}">'
        f"{head}<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def http_head(host: str, port: int, length: int, extra: bytes = b"") -> bytes:
    return (
        f"POST {DEVICE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/soap+xml; charset=utf-8\r\n"
        f"Content-Length: {length}\r\n"
    ).encode() + extra


def plain_request(host: str, port: int, operation: str) -> bytes:
    """A complete unauthenticated request for ``operation``."""
    body = envelope(BODIES[operation])
    return http_head(host, port, len(body)) + b"\r\n" + body


_AUTH_PARAM = re.compile(rb'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]*))')


def parse_challenges(head_lower: bytes, head: bytes) -> list[dict[str, str]]:
    """Every ``WWW-Authenticate: Digest ...`` header of a response, as parameter dicts.

    Keys are lower-cased; values keep their case (nonce and opaque are case-sensitive),
    which is why the original ``head`` is sliced at the offsets found in ``head_lower``.
    """
    out = []
    pos = 0
    marker = b"\r\nwww-authenticate:"
    while (i := head_lower.find(marker, pos)) >= 0:
        start = i + len(marker)
        end = head_lower.find(b"\r\n", start)
        end = len(head) if end < 0 else end
        value = head[start:end].strip()
        pos = end
        if value[:7].lower() != b"digest ":
            continue
        params = {}
        for m in _AUTH_PARAM.finditer(value[7:]):
            v = m.group(2) if m.group(2) is not None else m.group(3)
            params[m.group(1).decode().lower()] = v.decode()
        out.append(params)
    return out


def pick_md5(challenges: list[dict[str, str]]) -> dict[str, str] | None:
    for c in challenges:
        if c.get("algorithm", "MD5").upper() == "MD5" and "nonce" in c:
            return c
    return None


class PlainAuth:
    """No authentication: the same pre-built bytes every time."""

    needs_challenge = False

    def __init__(self, host: str, port: int, scenario: Scenario) -> None:
        self.request = plain_request(host, port, scenario.operation)

    def build(self, conn: _Conn) -> bytes:
        return self.request


class DigestAuth:
    """RFC 7616 Digest, MD5, qop=auth; one nonce per connection with an incrementing nc."""

    needs_challenge = True

    def __init__(self, host: str, port: int, scenario: Scenario, user: str, pw: str) -> None:
        self.user = user
        self.pw = pw
        self.body = envelope(BODIES[scenario.operation])
        self.probe = plain_request(host, port, scenario.operation)
        self.head = http_head(host, port, len(self.body))
        self.ha2 = hashlib.md5(f"POST:{DEVICE_PATH}".encode()).hexdigest()
        self._ha1: dict[str, str] = {}

    def adopt(self, conn: _Conn, challenge: dict[str, str]) -> None:
        """Take a (new) nonce from a challenge for this connection."""
        realm = challenge.get("realm", "")
        ha1 = self._ha1.get(realm)
        if ha1 is None:
            ha1 = self._ha1[realm] = hashlib.md5(
                f"{self.user}:{realm}:{self.pw}".encode()
            ).hexdigest()
        nonce = challenge["nonce"]
        opaque = challenge.get("opaque")
        fields = (
            f'username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{DEVICE_PATH}", '
            "algorithm=MD5, "
        )
        if opaque is not None:
            fields += f'opaque="{opaque}", '
        conn.nc = 0
        conn.digest_prefix = self.head + b"Authorization: Digest " + fields.encode() + b'response="'
        conn.digest_hash_prefix = f"{ha1}:{nonce}:".encode()

    def build(self, conn: _Conn) -> bytes:
        conn.nc += 1
        nc = b"%08x" % conn.nc
        cnonce = os.urandom(8).hex().encode()
        response = hashlib.md5(
            conn.digest_hash_prefix + nc + b":" + cnonce + b":auth:" + self.ha2.encode()
        ).hexdigest()
        return (
            conn.digest_prefix
            + response.encode()
            + b'", qop=auth, nc='
            + nc
            + b', cnonce="'
            + cnonce
            + b'"\r\n\r\n'
            + self.body
        )


class WsseAuth:
    """WS-Security UsernameToken, PasswordDigest, fresh Nonce and Created on every request."""

    needs_challenge = False

    def __init__(self, host: str, port: int, scenario: Scenario, user: str, pw: str) -> None:
        self.pw = pw.encode()
        header = (
            f'<wsse:Security xmlns:wsse="{NS_WSSE}" xmlns:wsu="{NS_WSU}" s:mustUnderstand="1">'
            f"<wsse:UsernameToken><wsse:Username>{_xml_escape(user)}</wsse:Username>"
            f'<wsse:Password Type="{PASSWORD_DIGEST}">\x00</wsse:Password>'
            f'<wsse:Nonce EncodingType="{BASE64_BINARY}">\x00</wsse:Nonce>'
            "<wsu:Created>\x00</wsu:Created></wsse:UsernameToken></wsse:Security>"
        )
        parts = envelope(BODIES[scenario.operation], header).split(b"\x00")
        self.p0, self.p1, self.p2, self.p3 = parts
        # Digest (28 chars), Nonce (24) and Created (24, millisecond precision) have fixed
        # lengths, so the head can be built once.
        length = sum(map(len, parts)) + 28 + 24 + 24
        self.head = http_head(host, port, length) + b"\r\n"
        self._second = -1
        self._stamp = b""

    def created(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return self._stamp + b"%03dZ" % int((now - second) * 1000)

    def build(self, conn: _Conn) -> bytes:
        nonce = os.urandom(16)
        created = self.created()
        digest = base64.b64encode(hashlib.sha1(nonce + created + self.pw).digest())
        return (
            self.head
            + self.p0
            + digest
            + self.p1
            + base64.b64encode(nonce)
            + self.p2
            + created
            + self.p3
        )


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_auth(
    scenario: Scenario, host: str, port: int, user: str, pw: str
) -> PlainAuth | DigestAuth | WsseAuth:
    if scenario.auth == "digest":
        return DigestAuth(host, port, scenario, user, pw)
    if scenario.auth == "wsse":
        return WsseAuth(host, port, scenario, user, pw)
    return PlainAuth(host, port, scenario)


def _dechunk(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """Body and end offset of a chunked body starting at ``start``; None if incomplete."""
    chunks = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            # No trailers expected; just the final CRLF.
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            return b"".join(chunks), end + 2
        if len(buf) < pos + size + 2:
            return None
        chunks.append(buf[pos : pos + size])
        pos += size + 2


SETUP, WARMUP, MEASURE, DRAIN = range(4)


class _Run:
    """Shared state and counters of one cell."""

    def __init__(self, scenario: Scenario, auth, host: str, port: int) -> None:
        self.scenario = scenario
        self.expected = scenario.expected
        self.auth = auth
        self.host = host
        self.port = port
        self.phase = SETUP
        self.latencies_ns: list[int] = []
        self.warmup_ok = 0
        self.errors: dict[str, int] = {}
        self.error_samples: list[str] = []
        self.stale_retries = 0
        self.response_bytes = 0
        self.reconnects = 0
        self.server_closes = 0
        self.inflight = 0
        self.idle = asyncio.Event()
        self.conns: list[_Conn] = []

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < 8:
            self.error_samples.append(
                f"[{('setup', 'warmup', 'measure', 'drain')[self.phase]}] {kind} {detail}"[:600]
            )


class _Conn(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.t0 = 0
        self.busy = False
        self.closing = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.setup_waiter: asyncio.Future[tuple[int, bytes, bytes, bytes]] | None = None
        self.nc = 0
        self.digest_prefix = b""
        self.digest_hash_prefix = b""

    # -- asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        run = self.run
        if not self.lost.done():
            self.lost.set_result(None)
        if self.setup_waiter is not None and not self.setup_waiter.done():
            self.setup_waiter.set_exception(ConnectionError(f"closed during setup: {exc!r}"))
        if self.busy:
            self.busy = False
            run.inflight -= 1
            run.error("connection", f"closed with a request in flight: {exc!r}")
            if run.inflight == 0:
                run.idle.set()
        if run.phase in (WARMUP, MEASURE):
            if not self.closing:
                run.error("connection", f"closed by server between requests: {exc!r}")
            run.reconnects += 1
            asyncio.ensure_future(_replace(run, self))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while buf:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            head = buf[:i]
            hl = head.lower()
            j = hl.find(b"\r\ncontent-length:")
            if j >= 0:
                k = hl.find(b"\r\n", j + 17)
                end = i + 4 + int(hl[j + 17 : k if k >= 0 else len(hl)])
                if len(buf) < end:
                    break
                body = buf[i + 4 : end]
                buf = buf[end:]
            elif b"\r\ntransfer-encoding:" in hl and b"chunked" in hl:
                r = _dechunk(buf, i + 4)
                if r is None:
                    break
                body, end = r
                buf = buf[end:]
            else:
                self.buf = b""
                self.run.error("framing", head[:200].decode("latin-1"))
                self.transport.close()
                return
            self._response(int(head[9:12]), head, hl, body)
        self.buf = buf

    # -- request/response

    def fire(self) -> None:
        self.busy = True
        self.run.inflight += 1
        req = self.run.auth.build(self)
        self.t0 = time.perf_counter_ns()
        self.transport.write(req)

    def _response(self, status: int, head: bytes, hl: bytes, body: bytes) -> None:
        run = self.run
        if b"\r\nconnection: close" in hl:
            self.closing = True
            run.server_closes += 1
        if self.setup_waiter is not None:
            waiter, self.setup_waiter = self.setup_waiter, None
            if not waiter.done():
                waiter.set_result((status, head, hl, body))
            return
        if not self.busy:
            run.error("framing", "response without a request")
            return
        if status == 401 and run.scenario.auth == "digest":
            challenge = pick_md5(parse_challenges(hl, head))
            if challenge is not None:
                run.auth.adopt(self, challenge)
                if challenge.get("stale", "").lower() == "true" and not self.closing:
                    # Re-send with the new nonce; the latency keeps the original start.
                    run.stale_retries += 1
                    t0 = self.t0
                    self.transport.write(run.auth.build(self))
                    self.t0 = t0
                    return
        now = time.perf_counter_ns()
        ok = status == 200 and run.expected in body
        phase = run.phase
        if ok:
            if phase == MEASURE:
                run.latencies_ns.append(now - self.t0)
                run.response_bytes = len(body)
            elif phase == WARMUP:
                run.warmup_ok += 1
        else:
            kind = f"http_{status}" if status != 200 else "wrong_body"
            run.error(kind, body[:400].decode("utf-8", "replace"))
        self.busy = False
        run.inflight -= 1
        if phase in (WARMUP, MEASURE) and not self.closing:
            self.fire()
        elif run.inflight == 0:
            run.idle.set()

    async def setup(self) -> None:
        """Fetch this connection's Digest nonce with an unauthenticated request."""
        auth = self.run.auth
        if not auth.needs_challenge:
            return
        self.setup_waiter = asyncio.get_running_loop().create_future()
        self.transport.write(auth.probe)
        status, head, hl, body = await asyncio.wait_for(self.setup_waiter, 10)
        challenge = pick_md5(parse_challenges(hl, head))
        if status != 401 or challenge is None:
            raise ConnectionError(
                f"expected a 401 with an MD5 Digest challenge, got {status}: {head[:300]!r}"
            )
        auth.adopt(self, challenge)


async def _open(run: _Run) -> _Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Conn(run), run.host, run.port)
    await conn.setup()
    return conn


async def _replace(run: _Run, old: _Conn) -> None:
    """Reconnect a client whose connection closed mid-run and carry on."""
    try:
        conn = await _open(run)
    except (TimeoutError, OSError) as e:
        run.error("connect", repr(e))
        await asyncio.sleep(0.05)
        if run.phase in (WARMUP, MEASURE):
            asyncio.ensure_future(_replace(run, old))
        return
    run.conns[run.conns.index(old)] = conn
    if run.phase in (WARMUP, MEASURE):
        conn.fire()
    else:
        conn.transport.close()


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


async def run_cell(
    *,
    host: str,
    port: int,
    scenario: Scenario,
    clients: int,
    seconds: float,
    warmup: float,
    user: str = "",
    password: str = "",
    server_pid: int | None = None,
    drain_timeout: float = 5.0,
) -> dict:
    """Run ``clients`` closed-loop connections: set up, warm up, measure, drain."""
    auth = make_auth(scenario, host, port, user, password)
    run = _Run(scenario, auth, host, port)
    started = await asyncio.gather(*(_open(run) for _ in range(clients)), return_exceptions=True)
    for r in started:
        if isinstance(r, BaseException):
            run.error("setup", repr(r))
        else:
            run.conns.append(r)
    result: dict = {
        "scenario": scenario.name,
        "description": scenario.description,
        "clients": clients,
        "connected": len(run.conns),
        "seconds": seconds,
        "warmup": warmup,
    }
    if not run.conns:
        result.update(requests=0, rps=0.0, errors=sum(run.errors.values()))
        result.update(error_kinds=run.errors, error_samples=run.error_samples)
        return result

    gc.collect()
    gc.disable()
    try:
        run.phase = WARMUP
        for c in run.conns:
            c.fire()
        await asyncio.sleep(warmup)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        srv0 = proc_cpu_s(server_pid) if server_pid else None
        core0 = cores_busy_s()
        t0 = time.perf_counter()
        run.phase = MEASURE
        await asyncio.sleep(seconds)
        run.phase = DRAIN
        t1 = time.perf_counter()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        srv1 = proc_cpu_s(server_pid) if server_pid else None
        core1 = cores_busy_s()
        if run.inflight:
            run.idle.clear()
            try:
                await asyncio.wait_for(run.idle.wait(), drain_timeout)
            except TimeoutError:
                for _ in range(run.inflight):
                    run.error("timeout", f"no answer within {drain_timeout} s after the run")
    finally:
        gc.enable()
        for c in run.conns:
            # Requests still out were counted as timeouts above; closing is not an error.
            c.closing = True
            c.busy = False
            if c.transport is not None:
                c.transport.close()
        await asyncio.wait([c.lost for c in run.conns], timeout=2)

    elapsed = t1 - t0
    lat = sorted(run.latencies_ns)
    n = len(lat)
    ms = 1e-6
    lg_cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / elapsed
    result.update(
        requests=n,
        elapsed_s=round(elapsed, 4),
        rps=round(n / elapsed, 1),
        p50_ms=round(percentile(lat, 50) * ms, 3),
        p90_ms=round(percentile(lat, 90) * ms, 3),
        p99_ms=round(percentile(lat, 99) * ms, 3),
        max_ms=round((lat[-1] if lat else 0) * ms, 3),
        mean_ms=round((sum(lat) / n if n else 0) * ms, 3),
        warmup_ok=run.warmup_ok,
        response_body_bytes=run.response_bytes,
        errors=sum(run.errors.values()),
        error_kinds=run.errors,
        error_samples=run.error_samples,
        stale_retries=run.stale_retries,
        reconnects=run.reconnects,
        server_connection_close=run.server_closes,
        loadgen_cpu=round(lg_cpu, 3),
        server_cpu=round((srv1 - srv0) / elapsed, 3) if srv0 is not None else None,
        # Busy share of each core over the window, whoever used it: with the server
        # pinned, core 0 busy well above server_cpu means something else competed.
        cores_busy={c: round((core1[c] - core0[c]) / elapsed, 3) for c in core1 if c in core0},
    )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--user", default="admin")
    p.add_argument("--server-pid", type=int, default=None, help="sample this process's CPU time")
    args = p.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        p.error("the load generator only targets loopback addresses")
    # The password comes through the environment so that it does not show in ps.
    password = os.environ.get("BENCH_PASSWORD", "")
    result = asyncio.run(
        run_cell(
            host=args.host,
            port=args.port,
            scenario=SCENARIOS[args.scenario],
            clients=args.clients,
            seconds=args.seconds,
            warmup=args.warmup,
            user=args.user,
            password=password,
            server_pid=args.server_pid,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
