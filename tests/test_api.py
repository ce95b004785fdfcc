"""The JSON API against a real `userboard serve` process."""

from __future__ import annotations

import pytest
import requests


@pytest.fixture
def api(server):
    return server.api()


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["message"]
    return body["error"]


def test_create_get_update_delete_round_trip(server, api):
    created = api.post(server.url + "/api/users", json={"username": "round", "email": "r@example.com"})
    assert created.status_code == 201
    user = created.json()["user"]
    assert set(user) == {"id", "username", "email", "role", "status", "version", "created_at",
                         "updated_at"}
    assert (user["role"], user["status"], user["version"]) == ("user", "active", 1)
    seq = created.json()["seq"]

    got = api.get(f"{server.url}/api/users/{user['id']}")
    assert got.status_code == 200 and got.json() == {"user": user}

    patched = api.patch(f"{server.url}/api/users/{user['id']}", json={"role": "admin"})
    assert patched.status_code == 200
    assert patched.json()["seq"] == seq + 1
    assert patched.json()["user"]["role"] == "admin" and patched.json()["user"]["version"] == 2

    deleted = api.delete(f"{server.url}/api/users/{user['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"seq": seq + 2}
    assert api.get(f"{server.url}/api/users/{user['id']}").status_code == 404


def test_list_is_ordered_by_id_and_carries_seq(server, api):
    for name in ("list_b", "list_a"):
        assert api.post(server.url + "/api/users",
                        json={"username": name, "email": f"{name}@example.com"}).status_code == 201
    body = api.get(server.url + "/api/users").json()
    ids = [u["id"] for u in body["users"]]
    assert ids == sorted(ids)
    assert body["seq"] >= 2
    assert all("password_hash" not in u and "password" not in u for u in body["users"])


def test_write_that_changes_nothing_answers_current_seq(server, api):
    user = api.post(server.url + "/api/users",
                    json={"username": "same", "email": "same@example.com"}).json()["user"]
    current = api.get(server.url + "/api/users").json()["seq"]
    answer = api.patch(f"{server.url}/api/users/{user['id']}", json={"role": "user"})
    assert answer.status_code == 200 and answer.json()["seq"] == current
    assert answer.json()["user"]["version"] == 1


def test_password_is_accepted_and_never_returned(server, api):
    answer = api.post(server.url + "/api/users", json={
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
def test_invalid_values_get_422_with_field_messages(server, api, body, field):
    before = api.get(server.url + "/api/users").json()
    answer = api.post(server.url + "/api/users", json=body)
    assert answer.status_code == 422
    error = error_of(answer)
    assert error["code"] == "invalid" and field in error["fields"]
    assert api.get(server.url + "/api/users").json() == before


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (b'{"username": 5, "email": "a@example.com"}', {"Content-Type": "application/json"}),
        (b'{"username": "okname", "email": "a@example.com", "admin": true}',
         {"Content-Type": "application/json"}),
        (b'{"username": "\xff\xfe", "email": "a@example.com"}', {"Content-Type": "application/json"}),
        (b"username=x", {"Content-Type": "application/x-www-form-urlencoded"}),
    ],
)
def test_malformed_requests_get_400(server, api, data, headers):
    answer = api.post(server.url + "/api/users", data=data, headers=headers)
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "bad_request"


def test_unknown_field_on_patch_gets_400_and_changes_nothing(server, api):
    user = api.post(server.url + "/api/users",
                    json={"username": "patchme", "email": "pm@example.com"}).json()["user"]
    answer = api.patch(f"{server.url}/api/users/{user['id']}", json={"role": "admin", "id": 9})
    assert answer.status_code == 400 and error_of(answer)["fields"] == {"id": "unknown field"}
    assert api.get(f"{server.url}/api/users/{user['id']}").json()["user"] == user


def test_missing_or_bad_token_gets_401(server):
    assert error_of(requests.get(server.url + "/api/users"))["code"] == "unauthorized"
    bad = requests.get(server.url + "/api/users", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and error_of(bad)["code"] == "unauthorized"
    basic = requests.get(server.url + "/api/users", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


def test_session_write_without_csrf_header_gets_403(server):
    http = server.login()
    assert http.get(server.url + "/api/users").status_code == 200
    answer = http.post(server.url + "/api/users", json={"username": "nocsrf", "email": "n@example.com"})
    assert answer.status_code == 403 and error_of(answer)["code"] == "forbidden"
    answer = http.post(server.url + "/api/users", json={"username": "withcsrf", "email": "w@example.com"},
                       headers={"X-CSRFToken": http.csrf_token})
    assert answer.status_code == 201


@pytest.mark.parametrize("path", ["/api/users/999999", "/api/users/99999999999999999999999",
                                  "/api/users/-1", "/api/users/abc", "/api/nothing"])
def test_unknown_resources_get_404(server, api, path):
    answer = api.get(server.url + path)
    assert answer.status_code == 404 and error_of(answer)["code"] == "not_found"
    assert api.patch(server.url + path, json={"role": "admin"}).status_code in (404, 405)
    assert api.delete(server.url + path).status_code in (404, 405)


def test_taken_username_or_email_gets_409(server, api):
    assert api.post(server.url + "/api/users",
                    json={"username": "taken", "email": "taken@example.com"}).status_code == 201
    answer = api.post(server.url + "/api/users",
                      json={"username": "TAKEN", "email": "other@example.com"})
    assert answer.status_code == 409
    assert error_of(answer)["fields"] == {"username": "this username is already taken"}
    answer = api.post(server.url + "/api/users",
                      json={"username": "other", "email": "Taken@Example.com"})
    assert answer.status_code == 409
    assert error_of(answer)["fields"] == {"email": "this email is already in use"}


def test_body_over_64_kb_gets_413(server, api):
    answer = api.post(server.url + "/api/users", data=b"{" + b" " * 70_000 + b"}",
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and error_of(answer)["code"] == "too_large"


def test_wrong_method_gets_405_json(server, api):
    answer = api.put(server.url + "/api/users")
    assert answer.status_code == 405 and error_of(answer)["code"] == "method_not_allowed"


@pytest.mark.parametrize("change", [{"status": "disabled"}, {"role": "user"}, None])
def test_token_stops_working_when_its_admin_is_disabled_demoted_or_deleted(server, api, change):
    name = f"tok_{'deleted' if change is None else next(iter(change))}"
    created = api.post(server.url + "/api/users", json={
        "username": name, "email": f"{name}@example.com", "role": "admin", "password": "pass-word-1"})
    assert created.status_code == 201
    user_id = created.json()["user"]["id"]
    done = server.cli("token", "create", name)
    assert done.returncode == 0, done.stderr
    theirs = server.api(done.stdout.strip())
    assert theirs.get(server.url + "/api/users").status_code == 200
    if change is None:
        assert api.delete(f"{server.url}/api/users/{user_id}").status_code == 200
    else:
        assert api.patch(f"{server.url}/api/users/{user_id}", json=change).status_code == 200
    answer = theirs.get(server.url + "/api/users")
    assert answer.status_code == 401 and error_of(answer)["code"] == "unauthorized"
