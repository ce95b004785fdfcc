"""Hostile origins, oversized and too-frequent socket messages, headers, cookies and logs.

Origins, the socket message size and rate, and the server's log output on a real server (the
handshake, the websocket upgrade, the transport and the CLI's logging are the point); the rest in
process. Holding connections and the per-address limits: test_abuse.py.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
import requests
import socketio
import websocket

from userboard.config import ConfigError, Settings

from .helpers import ADMIN_PASSWORD, ServerProcess, seed_admin, wait_until
from .inprocess import InProcess, csrf_of
from .wire import flood, join, open_websocket


def handshake(server, origin=None):
    headers = {"Origin": origin} if origin else {}
    return requests.get(server.url + "/socket.io/?EIO=4&transport=polling", headers=headers)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server that also admits one other origin."""
    proc = ServerProcess(tmp_path_factory.mktemp("guarded"),
                         env={"USERBOARD_ALLOWED_ORIGINS": "https://admin.example.com"})
    seed_admin(proc)
    proc.start()
    yield proc
    proc.stop()


def test_polling_handshake_from_another_origin_is_refused(guarded):
    assert handshake(guarded, "https://evil.example").status_code == 400
    assert handshake(guarded, "null").status_code == 400
    assert handshake(guarded, guarded.url).status_code == 200  # its own pages
    assert handshake(guarded, "https://admin.example.com").status_code == 200  # listed
    assert handshake(guarded).status_code == 200  # no Origin: not a browser


def test_websocket_handshake_from_another_origin_is_refused(guarded):
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "https://evil.example"}
    with requests.Session() as http:
        refused = http.get(guarded.url + "/socket.io/?EIO=4&transport=websocket", headers=upgrade)
    assert refused.status_code == 400
    url = guarded.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, origin=guarded.url, timeout=5)
    assert ws.recv().startswith("0{")
    ws.close()


def test_forwarded_headers_are_ignored_without_proxy_hops(guarded):
    spoofed = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
               "X-Forwarded-For": "10.9.8.7"}
    answer = requests.get(guarded.url + "/socket.io/?EIO=4&transport=polling",
                          headers={"Origin": "https://evil.example", **spoofed})
    assert answer.status_code == 400
    assert "Secure" not in session_cookie(requests.get(guarded.url + "/login", headers=spoofed))


def test_proxy_hops_take_address_scheme_and_host_from_the_proxys_values(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="userboard")
    site = InProcess(tmp_path, PROXY_HOPS=1)
    try:
        client = site.new_client()
        page = client.get("/login", headers={"X-Forwarded-Proto": "https",
                                             "X-Forwarded-Host": "users.example.com"})
        assert "Secure" in session_cookie(page)
        # The client wrote the first value; the one proxy appended the address it saw.
        client.post("/login", headers={"X-Forwarded-For": "6.6.6.6, 10.20.30.40"},
                    data={"username": "root", "password": "wrong-password",
                          "csrf_token": csrf_of(page.text)})
    finally:
        site.close()
    assert any("failed login for 'root' from 10.20.30.40" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", ["-1", "one", "1.5", "\u00b2", "2 hops"])
def test_proxy_hops_must_be_a_whole_number(value):
    with pytest.raises(ConfigError, match="USERBOARD_PROXY_HOPS"):
        Settings.from_env({"USERBOARD_PROXY_HOPS": value})
    assert Settings.from_env({"USERBOARD_PROXY_HOPS": "2"}).proxy_hops == 2
    assert Settings.from_env({}).proxy_hops == 0


def test_star_is_not_an_allowed_origin(tmp_path):
    done = ServerProcess(tmp_path, env={"USERBOARD_ALLOWED_ORIGINS": "*"}).cli("db", "upgrade")
    assert done.returncode == 1 and "not allowed" in done.stderr


def test_a_socket_message_over_64_kb_disconnects_the_sender(guarded):
    url = guarded.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=5)
    try:
        ws.recv()  # open
        ws.send("40/users," + json.dumps({"token": guarded.token}))
        while not ws.recv().startswith("40/users"):  # the catch-up comes before the ack
            pass
        ws.send('42/users,["resync",{"since":0,"padding":"' + "x" * 70_000 + '"}]')
        closed = False
        for _ in range(20):  # catch-up events may come first; then the server hangs up
            try:
                message = ws.recv()
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                closed = True
                break
            if message == "":
                closed = True
                break
        assert closed
    finally:
        ws.shutdown()  # close() skips the socket once the server has hung up


def test_a_socket_sending_too_fast_is_disconnected(guarded):
    ws = join(open_websocket(guarded), guarded.token)
    served = flood(ws, ['42/users,["resync",{"since":1000000000}]'] * 60)
    assert served is not None, "the connection stayed open"
    assert served[0] <= 19  # snapshots: a budget of 20 messages, the join included
    # The server's output arrives through a pipe.
    assert wait_until(lambda: "sent messages too fast" in "".join(guarded.output), 5)


def test_security_headers_on_pages_and_api(client):
    for path in ("/login", "/api/openapi.json", "/api/users"):
        headers = client.get(path).headers
        policy = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"


def session_cookie(answer) -> str:
    return next(v for k, v in answer.headers.items() if k == "Set-Cookie" and v.startswith("session="))


@pytest.mark.parametrize(("mode", "base", "secure"), [
    ("auto", "http://localhost", False), ("auto", "https://localhost", True),
    ("true", "http://localhost", True), ("false", "https://localhost", False),
])
def test_session_cookie_flags(tmp_path, mode, base, secure):
    site = InProcess(tmp_path, SECURE_COOKIES=mode)
    cookie = session_cookie(site.app.test_client().get("/login", base_url=base))
    site.close()
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) is secure


@pytest.mark.parametrize("body", [
    {"username": "u" * 10_000, "email": "long@example.com"},
    {"username": "longmail", "email": "a" * 300 + "@example.com"},
    {"username": "longpass", "email": "lp@example.com", "password": "p" * 10_000},
    {"username": "tab\there", "email": "tab@example.com"},
    {"username": "rtl\u202eoverride", "email": "rtl@example.com"},
])
def test_overlong_and_control_character_input_gets_422(site, body):
    before = site.state()
    answer = site.client.post("/api/users", headers=site.headers, json=body)
    assert answer.status_code == 422 and answer.get_json()["error"]["code"] == "invalid"
    assert site.state() == before


def test_logs_record_refusals_and_failed_logins_but_no_secrets(guarded):
    http = requests.Session()
    page = http.get(guarded.url + "/login").text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    http.post(guarded.url + "/login", data={"username": "root", "password": "not-it-at-all",
                                            "csrf_token": csrf})
    requests.get(guarded.url + "/api/users", headers={"Authorization": "Bearer forged-token-123"})
    bad = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        bad.connect(guarded.url, namespaces=["/users"], auth={"token": "forged-token-456"},
                    wait_timeout=5)
    handshake(guarded, "https://evil.example")
    expected = ("failed login for 'root'", "refused socket from", "refused socket handshake from origin",
                "invalid, revoked or expired token")
    # The server's output arrives through a pipe.
    assert wait_until(lambda: all(line in "".join(guarded.output) for line in expected), 5), \
        [line for line in expected if line not in "".join(guarded.output)]
    text = "".join(guarded.output)
    for secret in ("not-it-at-all", "forged-token-123", "forged-token-456", ADMIN_PASSWORD,
                   guarded.token):
        assert secret not in text
