"""Playwright helpers: Debian's chromium, logged-in pages, no network but loopback."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest

from .helpers import ADMIN_PASSWORD, need

CHROMIUM = Path("/usr/bin/chromium")
VENDOR = Path(__file__).resolve().parents[1] / "src/userboard/web/static/vendor/socket.io.esm.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    need(CHROMIUM.exists(), "Debian's chromium is not installed (apt-get install chromium)")
    need(VENDOR.exists(), "the socket.io client is not built (run `npm ci`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


_logged_in: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def logged_in_state(browser, server) -> dict:
    """Cookies of a session logged in through the login form, once per server.

    Tabs start from them instead of each filling the form: a login is a scrypt check and two
    page loads, and the login form has tests of its own (test_chinese_page_shows_chinese_labels
    logs in through it in the browser; test_web.py and test_security.py cover it in depth).
    """
    if server not in _logged_in:
        tab = Tab(browser, server, login=False)
        try:
            tab.login()
            _logged_in[server] = tab.context.storage_state()
        finally:
            tab.close()
    return _logged_in[server]


class Tab:
    """One browser context and page, collecting page errors.

    Logged in (the default), it opens `path` and waits until the page's socket is connected.
    """

    def __init__(self, browser, server, locale: str = "en-US", login: bool = True, path: str = "/"):
        self.server = server
        state = logged_in_state(browser, server) if login else None
        self.context = browser.new_context(locale=locale, viewport={"width": 1100, "height": 760},
                                           storage_state=state)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda dialog: dialog.accept())
        if login:
            self.open(path)

    def login(self, username: str = "root", password: str = ADMIN_PASSWORD) -> None:
        """Log in through the login form."""
        self.page.goto(self.server.url + "/login")
        self.page.fill("#login input[name=username]", username)
        self.page.fill("#login input[name=password]", password)
        self.page.click("#login button[type=submit]")
        self.page.wait_for_selector('body[data-socket="connected"]')

    def open(self, path: str) -> None:
        """Go to a page of this server and wait until its socket is connected."""
        self.page.goto(self.server.url + path)
        self.page.wait_for_selector('body[data-socket="connected"]')

    def shown(self) -> list[dict]:
        """The rows of the users table, in order, as the page shows them."""
        return self.page.locator("table#users tbody tr").evaluate_all(
            """rows => rows.map(r => ({
                id: Number(r.dataset.userId), version: Number(r.dataset.version),
                username: r.querySelector('[data-field=username]').textContent,
                email: r.querySelector('[data-field=email]').textContent,
                role: r.querySelector('[data-field=role]').dataset.value,
                status: r.querySelector('[data-field=status]').dataset.value}))"""
        )

    def row(self, user_id: int):
        return self.page.locator(f'table#users tr[data-user-id="{user_id}"]')

    def cell(self, user_id: int, field: str):
        return self.row(user_id).locator(f'td[data-field="{field}"]')

    def history(self) -> list[dict]:
        """The edit page's history entries, newest first, as the page shows them."""
        return self.page.locator("ol#history > li").evaluate_all(
            """items => items.map(li => ({
                seq: Number(li.dataset.seq), event: li.dataset.event,
                kind: li.querySelector('[data-field=actor]').dataset.kind,
                actor: li.querySelector('[data-field=actor]').textContent,
                what: li.querySelector('[data-field=event]').textContent,
                changes: [...li.querySelectorAll('[data-change]')].map(c =>
                    c.textContent.replace(/\\s+/g, ' ').trim()),
                at: li.querySelector('time').dateTime}))"""
        )

    def mark_no_reload(self) -> None:
        self.page.evaluate("window.__noReload = true")

    def was_not_reloaded(self) -> bool:
        return self.page.evaluate("window.__noReload === true")

    def close(self) -> None:
        self.context.close()
