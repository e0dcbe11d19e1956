"""WS-Discovery target service, driven by real clients.

Multicast needs a network: when the run may create network namespaces (root), the NVR and
the client each live on a test host of their own joined by a veth pair
(``netns-multicast``); otherwise the same checks run as unicast probes over loopback
(``loopback-unicast``). The test IDs say which ran; the other is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onvif_nvr.discovery import messages as m
from tests import netns
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import ROOT, NvrProcess

NETNS_UNAVAILABLE = (
    "disabled by NVR_TEST_NO_NETNS" if os.environ.get("NVR_TEST_NO_NETNS") else netns.available()
)
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
NVT = ["http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter"]
DEVICE = ["http://www.onvif.org/ver10/device/wsdl", "Device"]


def require_peers() -> None:
    if not PEER_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("run ./scripts/test to create .venv-peers")
        pytest.skip("run ./scripts/test to create .venv-peers")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WsdClient:
    """The wsdiscovery package's client in a process of its own (tests/peers/wsd_client.py)."""

    def __init__(self, prefix: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*prefix, str(PEER_PYTHON), str(ROOT / "tests" / "peers" / "wsd_client.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait(lambda e: e["event"] == "ready", 20)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait(self, predicate: Callable[[dict], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if predicate(event):
                    self.seen.remove(event)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching discovery event within {timeout} s; saw {self.seen}"
                )
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.events.get(timeout=remaining))

    def probe(self, types=None, scopes=None, timeout=2.0, address=None, port=None) -> list[dict]:
        assert self.proc.stdin is not None
        command = {
            "cmd": "probe",
            "types": types,
            "scopes": scopes,
            "timeout": timeout,
            "address": address,
            "port": port,
        }
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.wait(lambda e: e["event"] == "probe", timeout + 15)["services"]

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()


class Setup:
    """One NVR and one discovery client, on test hosts or on loopback."""

    def __init__(self, mode: str, tmp_path: Path, stack: list[Callable[[], None]]) -> None:
        self.mode = mode
        if mode == "netns-multicast":
            pair = netns.netpair("d")
            self.pair = pair.__enter__()
            stack.append(lambda: pair.__exit__(None, None, None))
            nvr_prefix = ["ip", "netns", "exec", self.pair.nvr_ns]
            self.client_prefix = ["ip", "netns", "exec", self.pair.client_ns]
            self.nvr_host = self.pair.nvr_ip
            env = {"ONVIF_NVR_DISCOVERY_ENABLED": "true"}
            bind = "0.0.0.0"
            self.address, self.port = None, None  # multicast probes
        else:
            nvr_prefix, self.client_prefix = [], []
            self.nvr_host = "127.0.0.1"
            self.port = free_udp_port()
            env = {
                "ONVIF_NVR_DISCOVERY_ENABLED": "true",
                "ONVIF_NVR_DISCOVERY_PORT": str(self.port),
            }
            bind = "127.0.0.1"
            self.address = "127.0.0.1"
        if mode == "netns-multicast":
            self.client = WsdClient(self.client_prefix)
            stack.append(self.client.close)
        self.nvr = NvrProcess(tmp_path / "data", ADMIN_PASSWORD, env, bind=bind, prefix=nvr_prefix)
        self.nvr.start()
        stack.append(self.nvr.stop)

    @property
    def device_url(self) -> str:
        return f"http://{self.nvr_host}:{self.nvr.port}/onvif/device_service"

    def probe(self, types=None, scopes=None, timeout: float = 2.0) -> list[dict]:
        if self.mode == "netns-multicast":
            return self.client.probe(types=types, scopes=scopes, timeout=timeout)
        # wsdiscovery's directed probe reads answers only on its own port-3702 socket, while
        # a target answers the probe's source port (SOAP-over-UDP); on one loopback both
        # cannot be 3702, so the fallback probes with raw datagrams.
        data = m.build_probe(types=[tuple(t) for t in types or []], scopes=scopes or [])
        found = []
        for reply in exchange(self.port, data, timeout):
            answer = m.parse(reply)
            for ep in answer.endpoints:
                found.append(
                    {
                        "epr": ep.address,
                        "types": [list(t) for t in ep.types],
                        "scopes": list(ep.scopes),
                        "xaddrs": list(ep.xaddrs),
                    }
                )
        return list({f["epr"]: f for f in found}.values())

    def soap(self, operation: str, **kwargs) -> object:
        out = subprocess.run(
            [
                *self.client_prefix,
                sys.executable,
                "tests/peers/soap_call.py",
                self.device_url,
                "admin",
                ADMIN_PASSWORD,
                operation,
                json.dumps(kwargs),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


MODES = [
    pytest.param(
        "netns-multicast",
        marks=pytest.mark.skipif(
            NETNS_UNAVAILABLE is not None, reason=f"no network namespaces: {NETNS_UNAVAILABLE}"
        ),
        id="netns-multicast",
    ),
    pytest.param(
        "loopback-unicast",
        marks=pytest.mark.skipif(
            NETNS_UNAVAILABLE is None,
            reason="network namespaces available: the multicast variant ran instead",
        ),
        id="loopback-unicast",
    ),
]


@pytest.fixture(params=MODES)
def setup(request, tmp_path) -> Iterator[Setup]:
    require_peers()
    stack: list[Callable[[], None]] = []
    try:
        yield Setup(request.param, tmp_path, stack)
    finally:
        for undo in reversed(stack):
            undo()


def test_found_by_type_and_scope_with_the_device_address(setup):
    services = setup.probe(types=[NVT])
    assert len(services) == 1
    found = services[0]
    guid = setup.soap("GetEndpointReference")["GUID"]
    assert found["epr"] == guid
    assert NVT in found["types"] and DEVICE in found["types"]
    assert setup.device_url in found["xaddrs"]
    assert "onvif://www.onvif.org/Profile/G" in found["scopes"]
    assert [
        s["epr"]
        for s in setup.probe(types=[DEVICE], scopes=["onvif://www.onvif.org/Profile/Streaming"])
    ] == [guid]
    assert [s["epr"] for s in setup.probe(scopes=["onvif://www.onvif.org/name"])] == [guid]
    assert setup.probe(scopes=["onvif://www.onvif.org/Profile/Q"]) == []
    assert setup.probe(types=[["urn:example", "Toaster"]]) == []


def test_hello_on_start_and_scope_change_bye_on_stop(setup):
    if setup.mode != "netns-multicast":
        pytest.skip("Hello and Bye are multicast")
    hello = setup.client.wait(lambda e: e["event"] == "hello", 15)
    guid = setup.soap("GetEndpointReference")["GUID"]
    assert hello["epr"] == guid
    assert setup.device_url in hello["xaddrs"]
    version = hello["metadata_version"]
    setup.soap("AddScopes", ScopeItem=["onvif://www.onvif.org/location/dock/7"])
    changed = setup.client.wait(
        lambda e: e["event"] == "hello" and "onvif://www.onvif.org/location/dock/7" in e["scopes"],
        15,
    )
    assert changed["metadata_version"] > version
    setup.nvr.stop()
    assert setup.client.wait(lambda e: e["event"] == "bye", 15)["epr"] == guid


def test_non_discoverable_stops_answers_and_says_bye(setup):
    guid = setup.soap("GetEndpointReference")["GUID"]
    setup.soap("SetDiscoveryMode", DiscoveryMode="NonDiscoverable")
    if setup.mode == "netns-multicast":
        assert setup.client.wait(lambda e: e["event"] == "bye", 15)["epr"] == guid
    assert setup.probe(types=[NVT]) == []
    setup.soap("SetDiscoveryMode", DiscoveryMode="Discoverable")
    assert [s["epr"] for s in setup.probe(types=[NVT])] == [guid]


def test_onvif_python_discovery_helper_finds_the_nvr(setup):
    if setup.mode != "netns-multicast":
        pytest.skip("onvif-python's helper probes by multicast only")
    out = subprocess.run(
        [
            *setup.client_prefix,
            sys.executable,
            "tests/peers/onvif_python_discover.py",
            setup.pair.client_ip,
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    devices = json.loads(out.stdout)
    assert [d["host"] for d in devices] == [setup.pair.nvr_ip]
    assert setup.device_url in devices[0]["xaddrs"]


# -- raw datagrams over loopback: robustness and the finer rules ----------------------------
@pytest.fixture
def loopback_target(tmp_path) -> Iterator[tuple[NvrProcess, int]]:
    port = free_udp_port()
    nvr = NvrProcess(
        tmp_path / "data",
        ADMIN_PASSWORD,
        {"ONVIF_NVR_DISCOVERY_ENABLED": "true", "ONVIF_NVR_DISCOVERY_PORT": str(port)},
    )
    nvr.start()
    try:
        yield nvr, port
    finally:
        nvr.stop()


def exchange(port: int, data: bytes, timeout: float = 2.0) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        replies = []
        try:
            while True:
                replies.append(s.recvfrom(65535)[0])
                s.settimeout(0.3)
        except TimeoutError:
            return replies


PROBE_VARIANTS = {
    # DISCOVERY-2-1-1: default namespaces on every tag.
    "2-1-1": '<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header xmlns="http://www.w3.org/2003/05/soap-envelope">'
    '<MessageID xmlns="http://schemas.xmlsoap.org/ws/2004/08/addressing">urn:uuid:{id}</MessageID>'
    '<Action xmlns="http://schemas.xmlsoap.org/ws/2004/08/addressing">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</Action></Header>'
    '<Body xmlns="http://www.w3.org/2003/05/soap-envelope"><Probe xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery">'
    '<Types xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">dn:NetworkVideoTransmitter</Types></Probe></Body></Envelope>',
    # DISCOVERY-2-1-2: default namespace on the parent only.
    "2-1-2": '<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header><MessageID xmlns="http://schemas.xmlsoap.org/ws/2004/08/addressing">urn:uuid:{id}</MessageID></Header>'
    '<Body><Probe xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery"><Types xmlns:tds="http://www.onvif.org/ver10/device/wsdl">tds:Device</Types></Probe></Body></Envelope>',
    # DISCOVERY-2-1-3: non-standard prefixes.
    "2-1-3": '<q1:Envelope xmlns:q1="http://www.w3.org/2003/05/soap-envelope" xmlns:q2="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:q3="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:q4="http://www.onvif.org/ver10/network/wsdl">'
    "<q1:Header><q2:MessageID>urn:uuid:{id}</q2:MessageID></q1:Header><q1:Body><q3:Probe><q3:Types>q4:NetworkVideoTransmitter</q3:Types></q3:Probe></q1:Body></q1:Envelope>",
    # DISCOVERY-2-1-4: different prefixes for the same namespace.
    "2-1-4": '<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope"><b:Header xmlns:b="http://www.w3.org/2003/05/soap-envelope"><w:MessageID xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing">urn:uuid:{id}</w:MessageID></b:Header>'
    '<c:Body xmlns:c="http://www.w3.org/2003/05/soap-envelope"><d1:Probe xmlns:d1="http://schemas.xmlsoap.org/ws/2005/04/discovery"><d2:Types xmlns:d2="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:n1="http://www.onvif.org/ver10/network/wsdl">n1:NetworkVideoTransmitter</d2:Types></d1:Probe></c:Body></a:Envelope>',
    # DISCOVERY-2-1-5: the same prefix bound to different namespaces.
    "2-1-5": '<p:Envelope xmlns:p="http://www.w3.org/2003/05/soap-envelope"><p:Header><p:MessageID xmlns:p="http://schemas.xmlsoap.org/ws/2004/08/addressing">urn:uuid:{id}</p:MessageID></p:Header>'
    '<p:Body><p:Probe xmlns:p="http://schemas.xmlsoap.org/ws/2005/04/discovery"><p:Types xmlns:p="http://www.onvif.org/ver10/network/wsdl">p:NetworkVideoTransmitter</p:Types></p:Probe></p:Body></p:Envelope>',
}


def test_namespace_robustness_and_flood(loopback_target):
    _, port = loopback_target
    for case, template in PROBE_VARIANTS.items():
        message_id = f"{case}-{time.monotonic_ns()}"
        replies = exchange(port, template.replace("{id}", message_id).encode())
        assert replies, f"DISCOVERY-{case}: no answer"
        answer = m.parse(replies[0])
        assert (
            answer.action == m.ACTION_PROBE_MATCHES
            and answer.relates_to == f"urn:uuid:{message_id}"
        )
    # A flood of garbage: nothing answered, nothing broken.
    junk = [
        b"",
        b"\x00" * 300,
        b"<not xml",
        b"<a/>" * 100,
        b"x" * 40000,
        PROBE_VARIANTS["2-1-1"].encode()[:200],
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(1000):
            s.sendto(junk[i % len(junk)], ("127.0.0.1", port))
    time.sleep(0.5)
    assert exchange(port, m.build_probe()), "the listener stopped answering after the flood"


def test_unicast_probe_with_unknown_rule_gets_a_fault_and_resolve_is_answered(loopback_target):
    nvr, port = loopback_target
    replies = exchange(
        port, m.build_probe(scopes=["onvif://www.onvif.org/name"], match_by=m.WSD + "/ldap")
    )
    assert b"MatchingRuleNotSupported" in replies[0]
    matches = m.parse(exchange(port, m.build_probe())[0])
    address = matches.endpoints[0].address
    resolve = (
        f'<s:Envelope xmlns:s="{m.SOAP12}" xmlns:a="{m.WSA}" xmlns:d="{m.WSD}"><s:Header>'
        f"<a:MessageID>urn:uuid:r1</a:MessageID><a:Action>{m.ACTION_RESOLVE}</a:Action></s:Header>"
        f"<s:Body><d:Resolve><a:EndpointReference><a:Address>{address}</a:Address></a:EndpointReference></d:Resolve></s:Body></s:Envelope>"
    ).encode()
    resolved = m.parse(exchange(port, resolve)[0])
    assert resolved.action == m.ACTION_RESOLVE_MATCHES
    assert resolved.endpoints[0].xaddrs == (f"http://127.0.0.1:{nvr.port}/onvif/device_service",)
    assert (
        exchange(
            port,
            resolve.replace(address.encode(), b"urn:uuid:00000000-0000-0000-0000-000000000000"),
            0.7,
        )
        == []
    )
