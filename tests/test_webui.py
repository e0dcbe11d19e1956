"""The browser UI (docs/design/webui.md) in Debian's Chromium against a running box that
records a GStreamer camera: login, live video over WebRTC and over the MSE fallback, the
cameras, users and system pages, levels, and the phone-width layout. The tests save the
screenshots in docs/screenshots/."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from onvif_nvr.discovery import messages as m
from tests import gstcam, webui
from tests.searchutil import recorded_until
from tests.webui import (
    CAMERA,
    DESKTOP,
    PHONE,
    WebBox,
    csp_violations,
    login,
    new_context,
    screenshot,
)

# The shared module-scoped fixtures (tests/webui.py).
webbox = webui.webbox
browser = webui.browser
page = webui.page

pytestmark = pytest.mark.timeout(180)


def test_login_wrong_password_then_right(browser: Any, webbox: WebBox) -> None:
    context = new_context(browser, DESKTOP)
    try:
        pg = context.new_page()
        pg.goto(webbox.base + "/")
        pg.wait_for_selector("#login-form")
        screenshot(pg, "login")
        pg.fill("#login-username", "admin")
        pg.fill("#login-password", "not the password")
        pg.click("#login-form button[type=submit]")
        error = pg.locator("#login-error")
        error.wait_for(state="visible")
        assert error.inner_text() == "Wrong username or password."
        pg.fill("#login-password", webbox.admin_password)
        pg.click("#login-form button[type=submit]")
        pg.wait_for_selector(".page-live")
        assert pg.url.endswith("#/live")
        assert pg.locator("#who").inner_text() == "admin (Administrator)"
    finally:
        context.close()


def _frames(pg: Any, tile: str) -> tuple[float, int]:
    """The tile's video: (currentTime, decoded pictures so far)."""
    value = pg.evaluate(
        """(sel) => { const v = document.querySelector(sel + ' video');
        return [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames]; }""",
        tile,
    )
    return float(value[0]), int(value[1])


def _assert_playing(pg: Any, token: str, transport: str) -> None:
    tile = f'.tile[data-camera="{token}"]'
    pg.wait_for_selector(f'{tile}[data-state="playing"][data-transport="{transport}"]')
    t0, n0 = _frames(pg, tile)
    # Pictures keep coming: wait for 25 more decoded ones (1 s of the 25 fps camera).
    pg.wait_for_function(
        """([sel, n]) => document.querySelector(sel + ' video')
            .getVideoPlaybackQuality().totalVideoFrames >= n""",
        arg=[tile, n0 + 25],
    )
    t1, n1 = _frames(pg, tile)
    assert t1 > t0 and n1 >= n0 + 25, (t0, t1, n0, n1)
    size = pg.evaluate(
        "(sel) => { const v = document.querySelector(sel + ' video');"
        " return [v.videoWidth, v.videoHeight]; }",
        tile,
    )
    assert size == [320, 240]


def test_live_wall_plays_over_webrtc(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/#/live")
    _assert_playing(page, webbox.camera, "webrtc")
    caption = page.locator(f'.tile[data-camera="{webbox.camera}"] .caption').inner_text()
    assert "door" in caption and "fps" in caption
    screenshot(page, "live")
    # Leaving the wall ends the session on the box (the page DELETEs it; the closed peer
    # connection may end it first, then the DELETE is a 404).
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and "/api/v1/webrtc/" in r.url
    ) as closed:
        page.goto(webbox.base + "/#/system")
    assert closed.value.status in (204, 404)
    _wait_no_webrtc_sessions(webbox)
    assert page.page_errors == []


def _wait_no_webrtc_sessions(webbox: WebBox) -> None:
    deadline = time.monotonic() + 30
    with webbox.admin() as c:
        while True:
            metrics = c.get("/metrics").text
            if "\nnvr_webrtc_sessions 0\n" in metrics:
                return
            assert time.monotonic() < deadline, [
                line for line in metrics.splitlines() if "webrtc" in line
            ]
            time.sleep(0.2)


def test_an_offline_camera_says_so_on_its_tile(page: Any, webbox: WebBox) -> None:
    with webbox.admin() as c:
        r = c.post(
            "/api/v1/cameras",
            json={"url": "rtsp://127.0.0.1:9/gone", "name": "gone", "record": False},
        )
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        try:
            page.goto(webbox.base + "/#/live")
            tile = page.locator(f'.tile[data-camera="{token}"]')
            tile.locator(".overlay.bad").wait_for(state="visible")
            text = tile.locator(".overlay").inner_text()
            assert text.startswith(("Camera offline", "Connecting to the camera")), text
            assert "cannot connect" in text
            assert tile.get_attribute("data-state") == "offline"
        finally:
            assert c.delete(f"/api/v1/cameras/{token}").status_code == 204


def test_auto_falls_back_to_mse_when_webrtc_is_refused(browser: Any, webbox: WebBox) -> None:
    # The box's WebRTC answers 503 here (as when its session limit is reached): the route
    # is answered in the browser, the only way to refuse WebRTC on this shared box.
    context = new_context(browser, DESKTOP)
    try:
        pg = context.new_page()
        refused: list[str] = []

        def refuse(route: Any) -> None:
            refused.append(route.request.url)
            route.fulfill(
                status=503,
                content_type="application/json",
                body='{"error": {"code": "TooManySessions", "message": "busy", "fields": []}}',
            )

        pg.route("**/api/v1/cameras/*/webrtc", refuse)
        login(pg, webbox.base, "admin", webbox.admin_password)
        _assert_playing(pg, webbox.camera, "mse")
        assert refused
    finally:
        context.close()


def test_logout_returns_to_the_login_page(browser: Any, webbox: WebBox) -> None:
    context = new_context(browser, DESKTOP)
    try:
        pg = context.new_page()
        login(pg, webbox.base, "admin", webbox.admin_password, path="#/system")
        pg.wait_for_selector("#fact-version")
        pg.click("#logout")
        pg.wait_for_selector("#login-form")
        assert pg.locator("#bar").is_hidden()
        status = pg.evaluate("fetch('/api/v1/session').then((r) => r.status)")
        assert status == 401
        # A page asked for while logged out comes back after the login.
        pg.goto(webbox.base + "/#/cameras")
        pg.wait_for_selector("#login-form")
        pg.fill("#login-username", "admin")
        pg.fill("#login-password", webbox.admin_password)
        pg.click("#login-form button[type=submit]")
        pg.wait_for_selector(f'tr[data-camera="{webbox.camera}"]')
    finally:
        context.close()


def test_live_wall_plays_over_mse(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/?transport=mse#/live")
    _assert_playing(page, webbox.camera, "mse")
    # It plays at the live edge of what it buffered (the player jumps there past 1.5 s).
    behind = page.evaluate(
        f"""() => {{ const v = document.querySelector('.tile[data-camera="{webbox.camera}"] video');
        return v.buffered.end(v.buffered.length - 1) - v.currentTime; }}"""
    )
    assert 0 <= behind < 3, behind
    assert page.page_errors == []


# -- cameras -------------------------------------------------------------------------------
def test_add_a_camera_it_shows_and_records_then_remove_it(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/#/cameras")
    page.wait_for_selector(f'tr[data-camera="{webbox.camera}"]')
    page.wait_for_selector("#discovered .empty")  # no discovery ran on this box
    screenshot(page, "cameras")
    with gstcam.camera(*CAMERA) as url:
        page.click("#add-camera")
        page.fill("#camera-url", url)
        page.fill("#camera-name", "yard")
        page.fill("#camera-retention_days", "3")
        page.click("#camera-add-form button[type=submit]")
        page.wait_for_selector("#camera-add-form", state="detached")
        with webbox.admin() as c:
            (camera,) = [
                x for x in c.get("/api/v1/cameras").json()["cameras"] if x["name"] == "yard"
            ]
        assert camera["recording"] and camera["retention_s"] == 3 * 86400
        row = f'tr[data-camera="{camera["token"]}"]'
        page.wait_for_selector(row)
        recorded_until(webbox.nvr, camera["recording"], 1)
        # The page refreshes itself: the new camera shows as connected and recording.
        page.wait_for_function(
            """(sel) => { const r = document.querySelector(sel);
            return r && r.querySelector('.recording-cell').textContent === 'yes'
                && r.textContent.includes('Connected'); }""",
            arg=row,
        )
        page.click(f"{row} button.remove")
        page.click("dialog button.danger")
        page.wait_for_selector(row, state="detached")
        assert "removed" in page.locator("#cameras-message").inner_text()
    with webbox.admin() as c:
        assert camera["token"] not in {
            x["token"] for x in c.get("/api/v1/cameras").json()["cameras"]
        }
        # The recorded data stays, in its recording.
        recordings = {r["token"] for r in c.get("/api/v1/recordings").json()["recordings"]}
        assert camera["recording"] in recordings


def test_edit_a_camera_retention(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/#/cameras")
    page.reload()
    row = f'tr[data-camera="{webbox.camera}"]'
    page.click(f"{row} button.edit")
    assert page.input_value("#camera-url") == webbox.camera_url
    assert page.input_value("#camera-password") == ""  # never sent to the page
    page.fill("#camera-retention_days", "5")
    page.click("#camera-edit-form button[type=submit]")
    page.wait_for_selector("#camera-edit-form", state="detached")
    page.wait_for_function(
        "(sel) => document.querySelector(sel).textContent.includes('5 d')", arg=row
    )
    with webbox.admin() as c:
        camera = c.get(f"/api/v1/cameras/{webbox.camera}").json()
        assert camera["retention_s"] == 5 * 86400 and camera["url"] == webbox.camera_url
        recording = c.get("/api/v1/recordings").json()["recordings"]
        (mine,) = [r for r in recording if r["token"] == camera["recording"]]
        assert mine["max_retention_s"] == 5 * 86400
        # Still recording: only the retention was sent.
        assert camera["stats"]["recording"] is True


def test_a_discovered_device_fills_the_add_form(page: Any, webbox: WebBox) -> None:
    # What `onvif-nvr discover` stores (discovery/inventory.py), written as it would be:
    # the probe itself sends multicast, which tests do not.
    profile = {
        "token": "main",
        "name": "Main stream",
        "encoding": "H264",
        "width": 1920,
        "height": 1080,
        "frame_rate": 25.0,
        "bitrate_kbps": 4096,
        "uri": "rtsp://127.0.0.1:8554/main",
    }
    with sqlite3.connect(webbox.nvr.data_dir / "nvr.sqlite3", timeout=10) as db:
        db.execute(
            "INSERT INTO discovered_devices (endpoint, xaddr, status, reason, name, manufacturer,"
            " model, serial, firmware, scopes, profiles, seen_wall_ns)"
            " VALUES (?, ?, 'ok', '', 'Gate cam', 'Acme', 'C1', 'S1', '1.0', ?, ?, ?)",
            (
                "urn:uuid:0a0b0c0d-0000-4000-8000-000000000001",
                "http://127.0.0.1:8000/onvif/device_service",
                json.dumps(["onvif://www.onvif.org/name/Gate"]),
                json.dumps([profile]),
                time.time_ns(),
            ),
        )
    page.goto(webbox.base + "/#/cameras")
    page.reload()  # the page may have been on #/cameras already (goto to the same hash)
    page.click("#discovered button.add-discovered")
    assert page.input_value("#camera-url") == "rtsp://127.0.0.1:8554/main"
    assert page.input_value("#camera-name") == "Gate cam"
    assert "1920×1080 H264" in page.locator("#discovered").inner_text()
    page.click("#camera-add-form button:has-text('Cancel')")


@contextlib.contextmanager
def _probe_answerer(xaddr: str) -> Iterator[int]:
    """A WS-Discovery target on a loopback port: answers each Probe with a ProbeMatch
    naming ``xaddr`` (the box's own device service: the box is an ONVIF device with
    streams, a real peer to question). Yields the port."""
    endpoint = m.Endpoint(
        address="urn:uuid:0a0b0c0d-0000-4000-8000-0000000000aa",
        types=(m.NVT,),
        scopes=("onvif://www.onvif.org/name/Lobby",),
        xaddrs=(xaddr,),
        metadata_version=1,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        sequence = 0
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                continue
            probe = m.parse(data)
            if isinstance(probe, m.Probe):
                sequence += 1
                answer = m.build_probe_matches(
                    endpoint, probe.message_id, m.AppSequence(1, sequence)
                )
                sock.sendto(answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        done.set()
        thread.join(5)
        sock.close()


def test_search_for_devices_from_the_cameras_page(page: Any, webbox: WebBox) -> None:
    with _probe_answerer(webbox.nvr.device_url) as port:
        page.goto(webbox.base + "/#/cameras")
        page.reload()
        page.fill("#discover-username", "admin")
        page.fill("#discover-password", webbox.admin_password)
        page.fill("#discover-addresses", f"127.0.0.1:{port}")
        page.click("#discover-form button[type=submit]")
        row = page.locator('#discovered tr[data-endpoint$="0000000000aa"]')
        row.wait_for()
    assert "ok" in row.inner_text()
    row.scroll_into_view_if_needed()
    screenshot(page, "cameras-discovered")
    # The box's own streams, as the device service lists them: "Add" fills the form.
    row.locator("button.add-discovered").first.click()
    assert page.input_value("#camera-url").startswith(f"rtsp://127.0.0.1:{webbox.nvr.rtsp_port}/")
    page.click("#camera-add-form button:has-text('Cancel')")
    with webbox.admin() as c:
        r = c.post("/api/v1/discovered", json={"addresses": ["127.0.0.1:99999"]})
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0]["message"] == (
            "the port must be a number from 1 to 65535"
        )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rtsp://:554/stream", "the URL has no host (rtsp://HOST[:PORT]/PATH)"),
        ("rtsp://camera:70000/stream", "the port must be a number from 1 to 65535"),
        ("http://camera/stream", "the URL must start with rtsp://"),
    ],
)
def test_a_bad_rtsp_url_shows_its_error_next_to_the_field(
    page: Any, webbox: WebBox, url: str, message: str
) -> None:
    page.goto(webbox.base + "/#/cameras")
    page.click("#add-camera")
    page.fill("#camera-url", url)
    page.click("#camera-add-form button[type=submit]")
    error = page.locator("#camera-url-error")
    error.wait_for(state="visible")
    assert error.inner_text() == message
    assert page.get_attribute("#camera-url", "aria-invalid") == "true"
    page.click("#camera-add-form button:has-text('Cancel')")


# -- levels ---------------------------------------------------------------------------------
def test_a_user_level_account_sees_no_management_and_the_api_refuses(
    browser: Any, webbox: WebBox
) -> None:
    webbox.ensure_user("viewer", "viewer-pw1", "User")
    context = new_context(browser, DESKTOP)
    try:
        pg = context.new_page()
        login(pg, webbox.base, "viewer", "viewer-pw1")
        assert pg.locator("#nav a[data-route=users]").is_hidden()
        pg.goto(webbox.base + "/#/cameras")
        pg.wait_for_selector(f'tr[data-camera="{webbox.camera}"]')
        assert pg.locator("#cameras-readonly").is_visible()
        assert pg.locator("#add-camera").count() == 0
        assert pg.locator("button.remove, button.edit, #discovered").count() == 0
        pg.goto(webbox.base + "/#/users")
        assert "needs the Administrator level" in pg.locator("#users-forbidden").inner_text()
        assert pg.locator("#user-add-form").count() == 0
        assert csp_violations(pg) == []
    finally:
        context.close()
    with webbox.client("viewer", "viewer-pw1") as c:
        r = c.post("/api/v1/cameras", json={"url": "rtsp://127.0.0.1:9/x", "name": "sneaky"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "Forbidden"
        assert c.get("/api/v1/users").status_code == 403
        assert c.delete(f"/api/v1/cameras/{webbox.camera}").status_code == 403
        assert c.get("/api/v1/discovered").status_code == 403


# -- users and system -------------------------------------------------------------------------
def test_users_page_adds_changes_and_keeps_the_last_admin(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/#/users")
    page.wait_for_selector('tr[data-user="admin"]')
    page.fill("#user-name", "op1")
    page.fill("#user-password", "op1-pass")
    page.select_option("#user-level", "Operator")
    page.click("#user-add-form button[type=submit]")
    page.wait_for_selector('tr[data-user="op1"]')
    page.select_option('tr[data-user="op1"] select', "User")
    page.click('tr[data-user="op1"] button.save')
    page.wait_for_function(
        "() => document.querySelector('#users-message').textContent.includes('saved')"
    )
    with webbox.admin() as c:
        levels = {u["username"]: u["level"] for u in c.get("/api/v1/users").json()["users"]}
    assert levels["op1"] == "User"
    screenshot(page, "users")
    page.click('tr[data-user="admin"] button.delete')
    page.click("dialog button.danger")
    error = page.locator("#users-message .error")
    error.wait_for(state="visible")
    assert "Could not delete" in error.inner_text() and "Administrator" in error.inner_text()
    page.click('tr[data-user="op1"] button.delete')
    page.click("dialog button.danger")
    page.wait_for_selector('tr[data-user="op1"]', state="detached")


def test_system_page_shows_status_storage_and_the_device_service(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/#/system")
    page.wait_for_selector("#fact-version")
    with webbox.admin() as c:
        version = c.get("/api/v1/system").json()["version"]
    assert version in page.locator("#fact-version").inner_text()
    assert page.locator("#device-service-url").inner_text() == webbox.nvr.device_url
    page.wait_for_selector("table.volumes tbody tr")
    assert "ok" in page.locator("table.volumes tbody tr").first.inner_text()
    screenshot(page, "system")
    assert csp_violations(page) == [] and page.page_errors == []


def test_the_ui_is_served_with_a_strict_policy(webbox: WebBox) -> None:
    with httpx.Client(base_url=webbox.base, timeout=20) as c:
        index = c.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        csp = index.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp
        assert "media-src 'self' blob:" in csp and "frame-ancestors 'none'" in csp
        module = c.get("/ui/app.js")
        assert module.headers["content-type"].startswith("text/javascript")
        again = c.get("/ui/app.js", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 304
        assert c.get("/ui/..%2Fapi%2F__init__.py").status_code == 404
        assert c.get("/ui/__init__.py").status_code == 404
        # A page's fetch() gets no Digest challenge (the browser would open its own
        # login dialog over the UI's); other clients still do.
        fetched = c.get("/api/v1/session", headers={"Sec-Fetch-Mode": "cors"})
        assert fetched.status_code == 401 and "www-authenticate" not in fetched.headers
        plain = c.get("/api/v1/session")
        assert plain.status_code == 401 and plain.headers["www-authenticate"].startswith("Digest")


# -- phone width ------------------------------------------------------------------------------
def test_phone_width_has_no_horizontal_scroll(browser: Any, webbox: WebBox) -> None:
    context = new_context(browser, PHONE)
    try:
        pg = context.new_page()
        login(pg, webbox.base, "admin", webbox.admin_password)
        pg.wait_for_selector(f'.tile[data-camera="{webbox.camera}"][data-state="playing"]')
        screenshot(pg, "live-phone")
        for route, ready in (
            ("#/live", ".tile"),
            ("#/cameras", f'tr[data-camera="{webbox.camera}"]'),
            ("#/users", 'tr[data-user="admin"]'),
            ("#/system", "table.volumes tbody tr"),
        ):
            pg.goto(f"{webbox.base}/{route}")
            pg.wait_for_selector(ready)
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (route, width)
            words = set(pg.inner_text("main").split())
            assert not words & {"null", "undefined", "NaN"}, (route, words)
        # The nav folds into a menu button.
        assert pg.locator("#nav a[data-route=cameras]").is_hidden()
        pg.click("#menu-toggle")
        pg.click("#nav a[data-route=cameras]")
        pg.wait_for_selector(f'tr[data-camera="{webbox.camera}"]')
        screenshot(pg, "cameras-phone")
        assert csp_violations(pg) == []
    finally:
        context.close()
