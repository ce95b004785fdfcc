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
def chromium():
    """Debian's Chromium, one per test process (Playwright's sync API allows one at a time)."""
    need(CHROMIUM.exists(), "Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def browser(chromium):
    """The browser for pages served from this source tree (they need its built client)."""
    need(VENDOR.exists(), "the socket.io client is not built (run `npm ci`)")
    return chromium


class _ServerTabs:
    """What the browser keeps for one server: the cookies of a login, and logged-in tabs that
    tests closed, parked on about:blank for the next test.

    A new browser context costs about 0.3 s of CPU and twice that in wall time (a renderer
    process and a profile); a parked one only loads the next test's page. Tabs start from the
    cookies instead of each filling the login form (a scrypt check and two page loads); the form
    has tests of its own (test_chinese_page_shows_chinese_labels here, test_web.py and
    test_security.py in depth).
    """

    def __init__(self, browser, server):
        self.browser = browser
        self.idle: dict[str, list] = {}  # locale -> [(context, page)]
        tab = Tab(browser, server, login=False)
        tab.login()
        self.state = tab.context.storage_state()
        tab.park(self.idle.setdefault(tab.locale, []))


_servers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _server_tabs(browser, server) -> _ServerTabs:
    if server not in _servers or _servers[server].browser is not browser:
        _servers[server] = _ServerTabs(browser, server)
    return _servers[server]


def _accept(dialog) -> None:
    dialog.accept()


class Tab:
    """A browser context and page, collecting page errors.

    Logged in (the default), it opens `path` and waits until the page's socket is connected;
    closed, it is parked for the next logged-in tab on the same server (see _ServerTabs).
    """

    def __init__(self, browser, server, locale: str = "en-US", login: bool = True, path: str = "/"):
        self.server, self.locale = server, locale
        self._idle = None
        if login:
            kept = _server_tabs(browser, server)
            self._idle = kept.idle.setdefault(locale, [])
        if self._idle:
            self.context, self.page = self._idle.pop()
        else:
            self.context = browser.new_context(
                locale=locale, viewport={"width": 1100, "height": 760},
                storage_state=kept.state if login else None)
            self.page = self.context.new_page()
            self.page.on("dialog", _accept)
        self.errors: list[str] = []
        self.page.on("pageerror", self._record_error)
        if login:
            self.open(path)

    def _record_error(self, exc) -> None:
        self.errors.append(str(exc))

    def park(self, idle: list) -> None:
        """Leave the page (which ends its socket) and keep the context in `idle`."""
        from playwright.sync_api import Error as PlaywrightError  # as the `browser` fixture does

        self.page.remove_listener("pageerror", self._record_error)
        try:
            self.page.goto("about:blank")
        except PlaywrightError:  # the page or the browser is gone: nothing to keep
            self.context.close()
            return
        idle.append((self.context, self.page))

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
        if self._idle is None:
            self.context.close()
        else:
            self.park(self._idle)
