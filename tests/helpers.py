"""Test helpers: a real server process, real Socket.IO clients, service checks."""

from __future__ import annotations

import os
import select as io_select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import socketio
from sqlalchemy import select

from userboard import users
from userboard.auth import create_token
from userboard.bench.processes import PY, UserboardProcess
from userboard.bench.processes import free_port as free_port  # re-exported: tests import it from here
from userboard.bench.processes import run_cli as run_cli  # re-exported: tests import it from here
from userboard.bootstrap import open_database
from userboard.migrations import upgrade
from userboard.models import User

IN_CI = os.environ.get("CI") == "true"
ADMIN_PASSWORD = "correct-horse-battery"
EVENT_NAMES = ("users_snapshot", "user_added", "user_updated", "user_deleted")


def need(condition: bool, reason: str) -> None:
    """Skip when a service is missing locally; in CI a missing service is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


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
            items = [(n, d) for n, d in self.received if n != "users_snapshot"]
        return sorted(items, key=lambda item: item[1]["seq"])

    def snapshots(self) -> list[dict]:
        with self._cond:
            return [d for n, d in self.received if n == "users_snapshot"]

    def wait_for_seq(self, seq: int, timeout: float = 10) -> bool:
        return self.wait_for(lambda c: any(d["seq"] >= seq for _, d in c.changes()), timeout)


def seed_admin(server: ServerProcess, username: str = "root") -> None:
    """Migrate the server's database and add an active admin with a token, in this process.

    What `setup_admin` does without two CLI processes (test_cli.py covers those commands).
    """
    url = server.env["USERBOARD_DATABASE_URL"]
    upgrade(url)
    database = open_database(url)
    try:
        with database.session() as session:
            admin = users.create_user(session, {
                "username": username, "email": f"{username}@example.com", "role": "admin",
                "password": ADMIN_PASSWORD})
            server.token = create_token(session, admin)
    finally:
        database.close()


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
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
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
