"""Operations: /healthz, /metrics, the access log, JSON logs and request ids.

One real server for the module, on a PostgreSQL database and a Redis of its own (so that the
tests can make them unreachable), logging JSON; access restriction and settings in process.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from userboard.config import ConfigError, Settings

from .helpers import (
    ADMIN_PASSWORD,
    PG_ADMIN_URL,
    LiveClient,
    RedisProcess,
    ServerProcess,
    new_postgres_database,
    seed_admin,
    wait_until,
)
from .inprocess import InProcess


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    redis = RedisProcess(tmp_path_factory.mktemp("ops-redis"))
    redis.start()
    yield redis
    redis.kill()


@pytest.fixture(scope="module")
def ops(tmp_path_factory, redis_server):
    """A server on its own PostgreSQL database and Redis, with JSON logs."""
    with new_postgres_database("userboard_ops") as url:
        proc = ServerProcess(tmp_path_factory.mktemp("ops"), env={
            "USERBOARD_DATABASE_URL": url,
            "USERBOARD_MESSAGE_QUEUE": redis_server.url,
            "USERBOARD_CHANNEL": f"userboard-ops-{uuid.uuid4().hex[:8]}",
            "USERBOARD_LOG_FORMAT": "json",
            # Longer than the health check's own 2 s, so a hung read is the check's to give up on.
            "USERBOARD_LOCK_TIMEOUT_MS": "10000",
        })
        seed_admin(proc)
        proc.start()
        yield proc
        proc.stop()


def health(server) -> tuple[int, dict]:
    answer = requests.get(server.url + "/healthz", timeout=10)
    return answer.status_code, answer.json()


def wait_for_health(server, status: int, deadline: float = 15) -> dict:
    """Poll /healthz until it answers `status`; return its body."""
    end = time.monotonic() + deadline
    while True:
        code, body = health(server)
        if code == status:
            return body
        assert time.monotonic() < end, f"/healthz still {code}: {body}"
        time.sleep(0.1)


def test_healthz_is_ok_without_a_login_and_shows_no_user_data(ops):
    code, body = health(ops)
    assert code == 200
    assert set(body) == {"status", "database", "message_queue", "relay_lag"}
    assert (body["status"], body["database"], body["message_queue"]) == ("ok", "ok", "ok")
    assert isinstance(body["relay_lag"], int) and body["relay_lag"] >= 0


def test_healthz_without_a_message_queue_says_so(site):
    answer = site.client.get("/healthz")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["status"], body["database"], body["message_queue"]) == ("ok", "ok", "not configured")


def test_healthz_is_503_while_the_database_is_unreachable(ops):
    name = ops.env["USERBOARD_DATABASE_URL"].rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # no new connections, and the server's are cut
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name"), {"name": name})
        body = wait_for_health(ops, 503)
        assert body["status"] == "unavailable" and body["database"].startswith("failed (")
        assert body["relay_lag"] is None and body["message_queue"] == "ok"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert wait_for_health(ops, 200)["database"] == "ok"  # the pool reconnects by itself


def test_healthz_gives_up_on_a_hung_database_after_its_timeout(ops):
    """A lock that blocks even reads (as a long migration's would): the probe still answers."""
    holder = create_engine(ops.env["USERBOARD_DATABASE_URL"])
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE seq_counter IN ACCESS EXCLUSIVE MODE"))
            code, body = health(ops)
            assert code == 503 and body["database"] == "no answer within 2 s"
    finally:
        holder.dispose()
    assert wait_for_health(ops, 200)["database"] == "ok"


def test_healthz_is_503_while_redis_is_unreachable(ops, redis_server):
    redis_server.kill()
    try:
        body = wait_for_health(ops, 503)
        assert body["status"] == "unavailable" and body["database"] == "ok"
        assert body["message_queue"].startswith("failed (")
    finally:
        redis_server.start()  # on the same port
    assert wait_for_health(ops, 200)["message_queue"] == "ok"


def scrape(server) -> dict[tuple, float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    answer = requests.get(server.url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def failed_login(server, password: str) -> int:
    with requests.Session() as http:
        page = http.get(server.url + "/login").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        return http.post(server.url + "/login", data={"username": "root", "password": password,
                                                      "csrf_token": csrf}).status_code


def test_metrics_move_after_a_write_a_resync_and_a_failed_login(ops):
    before = scrape(ops)
    client = LiveClient(ops.url, auth={"token": ops.token}).connect()  # a users_snapshot
    try:
        with ops.api() as http:
            assert http.post(ops.url + "/api/users", json={
                "username": "metered", "email": "metered@example.com"}).status_code == 201
        assert client.sio.call("resync", {"since": 0}, namespace="/users", timeout=5)
        assert failed_login(ops, "not-the-password") == 401
        expected = {
            ("userboard_events_published_total", ()): 1,
            ("userboard_events_delivered_total", ()): 1,
            ("userboard_resyncs_total", ()): 1,
            ("userboard_snapshots_total", (("kind", "users_snapshot"),)): 1,
            ("userboard_login_failures_total", (("reason", "wrong_credentials"),)): 1,
            ("userboard_http_request_duration_seconds_count",
             (("method", "POST"), ("route", "/api/users"), ("status", "201"))): 1,
        }
        deadline = time.monotonic() + 10
        while True:  # delivery is asynchronous: poll until every counter has moved
            after = scrape(ops)
            moved = {key: after.get(key, 0) - before.get(key, 0) for key in expected}
            if all(moved[key] >= step for key, step in expected.items()):
                break
            assert time.monotonic() < deadline, moved
            time.sleep(0.05)
        assert after[("userboard_sockets_connected", ())] >= 1
        assert after[("userboard_relay_lag_seqs", ())] >= 0
        assert not any("metered" in str(key) for key in after)  # no user data in labels
    finally:
        client.close()


def json_lines(server) -> list[dict]:
    """The server's log lines (JSON), without what the command prints on stdout."""
    return [json.loads(line) for line in server.output if not line.startswith("userboard serving")]


def test_every_log_line_is_json_and_each_request_gets_one_access_line_with_its_id(ops):
    rid = f"probe-{uuid.uuid4().hex}"
    answer = requests.get(ops.url + "/healthz", headers={"X-Request-ID": rid})
    assert answer.headers["X-Request-ID"] == rid
    # The server's output arrives through a pipe.
    assert wait_until(lambda: any(rid in line for line in ops.output), 5), "no access-log line"
    lines = json_lines(ops)  # every line parses: JSON mode logs nothing else
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("request_id") == rid]
    assert len(mine) == 1
    access = mine[0]
    assert access["logger"] == "userboard.access" and access["level"] == "INFO"
    assert (access["client"], access["method"], access["path"], access["status"]) == (
        "127.0.0.1", "GET", "/healthz", 200)
    assert access["bytes"] == len(answer.content) and access["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", access["time"])


def test_a_log_line_written_during_a_request_carries_its_id(ops):
    rid = f"login-{uuid.uuid4().hex}"
    with requests.Session() as http:
        page = http.get(ops.url + "/login").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        http.post(ops.url + "/login", headers={"X-Request-ID": rid},
                  data={"username": "root", "password": "wrong-again", "csrf_token": csrf})
    def loggers() -> set:
        return {line["logger"] for line in json_lines(ops) if line.get("request_id") == rid}

    assert wait_until(lambda: {"userboard.web", "userboard.access"} <= loggers(), 5), loggers()
    assert ADMIN_PASSWORD not in "".join(ops.output) and "wrong-again" not in "".join(ops.output)


@pytest.mark.parametrize("incoming", ["has spaces in it", "x" * 129, "semi;colon", "tab\there", "naïve"])
def test_an_unsafe_request_id_is_replaced(site, incoming):
    answer = site.client.get("/healthz", headers={"X-Request-ID": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


def test_the_access_log_has_the_address_a_trusted_proxy_reports(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="userboard.access")
    behind = InProcess(tmp_path, PROXY_HOPS=1)
    try:
        answer = behind.app.test_client().get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
        answer.close()  # the line is written when the server closes the response
    finally:
        behind.close()
    [line] = [r for r in caplog.records if r.request_id == answer.headers["X-Request-ID"]]
    assert line.client == "203.0.113.9" and line.getMessage().startswith('203.0.113.9 "GET /healthz" 200')


def test_monitor_allow_restricts_health_and_metrics_by_address(tmp_path):
    guarded = InProcess(tmp_path, MONITOR_ALLOW=("192.0.2.0/24", "2001:db8::/32"))
    try:
        stranger = guarded.app.test_client()  # 127.0.0.1
        monitor = guarded.app.test_client()
        monitor.environ_base["REMOTE_ADDR"] = "192.0.2.7"
        for path in ("/healthz", "/metrics"):
            refused = stranger.get(path)
            assert refused.status_code == 403
            assert refused.get_json()["error"]["code"] == "forbidden"
            assert monitor.get(path).status_code == 200
        assert guarded.client.get("/api/users", headers=guarded.headers).status_code == 200
    finally:
        guarded.close()


@pytest.mark.parametrize(("env", "message"), [
    ({"USERBOARD_LOG_FORMAT": "xml"}, "USERBOARD_LOG_FORMAT must be text or json"),
    ({"USERBOARD_MONITOR_ALLOW": "10.0.0.0/33"}, "USERBOARD_MONITOR_ALLOW must list"),
    ({"USERBOARD_MONITOR_ALLOW": "127.0.0.1,intranet"}, "'intranet'"),
])
def test_bad_ops_settings_are_refused_with_a_message(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_the_cli_refuses_a_bad_log_format_in_one_line(tmp_path):
    done = ServerProcess(tmp_path, env={"USERBOARD_LOG_FORMAT": "yaml"}).cli("db", "upgrade")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: USERBOARD_LOG_FORMAT must be text or json, not 'yaml'"
