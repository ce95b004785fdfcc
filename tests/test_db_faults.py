"""Database faults against a real server on PostgreSQL: a stuck writer, dropped connections.

A transaction that holds the seq counter (a script paused in a debugger) must stall only the
writers that need the counter: they fail fast with 503 and Retry-After, change nothing and emit
nothing, while reads, logins and socket connects keep answering from a pool of their own. A
connection the database drops costs at most a 503, and the next request works.

The holder is a plain psycopg connection in this process; every request has a timeout far below
how long the holder would keep the lock, so a request that waited for it fails the test.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections import Counter
from contextlib import contextmanager

import psycopg
import pytest
import requests
import socketio
from sqlalchemy.engine import make_url

from userboard.config import ConfigError, Settings

from .helpers import ADMIN_PASSWORD, LiveClient, ServerProcess, new_postgres_database, seed_admin, wait_until
from .inprocess import InProcess, csrf_of

POOL_SIZE = 3  # the server's writers' pool, small so that the writers below exhaust it
LOCK_TIMEOUT_MS = 1000  # long enough that the queued writers are still there while reads run
WRITERS = 20
ANSWER_WITHIN = 5  # seconds: any request that waits for the holder runs into this


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One server on a PostgreSQL database of its own, with a small writers' pool."""
    with new_postgres_database("userboard_faults") as url:
        server = ServerProcess(tmp_path_factory.mktemp("faults"), env={
            "USERBOARD_DATABASE_URL": url,
            "USERBOARD_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS),
            "USERBOARD_DB_POOL_SIZE": str(POOL_SIZE),
        })
        seed_admin(server)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def dsn(server: ServerProcess) -> str:
    url = make_url(server.env["USERBOARD_DATABASE_URL"]).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def counter_held(server: ServerProcess):
    """A transaction that holds the seq counter's row lock until the block ends."""
    with psycopg.connect(dsn(server)) as holder:
        holder.execute("UPDATE seq_counter SET value = value WHERE id = 1")
        try:
            yield
        finally:
            holder.rollback()


def waiting_on_locks(server: ServerProcess) -> int:
    with psycopg.connect(dsn(server), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'").fetchone()[0]


class Writers:
    """WRITERS concurrent API writes (new users named PREFIX-N), each answer kept."""

    def __init__(self, server: ServerProcess, prefix: str):
        self.answers: list[requests.Response | Exception] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write, args=(server, f"{prefix}-{i}"))
                         for i in range(WRITERS)]
        for thread in self._threads:
            thread.start()

    def _write(self, server: ServerProcess, name: str) -> None:
        try:
            answer = server.api().post(server.url + "/api/users", timeout=ANSWER_WITHIN,
                                       json={"username": name, "email": f"{name}@example.com"})
        except requests.RequestException as exc:
            answer = exc
        with self._lock:
            self.answers.append(answer)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(ANSWER_WITHIN + 5)


def latest_seq(server: ServerProcess) -> int:
    return server.api().get(server.url + "/api/users?limit=1", timeout=ANSWER_WITHIN).json()["seq"]


def test_reads_logins_and_socket_connects_answer_while_writers_queue_on_the_counter(deployment):
    server = deployment
    with counter_held(server):
        writers = Writers(server, f"q{uuid.uuid4().hex[:6]}")
        # The writers' pool is full of writers waiting for the holder's lock.
        assert wait_until(lambda: waiting_on_locks(server) >= POOL_SIZE)
        listed = server.api().get(server.url + "/api/users", timeout=ANSWER_WITHIN)
        login_page = requests.get(server.url + "/login", timeout=ANSWER_WITHIN)
        logged_in = server.login()  # asserts the login answered 200 (a login writes a row)
        dashboard = logged_in.get(server.url + "/", timeout=ANSWER_WITHIN)
        client = LiveClient(server.url, auth={"token": server.token}).connect()
        try:
            snapshot = client.wait_for(lambda c: c.snapshots(), timeout=ANSWER_WITHIN)
        finally:
            client.close()
    writers.join()  # (the next test looks at what becomes of them)
    assert listed.status_code == 200 and listed.json()["users"]
    assert login_page.status_code == 200 and dashboard.status_code == 200
    assert snapshot


def test_writes_queued_on_the_counter_fail_fast_with_503_and_change_nothing(deployment):
    server, prefix = deployment, f"w{uuid.uuid4().hex[:6]}"
    before = latest_seq(server)
    watcher = LiveClient(server.url, auth={"token": server.token}).connect()
    try:
        assert watcher.wait_for(lambda c: c.snapshots())
        with counter_held(server):
            writers = Writers(server, prefix)
            writers.join()  # every writer answered while the lock was still held
            answers = list(writers.answers)
        assert len(answers) == WRITERS
        assert all(isinstance(a, requests.Response) for a in answers), answers
        assert {a.status_code for a in answers} == {503}
        assert all(a.headers.get("Retry-After") == "1" for a in answers)
        assert {a.json()["error"]["code"] for a in answers} == {"unavailable"}

        found = server.api().get(server.url + "/api/users", params={"q": prefix}).json()
        assert found["total"] == 0 and found["seq"] == before
        # Nothing was emitted, and no seq was used up: the next write gets before + 1.
        after = server.api().post(server.url + "/api/users",
                                  json={"username": prefix + "-ok", "email": f"{prefix}@example.com"})
        assert after.status_code == 201 and after.json()["seq"] == before + 1
        assert watcher.wait_for_seq(before + 1)
        assert [(name, data["seq"]) for name, data in watcher.changes()] == [
            ("user_added", before + 1)]
    finally:
        watcher.close()


def test_a_form_write_queued_on_the_counter_says_so_and_keeps_what_was_typed(deployment):
    server, name = deployment, f"f{uuid.uuid4().hex[:6]}"
    browser = server.login()
    with counter_held(server):
        answer = browser.post(server.url + "/users", allow_redirects=False, timeout=ANSWER_WITHIN,
                              data={"username": name, "email": f"{name}@example.com",
                                    "role": "user", "status": "active", "password": "",
                                    "csrf_token": browser.csrf_token})
        page = browser.get(server.url + "/", timeout=ANSWER_WITHIN)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/")
    assert "The database is busy. Nothing was changed" in page.text
    assert f'value="{name}"' in page.text  # the add form came back with the input
    assert server.api().get(server.url + "/api/users", params={"q": name}).json()["total"] == 0


def test_a_login_behind_a_lock_on_its_users_row_gets_503_after_the_lock_timeout(deployment):
    server = deployment
    visitor = requests.Session()
    csrf = csrf_of(visitor.get(server.url + "/login").text)
    with psycopg.connect(dsn(server)) as holder:
        # A stuck demotion of root: the login's own row must wait for root's row lock.
        holder.execute("SELECT id FROM users WHERE username = 'root' FOR UPDATE")
        login = visitor.post(server.url + "/login", timeout=ANSWER_WITHIN, data={
            "username": "root", "password": ADMIN_PASSWORD, "csrf_token": csrf})
        holder.rollback()
    assert login.status_code == 503 and login.headers["Retry-After"] == "1"
    assert "The database is busy. Nothing was changed" in login.text


def backends_terminated(server: ServerProcess) -> int:
    """Kill every connection of the server's database but this one; return how many."""
    with psycopg.connect(dsn(server), autocommit=True) as conn:
        return sum(1 for (done,) in conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()") if done)


def test_dropped_connections_cost_at_most_a_503_and_the_next_write_reaches_clients(deployment):
    server = deployment
    api = server.api()
    made = api.post(server.url + "/api/users",
                    json={"username": f"d{uuid.uuid4().hex[:6]}", "email": "drop@example.com"})
    user_url = f"{server.url}/api/users/{made.json()['user']['id']}"
    statuses: Counter = Counter()
    retry_after: set[str | None] = set()
    done = threading.Event()
    lock = threading.Lock()

    def traffic(worker: int) -> None:
        http = server.api()
        for i in range(400):  # bounded; stopped early once the kills are over
            if done.is_set():
                return
            try:
                if worker == 0:
                    answer = http.patch(user_url, json={"status": ("active", "disabled")[i % 2]},
                                        timeout=ANSWER_WITHIN)
                else:
                    answer = http.get(server.url + ("/api/users?limit=5" if i % 2 else "/api/users/1"),
                                      timeout=ANSWER_WITHIN)
            except requests.RequestException as exc:  # counted: the test then fails
                with lock:
                    statuses[type(exc).__name__] += 1
                continue
            with lock:
                statuses[answer.status_code] += 1
                if answer.status_code == 503:
                    retry_after.add(answer.headers.get("Retry-After"))

    def answered() -> int:
        with lock:
            return sum(statuses.values())

    workers = [threading.Thread(target=traffic, args=(n,)) for n in range(3)]
    for worker in workers:
        worker.start()
    killed = 0
    try:
        for _ in range(15):
            seen = answered()
            assert wait_until(lambda seen=seen: answered() >= seen + 5), statuses
            killed += backends_terminated(server)
    finally:
        done.set()
        for worker in workers:
            worker.join(ANSWER_WITHIN + 5)
    assert killed >= 15, killed
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0 and retry_after <= {"1"}

    client = LiveClient(server.url, auth={"token": server.token}).connect()
    try:
        assert client.wait_for(lambda c: c.snapshots())
        final = api.patch(user_url, json={"email": f"back{uuid.uuid4().hex[:6]}@example.com"})
        assert final.status_code == 200
        assert client.wait_for_seq(final.json()["seq"])
    finally:
        client.close()
    assert not [line for line in server.output if "unhandled error" in line]


@contextmanager
def database_closed(server: ServerProcess):
    """No connection to the server's database can be made, and the open ones are cut."""
    name = make_url(server.env["USERBOARD_DATABASE_URL"]).database
    with psycopg.connect(dsn(server).rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (name,))
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_an_unreachable_database_gives_503s_and_refused_sockets_then_recovers(deployment):
    server = deployment
    browser = server.login()
    visitor = requests.Session()
    csrf = csrf_of(visitor.get(server.url + "/login").text)
    refusals = []
    client = LiveClient(server.url, auth={"token": server.token})
    client.sio.on("connect_error", refusals.append, namespace="/users")
    start = len(server.output)
    with database_closed(server):
        listed = server.api().get(server.url + "/api/users", timeout=ANSWER_WITHIN)
        page = browser.get(server.url + "/", timeout=ANSWER_WITHIN)
        login = visitor.post(server.url + "/login", timeout=ANSWER_WITHIN, data={
            "username": "root", "password": ADMIN_PASSWORD, "csrf_token": csrf})
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.connect()
        # The background loops fail too while it is away (the relay polls every 0.5 s).
        assert wait_until(lambda: any("change-log relay failed, database unavailable" in line
                                      for line in server.output[start:]))
    assert listed.status_code == 503 and listed.headers["Retry-After"] == "1"
    assert listed.json()["error"]["code"] == "unavailable"
    assert page.status_code == 503 and "The database is busy" in page.text
    assert page.headers["Retry-After"] == "1"
    assert login.status_code == 503 and "The database is busy" in login.text
    assert refusals and refusals[0]["data"]["code"] == "unavailable"
    # Once the database is back, the very next requests work.
    assert server.api().get(server.url + "/api/users").status_code == 200
    assert browser.get(server.url + "/").status_code == 200
    # An outage is one warning line per failure, never a traceback in the operator's log.
    assert "Traceback" not in "".join(server.output[start:])


def test_on_sqlite_a_write_behind_another_writer_gets_503_after_the_busy_timeout(tmp_path):
    site = InProcess(tmp_path, LOCK_TIMEOUT_MS=100)
    try:
        before = site.state()
        holder = sqlite3.connect(site.database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # SQLite's one write lock, held
        try:
            write = site.client.post("/api/users", headers=site.headers,
                                     json={"username": "blocked", "email": "blocked@example.com"})
            read = site.client.get("/api/users", headers=site.headers)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert write.status_code == 503 and write.headers["Retry-After"] == "1"
        assert write.get_json()["error"]["code"] == "unavailable"
        assert read.status_code == 200  # readers run beside a writer (WAL)
        assert site.state() == before
    finally:
        site.close()


@pytest.mark.parametrize("name, value", [
    ("USERBOARD_LOCK_TIMEOUT_MS", "0"), ("USERBOARD_LOCK_TIMEOUT_MS", "2s"),
    ("USERBOARD_STATEMENT_TIMEOUT_MS", "-1"), ("USERBOARD_STATEMENT_TIMEOUT_MS", "9" * 12),
    ("USERBOARD_DB_POOL_SIZE", "0"), ("USERBOARD_DB_READ_POOL_SIZE", "²"),
    ("USERBOARD_DB_PRE_PING", "yes"),
])
def test_bad_pool_and_timeout_settings_are_refused_with_the_name(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_pool_and_timeout_settings_have_their_documented_defaults():
    settings = Settings.from_env({})
    assert (settings.lock_timeout_ms, settings.statement_timeout_ms) == (2000, 10000)
    assert (settings.db_pool_size, settings.db_read_pool_size, settings.db_pre_ping) == (5, 10, True)
