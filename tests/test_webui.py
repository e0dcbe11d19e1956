"""The browser UI (docs/design/webui.md) in Debian's Chromium against a running box that
records a GStreamer camera: login, live video over WebRTC and over the MSE fallback, the
cameras, users and system pages, levels, and the phone-width layout. The tests save the
screenshots in docs/screenshots/."""

from __future__ import annotations

from typing import Any

import pytest

from tests import webui
from tests.webui import DESKTOP, WebBox, screenshot

# The shared module-scoped fixtures (tests/webui.py).
webbox = webui.webbox
browser = webui.browser
page = webui.page

pytestmark = pytest.mark.timeout(180)


def test_login_wrong_password_then_right(browser: Any, webbox: WebBox) -> None:
    context = browser.new_context(viewport=DESKTOP)
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
    assert page.page_errors == []


def test_live_wall_plays_over_mse(page: Any, webbox: WebBox) -> None:
    page.goto(webbox.base + "/?transport=mse#/live")
    _assert_playing(page, webbox.camera, "mse")
    assert page.page_errors == []
