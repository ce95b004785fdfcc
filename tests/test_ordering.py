"""In-order, exactly-once delivery to plain clients, across servers and whatever the path.

Two `userboard serve` processes share one PostgreSQL database and one Redis. Plain wire clients
(tests/wire.py) on both record events as they come off the socket. In every case below each
client must receive strictly increasing, gap-free seqs, each once, and its naive table must
equal the database: concurrent writers through both servers, a transaction that holds the
counter while others queue behind it, a writer killed between its commit and its publish (whose
publish then arrives late), and duplicated or reordered queue deliveries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
import socketio
from sqlalchemy.engine import make_url

from userboard.bootstrap import open_database
from userboard.models import User
from userboard.testing import capture_events

from .helpers import new_postgres_database, wait_until
from .test_scale import start_pair
from .wire import WireClient, assert_matches_database, database_users

ROOT = Path(__file__).resolve().parents[1]

# A writer process: COUNT writes through the API, alternating between two servers; every fifth
# promotes the user the previous write added (through the other server).
API_WRITER = """
import sys
import requests

url_a, url_b, token, prefix, count = sys.argv[1:6]
http = requests.Session()
http.headers["Authorization"] = "Bearer " + token
added = None
for i in range(int(count)):
    url = (url_a, url_b)[i % 2]
    if i % 5 == 4:
        answer = http.patch(f"{url}/api/users/{added}", json={"role": "admin"})
    else:
        name = f"{prefix}{i:03}"
        answer = http.post(url + "/api/users", json={"username": name, "email": name + "@example.com"})
        added = answer.json().get("user", {}).get("id")
    if answer.status_code not in (200, 201):
        sys.exit(f"{answer.status_code} {answer.text}")
"""

# A script on the message queue that promotes a user, prints the events it committed, and is
# killed (SIGKILL) right after the commit, before its publisher runs: nothing reaches the queue.
KILLED_WRITER = """
import json, os, signal, sys
from userboard.bootstrap import open_database
from userboard.models import User

url, queue, channel, user_id = sys.argv[1:5]
database = open_database(url, message_queue=queue, channel=channel, actor="killed")

class DieBeforePublishing:
    def publish(self, events):
        print(json.dumps([[e.name, e.data] for e in events]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

database.capture.publishers.insert(0, DieBeforePublishing())
with database.session() as session:
    session.get(User, int(user_id)).role = "admin"
    session.commit()
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_url):
    """Two servers on one PostgreSQL database and one Redis channel."""
    with new_postgres_database("userboard_order", migrated=True) as url:
        servers = start_pair(tmp_path_factory.mktemp("order_pg"), url, redis_url)
        yield from _running(servers)


@pytest.fixture(scope="module")
def sqlite_cluster(tmp_path_factory, redis_url):
    """Two servers on one SQLite file (no NOTIFY: the queue and the relay's poll) and one Redis."""
    workdir = tmp_path_factory.mktemp("order_sqlite")
    servers = start_pair(workdir, f"sqlite:///{workdir / 'shared.db'}", redis_url)
    yield from _running(servers)


def _running(servers):
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def wires(cluster):
    """Two plain clients on each server, caught up."""
    clients = connect_wires(cluster)
    yield clients
    for client in clients:
        client.close()


def connect_wires(servers) -> list[WireClient]:
    return [WireClient(s.url, {"token": s.token}).connect() for s in servers for _ in range(2)]


def caught_up(clients, server) -> int:
    """Every client equals the database; return its seq."""
    return [assert_matches_database(client, server) for client in clients][-1]


def assert_in_order(clients, server, start: int, end: int) -> None:
    """Each client got start+1..end, in order and once, and equals the database at `end`."""
    for client in clients:
        assert client.wait_for_seq(end, timeout=15), client.seqs(start)[-10:]
        assert client.seqs(start) == list(range(start + 1, end + 1))
    assert caught_up(clients, server) == end


class Queue:
    """Publishes on the cluster's Redis channel, as another process's emitter would."""

    def __init__(self, redis_url: str, server):
        self.manager = socketio.RedisManager(redis_url, channel=server.env["USERBOARD_CHANNEL"],
                                             write_only=True)
        self.barriers = 0

    def emit(self, name: str, payload: dict) -> None:
        self.manager.emit(name, payload, namespace="/users", room="admins")

    def barrier(self, clients) -> None:
        """Wait until every client got a marker sent after everything emitted so far.

        Each server reads the channel in order, so once the marker (an event without a seq,
        which a server passes straight to its room) is on a client's socket, that server has
        handled every message before it.
        """
        self.barriers += 1
        marker = {"barrier": self.barriers}
        self.emit("queue_barrier", marker)
        for client in clients:
            assert client.wait_for(lambda c: ("queue_barrier", marker) in c.events)


def test_concurrent_api_writes_through_two_servers_reach_every_client_in_order(cluster, wires):
    a, b = cluster
    start = caught_up(wires, a)
    writers = [
        subprocess.Popen([sys.executable, "-c", API_WRITER, a.url, b.url, a.token, f"conc{n}_", "50"],
                         cwd=ROOT, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    end = database_users(a)[0]
    assert end == start + 200  # one event per write
    assert_in_order(wires, a, start, end)


def test_clients_joining_during_a_burst_get_every_later_event_once_in_order(cluster):
    a, b = cluster
    start, before = database_users(a)
    writers = [
        subprocess.Popen([sys.executable, "-c", API_WRITER, a.url, b.url, a.token, f"join{n}_", "50"],
                         cwd=ROOT, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    joined = []
    try:
        assert wait_until(lambda: database_users(a)[0] >= start + 20), "the writers did not start"
        for server in (a, b):  # a snapshot, and a replay from `start`, on each server
            joined.append(WireClient(server.url, {"token": server.token}).connect())
            joined.append(WireClient(server.url, {"token": server.token, "since": start},
                                     holding=before).connect())
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err
        end = database_users(a)[0]
        assert end == start + 100
        for client in joined:
            snapshots = [p["seq"] for n, p in client.events if n == "users_snapshot"]
            first = snapshots[0] if snapshots else start
            assert first < end, "joined after the burst: nothing was tested"
            assert client.wait_for_seq(end, timeout=15)
            assert client.seqs() == list(range(first + 1, end + 1))
        caught_up(joined, a)
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
        for client in joined:
            client.close()


def test_a_transaction_holding_the_counter_delays_writes_but_keeps_their_order(cluster, wires):
    a, b = cluster
    answer = a.api().post(a.url + "/api/users", json={"username": "held", "email": "held@example.com"})
    held = answer.json()["user"]["id"]
    start = caught_up(wires, a)
    dsn = make_url(a.env["USERBOARD_DATABASE_URL"]).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(dsn) as dba, psycopg.connect(dsn, autocommit=True) as watcher:
        dba.execute(f"UPDATE users SET status = 'disabled' WHERE id = {held}")
        # Run the deferred trigger now: it takes the counter (seq start+1) and holds it.
        dba.execute("SET CONSTRAINTS ALL IMMEDIATE")
        writes = [(server, f"queued{i}") for i, server in enumerate([a, b] * 3)]
        with ThreadPoolExecutor(len(writes)) as pool:
            answers = [pool.submit(post_user, server, name) for server, name in writes]
            assert wait_until(lambda: lock_waiters(watcher) >= len(writes)), "writes did not queue"
            for client in wires:  # nothing is committed yet, so nothing may have been sent
                assert client.seqs(start) == []
            dba.commit()
            seqs = sorted(f.result() for f in answers)
    assert seqs == list(range(start + 2, start + 2 + len(writes)))
    assert_in_order(wires, a, start, start + 1 + len(writes))
    first = wires[0].changes(start)[0]
    assert first[0] == "user_updated" and first[1]["actor"]["kind"] == "external"


def test_a_writer_killed_between_commit_and_publish_then_published_late(cluster, wires, redis_url):
    a, b = cluster
    user = a.api().post(a.url + "/api/users", json={"username": "victim", "email": "victim@example.com"})
    uid = user.json()["user"]["id"]
    start = caught_up(wires, a)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, a.env["USERBOARD_DATABASE_URL"],
         a.env["USERBOARD_MESSAGE_QUEUE"], a.env["USERBOARD_CHANNEL"], str(uid)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    (name, committed), = json.loads(killed.stdout)
    assert (name, committed["seq"], committed["version"]) == ("user_updated", start + 1, 2)
    # Another server commits v3 right after; the relay must still put v2 first.
    patched = b.api().patch(f"{b.url}/api/users/{uid}", json={"status": "disabled", "version": 2})
    assert patched.json()["seq"] == start + 2
    assert_in_order(wires, a, start, start + 2)
    # The killed writer's publish arrives after all (a queue that held it): dropped everywhere.
    queue = Queue(redis_url, a)
    queue.emit(name, committed)
    queue.barrier(wires)
    assert_in_order(wires, a, start, start + 2)
    assert wires[0].table()[uid]["version"] == 3


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_duplicated_and_reordered_queue_deliveries_reach_no_socket_twice_or_out_of_order(
        request, backend, redis_url):
    servers = request.getfixturevalue("cluster" if backend == "postgresql" else "sqlite_cluster")
    a, _ = servers
    clients = connect_wires(servers)
    try:
        start = caught_up(clients, a)
        queue = Queue(redis_url, a)
        database = open_database(a.env["USERBOARD_DATABASE_URL"], actor="unpublished")
        try:
            with capture_events() as events, database.session() as session:
                for i in range(4):  # four commits that publish nothing themselves
                    session.add(User(username=f"dup_{backend}{i}", email=f"dup{i}@{backend}.example"))
                    session.commit()
                    if i % 2 == 1:  # each pair through the queue later one first, twice
                        for event in [events[i], events[i - 1]] * 2:
                            queue.emit(event.name, event.data)
                uid = events[0].key
                session.get(User, uid).role = "admin"
                session.commit()
        finally:
            database.close()
        for event in reversed(events):  # everything once more, newest first
            queue.emit(event.name, event.data)
        queue.barrier(clients)
        assert [e.seq for e in events] == list(range(start + 1, start + 6))
        assert_in_order(clients, a, start, start + 5)
    finally:
        for client in clients:
            client.close()


def post_user(server, name: str) -> int:
    answer = requests.post(server.url + "/api/users", json={"username": name, "email": f"{name}@example.com"},
                           headers={"Authorization": f"Bearer {server.token}"}, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["seq"]


def lock_waiters(connection) -> int:
    """Sessions of this database waiting for a lock (here: the counter's row)."""
    return connection.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'").fetchone()[0]


