"""Test helpers: service checks, fresh databases, a real server process, real Socket.IO clients."""

from __future__ import annotations

import atexit
import os
import select as io_select
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import requests
import socketio
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from userboard.auth import create_token
from userboard.bench.harness import add_admin
from userboard.bench.processes import PY, UserboardProcess
from userboard.bench.processes import free_port as free_port  # re-exported: tests import it from here
from userboard.bench.processes import run_cli as run_cli  # re-exported: tests import it from here
from userboard.bootstrap import open_database
from userboard.migrations import upgrade
from userboard.models import User

IN_CI = os.environ.get("CI") == "true"
ADMIN_PASSWORD = "correct-horse-battery"
EVENT_NAMES = ("users_snapshot", "users_too_large", "user_added", "user_updated", "user_deleted")
CATCH_UPS = ("users_snapshot", "users_too_large")  # what a whole-table socket gets on connect


def wait_until(condition, timeout: float = 10) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; say whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def need(condition: bool, reason: str) -> None:
    """Skip when a service is missing locally; in CI a missing service is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


SHM_NEEDED = 1 << 30  # bytes free in /dev/shm for the suite to keep its files there


def temp_root() -> str | None:
    """Where the suite keeps its files: memory (/dev/shm) if the system has it.

    An fsync costs about 4 ms on this machine's disk and every SQLite commit makes one; the
    suite's databases commit thousands of times. Set PYTEST_DEBUG_TEMPROOT to choose another
    place (pytest reads it for tmp_path). A small /dev/shm (a container's 64 MB) is not used:
    the suite's files (a wheel build, a 20,000-user benchmark database) would fill it.
    """
    chosen = os.environ.get("PYTEST_DEBUG_TEMPROOT")
    if chosen is None and Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) \
            and shutil.disk_usage("/dev/shm").free >= SHM_NEEDED:
        chosen = os.environ["PYTEST_DEBUG_TEMPROOT"] = "/dev/shm"
    return chosen


# -- fresh databases ---------------------------------------------------------------------------
# Migrating costs about 0.2 s on SQLite and 0.5 s on PostgreSQL, and the suite needs a fresh
# migrated database well over a hundred times. So each test process migrates one template per
# database on first use, with `upgrade` itself, and then copies it: the file on SQLite, CREATE
# DATABASE ... TEMPLATE on PostgreSQL. A copy holds exactly what the upgrade left (tables,
# triggers, the capture marker, FTS / pg_trgm objects, the seq counter at 0).
# tests/test_migrations.py migrates empty databases for real.

PG_ADMIN_URL = os.environ.get(
    "USERBOARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_admin(statement: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _create_postgres_database(name: str, template: str | None = None) -> str:
    """Create database `name` (a copy of `template` if given); its URL.

    Its commits do not wait for the disk (synchronous_commit off: 4 ms less per commit here).
    Transactions, their order, locks and visibility are the same; only a crash of the PostgreSQL
    server itself could lose the last moment's commits of a test database.
    """
    try:
        _postgres_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    except Exception as exc:  # no server here
        need(False, f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    _postgres_admin(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_postgres_database(name: str) -> None:
    _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MigratedTemplates:
    """This test process's migrated databases to copy, each made on first use."""

    def __init__(self):
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    def sqlite(self) -> Path:
        if self._sqlite is None:
            folder = Path(tempfile.mkdtemp(prefix="userboard-template-", dir=temp_root()))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            upgrade(f"sqlite:///{folder / 'template.db'}")
            self._sqlite = folder / "template.db"
        return self._sqlite

    def postgres(self) -> str:
        if self._postgres is None:
            name = f"userboard_template_{uuid.uuid4().hex[:8]}"
            url = _create_postgres_database(name)
            try:
                upgrade(url)  # disposes its engine: nobody stays connected to the template
            except BaseException:
                _drop_postgres_database(name)
                raise
            self._postgres = name
        return self._postgres

    def drop(self) -> None:
        """Drop the PostgreSQL template (the SQLite one goes with its folder at exit)."""
        if self._postgres is not None:
            _drop_postgres_database(self._postgres)
            self._postgres = None


templates = MigratedTemplates()


def migrated_sqlite(path: Path) -> str:
    """A migrated SQLite database at `path`, a copy of the template; its URL."""
    path = Path(path)
    assert not path.exists(), f"{path} exists already"
    # The backup API copies a consistent database, write-ahead log included.
    with closing(sqlite3.connect(templates.sqlite())) as source, \
            closing(sqlite3.connect(path)) as target:
        source.backup(target)
    return f"sqlite:///{path}"


@contextmanager
def new_postgres_database(prefix: str, migrated: bool = False):
    """Create a PostgreSQL database (empty, or `migrated`), yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = _create_postgres_database(name, templates.postgres() if migrated else None)
    try:
        yield url
    finally:
        _drop_postgres_database(name)


class ServerProcess(UserboardProcess):
    """`userboard serve` in a subprocess, with an admin, a token and an HTTP session."""

    database_file = "ub.db"

    def __init__(self, workdir, env: dict | None = None):
        # Heartbeats every 0.2 s instead of 2 s: tests that wait for a client to learn the latest
        # seq (a view no write changed) wait a tenth as long; the behaviour is the same.
        super().__init__(workdir, {"USERBOARD_HEARTBEAT_SECONDS": "0.2", **(env or {})})

    def setup_admin(self, username: str = "root", password: str = ADMIN_PASSWORD) -> str:
        return super().setup_admin(username, password)

    def api(self, token: str | None = None) -> requests.Session:
        """An HTTP session that authenticates with the bearer token."""
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token or self.token}"
        return http

    def login(self, username: str = "root", password: str = ADMIN_PASSWORD) -> requests.Session:
        """An HTTP session logged in through the login form, with its CSRF token as attribute."""
        http = requests.Session()
        page = http.get(self.url + "/login")
        csrf = _meta_csrf(page.text)
        answer = http.post(self.url + "/login",
                           data={"username": username, "password": password, "csrf_token": csrf})
        assert answer.status_code == 200, answer.text[:300]
        http.csrf_token = _meta_csrf(answer.text)
        return http


def _meta_csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


class LiveClient:
    """A python-socketio client on /users that records every event it receives."""

    def __init__(self, url: str, auth=None, headers=None, transports=("websocket",), **options):
        """`options` go to socketio.Client (e.g. `http_session`: its cookies and TLS settings)."""
        self.url, self.auth, self.headers, self.transports = url, auth, headers, list(transports)
        self.sio = socketio.Client(reconnection=False, **options)
        self.received: list[tuple[str, dict]] = []
        self._cond = threading.Condition()
        for name in EVENT_NAMES:
            self.sio.on(name, self._handler(name), namespace="/users")

    def _handler(self, name):
        def handle(data):
            with self._cond:
                self.received.append((name, data))
                self._cond.notify_all()

        return handle

    def connect(self) -> LiveClient:
        self.sio.connect(self.url, namespaces=["/users"], auth=self.auth, headers=self.headers,
                         transports=self.transports, wait_timeout=10)
        return self

    def close(self) -> None:
        self.sio.disconnect()

    def wait_for(self, predicate, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def changes(self) -> list[tuple[str, dict]]:
        """Change events, ordered by seq (the threaded client may hand them over reordered)."""
        with self._cond:
            items = [(n, d) for n, d in self.received if n not in CATCH_UPS]
        return sorted(items, key=lambda item: item[1]["seq"])

    def snapshots(self) -> list[dict]:
        """The catch-ups received: snapshots, or `users_too_large` (no "users") on a table over
        2,000 rows (the shared server's table can grow that large when tests repeat)."""
        with self._cond:
            return [d for n, d in self.received if n in CATCH_UPS]

    def wait_for_seq(self, seq: int, timeout: float = 10) -> bool:
        return self.wait_for(lambda c: any(d["seq"] >= seq for _, d in c.changes()), timeout)


def seed_admin(server: ServerProcess, username: str = "root") -> None:
    """Migrate the server's database and add an active admin with a token, in this process.

    What `setup_admin` does without two CLI processes (test_cli.py covers those commands). A
    SQLite file not made yet starts as a copy of the migrated template.
    """
    url = server.env["USERBOARD_DATABASE_URL"]
    path = make_url(url).database
    if url.startswith("sqlite") and path and not Path(path).exists():
        migrated_sqlite(Path(path))
    server.token = add_admin(url, username, ADMIN_PASSWORD)  # migrates: a no-op on a copy


def issue_token(server: ServerProcess, username: str) -> str:
    """A new API token for a user of the server's database (what `userboard token create` does)."""
    database = open_database(server.env["USERBOARD_DATABASE_URL"])
    try:
        with database.session() as session:
            return create_token(session, session.scalars(
                select(User).where(User.username == username)).one())
    finally:
        database.close()


class RedisProcess:
    """A private redis-server on a free port, which a test may kill and bring back."""

    def __init__(self, workdir: Path):
        need(shutil.which("redis-server") is not None, "redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)

        def answers() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        assert wait_until(answers), "redis-server did not start"
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


# Run by the child: make its stdin (the pseudo-terminal) its controlling terminal, so that
# getpass reads /dev/tty from it, then become the command.
_IN_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def run_cli_in_terminal(*args, replies, cwd, env, timeout: float = 30) -> tuple[int, str]:
    """Run the `userboard` command in a pseudo-terminal, as a person at a keyboard would.

    `replies` is [(prompt, line)...]: each line is typed once its prompt has appeared. Returns
    the exit status and everything the terminal showed (typed input too, where it echoes).
    """
    master, slave = os.openpty()
    proc = subprocess.Popen([PY, "-c", _IN_TERMINAL, "-m", "userboard.cli", *args],
                            stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            start_new_session=True)
    os.close(slave)
    shown, answered_up_to, pending = b"", 0, list(replies)
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = io_select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no end after {timeout} s; the terminal shows {shown!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            # A prompt counts once it is complete: getpass prints its trailing space only after
            # switching echo off and flushing typed-ahead input, so type after that.
            while pending and (at := shown.find(pending[0][0].encode(), answered_up_to)) >= 0:
                answered_up_to = at + len(pending[0][0])
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), shown.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
