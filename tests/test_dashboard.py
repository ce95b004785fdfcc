"""The dashboard's view, bulk and add routes, in process through Flask's test client.

The browser tests (test_browser.py) cover what the page does live; these check what the server
renders and where each form sends the browser afterwards.
"""

from __future__ import annotations

import html
import random
import re
import string
from urllib.parse import parse_qs, urlsplit

import pytest

from .inprocess import csrf_of


@pytest.fixture(scope="module")
def people(site):
    """60 users named pupil00..59 (emails in another order), every third one disabled."""
    made = []
    for i in range(60):
        answer = site.client.post("/api/users", headers=site.headers, json={
            "username": f"pupil{i:02}", "email": f"{(i * 7) % 60:02}.pupil@example.com",
            "status": "disabled" if i % 3 == 0 else "active"})
        assert answer.status_code == 201
        made.append(answer.get_json()["user"])
    return made


@pytest.fixture
def browser(site):
    """A logged-in client and its CSRF token."""
    return site.login()


def api_view(site, **params) -> dict:
    answer = site.client.get("/api/users", headers=site.headers, query_string=params)
    assert answer.status_code == 200, answer.text
    return answer.get_json()


def shown_ids(page: str) -> list[int]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [int(i) for i in re.findall(r'<tr data-user-id="(\d+)"', body)]


def link(page: str, pattern: str) -> str | None:
    found = re.search(pattern, page)
    return html.unescape(found.group(1)) if found else None


def flashes(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<p class="flash flash-\w+"[^>]*>([^<]*)</p>', page)]


def test_the_page_is_the_views_first_window_at_its_seq(site, people, browser):
    client, _ = browser
    page = client.get("/?q=pupil&status=active&sort=email&order=desc").text
    answer = api_view(site, q="pupil", status="active", sort="email", order="desc", limit=50)
    assert shown_ids(page) == [user["id"] for user in answer["users"]]
    assert f'data-seq="{answer["seq"]}"' in page
    assert f'<span id="count-total">{answer["total"]}</span>' in page and answer["total"] == 40
    assert '<a rel="prev" aria-disabled="true">' in page
    assert link(page, r'id="export-csv" href="([^"]+)"') == (
        "/api/users.csv?q=pupil&status=active&sort=email&order=desc")
    # The current sort's header says so and turns the order round; another starts ascending.
    assert link(page, r'<th data-sort="email" aria-sort="descending"><a href="([^"]+)"') == (
        "/?q=pupil&status=active&sort=email&order=asc")
    assert link(page, r'<th data-sort="username"><a href="([^"]+)"') == (
        "/?q=pupil&status=active&sort=username&order=asc")


def test_next_and_prev_links_are_the_apis_keyset_pages(site, people, browser):
    client, _ = browser
    view = {"q": "pupil", "sort": "email"}
    first = client.get("/?q=pupil&sort=email").text
    following = link(first, r'<a rel="next" href="([^"]+)"')
    second = client.get(following).text
    cursor = parse_qs(urlsplit(following).query)["after"][0]
    assert shown_ids(second) == [u["id"] for u in api_view(site, **view, limit=50, after=cursor)["users"]]
    assert len(shown_ids(second)) == 10 and '<a rel="next" aria-disabled="true">' in second
    back = client.get(link(second, r'<a rel="prev" href="([^"]+)"')).text
    assert shown_ids(back) == shown_ids(first)


@pytest.mark.parametrize("query", [
    "sort=password", "order=up", "role=root", "status=gone", "after=forged-cursor",
    "q=" + "x" * 10_000, "colour=blue",
])
def test_a_view_that_cannot_be_shown_sends_to_all_users_with_a_message(site, browser, query):
    client, _ = browser
    answer = client.get("/?" + query)
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    page = client.get("/").text
    assert any("cannot be shown" in message for message in flashes(page))


def test_a_cursor_of_another_sort_is_refused_too(site, people, browser):
    client, _ = browser
    cursor = api_view(site, sort="email", limit=5)["next"]
    assert client.get(f"/?sort=username&after={cursor}").status_code == 302


def test_bulk_action_changes_the_selected_rows_and_returns_to_the_view(site, people, browser):
    client, csrf = browser
    ids = [people[1]["id"], people[2]["id"]]
    answer = client.post("/users/bulk?q=pupil&status=active&sort=email",
                         data={"csrf_token": csrf, "action": "disable", "select": ids})
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/?q=pupil&status=active&sort=email"
    assert flashes(client.get(answer.headers["Location"]).text) == [
        "Done: 2 of 2 selected users changed."]
    statuses = {u["id"]: u["status"] for u in api_view(site, q="pupil")["users"]}
    assert [statuses[i] for i in ids] == ["disabled", "disabled"]
    client.post("/users/bulk", data={"csrf_token": csrf, "action": "enable", "select": ids})


@pytest.mark.parametrize("form, message", [
    ({"action": "disable"}, "Select at least one user first."),
    ({"action": "", "select": ["2"]}, "Choose an action first."),
    ({"action": "explode", "select": ["2"]}, "Choose an action first."),
    ({"action": "disable", "select": ["2", "two"]}, "That selection cannot be used."),
    ({"action": "disable", "select": ["999999"]}, "no user with id(s) 999999"),
])
def test_a_bulk_action_that_cannot_run_changes_nothing_and_says_why(site, browser, form, message):
    client, csrf = browser
    before = site.state()
    answer = client.post("/users/bulk?role=user", data={"csrf_token": csrf, **form})
    assert answer.status_code == 302 and answer.headers["Location"] == "/?role=user"
    assert any(message in m for m in flashes(client.get("/?role=user").text))
    assert site.state() == before


def test_a_bulk_batch_of_every_active_admin_is_refused(site, browser):
    client, csrf = browser
    before = site.state()
    admins = [u["id"] for u in api_view(site, role="admin", status="active")["users"]]
    answer = client.post("/users/bulk", data={"csrf_token": csrf, "action": "make-user",
                                              "select": admins})
    assert "last active admin" in " ".join(flashes(client.get(answer.headers["Location"]).text))
    assert site.state() == before


def test_a_bulk_post_without_the_csrf_token_changes_nothing(site, people, browser):
    client, _ = browser
    before = site.state()
    answer = client.post("/users/bulk", data={"action": "delete", "select": [people[5]["id"]]})
    assert answer.status_code == 302 and site.state() == before


def test_a_refused_add_redirects_and_shows_the_values_and_errors_once(site, browser):
    client, csrf = browser
    answer = client.post("/users?status=disabled", data={
        "csrf_token": csrf, "username": "no", "email": "not-an-address", "role": "user",
        "status": "active", "password": "secret-password"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/?status=disabled"
    page = client.get(answer.headers["Location"]).text
    assert 'data-error-for="username"' in page and 'data-error-for="email"' in page
    assert 'name="username" type="text" value="no"' in page
    assert 'value="not-an-address"' in page and "secret-password" not in page
    again = client.get("/?status=disabled").text  # reload: the kept form was shown once
    assert "data-error-for" not in again and 'value="not-an-address"' not in again


def test_a_refused_add_with_huge_values_still_fits_the_session_cookie(site, browser):
    client, csrf = browser
    noise = "".join(random.Random(1).choices(string.ascii_letters, k=20_000))  # hardly compresses
    answer = client.post("/users", data={"csrf_token": csrf, "username": noise[:10_000],
                                         "email": noise[10_000:], "role": "user", "status": "active"})
    assert answer.status_code == 302
    cookie = client.get_cookie("session")
    assert cookie is not None and len(cookie.value) < 4000
    assert 'data-error-for="username"' in client.get("/").text


def test_edit_and_delete_come_back_to_the_view_they_were_started_from(site, people, browser):
    client, csrf = browser
    target = people[10]
    page = client.get(f"/users/{target['id']}/edit?q=pupil&sort=email").text
    assert f'action="/users/{target["id"]}/edit?q=pupil&amp;sort=email"' in page
    saved = client.post(f"/users/{target['id']}/edit?q=pupil&sort=email", data={
        "csrf_token": csrf_of(page), "username": target["username"], "email": "moved@example.com",
        "role": "user", "status": target["status"], "version": str(target["version"])})
    assert saved.status_code == 302 and saved.headers["Location"] == "/?q=pupil&sort=email"
    deleted = client.post(f"/users/{target['id']}/delete?q=pupil&sort=email",
                          data={"csrf_token": csrf})
    assert deleted.status_code == 302 and deleted.headers["Location"] == "/?q=pupil&sort=email"
    assert flashes(client.get("/?q=pupil&sort=email").text) == [
        f"User {target['username']} saved.", "User deleted."]


def edit_form(user: dict, csrf: str, **changes) -> dict:
    return {"csrf_token": csrf, "username": user["username"], "email": user["email"],
            "role": user["role"], "status": user["status"], "version": str(user["version"]),
            **changes}


def test_a_refused_edit_redirects_to_its_page_with_the_values_and_errors_once(site, people, browser):
    client, csrf = browser
    target = people[20]
    page_url = f"/users/{target['id']}/edit?sort=email"
    answer = client.post(page_url, data=edit_form(target, csrf, email="nope"))
    assert answer.status_code == 302 and answer.headers["Location"] == page_url
    page = client.get(page_url).text
    assert 'data-error-for="email"' in page and 'value="nope"' in page
    again = client.get(page_url).text
    assert "data-error-for" not in again and f'value="{target["email"]}"' in again


def test_a_stale_edit_shows_the_row_as_it_is_now_and_saving_again_overwrites(site, people, browser):
    client, csrf = browser
    target = people[21]
    page_url = f"/users/{target['id']}/edit"
    site.client.patch(f"/api/users/{target['id']}", headers=site.headers,
                      json={"email": "theirs21@example.com"})
    answer = client.post(page_url, data=edit_form(target, csrf, email="mine21@example.com"))
    assert answer.status_code == 302 and answer.headers["Location"] == page_url
    page = client.get(page_url).text
    now = site.client.get(f"/api/users/{target['id']}", headers=site.headers).get_json()["user"]
    assert any("changed by someone else" in message for message in flashes(page))
    assert '<span data-current="email">theirs21@example.com</span>' in page
    assert 'value="mine21@example.com"' in page and f'data-version="{now["version"]}"' in page
    saved = client.post(page_url, data=edit_form(now, csrf, email="mine21@example.com"))
    assert saved.status_code == 302 and saved.headers["Location"] == "/"
    assert site.client.get(f"/api/users/{target['id']}",
                           headers=site.headers).get_json()["user"]["email"] == "mine21@example.com"
