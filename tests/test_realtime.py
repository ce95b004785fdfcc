"""The /users namespace: who gets in and what they receive.

In process (Flask-SocketIO's test client) for admission and snapshots; against the shared real
server for what needs one: both transports under gevent, raw Engine.IO, a CLI process's write.
"""

from __future__ import annotations

import re
import sqlite3
import uuid

import requests

from .helpers import LiveClient


def cookie_header(http: requests.Session) -> dict:
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in http.cookies)}


def test_connect_sends_snapshot_equal_to_the_api(site):
    site.client.post("/api/users", headers=site.headers,
                     json={"username": "snap", "email": "snap@example.com"})
    socket = site.socket(auth={"token": site.token})
    try:
        assert socket.connected_to_users
        name, snapshot = socket.received()[0]
        listed = site.client.get("/api/users", headers=site.headers).get_json()
        assert name == "users_snapshot"
        assert snapshot == {"seq": listed["seq"], "users": listed["users"]}
        assert listed["total"] == len(listed["users"]) and listed["next"] is None
    finally:
        socket.close()


def test_two_clients_see_fifty_writes_in_order_with_contiguous_seq(server):
    api = server.api()
    token_client = LiveClient(server.url, auth={"token": server.token}).connect()
    # The second client authenticates with a logged-in admin's session cookie, over polling.
    cookie_client = LiveClient(server.url, headers=cookie_header(server.login()),
                               transports=["polling"]).connect()
    clients = [token_client, cookie_client]
    try:
        for client in clients:
            assert client.wait_for(lambda c: c.snapshots())
        start = token_client.snapshots()[0]["seq"]

        answers, ids, tag = [], [], uuid.uuid4().hex[:6]  # (repeatable on the shared server)
        for i in range(20):
            r = api.post(server.url + "/api/users",
                         json={"username": f"live{tag}{i:02}", "email": f"live{tag}{i:02}@example.com"})
            assert r.status_code == 201
            answers.append(("user_added", r.json()))
            ids.append(r.json()["user"]["id"])
        for i in range(20):
            body = {"status": "disabled"} if i % 2 else {"email": f"moved{tag}{i:02}@example.com"}
            r = api.patch(f"{server.url}/api/users/{ids[i]}", json=body)
            assert r.status_code == 200
            answers.append(("user_updated", r.json()))
        for i in range(10):
            r = api.delete(f"{server.url}/api/users/{ids[i]}")
            assert r.status_code == 200
            answers.append(("user_deleted", r.json()))

        last = answers[-1][1]["seq"]
        assert last == start + 50
        for client in clients:
            assert client.wait_for_seq(last), client.changes()[-3:]
            received = client.changes()
            assert [d["seq"] for _, d in received] == list(range(start + 1, last + 1))
            assert [n for n, _ in received] == [n for n, _ in answers]
            for (name, data), (_, answer) in zip(received, answers, strict=True):
                assert data["seq"] == answer["seq"]
                if name == "user_added":
                    assert data["user"] == answer["user"]
                elif name == "user_updated":
                    user = answer["user"]
                    assert data["id"] == user["id"] and data["version"] == user["version"]
                    assert data["changes"] == {k: user[k] for k in data["changes"]}
                    assert "updated_at" in data["changes"]
                else:
                    assert set(data) == {"seq", "id", "actor"}
                assert data["actor"]["kind"] in ("token", "session")
    finally:
        for client in clients:
            client.close()


def test_a_polling_python_client_takes_a_burst_larger_than_one_response_may_hold(server):
    """python-engineio's client drops a connection whose polling response holds more than 16
    packets; the server sends a burst (here: 100 rows of one outside transaction, relayed from
    the change log at once) over several responses instead."""
    client = LiveClient(server.url, auth={"token": server.token}, transports=["polling"]).connect()
    try:
        assert client.wait_for(lambda c: c.snapshots())
        start = client.snapshots()[0]["seq"]
        tag = uuid.uuid4().hex[:6]
        with sqlite3.connect(server.env["USERBOARD_DATABASE_URL"].removeprefix("sqlite:///")) as raw:
            raw.executemany("INSERT INTO users (username, email) VALUES (?, ?)",
                            [(f"burst{tag}{i:03}", f"burst{tag}{i:03}@example.com") for i in range(100)])
        assert client.wait_for_seq(start + 100), (client.sio.eio.state, len(client.changes()))
        added = [d["user"]["username"] for n, d in client.changes() if n == "user_added"]
        assert [f"burst{tag}{i:03}" for i in range(100)] == [a for a in added if a.startswith(f"burst{tag}")]
        assert client.sio.connected
    finally:
        client.close()


def test_bad_token_is_refused_and_its_connection_gets_no_events(site):
    refused = site.socket(auth={"token": "not-a-token"})
    admitted = site.socket(auth={"token": site.token})
    try:
        assert not refused.connected_to_users
        assert "unauthorized" in refused.connect_error["message"]
        answer = site.client.post("/api/users", headers=site.headers,
                                  json={"username": "unseen", "email": "unseen@example.com"})
        site.flush()
        # The event went out (the admitted client has it), just not to the refused connection.
        assert ("user_added", answer.get_json()) in [
            (name, {k: v for k, v in data.items() if k != "actor"})
            for name, data in admitted.changes()]
        assert refused.queue == []
    finally:
        admitted.close()


def test_anonymous_polling_handshake_gets_no_user_data(server):
    """Speak Engine.IO by hand: nothing but a refusal may come back, even while writes happen."""
    http = requests.Session()
    opened = http.get(server.url + "/socket.io/?EIO=4&transport=polling")
    sid = re.search(r'"sid":"([^"]+)"', opened.text).group(1)
    poll = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert http.post(poll, data="40/users,{}").text.lower() == "ok"
    server.api().post(server.url + "/api/users",
                      json={"username": "secret_row", "email": "secret@example.com"})
    answer = http.get(poll).text
    assert answer.startswith("44/users,")  # CONNECT_ERROR
    assert "secret" not in answer and "@" not in answer
    assert "42/users" not in answer


def test_logged_out_cookie_is_refused(site):
    browser, csrf = site.login()
    cookie = browser.get_cookie("session").value
    while_logged_in = site.socket(client=browser)
    assert while_logged_in.connected_to_users  # the cookie did open the socket
    while_logged_in.close()
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302

    replayed = site.new_client()
    replayed.set_cookie("session", cookie)  # the cookie as it was before the logout
    socket = site.socket(client=replayed)
    assert not socket.connected_to_users
    assert "unauthorized" in socket.connect_error["message"]
    assert socket.queue == []


def test_cli_write_without_message_queue_reaches_a_connected_client(server):
    """The server relays change-log rows other processes committed (no queue configured)."""
    client = LiveClient(server.url, auth={"token": server.token}).connect()
    try:
        assert client.wait_for(lambda c: c.snapshots())
        done = server.cli("users", "add", "from_cli", "--email", "from_cli@example.com")
        assert done.returncode == 0, done.stderr
        seq = int(done.stdout.strip().rsplit("seq=", 1)[1])
        # The relay polls twice a second; the issue allows 3 s.
        assert client.wait_for_seq(seq, timeout=3)
        name, data = [c for c in client.changes() if c[1]["seq"] == seq][0]
        assert name == "user_added" and data["user"]["username"] == "from_cli"
    finally:
        client.close()
