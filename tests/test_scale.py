"""Scale-out: PostgreSQL, a Redis message queue, several server processes, CLI and script writers.

Everything here runs real processes: that is the point. Two servers on one database and one Redis
are shared by the module's tests; the Redis outage test has a Redis of its own to kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from userboard.client import LiveUsers

from .helpers import RedisProcess, ServerProcess, new_postgres_database, seed_admin

ROOT = Path(__file__).resolve().parents[1]


def start_pair(tmp_path, database_url: str, queue_url: str, **settings) -> list[ServerProcess]:
    """Two `userboard serve` processes of one install: one database, one queue channel.

    `settings` are further USERBOARD_* variables for both.
    """
    env = {
        "USERBOARD_DATABASE_URL": database_url,
        "USERBOARD_MESSAGE_QUEUE": queue_url,
        "USERBOARD_CHANNEL": f"userboard-test-{uuid.uuid4().hex[:8]}",
        "USERBOARD_SECRET_KEY": "shared-by-every-process-of-this-install",
        **settings,
    }
    servers = [ServerProcess(tmp_path / name, env=env) for name in ("a", "b")]
    for server in servers:
        server.workdir.mkdir()
    seed_admin(servers[0])
    servers[1].token = servers[0].token
    for server in servers:
        server.start()
    return servers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_url):
    """Two server processes on one PostgreSQL database and one Redis.

    Shared: each test measures from the seq it saw first, and the test that kills a server
    starts it again.
    """
    with new_postgres_database("userboard_scale", migrated=True) as url:
        servers = start_pair(tmp_path_factory.mktemp("cluster"), url, redis_url)
        try:
            yield servers
        finally:
            for server in servers:
                server.stop()


def db_users(server) -> dict[int, dict]:
    return {u["id"]: u for u in server.api().get(server.url + "/api/users").json()["users"]}


def latest(server) -> int:
    return server.api().get(server.url + "/api/users").json()["seq"]


def connect_all(servers) -> list[LiveUsers]:
    clients = [LiveUsers(s.url, token=s.token).connect() for s in servers]
    for client in clients:
        assert client.wait_for_seq(latest(servers[0]))
    return clients


def test_writes_through_either_server_and_the_cli_reach_clients_on_both(cluster):
    a, b = cluster
    clients = connect_all(cluster)
    try:
        start = clients[0].seq
        via_a = a.api().post(a.url + "/api/users", json={"username": "via_a", "email": "a@example.com"})
        via_b = b.api().patch(f"{b.url}/api/users/{via_a.json()['user']['id']}", json={"role": "admin"})
        done = a.cli("users", "add", "via_cli", "--email", "cli@example.com")
        assert via_a.status_code == 201 and via_b.status_code == 200 and done.returncode == 0
        end = latest(a)
        assert end == start + 3
        for client in clients:
            assert client.wait_for_seq(end)
            assert client.applied[-3:] == [start + 1, start + 2, start + 3]
            assert client.users == db_users(b)
    finally:
        for client in clients:
            client.close()


def test_four_writer_processes_give_every_client_contiguous_ordered_seqs(cluster):
    a, b = cluster
    clients = connect_all(cluster)
    try:
        start = latest(a)
        env = {**os.environ, **a.env}
        writers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.writer", a.env["USERBOARD_DATABASE_URL"],
                 a.env["USERBOARD_MESSAGE_QUEUE"], a.env["USERBOARD_CHANNEL"], f"w{n}_", "50"],
                cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
            )
            for n in range(4)
        ]
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err
        end = latest(a)
        assert end == start + 200
        for client in clients:
            assert client.wait_for_seq(end, timeout=15)
            applied = [s for s in client.applied if s > start]
            assert applied == list(range(start + 1, end + 1))  # each once, in order
            assert client.users == db_users(a)
    finally:
        for client in clients:
            client.close()


def write_through_both(servers, tag: str, count: int) -> int:
    """Add `count` users, alternating between the servers; return the latest seq."""
    for i in range(count):
        server = servers[i % 2]
        answer = server.api().post(server.url + "/api/users",
                                   json={"username": f"{tag}{i:02}", "email": f"{tag}{i}@example.com"})
        assert answer.status_code == 201, answer.text
    return latest(servers[0])


def test_a_redis_outage_loses_no_write_and_clients_converge(tmp_path, migrated_pg_database):
    redis_server = RedisProcess(tmp_path)
    redis_server.start()
    servers = start_pair(tmp_path, migrated_pg_database, redis_server.url)
    clients = []
    try:
        clients = connect_all(servers)
        redis_server.kill()
        end = write_through_both(servers, "outage", 20)
        # Nothing goes through the queue now; the heartbeat shows clients they are behind.
        for client in clients:
            assert client.wait_for_seq(end, timeout=10)
            assert client.users == db_users(servers[0])
        redis_server.start()
        end = write_through_both(servers, "back", 4)
        for client in clients:
            assert client.wait_for_seq(end, timeout=10)
            assert client.users == db_users(servers[0])
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()
        redis_server.kill()


def test_clients_of_a_killed_server_reconnect_and_converge(cluster):
    a, b = cluster
    client = LiveUsers(a.url, token=a.token).connect()
    try:
        assert client.wait_for_seq(latest(b))
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        for i in range(5):
            b.api().post(b.url + "/api/users", json={"username": f"after{i}", "email": f"af{i}@example.com"})
        a.start()  # the same address; the client has kept trying
        end = latest(b)
        assert client.wait_for_seq(end, timeout=15)
        assert client.users == db_users(b)
    finally:
        client.close()
