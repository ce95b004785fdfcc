"""The dashboard in a real browser (Debian's chromium through Playwright) against a real server.

The whole-table tests share the session's server and open the newest users first
(`/?order=desc`), so what they add is on the page whatever other modules added. The view tests
run on a server of this module (`board`) and compare every tab with `GET /api/users` for the
same view.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from userboard import users
from userboard.bootstrap import cli_actor, open_database
from userboard.models import User

from .browser import Tab, browser  # noqa: F401  (fixture)
from .helpers import ServerProcess, seed_admin

NEWEST_FIRST = "/?order=desc"
SHOWN = ("id", "version", "username", "email", "role", "status")

MARKUP_NAME = '<img src=x onerror="window.__xss=1">'
MARKUP_EMAIL = "<script>window.__xss=2</script>@example.com"


@pytest.fixture
def tabs(browser, server):  # noqa: F811
    opened = [Tab(browser, server, path=NEWEST_FIRST), Tab(browser, server, path=NEWEST_FIRST)]
    yield opened
    for tab in opened:
        assert tab.errors == []
        tab.close()


def api_user(server, name, **extra):
    answer = server.api().post(server.url + "/api/users",
                               json={"username": name, "email": f"{name}@example.com", **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()["user"]


def test_add_through_the_form_appears_in_the_other_tab(tabs):
    one, two = tabs
    two.mark_no_reload()
    one.page.fill("#add-user input[name=username]", "formadd")
    one.page.fill("#add-user input[name=email]", "formadd@example.com")
    one.page.select_option("#add-user select[name=role]", "admin")
    one.page.click("#add-user button[type=submit]")
    row = two.page.locator("table#users tr", has=two.page.locator('td[data-field="username"]',
                                                                   has_text="formadd"))
    expect(row).to_have_count(1, timeout=1000)
    expect(row.locator('td[data-field="role"]')).to_have_text("admin")
    assert two.was_not_reloaded()


def test_edit_and_delete_through_the_ui_reach_the_other_tab(tabs):
    one, two = tabs
    user = api_user(one.server, "uiedit")
    expect(two.row(user["id"])).to_have_count(1)
    two.mark_no_reload()

    one.page.goto(f"{one.server.url}/users/{user['id']}/edit")
    one.page.fill("#edit-user input[name=email]", "edited@example.com")
    one.page.select_option("#edit-user select[name=status]", "disabled")
    one.page.click("#edit-user button[type=submit]")
    expect(two.cell(user["id"], "email")).to_have_text("edited@example.com", timeout=1000)
    expect(two.cell(user["id"], "status")).to_have_text("disabled")

    one.page.wait_for_selector('body[data-socket="connected"]')
    one.row(user["id"]).locator("form.delete button").click()  # the dialog is accepted
    expect(two.row(user["id"])).to_have_count(0, timeout=1000)
    expect(one.row(user["id"])).to_have_count(0)
    assert two.was_not_reloaded()


def test_api_writes_reach_both_tabs(tabs, server):
    for tab in tabs:
        tab.mark_no_reload()
    user = api_user(server, "apiwrite")
    for tab in tabs:
        expect(tab.cell(user["id"], "email")).to_have_text("apiwrite@example.com")
    server.api().patch(f"{server.url}/api/users/{user['id']}", json={"role": "admin"})
    for tab in tabs:
        expect(tab.cell(user["id"], "role")).to_have_text("admin")
        expect(tab.row(user["id"])).to_have_attribute("data-version", "2")
    server.api().delete(f"{server.url}/api/users/{user['id']}")
    for tab in tabs:
        expect(tab.row(user["id"])).to_have_count(0)
        assert tab.was_not_reloaded()


def test_rows_are_inserted_in_the_views_order(tabs, server):
    one, _ = tabs
    api_user(server, "order_a")
    api_user(server, "order_b")
    expect(one.page.locator('td[data-field="username"]', has_text="order_b")).to_have_count(1)
    ids = [row["id"] for row in one.shown()]
    assert ids == sorted(ids, reverse=True) and len(ids) <= 50


def test_markup_in_data_renders_as_text_on_load_and_when_pushed(browser, server):  # noqa: F811
    db_path = server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as raw:  # bypass validation and capture entirely
        raw.execute(
            "INSERT INTO users (username, email, role, status, version, created_at, updated_at)"
            " VALUES (?, ?, 'user', 'active', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            (MARKUP_NAME, MARKUP_EMAIL),
        )
        user_id = raw.execute("SELECT max(id) FROM users").fetchone()[0]
    tab = Tab(browser, server, path=NEWEST_FIRST)
    try:
        expect(tab.cell(user_id, "username")).to_have_text(MARKUP_NAME)
        expect(tab.cell(user_id, "email")).to_have_text(MARKUP_EMAIL)
        assert tab.row(user_id).locator("img, script").count() == 0

        # A bulk UPDATE from another process: captured, logged, relayed by the server, pushed.
        other = api_user(server, "plain_victim")
        expect(tab.row(other["id"])).to_have_count(1)
        database = open_database(server.env["USERBOARD_DATABASE_URL"])
        with database.session() as session:
            session.execute(update(User).where(User.id == other["id"])
                            .values(username=MARKUP_NAME.replace("1", "3"),
                                    email=MARKUP_EMAIL.replace("2", "4")))
            session.commit()
        database.close()
        expect(tab.cell(other["id"], "username")).to_have_text(MARKUP_NAME.replace("1", "3"))
        expect(tab.cell(other["id"], "email")).to_have_text(MARKUP_EMAIL.replace("2", "4"))
        assert tab.row(other["id"]).locator("img, script").count() == 0
        tab.page.wait_for_timeout(200)  # give an injected handler the chance to run
        assert tab.page.evaluate("window.__xss") is None
        assert tab.errors == []
    finally:
        tab.close()


def test_counts_show_each_views_total_and_follow_changes(tabs, server):
    everyone, admins = tabs
    admins.open("/?role=admin&status=disabled")
    total = int(everyone.page.text_content("#count-total"))
    disabled_admins = int(admins.page.text_content("#count-total"))
    assert total == api_view(server)["total"] and total > disabled_admins
    user = api_user(server, "counted", role="admin")
    expect(everyone.page.locator("#count-total")).to_have_text(str(total + 1))
    server.api().patch(f"{server.url}/api/users/{user['id']}", json={"status": "disabled"})
    expect(admins.page.locator("#count-total")).to_have_text(str(disabled_admins + 1))
    server.api().patch(f"{server.url}/api/users/{user['id']}", json={"role": "user"})
    expect(admins.page.locator("#count-total")).to_have_text(str(disabled_admins))
    server.api().delete(f"{server.url}/api/users/{user['id']}")
    expect(everyone.page.locator("#count-total")).to_have_text(str(total))


def test_taken_email_shows_the_field_error_and_keeps_the_input_across_a_redirect(tabs, server):
    one, _ = tabs
    api_user(server, "owner")
    one.page.fill("#add-user input[name=username]", "second_owner")
    one.page.fill("#add-user input[name=email]", "owner@example.com")
    one.page.click("#add-user button[type=submit]")
    error = one.page.locator('#add-user [data-error-for="email"]')
    expect(error).to_have_text("this email is already in use")
    expect(one.page.locator("#add-user input[name=username]")).to_have_value("second_owner")
    expect(one.page.locator("#add-user input[name=email]")).to_have_value("owner@example.com")
    # POST/redirect/GET: the page is the view's URL, so reloading it posts nothing again.
    assert one.page.url == server.url + NEWEST_FIRST
    one.page.reload()
    expect(one.page.locator("table#users")).to_be_visible()
    expect(error).to_have_count(0)
    expect(one.page.locator("#add-user input[name=username]")).to_have_value("")


def test_edit_page_notices_remote_change_and_delete(browser, server):  # noqa: F811
    user = api_user(server, "watched")
    tab = Tab(browser, server, path=f"/users/{user['id']}/edit")
    try:
        server.api().patch(f"{server.url}/api/users/{user['id']}", json={"email": "w2@example.com"})
        notice = tab.page.locator("#remote-notice")
        expect(notice).to_contain_text("w2@example.com")
        expect(notice).to_have_attribute("data-kind", "changed")
        server.api().delete(f"{server.url}/api/users/{user['id']}")
        expect(notice).to_have_attribute("data-kind", "deleted")
        expect(tab.page.locator("#edit-user button[type=submit]")).to_be_disabled()
    finally:
        tab.close()


def test_stale_edit_form_shows_current_values_instead_of_overwriting(browser, server):  # noqa: F811
    user = api_user(server, "racy")
    tab = Tab(browser, server, path=f"/users/{user['id']}/edit")
    try:
        server.api().patch(f"{server.url}/api/users/{user['id']}", json={"email": "theirs@example.com"})
        tab.page.fill("#edit-user input[name=email]", "mine@example.com")
        tab.page.click("#edit-user button[type=submit]")
        expect(tab.page.locator(".flash-error")).to_contain_text("changed by someone else")
        expect(tab.page.locator('[data-current="email"]')).to_have_text("theirs@example.com")
        got = server.api().get(f"{server.url}/api/users/{user['id']}").json()["user"]
        assert got["email"] == "theirs@example.com"
    finally:
        tab.close()


def test_chinese_page_shows_chinese_labels(browser, server):  # noqa: F811
    tab = Tab(browser, server, locale="zh-CN", login=False)
    try:
        tab.page.goto(server.url + "/login")
        expect(tab.page.locator("h1")).to_have_text("登录")
        tab.login()
        username = tab.page.locator("table#users th[data-sort=username]")
        expect(username).to_have_text("用户名")
        expect(tab.page.locator("#connection")).to_have_text("已连接")
        expect(tab.page.locator('td[data-field="role"][data-value="admin"]').first).to_have_text("管理员")
        tab.page.click("nav.languages a[hreflang=en]")  # the switch on the page
        expect(username).to_have_text(re.compile("username", re.I))
    finally:
        tab.close()


def test_connection_indicator_follows_the_server(browser, board):  # noqa: F811
    tab = Tab(browser, board)
    try:
        expect(tab.page.locator("#connection")).to_have_text("connected")
        # Attempts closer together than a person needs, and as many as the restart takes (the
        # bounded count is test_write_forms_are_disabled_while_the_server_stays_unreachable's).
        tab.page.evaluate("window.userboard.socket.io.reconnectionDelay(100);"
                          " window.userboard.socket.io.reconnectionDelayMax(200);"
                          " window.userboard.socket.io.reconnectionAttempts(1000)")
        board.stop()
        expect(tab.page.locator("body")).to_have_attribute("data-socket", "reconnecting")
        expect(tab.page.locator("#connection")).to_have_text("reconnecting")
        board.start()
        expect(tab.page.locator("body")).to_have_attribute("data-socket", "connected", timeout=15000)
    finally:
        tab.close()
        running(board)


def test_pages_send_a_csp_without_inline_script(server):
    import requests

    answer = requests.get(server.url + "/login")
    policy = answer.headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", policy).group(1)
    assert "'unsafe-inline'" not in script_src and "'self'" in script_src
    assert "<script>" not in answer.text  # scripts are modules loaded from files only


def test_a_cut_tab_gets_a_fresh_window_on_reconnect_without_reload(tabs, server):
    one, two = tabs
    victims = [api_user(server, f"cut{i}") for i in range(3)]
    expect(two.row(victims[-1]["id"])).to_have_count(1)
    windows = two.page.evaluate("window.userboard.stats.views")
    two.mark_no_reload()
    # Cut the connection and keep it down while the other tab writes.
    two.page.evaluate("window.userboard.socket.io.reconnection(false);"
                      " window.userboard.socket.io.engine.close()")
    expect(two.page.locator("body")).not_to_have_attribute("data-socket", "connected")

    one.page.fill("#add-user input[name=username]", "while_away")
    one.page.fill("#add-user input[name=email]", "while_away@example.com")
    one.page.click("#add-user button[type=submit]")
    one.page.goto(f"{server.url}/users/{victims[0]['id']}/edit")
    one.page.fill("#edit-user input[name=email]", "moved_away@example.com")
    one.page.click("#edit-user button[type=submit]")
    one.page.wait_for_selector('body[data-socket="connected"]')
    one.row(victims[1]["id"]).locator("form.delete button").click()
    expect(one.row(victims[1]["id"])).to_have_count(0)
    api_user(server, "api_while_away")

    two.page.evaluate("window.userboard.socket.io.reconnection(true);"
                      " window.userboard.socket.connect()")
    expect(two.page.locator("body")).to_have_attribute("data-socket", "connected")
    expect(two.page.locator('td[data-field="username"]', has_text="api_while_away")).to_have_count(1)
    wait_for_view(two, server, {"order": "desc"})
    assert two.page.evaluate("window.userboard.stats.views") == windows + 1
    assert two.was_not_reloaded()


# -- views: search, filters, sort and pages that stay live --------------------------------------


def api_view(server, **params) -> dict:
    answer = server.api().get(server.url + "/api/users", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def rows_of(answer: dict) -> list[dict]:
    return [{k: user[k] for k in SHOWN} for user in answer["users"]]


def wait_for_view(tab, server, view: dict, timeout: float = 10) -> list[dict]:
    """Wait until the tab shows exactly the API's page of `view`: its rows in order, its total."""
    deadline = time.monotonic() + timeout
    while True:
        answer = api_view(server, **view, limit=50)
        shown, total = tab.shown(), int(tab.page.text_content("#count-total"))
        if (shown, total) == (rows_of(answer), answer["total"]) or time.monotonic() > deadline:
            assert shown == rows_of(answer) and total == answer["total"], view
            return shown
        tab.page.wait_for_timeout(50)


def usernames(rows: list[dict]) -> list[str]:
    return [row["username"] for row in rows]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A server of this module's own: the view tests know every user on it, and the connection
    tests stop it and start it again."""
    proc = ServerProcess(tmp_path_factory.mktemp("board"))
    seed_admin(proc)
    proc.start()
    yield proc
    proc.stop()


def running(server: ServerProcess) -> None:
    """Start `server` again if a test stopped it and failed before starting it."""
    if server.proc.poll() is not None:
        server.start()


def seed_users(server: ServerProcess, rows: list[dict]) -> None:
    """Add users straight to the server's database (captured, so open tabs see them too)."""
    database = open_database(server.env["USERBOARD_DATABASE_URL"])
    try:
        with database.session() as session:
            for row in rows:
                users.create_user(session, row)
    finally:
        database.close()


def test_two_views_follow_a_third_tab_and_the_api_without_reload(browser, board):  # noqa: F811
    by_email, disabled = {"q": "ann", "sort": "email"}, {"status": "disabled"}
    api, url = board.api(), board.url
    annika = api_user(board, "annika", email="m.annika@example.com")
    hannah = api_user(board, "hannah", status="disabled")
    bob = api_user(board, "bob")
    carl = api_user(board, "carl", status="disabled")
    one, two = Tab(browser, board, path="/?q=ann&sort=email"), Tab(browser, board, path="/?status=disabled")
    writer = Tab(browser, board)
    try:
        for tab in (one, two):
            tab.mark_no_reload()

        def check() -> tuple[list[str], list[str]]:
            return (usernames(wait_for_view(one, board, by_email)),
                    usernames(wait_for_view(two, board, disabled)))

        assert check() == (["hannah", "annika"], ["hannah", "carl"])

        # Added in the third tab: enters both views at its sorted place.
        writer.page.fill("#add-user input[name=username]", "annabel")
        writer.page.fill("#add-user input[name=email]", "z.annabel@example.com")
        writer.page.select_option("#add-user select[name=status]", "disabled")
        writer.page.click("#add-user button[type=submit]")
        assert check() == (["hannah", "annika", "annabel"], ["hannah", "carl", "annabel"])
        annabel = api_view(board, q="annabel")["users"][0]

        # Its sort key changes through the API: it moves to the top of the email order.
        api.patch(f"{url}/api/users/{annabel['id']}", json={"email": "a.annabel@example.com"})
        assert check()[0] == ["annabel", "hannah", "annika"]

        # Renamed on the edit page: now matches "ann" and enters the search.
        writer.page.goto(f"{url}/users/{bob['id']}/edit")
        writer.page.fill("#edit-user input[name=username]", "bobann")
        writer.page.click("#edit-user button[type=submit]")
        assert check()[0] == ["annabel", "bobann", "hannah", "annika"]

        # A bulk action in the third tab: both rows enter the disabled view.
        writer.page.wait_for_selector('body[data-socket="connected"]')
        for user in (annika, bob):
            writer.row(user["id"]).locator("input[name=select]").check()
        writer.page.select_option("#bulk select[name=action]", "disable")
        writer.page.click("#bulk button[type=submit]")
        expect(writer.page.locator(".flash-success")).to_contain_text("2 of 2")
        assert check()[1] == ["annika", "hannah", "bobann", "carl", "annabel"]

        # No longer matches the search: leaves it, stays (changed) in the other view.
        api.patch(f"{url}/api/users/{hannah['id']}", json={"username": "helga",
                                                           "email": "helga@example.com"})
        assert check() == (["annabel", "bobann", "annika"],
                           ["annika", "helga", "bobann", "carl", "annabel"])

        # Deleted with the row's button in the third tab: leaves both.
        writer.page.wait_for_selector('body[data-socket="connected"]')
        writer.row(annabel["id"]).locator("form.delete button").click()
        assert check() == (["bobann", "annika"], ["annika", "helga", "bobann", "carl"])

        # Bulk actions through the API.
        assert api.post(f"{url}/api/users/bulk", json={
            "action": "enable", "ids": [annika["id"], bob["id"]]}).status_code == 200
        assert check() == (["bobann", "annika"], ["helga", "carl"])
        assert api.post(f"{url}/api/users/bulk", json={
            "action": "delete", "ids": [carl["id"], bob["id"]]}).status_code == 200
        assert check() == (["annika"], ["helga"])
        latest = str(api_view(board)["seq"])
        for tab in (one, two):  # the heartbeat says every change so far is in the view
            expect(tab.page.locator("table#users")).to_have_attribute("data-seq", latest)
            assert tab.was_not_reloaded()
            assert tab.errors == []
    finally:
        for tab in (one, two, writer):
            tab.close()


def test_the_url_holds_the_view_and_reload_and_back_restore_it(browser, board):  # noqa: F811
    seed_users(board, [{"username": f"restore{i}", "email": f"{'qpon'[i]}.restore@example.com",
                        "status": "disabled" if i % 2 else "active"} for i in range(4)])
    tab = Tab(browser, board)
    try:
        page = tab.page
        page.fill("#view input[name=q]", "restore")
        page.press("#view input[name=q]", "Enter")
        expect(page).to_have_url(f"{board.url}/?q=restore&sort=id&order=asc")
        page.wait_for_selector('body[data-socket="connected"]')  # the page's script is running
        page.select_option("#view select[name=status]", "active")  # applies at once
        expect(page).to_have_url(re.compile(r"status=active"))
        page.click("th[data-sort=email]")
        expect(page.locator("th[data-sort=email]")).to_have_attribute("aria-sort", "ascending")
        page.click("th[data-sort=email]")  # again: the other way round
        view = {"q": "restore", "status": "active", "sort": "email", "order": "desc"}
        expect(page.locator("th[data-sort=email]")).to_have_attribute("aria-sort", "descending")
        tab.page.wait_for_selector('body[data-socket="connected"]')
        assert usernames(wait_for_view(tab, board, view)) == ["restore0", "restore2"]

        page.reload()
        page.wait_for_selector('body[data-socket="connected"]')
        expect(page.locator("#view input[name=q]")).to_have_value("restore")
        expect(page.locator("#view select[name=status]")).to_have_value("active")
        expect(page.locator("#view select[name=role]")).to_have_value("")
        expect(page.locator("th[data-sort=email]")).to_have_attribute("aria-sort", "descending")
        assert usernames(wait_for_view(tab, board, view)) == ["restore0", "restore2"]

        page.go_back()
        page.wait_for_selector('body[data-socket="connected"]')
        expect(page.locator("th[data-sort=email]")).to_have_attribute("aria-sort", "ascending")
        assert usernames(wait_for_view(tab, board, {**view, "order": "asc"})) == ["restore2", "restore0"]
        assert tab.errors == []
    finally:
        tab.close()


def walk(tab, rel: str) -> list[list[int]]:
    """Follow the pager's `rel` links to the end: the ids of every page, the current one first."""
    pages = [[row["id"] for row in tab.shown()]]
    link = tab.page.locator(f"nav#pager a[rel={rel}]")
    while link.get_attribute("aria-disabled") != "true":
        with tab.page.expect_navigation():
            link.click()
        pages.append([row["id"] for row in tab.shown()])
    return pages


def test_the_pager_walks_every_page_exactly_once_and_back(browser, tmp_path):  # noqa: F811
    server = ServerProcess(tmp_path)
    seed_admin(server)
    # 259 more users: 260 in all. Emails in another order than ids, for the second walk.
    sql_many(server, "INSERT INTO users (username, email) VALUES (?, ?)",
             [(f"pager{i:03}", f"p{i * 101 % 259:03}@example.com") for i in range(259)])
    server.start()
    tab = Tab(browser, server)
    try:
        every_id = [user["id"] for user in api_view(server)["users"]]
        assert len(every_id) == 260
        pages = walk(tab, "next")
        assert [len(page) for page in pages] == [50, 50, 50, 50, 50, 10]
        assert [i for page in pages for i in page] == every_id
        assert walk(tab, "prev") == pages[::-1]

        tab.open("/?sort=email&order=desc")
        by_email = walk(tab, "next")
        assert [i for page in by_email for i in page] == [
            user["id"] for user in api_view(server, sort="email", order="desc")["users"]]
        assert sorted(i for page in by_email for i in page) == every_id
        assert tab.errors == []
    finally:
        tab.close()
        server.stop()


def test_csv_export_of_a_filtered_view_equals_the_api(browser, board):  # noqa: F811
    seed_users(board, [{"username": f"csvrow{i}", "email": f"{'dbca'[i]}.csvrow@example.com",
                        "role": "admin" if i == 1 else "user",
                        "status": "disabled" if i == 3 else "active"} for i in range(4)])
    view = {"q": "csvrow", "status": "active", "sort": "email", "order": "desc"}
    tab = Tab(browser, board, path="/?q=csvrow&status=active&sort=email&order=desc")
    try:
        with tab.page.expect_download() as download:
            tab.page.click("a#export-csv")
        text = Path(download.value.path()).read_text(encoding="utf-8")
    finally:
        tab.close()
    exported = list(csv.DictReader(io.StringIO(text)))
    expected = [{k: str(v) for k, v in user.items()} for user in api_view(board, **view)["users"]]
    assert [row["username"] for row in exported] == ["csvrow0", "csvrow2", "csvrow1"]
    assert exported == expected


def test_long_values_are_cut_short_and_the_actions_stay_visible(browser, board):  # noqa: F811
    def long_user(name: str) -> dict:
        email = f"{name * 64}"[:64] + "@" + (name[0] * 58 + ".") * 3 + "example.com"
        return api_user(board, (name * 32)[:32], email=email)

    first = long_user("w")
    tab = Tab(browser, board, path=NEWEST_FIRST)
    try:
        pushed = long_user("v")  # arrives through the socket
        for user in (first, pushed):
            expect(tab.cell(user["id"], "email")).to_have_attribute("title", user["email"])
            expect(tab.cell(user["id"], "username")).to_have_attribute("title", user["username"])
            expect(tab.row(user["id"]).locator("a.edit")).to_be_in_viewport()
            expect(tab.row(user["id"]).locator("form.delete button")).to_be_in_viewport()
        assert tab.page.evaluate("""() => {
            const card = document.querySelector('table#users').parentElement;
            return card.scrollWidth <= card.clientWidth;
        }""")
    finally:
        tab.close()


def test_write_forms_are_disabled_while_the_server_stays_unreachable(browser, board):  # noqa: F811
    server = board
    tab = Tab(browser, server)
    writes = ["#add-user button[type=submit]", "#bulk button[type=submit]", "form.delete button"]
    try:
        # The same bounded number of attempts, only closer together than a person needs.
        tab.page.evaluate("window.userboard.socket.io.reconnectionDelay(50);"
                          " window.userboard.socket.io.reconnectionDelayMax(100)")
        server.stop()
        expect(tab.page.locator("body")).to_have_attribute("data-socket", "offline")
        expect(tab.page.locator("#connection")).to_have_text("offline")
        for selector in writes:
            expect(tab.page.locator(selector).first).to_be_disabled()
        server.start()
        tab.page.evaluate("window.userboard.socket.connect()")  # what the page's retry timer does
        expect(tab.page.locator("body")).to_have_attribute("data-socket", "connected")
        for selector in writes:
            expect(tab.page.locator(selector).first).to_be_enabled()
    finally:
        tab.close()
        running(server)


# -- the edit page's history, and writes made outside userboard ---------------------------------


def sql(server, statement: str, *args) -> None:
    """One statement on the server's database file with the sqlite3 module: no userboard code."""
    with sqlite3.connect(server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")) as raw:
        raw.execute(statement, args)


def sql_many(server, statement: str, rows: list[tuple]) -> None:
    """One statement per row, in one transaction, with the sqlite3 module (as `sql`)."""
    with sqlite3.connect(server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")) as raw:
        raw.executemany(statement, rows)


def unannounced(server, statement: str, *args) -> None:
    """A change no event announces, its version unmoved (what a database restored from a backup
    can hold): the triggers take the capture's marker for the capture's own write."""
    with sqlite3.connect(server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")) as raw:
        raw.execute("INSERT INTO capture_marker (id) VALUES (1)")
        raw.execute(statement, args)
        raw.execute("DELETE FROM capture_marker")


def newest_entry(tab: Tab, count: int) -> dict:
    """The newest history entry, once the page shows `count` of them."""
    expect(tab.page.locator("ol#history > li")).to_have_count(count)
    return tab.history()[0]


def test_the_edit_page_history_shows_each_writer_live(browser, server):  # noqa: F811
    user = api_user(server, "chronicle")
    edit_page = f"/users/{user['id']}/edit"
    watcher, editor = Tab(browser, server, path=edit_page), Tab(browser, server, path=edit_page)
    try:
        watcher.mark_no_reload()
        created = watcher.history()
        assert [(e["event"], e["kind"], e["actor"], e["what"]) for e in created] == [
            ("user_added", "token", "root (API token)", "created")]

        # A browser session: another tab saves the edit form.
        editor.page.fill("#edit-user input[name=email]", "chronicle2@example.com")
        editor.page.click("#edit-user button[type=submit]")
        by_session = newest_entry(watcher, 2)
        assert (by_session["kind"], by_session["actor"], by_session["what"]) == (
            "session", "root (browser session)", "changed")
        assert by_session["changes"] == ["Email: chronicle@example.com → chronicle2@example.com"]

        # An API token.
        answer = server.api().patch(f"{server.url}/api/users/{user['id']}",
                                    json={"status": "disabled"})
        by_token = newest_entry(watcher, 3)
        assert (by_token["seq"], by_token["kind"], by_token["actor"]) == (
            answer.json()["seq"], "token", "root (API token)")
        assert by_token["changes"] == ["Status: active → disabled"]

        # The CLI, in its own process: named after the operating-system user who ran it.
        done = server.cli("users", "set", str(user["id"]), "role=admin")
        assert done.returncode == 0, done.stderr
        os_user = cli_actor()["name"]
        by_cli = newest_entry(watcher, 4)
        assert (by_cli["kind"], by_cli["actor"]) == (
            "cli", f"{os_user} (command line)" if os_user else "command line")
        assert by_cli["changes"] == ["Role: user → admin"]

        # The sqlite3 module on the database file: SQLite cannot tell who that was.
        sql(server, "UPDATE users SET username = 'chronicle_sql' WHERE id = ?", user["id"])
        outside = newest_entry(watcher, 5)
        assert (outside["kind"], outside["actor"]) == ("external", "outside userboard")
        assert outside["changes"] == ["Username: chronicle → chronicle_sql"]

        live = watcher.history()
        assert [e["seq"] for e in live] == sorted((e["seq"] for e in live), reverse=True)
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", e["at"]) for e in live)
        assert watcher.was_not_reloaded()
        # Rendered by the server, the same entries read the same (only the times are the log's).
        watcher.page.reload()
        without_times = [{k: v for k, v in e.items() if k != "at"} for e in live]
        assert [{k: v for k, v in e.items() if k != "at"} for e in watcher.history()] == without_times
        assert watcher.errors == [] and editor.errors == []
    finally:
        watcher.close()
        editor.close()


def test_a_direct_sql_update_reaches_a_dashboard_view_and_an_edit_page(browser, server):  # noqa: F811
    user = api_user(server, "sqlwatched")
    board = Tab(browser, server, path="/?q=sqlwatched")
    editor = Tab(browser, server, path=f"/users/{user['id']}/edit")
    try:
        board.mark_no_reload()
        editor.mark_no_reload()
        sql(server, "UPDATE users SET username = 'sqlwatched_x', email = 'sqlx@example.com'"
                    " WHERE id = ?", user["id"])
        expect(board.cell(user["id"], "username")).to_have_text("sqlwatched_x")
        expect(board.cell(user["id"], "email")).to_have_text("sqlx@example.com")
        expect(board.row(user["id"])).to_have_attribute("data-version", str(user["version"] + 1))
        notice = editor.page.locator("#remote-notice")
        expect(notice).to_contain_text("sqlwatched_x")
        expect(notice).to_contain_text("sqlx@example.com")
        expect(notice).to_have_attribute("data-kind", "changed")
        assert newest_entry(editor, 2)["kind"] == "external"
        assert board.was_not_reloaded() and editor.was_not_reloaded()
        assert board.errors == [] and editor.errors == []
    finally:
        board.close()
        editor.close()


def test_a_fresh_snapshot_or_window_replaces_rows_at_the_same_version(browser, server):  # noqa: F811
    user = api_user(server, "unannounced")
    board = Tab(browser, server, path="/?q=unannounced")
    editor = Tab(browser, server, path=f"/users/{user['id']}/edit")
    try:
        unannounced(server, "UPDATE users SET email = 'quiet@example.com' WHERE id = ?",
                    user["id"])
        # A fresh window for the view; a snapshot for the edit page (asked from a seq the
        # server has not reached, which no replay can serve).
        board.page.evaluate("window.userboard.resync()")
        editor.page.evaluate("window.userboard.socket.emit('resync', {since: 2 ** 40})")
        expect(board.cell(user["id"], "email")).to_have_text("quiet@example.com")
        expect(board.row(user["id"])).to_have_attribute("data-version", str(user["version"]))
        expect(editor.page.locator("#remote-notice")).to_contain_text("quiet@example.com")
        assert editor.page.evaluate("window.userboard.stats.snapshots") == 1
        assert board.errors == [] and editor.errors == []
    finally:
        board.close()
        editor.close()


def test_an_edit_page_on_a_table_too_large_for_a_snapshot_reads_its_user_again(
        browser, tmp_path):  # noqa: F811
    big = ServerProcess(tmp_path)
    seed_admin(big)
    crowd = [(f"crowd{i}", f"crowd{i}@example.com") for i in range(2001)]
    sql_many(big, "INSERT INTO users (username, email) VALUES (?, ?)", crowd)
    with sqlite3.connect(big.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")) as raw:
        user_id = raw.execute("SELECT id FROM users WHERE username = 'crowd7'").fetchone()[0]
    big.start()
    tab = Tab(browser, big, path=f"/users/{user_id}/edit")
    try:
        # Unannounced (see above), then a catch-up no replay can serve: users_too_large.
        unannounced(big, "UPDATE users SET email = 'crowd7b@example.com' WHERE id = ?", user_id)
        tab.page.evaluate("window.userboard.socket.emit('resync', {since: 2 ** 40})")
        expect(tab.page.locator("#remote-notice")).to_contain_text("crowd7b@example.com")
        stats = tab.page.evaluate("window.userboard.stats")
        assert (stats["tooLarge"], stats["snapshots"]) == (1, 0)
        # The events after the notice's seq still come, and apply.
        answer = big.api().patch(f"{big.url}/api/users/{user_id}", json={"email": "c7@example.com"})
        expect(tab.page.locator("#remote-notice")).to_contain_text("c7@example.com")
        assert tab.page.evaluate("window.userboard.lastSeq") == answer.json()["seq"]
        assert tab.errors == []
    finally:
        tab.close()
        big.stop()


def test_users_reset_empties_the_edit_page_in_seq_order(browser, server):  # noqa: F811
    # A TRUNCATE of users (PostgreSQL) must cascade to the logins, which cuts this page's socket
    # too: its event is handed to the page's socket handler here, after an unknown entity's.
    user = api_user(server, "truncated")
    tab = Tab(browser, server, path=f"/users/{user['id']}/edit")
    try:
        last = tab.page.evaluate("window.userboard.lastSeq")
        reset = {"seq": last + 2, "actor": {"kind": "external", "user_id": None, "name": "dba"}}
        tab.page.evaluate("([reset, last]) => { const [deliver] = window.userboard.socket"
                          ".listenersAny(); deliver('users_reset', reset);"
                          " deliver('role_added', {seq: last + 1, role: {}}); }", [reset, last])
        notice = tab.page.locator("#remote-notice")
        expect(notice).to_have_attribute("data-kind", "deleted")
        expect(tab.page.locator("#edit-user button[type=submit]")).to_be_disabled()
        assert tab.page.evaluate("window.userboard.lastSeq") == last + 2
        assert tab.errors == []
    finally:
        tab.close()


def test_markup_in_a_writers_name_renders_as_text_in_the_history(browser, server):  # noqa: F811
    user = api_user(server, "named_by_markup")
    tab = Tab(browser, server, path=f"/users/{user['id']}/edit")
    try:
        database = open_database(server.env["USERBOARD_DATABASE_URL"], actor=MARKUP_NAME)
        try:
            with database.session() as session:
                users.update_user(session, user["id"], {"email": "marked@example.com"})
        finally:
            database.close()
        shown = f"{MARKUP_NAME} (script)"
        assert newest_entry(tab, 2)["actor"] == shown  # pushed
        tab.page.reload()
        assert newest_entry(tab, 2)["actor"] == shown  # rendered by the server
        assert tab.page.locator("#history img, #history script").count() == 0
        assert tab.page.evaluate("window.__xss") is None
        assert tab.errors == []
    finally:
        tab.close()


def test_a_ten_thousand_character_username_keeps_edit_and_delete_on_screen(browser, server):  # noqa: F811
    """Direct SQL can store what the API refuses; the page stays usable at 1280 px wide."""
    def long_user(tag: str) -> tuple[int, str]:
        name = (tag * 10_000)[:10_000]
        sql(server, "INSERT INTO users (username, email) VALUES (?, ?)", name, f"{tag}@example.com")
        with sqlite3.connect(server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")) as raw:
            return raw.execute("SELECT id FROM users WHERE username = ?", (name,)).fetchone()[0], name

    def fits(locator) -> bool:
        box = locator.bounding_box()
        return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1280

    def no_sideways_scroll(tab) -> bool:
        return tab.page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")

    loaded = long_user("longname0")
    tab = Tab(browser, server)
    try:
        tab.page.set_viewport_size({"width": 1280, "height": 800})
        tab.open(NEWEST_FIRST)
        pushed = long_user("longname1")  # arrives through the socket
        for user_id, name in (loaded, pushed):
            expect(tab.cell(user_id, "username")).to_have_attribute("title", name)
            assert fits(tab.row(user_id).locator("a.edit")), user_id
            assert fits(tab.row(user_id).locator("form.delete button")), user_id
        assert no_sideways_scroll(tab)
        tab.open(f"/users/{pushed[0]}/edit")
        expect(tab.page.locator("input[name=username]")).to_have_value(pushed[1])
        expect(tab.page.locator("h1")).to_have_attribute("title", pushed[1])
        assert no_sideways_scroll(tab)
        assert fits(tab.page.locator("form#edit-user button[type=submit]"))
        assert tab.errors == []
    finally:
        tab.close()
