"""Never out of sync: resume after a disconnect, duplicates and reordering, lost events,
heartbeats, stale versions, the last admin, and sockets that follow the account.

Against the shared real server where the point is the python client over a real connection,
the server's background loop (heartbeat, credential checks) or the Redis queue; the rest in
process.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import socketio

from userboard.bootstrap import open_database
from userboard.client import LiveUsers
from userboard.events import NAMESPACE
from userboard.models import User
from userboard.testing import capture_events

from .helpers import ServerProcess, issue_token, run_cli, seed_admin, wait_until
from .inprocess import InProcess


def db_users(server) -> dict[int, dict]:
    body = server.api().get(server.url + "/api/users").json()
    return {u["id"]: u for u in body["users"]}


def latest_seq(server) -> int:
    return server.api().get(server.url + "/api/users").json()["seq"]


def server_api(server):
    """write(method, path, body) through a real server's API; returns the JSON answer."""
    http = server.api()

    def write(method, path, body=None):
        answer = http.request(method, server.url + path, json=body)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    return write


def site_api(site):
    """write(method, path, body) through the in-process app's API; returns the JSON answer."""

    def write(method, path, body=None):
        answer = site.client.open(path, method=method, headers=site.headers, json=body)
        assert answer.status_code in (200, 201), answer.text
        return answer.get_json()

    return write


def churn(write, tag: str, adds=20, updates=10, deletes=5) -> None:
    """20 adds, 10 updates and 5 deletes through the API."""
    ids = [write("POST", "/api/users",
                 {"username": f"{tag}{i:02}", "email": f"{tag}{i:02}@example.com"})["user"]["id"]
           for i in range(adds)]
    for i in range(updates):
        write("PATCH", f"/api/users/{ids[i]}", {"status": "disabled"})
    for i in range(deletes):
        write("DELETE", f"/api/users/{ids[-1 - i]}")


def test_reconnect_replays_only_the_missed_events(server):
    live = LiveUsers(server.url, token=server.token).connect()
    try:
        assert live.wait_for_seq(latest_seq(server))
        assert live.snapshots == 1
        live.close()
        before = live.seq
        churn(server_api(server), "away")
        after = latest_seq(server)
        assert after == before + 35

        live.connect()  # resumes with {"since": before}
        assert live.wait_for_seq(after)
        assert live.snapshots == 1  # no second snapshot: the log still holds them
        assert live.applied[-35:] == list(range(before + 1, after + 1))
        assert live.users == db_users(server)
    finally:
        live.close()


def test_closing_a_client_that_is_reconnecting_stops_its_attempts(tmp_path):
    gone = ServerProcess(tmp_path)
    seed_admin(gone)
    gone.start()
    live = LiveUsers(gone.url, token=gone.token).connect()
    try:
        gone.stop()
        assert wait_until(lambda: live.sio in socketio.base_client.reconnecting_clients), \
            "the client never started reconnecting"
    finally:
        live.close()
    assert live.sio not in socketio.base_client.reconnecting_clients


def test_reconnect_gets_a_snapshot_when_the_log_no_longer_holds_the_events(tmp_path):
    site = InProcess(tmp_path, CHANGE_LOG_SIZE=10, CHANGE_LOG_MIN_AGE=0)
    try:
        before = site.latest_seq()
        churn(site_api(site), "gone")  # 35 events; the log keeps the last 10
        after = site.latest_seq()
        resumed = site.socket(auth={"token": site.token, "since": before})
        assert [name for name, _ in resumed.received()] == ["users_snapshot", "heartbeat"]
        assert resumed.received()[0][1] == {"seq": after, "users": site.users()}
        # Asking for what the log still holds is answered by replay instead.
        recent = site.socket(auth={"token": site.token, "since": after - 5})
        assert [data["seq"] for _, data in recent.changes()] == list(range(after - 4, after + 1))
        assert recent.received("users_snapshot") == []
    finally:
        site.close()


@pytest.fixture(scope="module")
def queued_server(tmp_path_factory, redis_url):
    """A server on a Redis message queue of its own channel, so a test can inject events."""
    channel = f"userboard-test-{uuid.uuid4().hex[:8]}"
    proc = ServerProcess(tmp_path_factory.mktemp("queued"),
                         env={"USERBOARD_MESSAGE_QUEUE": redis_url, "USERBOARD_CHANNEL": channel})
    seed_admin(proc)
    proc.start()
    proc.channel = channel
    yield proc
    proc.stop()


def test_duplicated_and_reordered_events_leave_clients_equal_to_the_database(queued_server, redis_url):
    server = queued_server
    clients = [LiveUsers(server.url, token=server.token).connect() for _ in range(2)]
    try:
        answers = []
        api = server.api()
        for i in range(6):
            r = api.post(server.url + "/api/users",
                         json={"username": f"dup{i}", "email": f"dup{i}@example.com"})
            answers.append(("user_added", r.json()))
        uid = answers[0][1]["user"]["id"]
        r = api.patch(f"{server.url}/api/users/{uid}", json={"role": "admin"})
        update = {"seq": r.json()["seq"], "id": uid, "version": 2,
                  "changes": {"role": "admin"}, "previous": {"role": "user"}}
        r = api.delete(f"{server.url}/api/users/{answers[1][1]['user']['id']}")
        delete = {"seq": r.json()["seq"], "id": answers[1][1]["user"]["id"]}
        last = r.json()["seq"]
        for client in clients:
            assert client.wait_for_seq(last)

        # Inject through the queue: everything again, newest first, twice.
        injector = socketio.RedisManager(redis_url, channel=server.channel, write_only=True)
        replayed = [("user_deleted", delete), ("user_updated", update)] + [
            (name, {"seq": a["seq"], "user": {**a["user"]}}) for name, a in reversed(answers)
        ]
        for _ in range(2):
            for name, payload in replayed:
                injector.emit(name, payload, namespace="/users", room="admins")
        # Out of order: two commits by another process (no queue there, so only the server's
        # change-log relay would deliver them); the later one is injected first, then the
        # earlier one. The clients see a gap, resync, and get both exactly once.
        database = open_database(server.env["USERBOARD_DATABASE_URL"])
        with capture_events() as events, database.session() as session:
            session.add(User(username="first", email="first@example.com"))
            session.commit()
            session.add(User(username="second", email="second@example.com"))
            session.commit()
        database.close()
        for event in reversed(events):
            injector.emit(event.name, event.data, namespace="/users", room="admins")
        for client in clients:
            assert client.wait_for_seq(events[-1].seq)
            assert client.wait_until(lambda users: users == db_users(server), timeout=5)
            assert len(client.applied) == len(set(client.applied))  # each seq applied once
    finally:
        for client in clients:
            client.close()


class Forgetful(LiveUsers):
    """A client that loses the next live event, as if the publish had been dropped."""

    drop_next = False

    def receive(self, name, payload):
        if self.drop_next:
            self.drop_next = False
            return
        super().receive(name, payload)


def test_a_lost_event_is_healed_by_the_heartbeat(server):
    live = Forgetful(server.url, token=server.token).connect()
    try:
        assert live.wait_for_seq(latest_seq(server))
        live.drop_next = True
        answer = server.api().post(server.url + "/api/users",
                                   json={"username": "lost_one", "email": "lost@example.com"}).json()
        # No later event arrives; the heartbeat (every 0.2 s on test servers) shows the client it is behind.
        assert live.wait_for_seq(answer["seq"], timeout=6)
        assert answer["user"]["id"] in live.users
        assert live.users == db_users(server)
    finally:
        live.close()


def test_resync_answers_the_latest_seq_after_replaying(site):
    churn(site_api(site), "resync", adds=3, updates=0, deletes=0)
    socket = site.socket(auth={"token": site.token})
    latest = site.latest_seq()
    ack = socket.emit("resync", {"since": latest - 3}, namespace=NAMESPACE, callback=True)
    assert ack == {"seq": latest}
    assert [data["seq"] for _, data in socket.changes()] == [latest - 2, latest - 1, latest]


def test_patch_with_a_stale_version_gets_409_and_the_current_row(site):
    def patch(user_id, body):
        return site.client.patch(f"/api/users/{user_id}", headers=site.headers, json=body)

    user = site_api(site)("POST", "/api/users",
                          {"username": "versioned", "email": "v@example.com"})["user"]
    ok = patch(user["id"], {"role": "admin", "version": 1})
    assert ok.status_code == 200 and ok.get_json()["user"]["version"] == 2
    stale = patch(user["id"], {"role": "user", "version": 1})
    assert stale.status_code == 409
    body = stale.get_json()
    assert body["error"]["code"] == "conflict"
    assert body["user"] == ok.get_json()["user"]
    assert patch(user["id"], {"version": "2"}).status_code == 400


def test_the_last_active_admin_cannot_be_removed(fresh_site, tmp_path):
    site = fresh_site  # root is its only admin
    root = next(u for u in site.users() if u["username"] == "root")
    api = site.client
    for change in ({"role": "user"}, {"status": "disabled"}):
        answer = api.patch(f"/api/users/{root['id']}", headers=site.headers, json=change)
        assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "conflict"
        assert next(iter(change)) in answer.get_json()["error"]["fields"]
    assert api.delete(f"/api/users/{root['id']}", headers=site.headers).status_code == 409

    env = {**os.environ, "USERBOARD_DATABASE_URL": site.database_url}
    done = run_cli("users", "set", str(root["id"]), "role=user", cwd=tmp_path, env=env)
    assert done.returncode == 1 and "last active admin" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_cli("users", "delete", str(root["id"]), cwd=tmp_path, env=env)
    assert done.returncode == 1 and "last active admin" in done.stderr

    browser, _ = site.login()
    page = browser.get(f"/users/{root['id']}/edit").text
    csrf = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    answer = browser.post(f"/users/{root['id']}/edit", data={
        "csrf_token": csrf, "username": "root", "email": "root@example.com",
        "role": "user", "status": "active", "version": str(root["version"])},
        follow_redirects=True)
    assert "the last active admin must stay an active admin" in answer.text
    answer = browser.post(f"/users/{root['id']}/delete", data={"csrf_token": csrf},
                          follow_redirects=True)
    assert "this is the last active admin" in answer.text
    assert site.users()[0] == root

    # With a second active admin, demoting the first is fine.
    assert api.post("/api/users", headers=site.headers, json={
        "username": "second", "email": "s@example.com", "role": "admin"}).status_code == 201
    assert api.patch(f"/api/users/{root['id']}", headers=site.headers,
                     json={"role": "user"}).status_code == 200


def on_cut(sio: socketio.Client) -> threading.Event:
    """An event set when the server disconnects `sio` from /users."""
    cut = threading.Event()
    sio.on("disconnect", lambda *_reason: cut.set(), namespace=NAMESPACE)
    return cut


@pytest.mark.parametrize("change", [{"status": "disabled"}, {"role": "user"}, None])
def test_an_admin_who_loses_access_is_cut_off_within_a_second(server, change):
    api = server.api()
    name = f"cut_{'deleted' if change is None else next(iter(change))}"
    user = api.post(server.url + "/api/users", json={
        "username": name, "email": f"{name}@example.com", "role": "admin",
        "password": "pass-word-1"}).json()["user"]
    token = issue_token(server, name)
    sio = socketio.Client(reconnection=False)
    cut = on_cut(sio)
    sio.connect(server.url, namespaces=[NAMESPACE], auth={"token": token},
                transports=["websocket"], wait_timeout=10)
    try:
        assert sio.connected
        if change is None:
            api.delete(f"{server.url}/api/users/{user['id']}")
        else:
            api.patch(f"{server.url}/api/users/{user['id']}", json=change)
        assert cut.wait(1.0)  # the credential check runs every 0.5 s
        assert server.api(token).get(server.url + "/api/users").status_code == 401
    finally:
        sio.disconnect()


def test_logging_out_cuts_that_logins_sockets_only(site):
    browser, csrf = site.login()
    cookie = browser.get_cookie("session").value
    socket = site.socket(client=browser)
    other_login, _ = site.login()
    bystander = site.socket(client=other_login)  # the same admin, logged in elsewhere
    assert socket.connected_to_users and bystander.connected_to_users

    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert not socket.connected_to_users
    assert bystander.connected_to_users
    # The old cookie no longer opens a socket, nor the API.
    replayed = site.new_client()
    replayed.set_cookie("session", cookie)
    assert not site.socket(client=replayed).connected_to_users
    assert replayed.get("/api/users").status_code == 401
    bystander.close()
