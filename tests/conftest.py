from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.clients import device_client
from tests.nvrproc import NvrProcess

ADMIN_PASSWORD = "Adm1n-secret"


@pytest.fixture(autouse=True)
def _no_external_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to loopback only; a connect anywhere else is a bug in the test."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host = str(address[0])
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise AssertionError(f"test tried to reach {host}")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def nvr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NvrProcess]:
    """One NVR for the read-mostly tests of the session."""
    # Many tests here fail logins on purpose; the shared box must not lock them out
    # (test_failed_logins_are_throttled_per_address checks the throttle on a box of its own).
    proc = NvrProcess(
        tmp_path_factory.mktemp("nvr"),
        ADMIN_PASSWORD,
        extra_env={"ONVIF_NVR_SECURITY_MAX_FAILED_LOGINS": "100000"},
    )
    proc.start()
    yield proc
    proc.stop()
    blocking = proc.blocking_calls()
    assert not blocking, "the event loop was blocked:\n" + "".join(blocking)


@pytest.fixture
def fresh_nvr(tmp_path) -> Iterator[NvrProcess]:
    """An NVR of its own, for tests that change settings, users or restart it."""
    proc = NvrProcess(tmp_path / "data", ADMIN_PASSWORD)
    proc.start()
    yield proc
    proc.stop()
    blocking = proc.blocking_calls()
    assert not blocking, "the event loop was blocked:\n" + "".join(blocking)


@pytest.fixture(scope="session")
def admin(nvr: NvrProcess):
    """zeep device proxy logged in as admin with WS-UsernameToken."""
    return device_client(nvr.device_url, "admin", ADMIN_PASSWORD)[1]


@pytest.fixture(scope="session")
def admin_digest(nvr: NvrProcess):
    """zeep device proxy logged in as admin with HTTP Digest only."""
    return device_client(nvr.device_url, "admin", ADMIN_PASSWORD, digest=True)[1]


@pytest.fixture(scope="session")
def anonymous(nvr: NvrProcess):
    return device_client(nvr.device_url)[1]
