"""The JSON API, in process through Flask's test client."""

from __future__ import annotations

import pytest
from flask import request
from werkzeug.exceptions import BadRequest


@pytest.fixture
def api(site):
    """Calls with the admin's bearer token: api("post", "/api/users", json=...)."""

    def call(method: str, path: str, **kwargs):
        return site.client.open(path, method=method.upper(), headers=site.headers, **kwargs)

    return call


def error_of(response):
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["message"]
    return body["error"]


def test_create_get_update_delete_round_trip(api):
    created = api("post", "/api/users", json={"username": "round", "email": "r@example.com"})
    assert created.status_code == 201
    user = created.get_json()["user"]
    assert set(user) == {"id", "username", "email", "role", "status", "version", "created_at",
                         "updated_at"}
    assert (user["role"], user["status"], user["version"]) == ("user", "active", 1)
    seq = created.get_json()["seq"]

    got = api("get", f"/api/users/{user['id']}")
    assert got.status_code == 200 and got.get_json() == {"user": user}

    patched = api("patch", f"/api/users/{user['id']}", json={"role": "admin"})
    assert patched.status_code == 200
    assert patched.get_json()["seq"] == seq + 1
    assert patched.get_json()["user"]["role"] == "admin" and patched.get_json()["user"]["version"] == 2

    deleted = api("delete", f"/api/users/{user['id']}")
    assert deleted.status_code == 200 and deleted.get_json() == {"seq": seq + 2}
    assert api("get", f"/api/users/{user['id']}").status_code == 404


def test_list_is_ordered_by_id_and_carries_seq(api):
    for name in ("list_b", "list_a"):
        assert api("post", "/api/users",
                   json={"username": name, "email": f"{name}@example.com"}).status_code == 201
    body = api("get", "/api/users").get_json()
    ids = [u["id"] for u in body["users"]]
    assert ids == sorted(ids)
    assert body["seq"] >= 2
    assert all("password_hash" not in u and "password" not in u for u in body["users"])


def test_write_that_changes_nothing_answers_current_seq(api):
    user = api("post", "/api/users",
               json={"username": "same", "email": "same@example.com"}).get_json()["user"]
    current = api("get", "/api/users").get_json()["seq"]
    answer = api("patch", f"/api/users/{user['id']}", json={"role": "user"})
    assert answer.status_code == 200 and answer.get_json()["seq"] == current
    assert answer.get_json()["user"]["version"] == 1


def test_password_is_accepted_and_never_returned(api):
    answer = api("post", "/api/users", json={
        "username": "pw_user", "email": "pw@example.com", "password": "long-enough-1"})
    assert answer.status_code == 201
    assert "password" not in answer.text and "scrypt" not in answer.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "x", "email": "ok@example.com"}, "username"),
        ({"username": "has space", "email": "ok@example.com"}, "username"),
        ({"username": "a" * 33, "email": "ok@example.com"}, "username"),
        ({"username": "fine_name", "email": "not-an-email"}, "email"),
        ({"username": "fine_name", "email": "ok@example.com", "role": "root"}, "role"),
        ({"username": "fine_name", "email": "ok@example.com", "status": "gone"}, "status"),
        ({"username": "fine_name", "email": "ok@example.com", "password": "short"}, "password"),
        ({"username": "fine\u0000name", "email": "ok@example.com"}, "username"),
        ({"email": "ok@example.com"}, "username"),
    ],
)
def test_invalid_values_get_422_with_field_messages(site, api, body, field):
    before = site.state()
    answer = api("post", "/api/users", json=body)
    assert answer.status_code == 422
    error = error_of(answer)
    assert error["code"] == "invalid" and field in error["fields"]
    assert site.state() == before


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"username": 5, "email": "a@example.com"}', "application/json"),
        (b'{"username": "okname", "email": "a@example.com", "admin": true}', "application/json"),
        (b'{"username": "\xff\xfe", "email": "a@example.com"}', "application/json"),
        (b"username=x", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_requests_get_400(api, data, content_type):
    answer = api("post", "/api/users", data=data, content_type=content_type)
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "bad_request"


BODY_ROUTES = [("post", "/api/users"), ("patch", "/api/users/2"), ("post", "/api/users/bulk"),
               ("delete", "/api/users/2")]  # user 2 is `other`: a DELETE that went through shows


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(("data", "message"), [
    (b"[" * 1_000 + b"]" * 1_000, "nested more than 32 levels deep"),  # 2 KB: was a 500
    (b'{"ids": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested more than 32 levels deep"),
    (b'{"version": ' + b"9" * 5_000 + b"}", "a number longer than 100 characters"),
    (b'{"version": 1e400}', "a number too large for a float"),
    (b'{"version": NaN}', "NaN is not JSON"),
    (b'{"role": "user", "role": "admin"}', "duplicate key 'role'"),
    (b'{"username": "sur", "email": "s@example.com", "password": "12345678\\ud800"}',
     "lone surrogate"),  # was a 500: the password could not be hashed
])
def test_malformed_json_gets_400_on_every_route_with_a_body(site, api, method, path, data, message):
    before = site.state()
    answer = api(method, path, data=data, content_type="application/json")
    assert answer.status_code == 400 and error_of(answer)["code"] == "bad_request"
    assert message in error_of(answer)["message"]
    assert site.state() == before


def test_json_nested_100000_levels_is_refused_for_its_size(site, api):
    """Such a body is over 64 KB (100,000 brackets at least): refused before it is parsed."""
    before = site.state()
    for method, path in BODY_ROUTES:
        answer = api(method, path, data=b"[" * 100_000 + b"]" * 100_000,
                     content_type="application/json")
        assert answer.status_code == 413 and error_of(answer)["code"] == "too_large"
    assert site.state() == before


def test_request_get_json_is_depth_limited_too(app):
    with app.test_request_context(method="POST", data=b"[" * 1_000 + b"]" * 1_000,
                                  content_type="application/json"):
        with pytest.raises(BadRequest):
            request.get_json()


def test_unknown_field_on_patch_gets_400_and_changes_nothing(api):
    user = api("post", "/api/users",
               json={"username": "patchme", "email": "pm@example.com"}).get_json()["user"]
    answer = api("patch", f"/api/users/{user['id']}", json={"role": "admin", "id": 9})
    assert answer.status_code == 400 and error_of(answer)["fields"] == {"id": "unknown field"}
    assert api("get", f"/api/users/{user['id']}").get_json()["user"] == user


def test_missing_or_bad_token_gets_401(client):
    assert error_of(client.get("/api/users"))["code"] == "unauthorized"
    bad = client.get("/api/users", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and error_of(bad)["code"] == "unauthorized"
    basic = client.get("/api/users", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


def test_session_write_without_csrf_header_gets_403(client, auth):
    csrf = auth.login()
    assert client.get("/api/users").status_code == 200
    answer = client.post("/api/users", json={"username": "nocsrf", "email": "n@example.com"})
    assert answer.status_code == 403 and error_of(answer)["code"] == "forbidden"
    answer = client.post("/api/users", json={"username": "withcsrf", "email": "w@example.com"},
                         headers={"X-CSRFToken": csrf})
    assert answer.status_code == 201


@pytest.mark.parametrize("path", ["/api/users/999999", "/api/users/99999999999999999999999",
                                  "/api/users/-1", "/api/users/abc", "/api/nothing"])
def test_unknown_resources_get_404(api, path):
    answer = api("get", path)
    assert answer.status_code == 404 and error_of(answer)["code"] == "not_found"
    assert api("patch", path, json={"role": "admin"}).status_code in (404, 405)
    assert api("delete", path).status_code in (404, 405)


def test_taken_username_or_email_gets_409(api):
    assert api("post", "/api/users",
               json={"username": "taken", "email": "taken@example.com"}).status_code == 201
    answer = api("post", "/api/users", json={"username": "TAKEN", "email": "other2@example.com"})
    assert answer.status_code == 409
    assert error_of(answer)["fields"] == {"username": "this username is already taken"}
    answer = api("post", "/api/users", json={"username": "other2", "email": "Taken@Example.com"})
    assert answer.status_code == 409
    assert error_of(answer)["fields"] == {"email": "this email is already in use"}


def test_body_over_64_kb_gets_413(api):
    answer = api("post", "/api/users", data=b"{" + b" " * 70_000 + b"}",
                 content_type="application/json")
    assert answer.status_code == 413 and error_of(answer)["code"] == "too_large"


def test_wrong_method_gets_405_json(api):
    answer = api("put", "/api/users")
    assert answer.status_code == 405 and error_of(answer)["code"] == "method_not_allowed"


@pytest.mark.parametrize("change", [{"status": "disabled"}, {"role": "user"}, None])
def test_token_stops_working_when_its_admin_is_disabled_demoted_or_deleted(site, api, client,
                                                                            change):
    name = f"tok_{'deleted' if change is None else next(iter(change))}"
    created = api("post", "/api/users", json={
        "username": name, "email": f"{name}@example.com", "role": "admin", "password": "pass-word-1"})
    assert created.status_code == 201
    user_id = created.get_json()["user"]["id"]
    theirs = {"Authorization": f"Bearer {site.token_for(name)}"}
    assert client.get("/api/users", headers=theirs).status_code == 200
    if change is None:
        assert api("delete", f"/api/users/{user_id}").status_code == 200
    else:
        assert api("patch", f"/api/users/{user_id}", json=change).status_code == 200
    answer = client.get("/api/users", headers=theirs)
    assert answer.status_code == 401 and error_of(answer)["code"] == "unauthorized"
