"""Property tests: whatever a client sends, the API and the forms answer with a 4xx in the
documented shape (or succeed), never a 5xx, and a rejected request changes nothing; a socket
packet that is not acceptable JSON closes its connection, with no traceback logged."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import LiveClient
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


# -- malformed JSON: too deep, huge numbers, invalid UTF-8, duplicate keys ---------------------
# The same refusals for the API (400 bad_request) and for socket packets (the connection is
# closed), from one parser (userboard.strictjson); never a 5xx, a traceback or a change.

OPENERS = {"array": "[", "object": '{"a":', "mixed": '[{"a":'}
CLOSERS = {"array": "]", "object": "}", "mixed": "}]"}


def nested(depth: int, kind: str, closed: bool) -> str:
    """JSON nested `depth` levels (a mixed level is two), closed or cut off; under 60 KB, so
    that the API's and the socket's 64 KB limits are not what refuses it."""
    return (OPENERS[kind] * depth + "1" + (CLOSERS[kind] * depth if closed else ""))[:60_000]


def with_duplicate(body: dict, key: str, value) -> str:
    """`body` as a JSON object that has `key` twice."""
    pairs = [json.dumps(k) + ":" + json.dumps(v) for k, v in body.items() if k != key]
    pairs += [json.dumps(key) + ":" + json.dumps(value)] * 2
    return "{" + ",".join(pairs) + "}"


def huge_number(digits: int, form: str) -> str:
    return {"int": "9" * digits, "negative": "-" + "9" * digits,
            "float": "1." + "5" * digits, "exponent": f"1e{digits}",
            "constant": ["NaN", "Infinity", "-Infinity"][digits % 3]}[form]


too_deep = st.builds(nested, st.integers(min_value=33, max_value=20_000),
                     st.sampled_from(sorted(OPENERS)), st.booleans())
huge_numbers = st.builds(huge_number, st.integers(min_value=309, max_value=20_000),
                         st.sampled_from(["int", "negative", "float", "exponent", "constant"]))
duplicate_keys = st.builds(with_duplicate,
                           st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=20), max_size=4),
                           st.sampled_from(FIELDS), json_values)
lone_surrogates = st.sampled_from(["\\ud800", "\\udfff", "x\\udbff", "\\udc00\\ud800"]).map(
    lambda escape: '{"username": "u_sur", "email": "s@example.com", "password": "12345678' + escape + '"}')


def in_a_body(value: str, field: str) -> str:
    """A huge number or a deep value where an API body or a socket payload has a field."""
    return "{" + json.dumps(field) + ":" + value + "}"


malformed_json = (
    too_deep
    | st.builds(in_a_body, too_deep | huge_numbers, st.sampled_from(FIELDS + ["ids", "since", "q"]))
    | duplicate_keys
    | lone_surrogates
).map(str.encode)
# Bytes that are not UTF-8, somewhere in an otherwise well-formed body.
invalid_utf8 = st.builds(
    lambda body, cut, bad: body[:cut] + bad + body[cut:],
    st.just(b'{"username": "utf_bad", "email": "bad@example.com", "ids": [2]}'),
    st.integers(min_value=0, max_value=60),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]),
)
ROUTES_WITH_A_BODY = [("POST", "/api/users"), ("PATCH", "/api/users/2"),
                      ("POST", "/api/users/bulk"), ("DELETE", "/api/users/2")]


@FUZZ
@given(raw=malformed_json | invalid_utf8, route=st.sampled_from(ROUTES_WITH_A_BODY))
def test_malformed_json_gets_400_on_every_route_with_a_body(site, caplog, raw, route):
    caplog.set_level(logging.WARNING)
    caplog.clear()
    before = site.state()
    method, path = route
    answer = site.client.open(path, method=method, data=raw,
                              headers={**site.headers, "Content-Type": "application/json"})
    assert answer.status_code == 400, (raw[:80], answer.text[:300])
    assert answer.get_json()["error"]["code"] == "bad_request"
    check_answer(site, answer, before)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


SOCKET_EXAMPLES = settings(FUZZ, max_examples=int(os.environ.get("USERBOARD_FUZZ_SOCKET_EXAMPLES",
                                                                   "60")))
# Where a client puts a payload: the connect `auth`, or an event (with or without an ack id).
PACKETS = {
    "connect": lambda payload: "40/users," + payload,
    "resync": lambda payload: '42/users,["resync",' + payload + "]",
    "watch": lambda payload: '42/users,["watch",' + payload + "]",
    "watch with ack": lambda payload: '42/users,7["watch",' + payload + "]",
}


def closed_by_server(ws, deadline: float) -> bool:
    """Read until the server closes the Engine.IO session (a "1" packet) or the socket."""
    while time.monotonic() < deadline:
        try:
            frame = ws.recv()
        except (websocket.WebSocketException, OSError):
            return True
        if frame in ("1", ""):
            return True
    return False


@SOCKET_EXAMPLES
@given(payload=malformed_json | invalid_utf8, where=st.sampled_from(sorted(PACKETS)))
def test_malformed_socket_payloads_close_the_connection(server, payload, where):
    assert_closes_the_connection(server, payload, where)


@pytest.mark.parametrize("where", sorted(PACKETS))
def test_a_socket_payload_nested_100000_levels_closes_the_connection(server, where):
    """Over the 64 KB message limit: the connection is closed before anything parses it."""
    assert_closes_the_connection(server, b"[" * 100_000 + b"]" * 100_000, where)


def assert_closes_the_connection(server, payload: bytes, where: str) -> None:
    """Send `payload` where a client may put one: the server closes the connection, logs no
    traceback and commits nothing."""
    before = len(server.output)
    seq = latest_seq(server)
    url = server.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=5)
    try:
        assert ws.recv().startswith("0{")  # Engine.IO open
        if where != "connect":  # join first, holding a one-row view: a small catch-up
            ws.send("40/users," + json.dumps({"token": server.token, "view": {"limit": 1}}))
            while not ws.recv().startswith("40/users"):
                pass
        packet = PACKETS[where]("@PAYLOAD@").encode().replace(b"@PAYLOAD@", payload)
        try:
            ws.send(packet, opcode=websocket.ABNF.OPCODE_TEXT)
        except (websocket.WebSocketException, OSError):
            pass  # closed while we were still sending: closed all the same
        assert closed_by_server(ws, time.monotonic() + 5), "the connection stayed open"
    finally:
        ws.shutdown()  # the server has closed it: no closing handshake to wait for
    assert latest_seq(server) == seq
    assert "Traceback" not in "".join(server.output[before:])


def latest_seq(server) -> int:
    with server.api() as http:
        return http.get(server.url + "/api/users?limit=1").json()["seq"]


def test_server_still_serves_sockets_after_malformed_payloads(server):
    client = LiveClient(server.url, auth={"token": server.token}).connect()
    try:
        assert client.sio.call("resync", {"since": 0}, namespace="/users", timeout=5)["seq"] >= 0
    finally:
        client.close()
