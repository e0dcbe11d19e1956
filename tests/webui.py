"""Fixtures for the browser tests of the web UI (tests/test_webui.py and the timeline
page's tests): a box recording a GStreamer camera, and Debian's Chromium driven by
Playwright's sync API.

Bind the fixtures in a test module with ``from tests import webui`` and
``webbox = webui.webbox``, ``browser = webui.browser``, ``page = webui.page`` (an assignment
rather than an import, which ruff would call unused and redefined). They are module-scoped:
one box and one browser per test module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import gstcam
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.searchutil import recorded_until
from tests.test_recording_control_service import job_config, recording_client, recording_config

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebRTC between the page and the box on one machine: Chromium hides its host
    # candidates behind mDNS names (the box cannot resolve them) and skips loopback.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    # Headless tabs may throttle or refuse to start playback without a gesture.
    "--autoplay-policy=no-user-gesture-required",
]
CAMERA = ("--codec", "h264", "--size", "320x240", "--fps", "25", "--gop", "25")
CAMERA_NAME = "door"
ENV = {
    "ONVIF_NVR_STORAGE_SEGMENT_S": "2",
    # The login tests fail passwords on purpose.
    "ONVIF_NVR_SECURITY_MAX_FAILED_LOGINS": "1000",
    # ICE on loopback: the box offers 127.0.0.1 (Chromium may pair with it, see CHROMIUM_ARGS).
    "ONVIF_NVR_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


@dataclasses.dataclass
class WebBox:
    """A running box with one recording camera (``camera``, named "door")."""

    nvr: NvrProcess
    camera: str
    recording: str
    camera_url: str
    admin_password: str = ADMIN_PASSWORD

    @property
    def base(self) -> str:
        return self.nvr.base

    def admin(self) -> httpx.Client:
        """An httpx client logged in as admin with a bearer token (close it after use)."""
        return self.client("admin", self.admin_password)

    def client(self, user: str, password: str) -> httpx.Client:
        token = bearer_token(self.base, user, password)
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )

    def ensure_user(self, username: str, password: str, level: str) -> None:
        """Create ``username`` at ``level`` unless it exists."""
        with self.admin() as c:
            names = {u["username"] for u in c.get("/api/v1/users").json()["users"]}
            if username not in names:
                r = c.post(
                    "/api/v1/users",
                    json={"username": username, "password": password, "level": level},
                )
                assert r.status_code == 201, r.text


def bearer_token(base: str, user: str, password: str) -> str:
    with httpx.Client(base_url=base, timeout=20) as c:
        c.post("/api/v1/session", json={"username": user, "password": password}).raise_for_status()
        csrf = c.get("/api/v1/session").json()["csrf_token"]
        r = c.post("/api/v1/tokens", json={}, headers={"X-CSRF-Token": csrf})
        r.raise_for_status()
        return str(r.json()["token"])


def _add_recording_camera(nvr: NvrProcess, url: str) -> tuple[str, str]:
    """Add the camera over the REST API; it records (``record`` defaults to true). Boxes
    whose API does not create the recording get one through the ONVIF Recording service."""
    with httpx.Client(
        base_url=nvr.base,
        headers={"Authorization": f"Bearer {bearer_token(nvr.base, 'admin', ADMIN_PASSWORD)}"},
        timeout=20,
    ) as c:
        r = c.post("/api/v1/cameras", json={"url": url, "name": CAMERA_NAME})
        assert r.status_code == 201, r.text
        camera: dict[str, Any] = r.json()
    recording = camera.get("recording")
    if not recording:
        trc = recording_client(nvr)
        recording = trc.CreateRecording(recording_config(CAMERA_NAME))
        trc.CreateRecordingJob(job_config(recording, camera["token"]))
    return str(camera["token"]), str(recording)


@pytest.fixture(scope="module")
def webbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebBox]:
    """The box, with at least 3 s recorded from its camera before the first test."""
    gstcam.require()
    with gstcam.camera(*CAMERA) as url:
        nvr = NvrProcess(tmp_path_factory.mktemp("webui") / "data", ADMIN_PASSWORD, extra_env=ENV)
        nvr.start()
        try:
            camera, recording = _add_recording_camera(nvr, url)
            recorded_until(nvr, recording, 3)
            yield WebBox(nvr, camera, recording, url)
        finally:
            nvr.stop()
        assert not nvr.blocking_calls(), nvr.blocking_calls()


def chromium_missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; ./scripts/test installs it)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, launched by Playwright (one per test module)."""
    reason = chromium_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, webbox: WebBox) -> Iterator[Any]:
    """A desktop-sized page logged in as admin, on the live wall (one per test module)."""
    context = new_context(browser, DESKTOP)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    login(pg, webbox.base, "admin", webbox.admin_password)
    pg.page_errors = errors  # uncaught exceptions in the page, for tests to assert on
    try:
        yield pg
    finally:
        context.close()


def new_context(browser: Any, viewport: dict[str, int]) -> Any:
    """A fresh browser context (own cookies and storage) that records Content-Security-
    Policy violations in ``window.cspViolations`` (see :func:`csp_violations`)."""
    context = browser.new_context(viewport=viewport)
    context.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return context


def csp_violations(pg: Any) -> list[str]:
    return list(pg.evaluate("window.cspViolations || []"))


def login(pg: Any, base: str, username: str, password: str, path: str = "#/live") -> None:
    """Open the UI and log in through its form; waits until the logged-in page shows."""
    pg.goto(f"{base}/{path}")
    pg.wait_for_selector("#login-form")
    pg.fill("#login-username", username)
    pg.fill("#login-password", password)
    pg.click("#login-form button[type=submit]")
    pg.wait_for_selector("#bar:not([hidden])")


def screenshot(pg: Any, name: str) -> Path:
    """Save the page as docs/screenshots/<name>.png (committed; docs/design/webui.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.screenshot(path=str(path))
    return path
