"""What the sections drive: the servers under test, the load-generator processes that hold their
clients, and the writers that make one event per write. Measures nothing itself.

Servers run as their own processes: `userboard serve` plus a commit clock (instrumented.py), or a
baseline server on the same stack (baseline.py). Clients run in loadgen.py processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import requests

from .. import users
from ..auth import create_token
from ..bootstrap import open_database
from ..migrations import upgrade
from .common import ADMIN_PASSWORD, pause
from .processes import PY, ChildProcess, UserboardProcess, free_port


class PushTarget:
    """What the sections need of any server: its clients' URL and auth, and its commit times."""

    url: str
    token: str | None

    def commit_times(self) -> dict[int, int]:
        """seq -> when the server finished the commit (or began the bare emit)."""
        answer = requests.get(self.url + "/bench/commit-times", timeout=30)
        return {int(k): v for k, v in answer.json().items()}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    def auth(self) -> dict:
        return {"token": self.token} if self.token else {}


class InstrumentedServer(UserboardProcess, PushTarget):
    """`userboard serve` plus GET /bench/commit-times (see instrumented.py)."""

    entry = ("userboard.bench.instrumented",)
    database_file = "bench.db"


class BaselineServer(PushTarget):
    """A baseline server of baseline.py: `bare` broadcast or the snapshot `poller`."""

    token = None

    def __init__(self, mode: str, database_url: str | None = None, interval: float | None = None):
        port = free_port()
        args = [PY, "-m", "userboard.bench.baseline", mode, "--port", str(port)]
        if database_url:
            args += ["--database", database_url]
        if interval:
            args += ["--interval", str(interval)]
        self.url = f"http://127.0.0.1:{port}"
        self._child = ChildProcess(args)

    def stop(self) -> None:
        self._child.stop()

    def rss_kb(self) -> int:
        return self._child.rss_kb()


def start_userboard(workdir: Path, database_url: str | None = None,
                    extra_env=None) -> InstrumentedServer:
    """A served userboard with an admin "bench" and its API token (made in this process)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"USERBOARD_SECRET_KEY": "bench", **(extra_env or {})}
    if database_url:
        env["USERBOARD_DATABASE_URL"] = database_url
    server = InstrumentedServer(workdir, env)
    server.token = add_admin(server.env["USERBOARD_DATABASE_URL"], "bench", ADMIN_PASSWORD)
    server.start(timeout=60)
    return server


def add_admin(database_url: str, username: str, password: str) -> str:
    """Migrate the database and add an active admin; return a new API token for it.

    What `userboard create-admin` and `userboard token create` do, in this process: two
    command runs cost a second or more of start-up each (tests/test_cli.py runs the commands).
    """
    upgrade(database_url)
    database = open_database(database_url)
    try:
        with database.session() as session:
            admin = users.create_user(session, {
                "username": username, "email": f"{username}@example.com", "role": "admin",
                "password": password})
            return create_token(session, admin)
    finally:
        database.close()


class LoadGens:
    """Clients spread over load-generator processes of at most `per_process` clients each;
    with `views`, client i holds views[i] (see loadgen.py)."""

    def __init__(self, server: PushTarget, clients: int, per_process: int | None = None,
                 snapshots: bool = False, views: list[dict] | None = None):
        per_process = per_process or int(os.environ.get("USERBOARD_BENCH_PER_LOADGEN", "500"))
        self.procs = []
        offset = 0
        while offset < clients:
            n = min(per_process, clients - offset)
            args = [PY, "-m", "userboard.bench.loadgen", "--url", server.ws_url,
                    "--auth", json.dumps(server.auth()), "--clients", str(n),
                    "--offset", str(offset)]
            if snapshots:
                args.append("--snapshots")
            if views:
                args += ["--views", json.dumps(views[offset:offset + n])]
            self.procs.append(subprocess.Popen(args, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, text=True))
            offset += n
        self.connected = 0
        for proc in self.procs:
            line = json.loads(proc.stdout.readline() or '{"ready": 0}')
            self.connected += line.get("ready", 0)
        pause(0.3)  # let snapshots and first heartbeats pass

    def wait_for(self, seq: int, timeout: float = 60) -> bool:
        """Wait until every connected client has an event at `seq` or later (or `timeout` s)."""
        for proc in self.procs:
            proc.stdin.write(f"wait {seq} {timeout}\n")
            proc.stdin.flush()
        answers = [json.loads(proc.stdout.readline() or '{"reached": false}') for proc in self.procs]
        return all(answer["reached"] for answer in answers)

    def stop(self) -> list[tuple[int, int, int, int]]:
        """Stop recording; return every arrival as (client, seq or taken_at_ns, t_ns, bytes)."""
        arrivals = []
        for proc in self.procs:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc in self.procs:
            line = proc.stdout.readline()
            arrivals.extend(tuple(a) for a in json.loads(line or '{"arrivals": []}')["arrivals"])
            proc.wait(30)
        return arrivals


class UserboardWriter:
    """PATCHes one user's email back and forth: one user_updated event per write."""

    def __init__(self, server: InstrumentedServer):
        self.server = server
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {server.token}"
        name = f"target{uuid.uuid4().hex[:6]}"
        answer = self.http.post(server.url + "/api/users",
                                json={"username": name, "email": f"{name}-a@example.com"})
        answer.raise_for_status()
        self.user = answer.json()["user"]
        self.name, self.flip = name, False
        self.sample_payload = None

    def write(self) -> int:
        self.flip = not self.flip
        email = f"{self.name}-{'b' if self.flip else 'a'}@example.com"
        answer = self.http.patch(f"{self.server.url}/api/users/{self.user['id']}",
                                 json={"email": email})
        answer.raise_for_status()
        body = answer.json()
        if self.sample_payload is None:
            user = body["user"]
            self.sample_payload = {
                "seq": body["seq"], "id": user["id"], "version": user["version"],
                "changes": {"email": email, "updated_at": user["updated_at"]},
                "previous": {"email": f"{self.name}-a@example.com", "updated_at": user["created_at"]},
            }
        return body["seq"]


class BareWriter:
    """POSTs a payload shaped and sized like a userboard user_updated event to the bare server."""

    def __init__(self, server: BaselineServer, payload: dict):
        self.server, self.payload, self.seq = server, payload, 0
        self.http = requests.Session()
        self.lock = threading.Lock()

    def write(self) -> int:
        with self.lock:
            self.seq += 1
            seq = self.seq
        answer = self.http.post(self.server.url + "/emit",
                                json={"name": "user_updated", "payload": {**self.payload, "seq": seq}})
        answer.raise_for_status()
        return seq
