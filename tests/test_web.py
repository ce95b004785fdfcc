"""Login, logout and page protection, in process through Flask's test client."""

from __future__ import annotations

from userboard.throttle import LoginThrottle

from .inprocess import PASSWORD, csrf_of


def post_login(client, username, password):
    csrf = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf})


def test_dashboard_requires_login(client):
    answer = client.get("/")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/login")


def test_wrong_password_and_unknown_user_get_the_same_message(site):
    wrong = post_login(site.new_client(), "root", "not-the-password")
    unknown = post_login(site.new_client(), "nobody_here", "whatever-1")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text


def test_only_active_admins_with_a_password_log_in(site):
    cases = (("plainuser", {"role": "user"}), ("offadmin", {"role": "admin", "status": "disabled"}))
    for name, extra in cases:
        assert site.client.post("/api/users", headers=site.headers, json={
            "username": name, "email": f"{name}@example.com", "password": "pass-word-1", **extra,
        }).status_code == 201
        assert post_login(site.new_client(), name, "pass-word-1").status_code == 401


def test_login_form_without_csrf_is_refused(client):
    answer = client.post("/login", data={"username": "root", "password": PASSWORD})
    assert answer.status_code == 200 and 'id="users"' not in answer.text
    assert client.get("/").status_code == 302


def test_logout_ends_the_session(client, auth):
    auth.login()
    assert client.get("/").status_code == 200
    assert auth.logout().status_code == 302
    assert client.get("/").status_code == 302
    assert client.get("/api/users").status_code == 401


def test_repeated_failures_from_one_address_are_slowed_down(fresh_site):
    client = fresh_site.new_client()
    for _ in range(5):
        assert post_login(client, "root", "wrong-password").status_code == 401
    # Now even the right password has to wait, and the answer says how long.
    blocked = post_login(client, "root", PASSWORD)
    assert blocked.status_code == 429
    wait = int(blocked.headers["Retry-After"])
    assert wait >= 1 and f"Too many failed attempts. Try again in {wait} seconds." in blocked.text


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
