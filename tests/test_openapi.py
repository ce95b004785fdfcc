"""The OpenAPI description is served, matches the routes, and the API behaves as described
(Schemathesis calls every operation with generated data)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from userboard import users
from userboard.fields import FIELDS

from .inprocess import InProcess

# Schemathesis parametrizes at import time, so this module's app is built then.
_TMP = tempfile.TemporaryDirectory(prefix="userboard-openapi-")
SITE = InProcess(Path(_TMP.name))


@pytest.fixture(scope="module", autouse=True)
def _site():
    yield
    SITE.close()
    _TMP.cleanup()


def test_spec_is_served_without_credentials():
    answer = SITE.app.test_client().get("/api/openapi.json")
    assert answer.status_code == 200 and answer.get_json()["openapi"].startswith("3.1")


def test_every_api_route_is_described_and_nothing_else():
    spec = SITE.client.get("/api/openapi.json").get_json()
    described = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete", "put")
    }
    routed = set()
    for rule in SITE.app.url_map.iter_rules():
        if rule.rule.startswith("/api"):
            path = rule.rule.replace("<int:user_id>", "{user_id}")
            routed |= {(path, m) for m in rule.methods if m not in ("HEAD", "OPTIONS")}
    assert routed == described


def accepted(field: str, value: str) -> bool:
    try:
        users.clean({field: value}, partial=True)
    except users.Invalid:
        return False
    return True


def longest_email(length: int) -> str:
    """A syntactically valid address of exactly `length` characters (labels of at most 63)."""
    local, domain = "a" * 64, []
    rest = length - len(local) - 1
    while rest > 63:
        domain.append("b" * 62)
        rest -= 63
    return local + "@" + ".".join([*domain, "c" * rest])


def test_spec_limits_are_the_ones_users_py_enforces():
    schemas = SITE.client.get("/api/openapi.json").get_json()["components"]["schemas"]
    for name in ("NewUser", "UserChanges"):
        described = schemas[name]["properties"]
        assert set(described) - {"version"} == set(users.WRITABLE_FIELDS)
        for field in ("role", "status"):
            assert described[field]["enum"] == list(FIELDS[field].choices)
            assert all(accepted(field, choice) for choice in FIELDS[field].choices)
            assert not accepted(field, "none-of-them")
        username = described["username"]
        assert re.fullmatch(username["pattern"].strip("^$"), "a" * username["maxLength"])
        assert username["pattern"] == f"^{users.USERNAME_RE.pattern}$"
        for field, make in (("username", lambda n: "u" * n), ("password", lambda n: "p" * n),
                            ("email", longest_email)):
            low, high = described[field].get("minLength", 0), described[field]["maxLength"]
            assert (low, high) == (FIELDS[field].min_length, FIELDS[field].max_length)
            assert accepted(field, make(high)) and not accepted(field, make(high + 1)), field
            if low:
                assert accepted(field, make(low)) and not accepted(field, make(low - 1)), field
    for field in ("role", "status"):
        assert schemas["User"]["properties"][field]["enum"] == list(FIELDS[field].choices)


schema = schemathesis.openapi.from_wsgi("/api/openapi.json", SITE.app)


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("USERBOARD_SCHEMATHESIS_EXAMPLES", "60")),
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_as_described(case):
    before = SITE.state()
    response = case.call(headers=SITE.headers)
    # We always send a valid token, so "accepts invalid authentication" cannot apply here;
    # refusals of bad credentials are tested in test_api.py.
    excluded = [ignored_auth]
    if "after" in (case.query or {}):
        # A cursor is a signed token from an earlier answer: generated ones are rightly refused.
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)
    if response.status_code >= 400:
        assert SITE.state() == before
