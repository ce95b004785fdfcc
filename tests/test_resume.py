"""Never out of sync: resume after a disconnect, duplicates and reordering, lost events,
heartbeats, stale versions, the last admin, and sockets that follow the account."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests
import socketio

from userboard.bootstrap import open_database
from userboard.client import LiveUsers
from userboard.models import User
from userboard.testing import capture_events

from .helpers import ServerProcess, run_cli


def db_users(server) -> dict[int, dict]:
    body = server.api().get(server.url + "/api/users").json()
    return {u["id"]: u for u in body["users"]}


def latest_seq(server) -> int:
    return server.api().get(server.url + "/api/users").json()["seq"]


def churn(server, tag: str, adds=20, updates=10, deletes=5) -> None:
    """20 adds, 10 updates and 5 deletes through the API."""
    api = server.api()
    ids = []
    for i in range(adds):
        answer = api.post(server.url + "/api/users",
                          json={"username": f"{tag}{i:02}", "email": f"{tag}{i:02}@example.com"})
        assert answer.status_code == 201
        ids.append(answer.json()["user"]["id"])
    for i in range(updates):
        assert api.patch(f"{server.url}/api/users/{ids[i]}",
                         json={"status": "disabled"}).status_code == 200
    for i in range(deletes):
        assert api.delete(f"{server.url}/api/users/{ids[-1 - i]}").status_code == 200


def test_reconnect_replays_only_the_missed_events(server):
    live = LiveUsers(server.url, token=server.token).connect()
    try:
        assert live.wait_for_seq(latest_seq(server))
        assert live.snapshots == 1
        live.close()
        before = live.seq
        churn(server, "away")
        after = latest_seq(server)
        assert after == before + 35

        live.connect()  # resumes with {"since": before}
        assert live.wait_for_seq(after)
        assert live.snapshots == 1  # no second snapshot: the log still holds them
        assert live.applied[-35:] == list(range(before + 1, after + 1))
        assert live.users == db_users(server)
    finally:
        live.close()


def test_reconnect_gets_a_snapshot_when_the_log_no_longer_holds_the_events(tmp_path):
    server = ServerProcess(tmp_path, env={"USERBOARD_CHANGE_LOG_SIZE": "10"})
    server.setup_admin()
    server.start()
    live = LiveUsers(server.url, token=server.token)
    try:
        live.connect()
        assert live.wait_for_seq(latest_seq(server))
        live.close()
        churn(server, "gone")
        live.connect()
        after = latest_seq(server)
        assert live.wait_for_seq(after)
        assert live.snapshots == 2
        assert live.users == db_users(server)
    finally:
        live.close()
        server.stop()


@pytest.fixture(scope="module")
def queued_server(tmp_path_factory, redis_url):
    """A server on a Redis message queue of its own channel, so a test can inject events."""
    channel = f"userboard-test-{uuid.uuid4().hex[:8]}"
    proc = ServerProcess(tmp_path_factory.mktemp("queued"),
                         env={"USERBOARD_MESSAGE_QUEUE": redis_url, "USERBOARD_CHANNEL": channel})
    proc.setup_admin()
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
        # No later event arrives; the heartbeat (every 2 s) shows the client it is behind.
        assert live.wait_for_seq(answer["seq"], timeout=6)
        assert answer["user"]["id"] in live.users
        assert live.users == db_users(server)
    finally:
        live.close()


def test_resync_answers_the_latest_seq_after_replaying(server):
    churn(server, "resync", adds=3, updates=0, deletes=0)
    sio = socketio.Client()
    got, lock = [], threading.Lock()
    for name in ("user_added", "user_updated", "user_deleted"):
        sio.on(name, lambda data: (lock.acquire(), got.append(data["seq"]), lock.release()),
               namespace="/users")
    try:
        sio.connect(server.url, namespaces=["/users"], auth={"token": server.token},
                    transports=["websocket"], wait_timeout=10)
        latest = latest_seq(server)
        ack = sio.call("resync", {"since": latest - 3}, namespace="/users", timeout=10)
        assert ack == {"seq": latest}
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with lock:
            assert sorted(got) == [latest - 2, latest - 1, latest]
    finally:
        sio.disconnect()


def test_patch_with_a_stale_version_gets_409_and_the_current_row(server):
    api = server.api()
    user = api.post(server.url + "/api/users",
                    json={"username": "versioned", "email": "v@example.com"}).json()["user"]
    ok = api.patch(f"{server.url}/api/users/{user['id']}", json={"role": "admin", "version": 1})
    assert ok.status_code == 200 and ok.json()["user"]["version"] == 2
    stale = api.patch(f"{server.url}/api/users/{user['id']}", json={"role": "user", "version": 1})
    assert stale.status_code == 409
    body = stale.json()
    assert body["error"]["code"] == "conflict"
    assert body["user"] == ok.json()["user"]
    bad = api.patch(f"{server.url}/api/users/{user['id']}", json={"version": "2"})
    assert bad.status_code == 400


def test_the_last_active_admin_cannot_be_removed(tmp_path):
    server = ServerProcess(tmp_path)
    server.setup_admin()  # root is the only admin
    server.start()
    try:
        api = server.api()
        root = [u for u in db_users(server).values() if u["username"] == "root"][0]
        for change in ({"role": "user"}, {"status": "disabled"}):
            answer = api.patch(f"{server.url}/api/users/{root['id']}", json=change)
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "conflict"
            assert next(iter(change)) in answer.json()["error"]["fields"]
        assert api.delete(f"{server.url}/api/users/{root['id']}").status_code == 409

        done = run_cli("users", "set", str(root["id"]), "role=user", cwd=server.workdir,
                       env=server.env)
        assert done.returncode == 1 and "last active admin" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        done = run_cli("users", "delete", str(root["id"]), cwd=server.workdir, env=server.env)
        assert done.returncode == 1 and "last active admin" in done.stderr

        http = server.login()
        page = http.get(f"{server.url}/users/{root['id']}/edit").text
        csrf = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        answer = http.post(f"{server.url}/users/{root['id']}/edit", data={
            "csrf_token": csrf, "username": "root", "email": "root@example.com",
            "role": "user", "status": "active", "version": str(root["version"])})
        assert answer.status_code == 409
        assert "the last active admin must stay an active admin" in answer.text
        answer = http.post(f"{server.url}/users/{root['id']}/delete", data={"csrf_token": csrf})
        assert "this is the last active admin" in answer.text or answer.status_code == 302
        assert db_users(server)[root["id"]]["role"] == "admin"

        # With a second active admin, demoting the first is fine.
        api.post(server.url + "/api/users", json={"username": "second", "email": "s@example.com",
                                                  "role": "admin"})
        assert api.patch(f"{server.url}/api/users/{root['id']}",
                         json={"role": "user"}).status_code == 200
    finally:
        server.stop()


def wait_disconnected(sio: socketio.Client, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sio.connected:
            return True
        time.sleep(0.02)
    return not sio.connected


@pytest.mark.parametrize("change", [{"status": "disabled"}, {"role": "user"}, None])
def test_an_admin_who_loses_access_is_cut_off_within_a_second(server, change):
    api = server.api()
    name = f"cut_{'deleted' if change is None else next(iter(change))}"
    user = api.post(server.url + "/api/users", json={
        "username": name, "email": f"{name}@example.com", "role": "admin",
        "password": "pass-word-1"}).json()["user"]
    token = server.cli("token", "create", name).stdout.strip()
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, namespaces=["/users"], auth={"token": token},
                transports=["websocket"], wait_timeout=10)
    try:
        assert sio.connected
        if change is None:
            api.delete(f"{server.url}/api/users/{user['id']}")
        else:
            api.patch(f"{server.url}/api/users/{user['id']}", json=change)
        assert wait_disconnected(sio, 1.0)
        assert server.api(token).get(server.url + "/api/users").status_code == 401
    finally:
        sio.disconnect()


def test_logging_out_cuts_that_logins_sockets(server):
    http = server.login()
    cookie = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in http.cookies)}
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, namespaces=["/users"], headers=cookie, transports=["polling"],
                wait_timeout=10)
    try:
        assert sio.connected
        http.post(server.url + "/logout", data={"csrf_token": http.csrf_token})
        assert wait_disconnected(sio, 1.0)
        # The old cookie no longer opens a socket either.
        again = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            again.connect(server.url, namespaces=["/users"], headers=cookie,
                          transports=["polling"], wait_timeout=5)
        assert requests.get(server.url + "/api/users", headers=cookie).status_code == 401
    finally:
        sio.disconnect()
