"""The `userboard` command, run as a separate process as users run it."""

from __future__ import annotations

import json
import os
import re
import stat
from importlib.metadata import version

import pytest
import requests

from userboard import auth, users
from userboard.bootstrap import open_database

from .helpers import ServerProcess, migrated_sqlite, run_cli, run_cli_in_terminal


@pytest.fixture
def env(tmp_path):
    """The command's environment, on a migrated database of its own (a copy of the template:
    each command would otherwise spend a fifth of a second migrating a new file, which
    test_create_admin_reads_password_from_stdin still has it do)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("USERBOARD_")}
    environment["USERBOARD_DATABASE_URL"] = migrated_sqlite(tmp_path / "cli.db")
    return environment


def cli(tmp_path, env, *args, input=None):
    return run_cli(*args, cwd=tmp_path, env=env, input=input)


def add_boss(env) -> None:
    """The admin boss (password s3cret-pass), added in this process: what `create-admin` does,
    whose own tests run it, without one more command run per test."""
    database = open_database(env["USERBOARD_DATABASE_URL"])
    try:
        with database.session() as session:
            users.create_user(session, {"username": "boss", "email": "boss@example.com",
                                        "role": "admin", "password": "s3cret-pass"})
    finally:
        database.close()


def assert_one_line_error(done, text):
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert text in lines[0]
    assert "Traceback" not in done.stderr


def test_create_admin_reads_password_from_stdin(tmp_path, env):
    env["USERBOARD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'new.db'}"  # migrated by the command
    done = cli(tmp_path, env, "create-admin", "boss", "--email", "boss@example.com",
               "--password-stdin", input="s3cret-pass\n")
    assert done.returncode == 0, done.stderr
    assert "boss" in done.stdout


def test_create_admin_with_a_taken_username_exits_1(tmp_path, env):
    add_boss(env)
    done = cli(tmp_path, env, "create-admin", "BOSS", "--email", "b2@example.com",
               "--password-stdin", input="s3cret-pass\n")
    assert_one_line_error(done, "already taken")


def test_create_admin_with_a_bad_email_exits_1(tmp_path, env):
    done = cli(tmp_path, env, "create-admin", "boss", "--email", "nope", "--password-stdin",
               input="s3cret-pass\n")
    assert_one_line_error(done, "email")


def test_token_create_prints_only_the_token(tmp_path, env):
    add_boss(env)
    done = cli(tmp_path, env, "token", "create", "boss")
    assert done.returncode == 0
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}\n", done.stdout)


def test_token_create_for_unknown_admin_exits_1(tmp_path, env):
    assert_one_line_error(cli(tmp_path, env, "token", "create", "ghost"), "no active admin")


def test_version_prints_the_installed_version(tmp_path, env):
    done = cli(tmp_path, env, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"userboard {version('userboard')}\n"


def test_tokens_are_created_with_label_and_expiry_listed_and_revoked(tmp_path, env):
    add_boss(env)
    labelled = cli(tmp_path, env, "token", "create", "boss", "--label", "backup job",
                   "--expires", "30").stdout.strip()
    plain = cli(tmp_path, env, "token", "create", "BOSS").stdout.strip()
    listed = cli(tmp_path, env, "token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    tokens = json.loads(listed.stdout)
    assert [set(t) for t in tokens] == [{"id", "username", "label", "created_at", "expires_at",
                                         "last_used_at"}] * 2
    first, second = tokens
    assert (first["username"], first["label"], second["label"]) == ("boss", "backup job", None)
    assert first["expires_at"] > first["created_at"] and second["expires_at"] is None
    assert first["last_used_at"] is None
    table = cli(tmp_path, env, "token", "list", "boss").stdout
    assert table.splitlines()[0].split() == ["id", "username", "label", "created_at",
                                             "expires_at", "last_used_at"]
    assert "backup job" in table and len(table.splitlines()) == 3
    for secret in (labelled, plain, auth._digest(labelled), auth._digest(plain)):
        assert secret not in listed.stdout + table  # never the token, never its hash

    done = cli(tmp_path, env, "token", "revoke", str(first["id"]))
    assert done.returncode == 0 and "backup job" in done.stdout
    assert [t["id"] for t in json.loads(cli(tmp_path, env, "token", "list", "--json").stdout)] \
        == [second["id"]]


@pytest.mark.parametrize(("args", "message"), [
    (("token", "create", "boss", "--expires", "0"), "--expires takes a whole number of days"),
    (("token", "create", "boss", "--expires", "ten"), "--expires takes a whole number of days"),
    (("token", "create", "boss", "--label", "x" * 101), "--label: a label is at most 100"),
    (("token", "create", "nobody"), "no active admin named 'nobody'"),
    (("token", "list", "nobody"), "no user named 'nobody'"),
    (("token", "revoke", "12"), "no token with id 12"),
    (("token", "revoke", "3x"), "no token with id '3x'"),
    (("passwd", "nobody", "--password-stdin"), "no user named 'nobody'"),
])
def test_token_and_passwd_bad_input_exits_1(tmp_path, env, args, message):
    assert_one_line_error(cli(tmp_path, env, *args, input="long-enough-1\n"), message)


def password_works(env, username: str, password: str) -> bool:
    database = open_database(env["USERBOARD_DATABASE_URL"])
    try:
        with database.session() as session:
            return auth.authenticate(session, username, password) is not None
    finally:
        database.close()


def test_passwd_prompts_twice_in_a_terminal_and_never_echoes(tmp_path, env):
    add_boss(env)
    status, shown = run_cli_in_terminal(
        "passwd", "boss", cwd=tmp_path, env=env,
        replies=[("New password: ", "first-try-1"), ("Repeat for confirmation: ", "typo-try-1"),
                 ("New password: ", "brand-new-pass"),
                 ("Repeat for confirmation: ", "brand-new-pass")])
    assert status == 0, shown
    assert "do not match" in shown and "password of boss changed" in shown
    assert "brand-new-pass" not in shown and "first-try-1" not in shown
    assert password_works(env, "boss", "brand-new-pass")
    assert not password_works(env, "boss", "s3cret-pass")


def test_passwd_from_stdin_follows_the_password_rules(tmp_path, env):
    add_boss(env)
    assert_one_line_error(cli(tmp_path, env, "passwd", "boss", "--password-stdin",
                              input="short\n"), "password: must be 8-256 characters")
    assert password_works(env, "boss", "s3cret-pass")
    done = cli(tmp_path, env, "passwd", "Boss", "--password-stdin", input="from stdin 1\n")
    assert done.returncode == 0, done.stderr
    assert password_works(env, "boss", "from stdin 1")


def test_bad_usage_exits_2(tmp_path, env):
    assert cli(tmp_path, env, "create-admin").returncode == 2
    assert cli(tmp_path, env, "no-such-command").returncode == 2
    assert cli(tmp_path, env, "serve", "--port", "99999").returncode == 2


def test_unreachable_database_exits_1(tmp_path, env):
    env["USERBOARD_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    assert_one_line_error(cli(tmp_path, env, "db", "upgrade"), "cannot migrate")


def test_users_commands_add_set_delete(tmp_path, env):
    done = cli(tmp_path, env, "users", "add", "carol", "--email", "carol@example.com")
    assert done.returncode == 0, done.stderr
    user_id = done.stdout.split("\t")[0]
    done = cli(tmp_path, env, "users", "set", user_id, "role=admin", "status=disabled")
    assert done.returncode == 0 and "admin\tdisabled" in done.stdout
    assert_one_line_error(cli(tmp_path, env, "users", "set", user_id, "role=boss"), "role")
    assert_one_line_error(cli(tmp_path, env, "users", "set", user_id, "bogus"), "FIELD=VALUE")
    assert_one_line_error(cli(tmp_path, env, "users", "set", user_id, "id=4"), "unknown field")
    listed = cli(tmp_path, env, "users", "list").stdout
    assert f"{user_id}\tcarol\tcarol@example.com\tadmin\tdisabled" in listed
    assert cli(tmp_path, env, "users", "delete", user_id).returncode == 0
    assert_one_line_error(cli(tmp_path, env, "users", "delete", user_id), "no user")


def test_serve_on_empty_database_creates_admin_and_prints_password_once(tmp_path):
    server = ServerProcess(tmp_path)
    server.start()
    try:
        text = "".join(server.output)
        password = re.search(r"password: (\S+)", text).group(1)
        assert server.url in text
        http = requests.Session()
        page = http.get(server.url + "/login").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        answer = http.post(server.url + "/login",
                           data={"username": "admin", "password": password, "csrf_token": csrf})
        assert answer.status_code == 200 and 'id="users"' in answer.text
    finally:
        server.stop()
    server.start()  # a second start creates nobody and prints no password
    try:
        assert "password" not in "".join(server.output)
    finally:
        server.stop()
    key_file = tmp_path / "ub.db-secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
