"""Property tests: whatever a client sends, the API and the forms answer with a 4xx in the
documented shape (or succeed), never a 5xx, and a rejected request changes nothing."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .inprocess import InProcess

FUZZ = settings(
    max_examples=int(os.environ.get("USERBOARD_FUZZ_EXAMPLES", "200")),
    derandomize=True,  # a fixed seed: CI runs the same examples every time
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FIELDS = ["username", "email", "role", "status", "password", "version", "id", "admin"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
field_names = st.sampled_from(FIELDS) | st.text(max_size=10)
bodies = st.dictionaries(field_names, json_values, max_size=6) | json_values
raw_bodies = st.binary(max_size=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    app = InProcess(tmp_path_factory.mktemp("fuzz"))
    yield app
    app.close()


def check_answer(site, answer, before):
    assert answer.status_code < 500, answer.text[:300]
    if answer.status_code >= 400:
        body = answer.get_json()
        assert set(body) <= {"error", "user"} and "error" in body
        assert set(body["error"]) == {"code", "message", "fields"}
        assert site.state() == before


@FUZZ
@given(body=bodies)
def test_create_with_any_json(site, body):
    before = site.state()
    answer = site.client.post("/api/users", json=body, headers=site.headers)
    check_answer(site, answer, before)
    if answer.status_code == 201:
        site.client.delete(f"/api/users/{answer.get_json()['user']['id']}", headers=site.headers)


@FUZZ
@given(body=bodies, user_id=st.integers(min_value=-(2**70), max_value=2**70) | st.just(2))
def test_update_with_any_json_and_any_id(site, body, user_id):
    before = site.state()
    answer = site.client.patch(f"/api/users/{user_id}", json=body, headers=site.headers)
    check_answer(site, answer, before)


@FUZZ
@given(raw=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain",
                                                      "application/json; charset=latin-1"]))
def test_create_with_any_bytes(site, raw, content_type):
    before = site.state()
    answer = site.client.post("/api/users", data=raw, headers={**site.headers,
                                                               "Content-Type": content_type})
    check_answer(site, answer, before)
    if answer.status_code == 201:
        site.client.delete(f"/api/users/{answer.get_json()['user']['id']}", headers=site.headers)


@pytest.fixture(scope="module")
def logged_in(site):
    """One logged-in browser for every example: logging in is not what is fuzzed here."""
    return site.login()


form_values = st.text(max_size=300) | st.sampled_from(["admin", "user", "active", "disabled", ""])


@FUZZ
@given(data=st.fixed_dictionaries({}, optional={k: form_values for k in
                                                ("username", "email", "role", "status",
                                                 "password")}))
def test_add_form_with_any_fields(site, logged_in, data):
    client, csrf = logged_in
    before = site.state()
    answer = client.post("/users", data={**data, "csrf_token": csrf})
    assert answer.status_code == 302  # refused or not: POST/redirect/GET
    page = client.get(answer.headers["Location"])  # as a browser would (it shows the flash)
    assert page.status_code == 200 and 'id="add-user"' in page.text
    after = site.state()
    if after != before:  # added
        added = after[0][-1]
        assert site.client.delete(f"/api/users/{added['id']}", headers=site.headers).status_code == 200
