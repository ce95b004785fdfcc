"""Login, logout and page protection over plain HTTP."""

from __future__ import annotations

import re

import requests

from userboard.auth import LoginThrottle

from .helpers import ADMIN_PASSWORD, ServerProcess


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def post_login(http, server, username, password):
    csrf = csrf_of(http.get(server.url + "/login").text)
    return http.post(server.url + "/login",
                     data={"username": username, "password": password, "csrf_token": csrf})


def test_dashboard_requires_login(server):
    answer = requests.get(server.url + "/", allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/login")


def test_wrong_password_and_unknown_user_get_the_same_message(server):
    wrong = post_login(requests.Session(), server, "root", "not-the-password")
    unknown = post_login(requests.Session(), server, "nobody_here", "whatever-1")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text


def test_only_active_admins_with_a_password_log_in(server):
    api = server.api()
    cases = (("plainuser", {"role": "user"}), ("offadmin", {"role": "admin", "status": "disabled"}))
    for name, extra in cases:
        assert api.post(server.url + "/api/users", json={
            "username": name, "email": f"{name}@example.com", "password": "pass-word-1", **extra,
        }).status_code == 201
        assert post_login(requests.Session(), server, name, "pass-word-1").status_code == 401


def test_login_form_without_csrf_is_refused(server):
    answer = requests.post(server.url + "/login", data={"username": "root", "password": ADMIN_PASSWORD})
    assert answer.status_code == 200 and 'id="users"' not in answer.text


def test_logout_ends_the_session(server):
    http = server.login()
    assert http.get(server.url + "/", allow_redirects=False).status_code == 200
    http.post(server.url + "/logout", data={"csrf_token": http.csrf_token})
    assert http.get(server.url + "/", allow_redirects=False).status_code == 302
    assert http.get(server.url + "/api/users").status_code == 401


def test_repeated_failures_from_one_address_are_slowed_down(tmp_path):
    server = ServerProcess(tmp_path)
    server.setup_admin()
    server.start()
    try:
        http = requests.Session()
        for _ in range(5):
            assert post_login(http, server, "root", "wrong-password").status_code == 401
        # Now even the right password has to wait.
        blocked = post_login(http, server, "root", ADMIN_PASSWORD)
        assert blocked.status_code == 429 and "Too many failed attempts" in blocked.text
    finally:
        server.stop()


def test_throttle_waits_grow_and_expire():
    now = [1000.0]
    throttle = LoginThrottle(free=2, window=60, max_wait=8, clock=lambda: now[0])
    for _ in range(2):
        assert throttle.wait_seconds("a") == 0
        throttle.failed("a")
    assert throttle.wait_seconds("a") == 1  # 2**0 after the free attempts
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 4
    assert throttle.wait_seconds("b") == 0  # other keys are not affected
    for _ in range(10):
        throttle.failed("a")
    assert throttle.wait_seconds("a") == 8  # capped
    now[0] += 61
    assert throttle.wait_seconds("a") == 0  # the window passed
    throttle.failed("b")
    throttle.succeeded("b")
    assert throttle.wait_seconds("b") == 0
