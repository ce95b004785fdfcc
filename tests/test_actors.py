"""Who made each change: every kind of writer, on the wire, in the change log and in the history.

One user is changed in turn by a browser login (the edit form), an API token, the `userboard`
command, a script that names itself, and psql / sqlite3 outside userboard (as a role of its
own on PostgreSQL, with the grants docs/deployment.md lists), then deleted. A plain wire client
sees each event with its actor; the change-log rows carry the same; and
`GET /api/users/ID/history` answers them newest first, also after the user is deleted.
"""

from __future__ import annotations

import getpass
import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from userboard import users
from userboard.bootstrap import open_database

from .helpers import ServerProcess, need, new_postgres_database, seed_admin
from .wire import WireClient, assert_matches_database

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"session", "token", "cli", "script", "external"}


class Deployment:
    """A real server, and `outside(sql)`: the database's own command-line tool, run as a DBA."""

    def __init__(self, server: ServerProcess, role: str | None = None):
        self.server = server
        self.url = server.env["USERBOARD_DATABASE_URL"]
        self.role = role  # PostgreSQL: the outside writer's own role; SQLite: none

    def outside(self, sql: str) -> None:
        if self.role is None:
            need(shutil.which("sqlite3") is not None, "the sqlite3 command is not installed")
            args = ["sqlite3", "-cmd", ".timeout 5000", make_url(self.url).database, sql]
        else:
            need(shutil.which("psql") is not None, "psql is not installed")
            parsed = make_url(self.url)
            args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", parsed.host,
                    "-p", str(parsed.port or 5432), "-U", self.role, "-d", parsed.database, "-c", sql]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def change_log(self) -> list[tuple[int, dict]]:
        """Every change-log row's seq and payload, read with the plain driver."""
        query = "SELECT seq, payload FROM change_log ORDER BY seq"
        if self.role is None:
            with closing(sqlite3.connect(make_url(self.url).database)) as connection:
                return [(seq, json.loads(payload)) for seq, payload in connection.execute(query)]
        dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as connection:
            return [(seq, payload) for seq, payload in connection.execute(query)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"actors_{request.param}")
    if request.param == "sqlite":
        yield from _serve(Deployment(ServerProcess(workdir)))
        return
    with new_postgres_database("userboard_actors", migrated=True) as url:
        role = f"dba_{uuid.uuid4().hex[:8]}"
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        server = ServerProcess(workdir, env={"USERBOARD_DATABASE_URL": url})
        seed_admin(server)  # migrates: the tables exist to grant on
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {role} LOGIN")
            # What docs/deployment.md says an outside writer needs, plus its own write.
            admin.execute(f"GRANT SELECT, INSERT ON change_log TO {role}")
            admin.execute(f"GRANT SELECT, UPDATE ON seq_counter, user_totals TO {role}")
            admin.execute(f"GRANT SELECT, UPDATE ON users TO {role}")
            try:
                yield from _serve(Deployment(server, role), seeded=True)
            finally:
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")


def _serve(deployment: Deployment, seeded: bool = False):
    if not seeded:
        seed_admin(deployment.server)
    deployment.server.start()
    try:
        yield deployment
    finally:
        deployment.server.stop()


def root_actor(kind: str) -> dict:
    return {"kind": kind, "user_id": 1, "name": "root"}  # seed_admin's admin is the first user


def test_every_kind_of_writer_is_named_on_the_wire_in_the_log_and_in_the_history(deployment):
    server = deployment.server
    wire = WireClient(server.url, {"token": server.token}).connect()
    try:
        api = server.api()
        made = api.post(server.url + "/api/users",
                        json={"username": "subject", "email": "subject@example.com"}).json()
        uid, start = made["user"]["id"], made["seq"]

        browser = server.login()  # through the login form, as a person would
        saved = browser.post(f"{server.url}/users/{uid}/edit", allow_redirects=False, data={
            "csrf_token": browser.csrf_token, "username": "subject", "email": "subject@example.com",
            "role": "admin", "status": "active", "version": "1"})
        assert saved.status_code == 302 and "/edit" not in saved.headers["Location"], saved.text[:300]

        done = server.cli("users", "set", str(uid), "status=disabled")
        assert done.returncode == 0, done.stderr

        script = open_database(deployment.url, actor="nightly")
        try:
            with script.session() as session:
                users.update_user(session, uid, {"email": "nightly@example.com"})
        finally:
            script.close()

        deployment.outside(f"UPDATE users SET username = 'subject_dba' WHERE id = {uid}")
        last = api.delete(f"{server.url}/api/users/{uid}").json()["seq"]
        assert last == start + 5

        expected = [
            ("user_added", root_actor("token")),
            ("user_updated", root_actor("session")),
            ("user_updated", {"kind": "cli", "user_id": None, "name": getpass.getuser()}),
            ("user_updated", {"kind": "script", "user_id": None, "name": "nightly"}),
            ("user_updated", {"kind": "external", "user_id": None, "name": deployment.role}),
            ("user_deleted", root_actor("token")),
        ]
        assert wire.wait_for_seq(last)
        sent = wire.changes(start - 1)
        assert [(name, p["actor"]) for name, p in sent] == expected
        assert_matches_database(wire, server)

        # The history outlives the user: the same payloads, newest first, with name and time.
        answer = api.get(f"{server.url}/api/users/{uid}/history")
        assert answer.status_code == 200, answer.text
        history = answer.json()["events"]
        assert [{k: v for k, v in e.items() if k not in ("event", "committed_at")} for e in history] == [
            payload for _, payload in reversed(sent)]
        assert [e["event"] for e in history] == [name for name, _ in reversed(expected)]
        assert all(e["committed_at"].endswith("Z") for e in history)
        assert [e["committed_at"] for e in history] == sorted(
            (e["committed_at"] for e in history), reverse=True)
    finally:
        wire.close()


def test_a_script_without_a_name_is_named_after_its_program(deployment):
    server = deployment.server
    wire = WireClient(server.url, {"token": server.token}).connect()
    try:
        done = subprocess.run(  # tests/writer.py adds users through open_database(url)
            [sys.executable, "-m", "tests.writer", deployment.url, "", "userboard", "unnamed_", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert wire.wait_for(lambda c: any(
            n == "user_added" and p["user"]["username"] == "unnamed_000" for n, p in c.changes()))
        (_, payload), = [(n, p) for n, p in wire.changes()
                         if n == "user_added" and p["user"]["username"] == "unnamed_000"]
        assert payload["actor"] == {"kind": "script", "user_id": None, "name": "writer.py"}
    finally:
        wire.close()


def test_every_change_log_row_and_every_event_sent_names_a_known_actor(deployment):
    server = deployment.server
    wire = WireClient(server.url, {"token": server.token, "since": 0}).connect()  # a full replay
    try:
        rows = deployment.change_log()
        assert rows, "no change-log rows"
        assert wire.wait_for_seq(rows[-1][0])
        sent = wire.changes()
        assert [p for _, p in sent] == [payload for _, payload in rows]
        for seq, payload in rows:
            actor = payload.get("actor")
            assert isinstance(actor, dict) and actor.keys() == {"kind", "user_id", "name"}, seq
            assert actor["kind"] in KINDS, (seq, actor)
            assert (actor["user_id"] is not None) == (actor["kind"] in ("session", "token")), (seq, actor)
    finally:
        wire.close()
