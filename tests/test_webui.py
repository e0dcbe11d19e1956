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
