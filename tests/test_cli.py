"""The `userboard` command, run as a separate process as users run it."""

from __future__ import annotations

import os
import re
import stat
from importlib.metadata import version

import pytest
import requests

from .helpers import ServerProcess, run_cli


@pytest.fixture
def env(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("USERBOARD_")}
    environment["USERBOARD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    return environment


def cli(tmp_path, env, *args, input=None):
    return run_cli(*args, cwd=tmp_path, env=env, input=input)


def assert_one_line_error(done, text):
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert text in lines[0]
    assert "Traceback" not in done.stderr


def test_create_admin_reads_password_from_stdin(tmp_path, env):
    done = cli(tmp_path, env, "create-admin", "boss", "--email", "boss@example.com",
               "--password-stdin", input="s3cret-pass\n")
    assert done.returncode == 0, done.stderr
    assert "boss" in done.stdout


def test_create_admin_with_a_taken_username_exits_1(tmp_path, env):
    args = ("create-admin", "boss", "--email", "boss@example.com", "--password-stdin")
    assert cli(tmp_path, env, *args, input="s3cret-pass\n").returncode == 0
    done = cli(tmp_path, env, "create-admin", "BOSS", "--email", "b2@example.com",
               "--password-stdin", input="s3cret-pass\n")
    assert_one_line_error(done, "already taken")


def test_create_admin_with_a_bad_email_exits_1(tmp_path, env):
    done = cli(tmp_path, env, "create-admin", "boss", "--email", "nope", "--password-stdin",
               input="s3cret-pass\n")
    assert_one_line_error(done, "email")


def test_token_create_prints_only_the_token(tmp_path, env):
    cli(tmp_path, env, "create-admin", "boss", "--email", "boss@example.com", "--password-stdin",
        input="s3cret-pass\n")
    done = cli(tmp_path, env, "token", "create", "boss")
    assert done.returncode == 0
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}\n", done.stdout)


def test_token_create_for_unknown_admin_exits_1(tmp_path, env):
    assert_one_line_error(cli(tmp_path, env, "token", "create", "ghost"), "no active admin")


def test_version_prints_the_installed_version(tmp_path, env):
    done = cli(tmp_path, env, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"userboard {version('userboard')}\n"


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
