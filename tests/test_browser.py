"""The dashboard in a real browser (Debian's chromium through Playwright) against a real server."""

from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from userboard.bootstrap import open_database
from userboard.models import User

from .browser import Tab, browser  # noqa: F401  (fixture)
from .helpers import ServerProcess, seed_admin

MARKUP_NAME = '<img src=x onerror="window.__xss=1">'
MARKUP_EMAIL = "<script>window.__xss=2</script>@example.com"


@pytest.fixture
def tabs(browser, server):  # noqa: F811
    opened = [Tab(browser, server), Tab(browser, server)]
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


def test_rows_are_inserted_in_id_order(tabs, server):
    one, _ = tabs
    api_user(server, "order_a")
    api_user(server, "order_b")
    expect(one.page.locator('td[data-field="username"]', has_text="order_b")).to_have_count(1)
    ids = [int(i) for i in one.page.locator("table#users tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.userId)")]
    assert ids == sorted(ids)


def test_markup_in_data_renders_as_text_on_load_and_when_pushed(browser, server):  # noqa: F811
    db_path = server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as raw:  # bypass validation and capture entirely
        raw.execute(
            "INSERT INTO users (username, email, role, status, version, created_at, updated_at)"
            " VALUES (?, ?, 'user', 'active', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            (MARKUP_NAME, MARKUP_EMAIL),
        )
        user_id = raw.execute("SELECT max(id) FROM users").fetchone()[0]
    tab = Tab(browser, server)
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


def test_counts_follow_changes(tabs, server):
    one, _ = tabs
    total = int(one.page.text_content("#count-total"))
    admins = int(one.page.text_content("#count-admins"))
    disabled = int(one.page.text_content("#count-disabled"))
    user = api_user(server, "counted", role="admin")
    expect(one.page.locator("#count-total")).to_have_text(str(total + 1))
    expect(one.page.locator("#count-admins")).to_have_text(str(admins + 1))
    server.api().patch(f"{server.url}/api/users/{user['id']}", json={"status": "disabled"})
    expect(one.page.locator("#count-disabled")).to_have_text(str(disabled + 1))
    server.api().delete(f"{server.url}/api/users/{user['id']}")
    expect(one.page.locator("#count-total")).to_have_text(str(total))
    expect(one.page.locator("#count-admins")).to_have_text(str(admins))
    expect(one.page.locator("#count-disabled")).to_have_text(str(disabled))


def test_taken_email_shows_the_field_error_and_keeps_the_input(tabs, server):
    one, _ = tabs
    api_user(server, "owner")
    one.page.fill("#add-user input[name=username]", "second_owner")
    one.page.fill("#add-user input[name=email]", "owner@example.com")
    one.page.click("#add-user button[type=submit]")
    error = one.page.locator('#add-user [data-error-for="email"]')
    expect(error).to_have_text("this email is already in use")
    expect(one.page.locator("#add-user input[name=username]")).to_have_value("second_owner")
    expect(one.page.locator("#add-user input[name=email]")).to_have_value("owner@example.com")


def test_edit_page_notices_remote_change_and_delete(browser, server):  # noqa: F811
    user = api_user(server, "watched")
    tab = Tab(browser, server)
    try:
        tab.page.goto(f"{server.url}/users/{user['id']}/edit")
        tab.page.wait_for_selector('body[data-socket="connected"]')
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
    tab = Tab(browser, server)
    try:
        tab.page.goto(f"{server.url}/users/{user['id']}/edit")
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
        expect(tab.page.locator("table#users th").nth(1)).to_have_text("用户名")
        expect(tab.page.locator("#connection")).to_have_text("已连接")
        expect(tab.page.locator('td[data-field="role"][data-value="admin"]').first).to_have_text("管理员")
        tab.page.click("nav.languages a[hreflang=en]")  # the switch on the page
        expect(tab.page.locator("table#users th").nth(1)).to_have_text(re.compile("username", re.I))
    finally:
        tab.close()


def test_connection_indicator_follows_the_server(browser, tmp_path):  # noqa: F811
    server = ServerProcess(tmp_path)
    seed_admin(server)
    server.start()
    tab = Tab(browser, server)
    try:
        expect(tab.page.locator("#connection")).to_have_text("connected")
        server.stop()
        expect(tab.page.locator("body")).to_have_attribute("data-socket", "reconnecting")
        expect(tab.page.locator("#connection")).to_have_text("reconnecting")
        server.start()
        expect(tab.page.locator("body")).to_have_attribute("data-socket", "connected", timeout=15000)
    finally:
        tab.close()
        server.stop()


def test_pages_send_a_csp_without_inline_script(server):
    import requests

    answer = requests.get(server.url + "/login")
    policy = answer.headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", policy).group(1)
    assert "'unsafe-inline'" not in script_src and "'self'" in script_src
    assert "<script>" not in answer.text  # scripts are modules loaded from files only


def table_rows(tab) -> dict[int, dict]:
    return {
        int(row["id"]): row
        for row in tab.page.locator("table#users tbody tr").evaluate_all(
            """rows => rows.map(r => ({
                id: r.dataset.userId, version: Number(r.dataset.version),
                username: r.querySelector('[data-field=username]').textContent,
                email: r.querySelector('[data-field=email]').textContent,
                role: r.querySelector('[data-field=role]').dataset.value,
                status: r.querySelector('[data-field=status]').dataset.value}))"""
        )
    }


def database_rows(server) -> dict[int, dict]:
    users = server.api().get(server.url + "/api/users").json()["users"]
    fields = ("username", "email", "role", "status", "version")
    return {u["id"]: {"id": str(u["id"]), **{k: u[k] for k in fields}} for u in users}


def test_a_cut_tab_catches_up_by_replay_without_reload(tabs, server):
    one, two = tabs
    victims = [api_user(server, f"cut{i}") for i in range(3)]
    expect(two.row(victims[-1]["id"])).to_have_count(1)
    snapshots = two.page.evaluate("window.userboard.stats.snapshots")
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
    assert table_rows(two) == database_rows(server)
    assert two.page.evaluate("window.userboard.stats.snapshots") == snapshots  # replayed
    assert two.was_not_reloaded()
