"""The OpenAPI description is served, matches the routes, and the API behaves as described
(Schemathesis calls every operation with generated data)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth

from .inprocess import InProcess

# Schemathesis parametrizes at import time, so this module's app is built then.
_TMP = tempfile.TemporaryDirectory(prefix="userboard-openapi-")
SITE = InProcess(Path(_TMP.name))


@pytest.fixture(scope="module", autouse=True)
def _site():
    yield
    SITE.close()
    _TMP.cleanup()


def test_spec_is_served_without_credentials(tmp_path):
    site = InProcess(tmp_path)
    answer = site.client.get("/api/openapi.json")
    assert answer.status_code == 200 and answer.get_json()["openapi"].startswith("3.1")
    site.close()


def test_every_api_route_is_described_and_nothing_else(tmp_path):
    site = InProcess(tmp_path)
    spec = site.client.get("/api/openapi.json").get_json()
    described = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete", "put")
    }
    routed = set()
    for rule in site.app.url_map.iter_rules():
        if rule.rule.startswith("/api"):
            path = rule.rule.replace("<int:user_id>", "{user_id}")
            routed |= {(path, m) for m in rule.methods if m not in ("HEAD", "OPTIONS")}
    site.close()
    assert routed == described


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
    case.validate_response(response, excluded_checks=[ignored_auth])
    if response.status_code >= 400:
        assert SITE.state() == before
