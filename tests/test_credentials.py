"""Credentials an operator manages: login timeouts, log out everywhere, token revocation and
expiry, password changes, and password hashing that leaves the gevent loop free.

Cut sockets are observed on the shared real server (its background check runs twice a second)
with real Socket.IO clients; time passing is simulated by ageing the credential rows in the
database, the way a clock would. Timeout arithmetic is unit-tested with an explicit `now`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
import socketio
from sqlalchemy import select, update

from userboard import auth
from userboard.bootstrap import open_database
from userboard.config import ConfigError, Settings
from userboard.db import utcnow
from userboard.events import NAMESPACE
from userboard.migrations import alembic_config, upgrade
from userboard.models import ApiToken, LoginSession, User

from .helpers import ADMIN_PASSWORD, issue_token
from .inprocess import PASSWORD, InProcess, csrf_of

# -- on the real server ---------------------------------------------------------------------


class Socket:
    """A python-socketio client on /users that notes when the server cuts it."""

    def __init__(self, server, token: str | None = None, http=None):
        self.sio = socketio.Client(reconnection=False)
        self.cut = threading.Event()
        self.sio.on("disconnect", lambda *_reason: self.cut.set(), namespace=NAMESPACE)
        headers = {"Cookie": f"session={http.cookies['session']}"} if http is not None else None
        self.sio.connect(server.url, namespaces=[NAMESPACE], transports=["websocket"],
                         auth={"token": token} if token else None, headers=headers,
                         wait_timeout=10)

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def sockets():
    opened: list[Socket] = []

    def open_socket(server, **kwargs) -> Socket:
        opened.append(Socket(server, **kwargs))
        return opened[-1]

    yield open_socket
    for socket in opened:
        socket.close()


def new_admin(server) -> dict:
    """A fresh active admin of the shared server (password ADMIN_PASSWORD), never root."""
    name = f"cred_{uuid.uuid4().hex[:8]}"
    answer = server.api().post(server.url + "/api/users", json={
        "username": name, "email": f"{name}@example.com", "role": "admin",
        "password": ADMIN_PASSWORD})
    assert answer.status_code == 201, answer.text
    return answer.json()["user"]


def age(server, table, user_id: int, **ago: timedelta) -> None:
    """Move a user's credential times into the past, as if that much time went by."""
    database = open_database(server.env["USERBOARD_DATABASE_URL"])
    try:
        with database.session() as session:
            session.execute(update(table).where(table.user_id == user_id)
                            .values({column: utcnow() - delta for column, delta in ago.items()}))
            session.commit()
    finally:
        database.close()


def token_row(server, token: str) -> ApiToken:
    database = open_database(server.env["USERBOARD_DATABASE_URL"])
    try:
        with database.session() as session:
            return session.scalars(
                select(ApiToken).where(ApiToken.token_hash == auth._digest(token))).one()
    finally:
        database.close()


def logged_out(http, server) -> bool:
    """Whether this browser session is sent to the login page."""
    answer = http.get(server.url + "/", allow_redirects=False)
    return answer.status_code == 302 and answer.headers["Location"].endswith("/login")


def test_a_revoked_token_gets_401_and_its_socket_is_cut(server, sockets):
    admin = new_admin(server)
    token, other = issue_token(server, admin["username"]), issue_token(server, admin["username"])
    socket, bystander = sockets(server, token=token), sockets(server, token=other)
    used = token_row(server, token)
    assert used.last_used_at is not None  # the socket's connect was a use
    token_id = used.id

    assert server.cli("token", "revoke", str(token_id)).returncode == 0
    assert socket.cut.wait(5)
    assert server.api(token).get(server.url + "/api/users").status_code == 401
    assert not bystander.cut.is_set() and bystander.sio.connected
    assert server.api(other).get(server.url + "/api/users").status_code == 200


def test_an_expired_token_gets_401_and_its_socket_is_cut(server, sockets):
    admin = new_admin(server)
    token = issue_token(server, admin["username"])
    socket = sockets(server, token=token)
    age(server, ApiToken, admin["id"], expires_at=timedelta(seconds=1))
    assert socket.cut.wait(5)
    assert server.api(token).get(server.url + "/api/users").status_code == 401


@pytest.mark.parametrize("ageing", [
    {"last_seen_at": timedelta(minutes=721)},  # idle longer than the default 720 minutes
    {"created_at": timedelta(hours=169), "last_seen_at": timedelta(seconds=5)},  # over 168 h
], ids=["idle", "absolute"])
def test_a_timed_out_login_is_refused_and_its_socket_cut(server, sockets, ageing):
    admin = new_admin(server)
    http = server.login(admin["username"])
    socket = sockets(server, http=http)
    assert not logged_out(http, server)
    age(server, LoginSession, admin["id"], **ageing)
    assert socket.cut.wait(5)
    assert logged_out(http, server)
    assert http.get(server.url + "/api/users").status_code == 401


def test_log_out_everywhere_ends_every_login_of_that_admin_only(server, sockets):
    admin, other_admin = new_admin(server), new_admin(server)
    here, there = server.login(admin["username"]), server.login(admin["username"])
    elsewhere = server.login(other_admin["username"])
    token = issue_token(server, admin["username"])
    cut = [sockets(server, http=here), sockets(server, http=there)]
    kept = [sockets(server, http=elsewhere), sockets(server, token=token)]
    page = here.get(server.url + "/").text
    assert 'id="logout-everywhere"' in page and 'formaction="/logout-everywhere"' in page

    answer = here.post(server.url + "/logout-everywhere", data={"csrf_token": here.csrf_token})
    assert answer.url.endswith("/login") and "You were logged out everywhere." in answer.text
    for socket in cut:
        assert socket.cut.wait(5)
    page = there.get(server.url + "/")
    assert page.url.endswith("/login") and "Your login has ended." in page.text
    assert logged_out(here, server) and logged_out(there, server)
    assert not logged_out(elsewhere, server)
    assert all(socket.sio.connected and not socket.cut.is_set() for socket in kept)
    assert server.api(token).get(server.url + "/api/users").status_code == 200  # tokens stay


def test_log_out_everywhere_over_the_api(server, sockets):
    admin = new_admin(server)
    browsers = [server.login(admin["username"]) for _ in range(2)]
    socket = sockets(server, http=browsers[0])
    token = issue_token(server, admin["username"])
    refused = browsers[1].post(server.url + "/api/logout-everywhere")  # no X-CSRFToken
    assert refused.status_code == 403 and not logged_out(browsers[1], server)

    answer = server.api(token).post(server.url + "/api/logout-everywhere")
    assert answer.status_code == 200 and answer.json() == {"logins_ended": 2}
    assert socket.cut.wait(5)
    assert all(logged_out(http, server) for http in browsers)


def test_passwd_ends_the_users_logins_and_publishes_no_event(server, sockets):
    admin = new_admin(server)
    http = server.login(admin["username"])
    socket = sockets(server, http=http)
    done = server.cli("passwd", admin["username"], "--password-stdin", input="a-new-password\n")
    assert done.returncode == 0, done.stderr
    assert socket.cut.wait(5)
    assert logged_out(http, server)
    server.login(admin["username"], "a-new-password")
    history = server.api().get(f"{server.url}/api/users/{admin['id']}/history").json()["events"]
    assert [e["event"] for e in history] == ["user_added"]  # a password is no event


def test_logins_and_password_changes_at_once_all_succeed(server):
    """Hashes wait in a thread pool while other requests commit: on SQLite no transaction may
    be open across that wait, or its write fails ("database is locked")."""
    admins, others = [new_admin(server) for _ in range(3)], [new_admin(server) for _ in range(3)]
    browsers = []
    for admin in admins:
        for _ in range(3):
            http = requests.Session()
            browsers.append((http, admin, csrf_of(http.get(server.url + "/login").text)))
    answers: list[int] = []

    def log_in(http, admin, csrf):
        answers.append(http.post(server.url + "/login", allow_redirects=False, data={
            "username": admin["username"], "password": ADMIN_PASSWORD, "csrf_token": csrf},
        ).status_code)

    def change_password(admin):
        answers.append(server.api().patch(f"{server.url}/api/users/{admin['id']}",
                                          json={"password": "another-pass-1"}).status_code)

    threads = [threading.Thread(target=log_in, args=b) for b in browsers]
    threads += [threading.Thread(target=change_password, args=(a,)) for a in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == [200] * len(others) + [302] * len(browsers)


def test_concurrent_api_writes_never_find_the_database_locked(server):
    """A credential check ends its read transaction; on SQLite a request that read, then
    waited for its body while others committed, could no longer write (a 500, once in about
    a hundred writes from 32 clients before)."""
    user = server.api().post(server.url + "/api/users", json={
        "username": f"busy_{uuid.uuid4().hex[:6]}", "email": "busy@example.com"}).json()["user"]
    local = threading.local()

    def write(i: int) -> int:
        if not hasattr(local, "http"):
            local.http = server.api()
        return local.http.patch(f"{server.url}/api/users/{user['id']}",
                                json={"email": f"busy{i}@example.com"}).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(write, range(400)))
    assert statuses == [200] * 400


# -- in process -------------------------------------------------------------------------------


def test_a_password_change_through_the_api_keeps_the_callers_login_only(site):
    name = f"pw_{uuid.uuid4().hex[:6]}"
    assert site.client.post("/api/users", headers=site.headers, json={
        "username": name, "email": f"{name}@example.com", "role": "admin",
        "password": PASSWORD}).status_code == 201
    me, csrf = site.login(username=name)
    other, _ = site.login(username=name)
    user_id = me.get("/api/users?q=" + name).get_json()["users"][0]["id"]
    answer = me.patch(f"/api/users/{user_id}", json={"password": "changed-pass-1"},
                      headers={"X-CSRFToken": csrf})
    assert answer.status_code == 200
    assert me.get("/").status_code == 200
    assert other.get("/").status_code == 302


def test_log_out_everywhere_cuts_this_processes_sockets_at_once(site):
    name = f"le_{uuid.uuid4().hex[:6]}"
    site.client.post("/api/users", headers=site.headers, json={
        "username": name, "email": f"{name}@example.com", "role": "admin", "password": PASSWORD})
    browser, csrf = site.login(username=name)
    socket = site.socket(client=browser)
    assert socket.connected_to_users
    assert browser.post("/logout-everywhere", data={"csrf_token": csrf}).status_code == 302
    assert not socket.connected_to_users  # cut in the request, not at the next check
    refused = browser.post("/logout-everywhere", data={"csrf_token": csrf})
    assert refused.status_code == 302 and refused.headers["Location"].endswith("/login")


def test_noting_a_tokens_use_never_waits_for_a_writer(tmp_path):
    """A read with a token whose use is due to be noted, while another connection holds
    SQLite's write lock for longer than the lock timeout: it answers, notes nothing, and the
    next use notes it."""
    site = InProcess(tmp_path, LOCK_TIMEOUT_MS=60_000)
    try:
        token = site.token_for("root")
        headers = {"Authorization": f"Bearer {token}"}
        holder = sqlite3.connect(site.database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        answers: list[int] = []
        reader = threading.Thread(target=lambda: answers.append(
            site.client.get("/api/users", headers=headers).status_code))
        reader.start()
        reader.join(10)  # a deadline for the answer, far below the 60 s a waiting read would take
        holder.execute("ROLLBACK")
        holder.close()
        assert answers == [200]
        with site.database.session() as session:
            assert session.scalar(select(ApiToken.last_used_at).where(
                ApiToken.token_hash == auth._digest(token))) is None
        assert site.client.get("/api/users", headers=headers).status_code == 200
        with site.database.session() as session:
            assert session.scalar(select(ApiToken.last_used_at).where(
                ApiToken.token_hash == auth._digest(token))) is not None
    finally:
        site.close()


@pytest.fixture
def db_session(site):
    with site.database.session() as session:
        yield session


def root(session) -> User:
    return session.scalars(select(User).where(User.username == "root")).one()


TIMEOUTS = auth.SessionTimeouts(idle=timedelta(minutes=30), absolute=timedelta(hours=2))


def test_a_login_lasts_until_its_idle_or_absolute_timeout(db_session):
    start = utcnow()
    key = auth.start_login(db_session, root(db_session), TIMEOUTS, now=start)

    def works(at) -> bool:
        return auth.login_admin(db_session, key, TIMEOUTS, now=at) is not None

    assert works(start + timedelta(minutes=29))  # used: idle counts again from here
    assert works(start + timedelta(minutes=58))
    assert not works(start + timedelta(minutes=58 + 30))  # idle for 30 minutes
    key = auth.start_login(db_session, root(db_session), TIMEOUTS, now=start)
    for minutes in range(20, 120, 20):  # used every 20 minutes ...
        assert works(start + timedelta(minutes=minutes))
    assert not works(start + timedelta(minutes=120))  # ... still ends after 2 hours


def last_seen(session, key) -> object:
    return session.scalar(select(LoginSession.last_seen_at)
                          .where(LoginSession.key_hash == auth._digest(key)))


def test_last_use_is_written_at_most_once_a_minute(db_session):
    start = utcnow()
    key = auth.start_login(db_session, root(db_session), TIMEOUTS, now=start)
    auth.login_admin(db_session, key, TIMEOUTS, now=start + timedelta(seconds=59))
    assert last_seen(db_session, key) == start
    auth.login_admin(db_session, key, TIMEOUTS, now=start + timedelta(seconds=61))
    assert last_seen(db_session, key) == start + timedelta(seconds=61)

    token = auth.create_token(db_session, root(db_session), label="touch")
    row = db_session.scalars(select(ApiToken).where(ApiToken.label == "touch")).one()
    assert row.last_used_at is None
    auth.token_admin(db_session, token, now=start)
    auth.token_admin(db_session, token, now=start + timedelta(seconds=30))
    db_session.refresh(row)
    assert row.last_used_at == start


def test_timed_out_logins_are_deleted_at_the_next_login(db_session):
    start = utcnow() - timedelta(days=30)
    admin = root(db_session)
    stale = [auth.start_login(db_session, admin, TIMEOUTS, now=start) for _ in range(3)]
    fresh = auth.start_login(db_session, admin, TIMEOUTS, now=start + timedelta(minutes=31))
    assert all(last_seen(db_session, key) is None for key in stale)
    assert last_seen(db_session, fresh) is not None


def test_a_token_works_until_it_expires(db_session):
    token = auth.create_token(db_session, root(db_session), expires_in=timedelta(days=1))
    now = utcnow()
    assert auth.token_admin(db_session, token, now=now + timedelta(hours=23)) is not None
    assert auth.token_admin(db_session, token, now=now + timedelta(days=1, seconds=1)) is None
    principal = auth.Principal(root(db_session).id, "token", db_session.scalar(
        select(ApiToken.id).where(ApiToken.token_hash == auth._digest(token))))
    assert auth.still_valid(db_session, [principal]) == {principal}
    assert auth.still_valid(db_session, [principal], now=now + timedelta(days=2)) == set()


def test_session_timeouts_come_from_the_environment():
    settings = Settings.from_env({"USERBOARD_SESSION_IDLE_MINUTES": "15",
                                  "USERBOARD_SESSION_MAX_HOURS": "24"})
    assert (settings.session_idle_minutes, settings.session_max_hours) == (15, 24)
    defaults = Settings.from_env({})
    assert (defaults.session_idle_minutes, defaults.session_max_hours) == (720, 168)


@pytest.mark.parametrize(("name", "value"), [
    ("USERBOARD_SESSION_IDLE_MINUTES", "0"), ("USERBOARD_SESSION_IDLE_MINUTES", "-5"),
    ("USERBOARD_SESSION_IDLE_MINUTES", "1.5"), ("USERBOARD_SESSION_MAX_HOURS", "forever"),
    ("USERBOARD_SESSION_MAX_HOURS", "99999999999"), ("USERBOARD_SESSION_MAX_HOURS", "٣"),
])
def test_bad_session_timeouts_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_migration_starts_existing_logins_at_their_creation(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (username, email) VALUES ('old', 'old@example.com')"))
        conn.execute(text("INSERT INTO login_sessions (user_id, key_hash, created_at) "
                          "VALUES (1, 'k', '2026-01-02 03:04:05.000000')"))
    upgrade(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT created_at, last_seen_at FROM login_sessions")).one()
    engine.dispose()
    assert row[0] == row[1]


# -- hashing and the gevent loop --------------------------------------------------------------

HASHING_PROBE = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, gevent
    from gevent.monkey import get_original
    from userboard import auth

    ticks = []
    def ticker():
        while True:
            gevent.sleep(0.001)
            ticks.append(1)
    gevent.spawn(ticker)
    gevent.sleep(0.01)

    def ticks_during(call):
        before = len(ticks)
        call()
        return len(ticks) - before

    during = {
        "in the pool": ticks_during(lambda: auth.hash_password("a password")),
        "on the loop": ticks_during(lambda: auth.Hashing(0).run(
            auth.generate_password_hash, "a password")),
    }
    lock, running, most = get_original("threading", "Lock")(), [0], [0]
    def busy(_):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        auth.generate_password_hash("a password")
        with lock:
            running[0] -= 1
    gevent.joinall([gevent.spawn(auth.HASHING.run, busy, i) for i in range(6)])
    print(json.dumps({"ticks": during, "most_at_once": most[0]}))
""")


def test_password_hashing_runs_off_the_gevent_loop_a_bounded_number_at_a_time():
    done = subprocess.run([sys.executable, "-c", HASHING_PROBE], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ticks"]["in the pool"] > 0  # the loop went on while the hash ran
    assert result["ticks"]["on the loop"] == 0  # the probe can tell: on the loop, nothing ran
    assert result["most_at_once"] == auth.HASHING.threads  # half the cores, at most 4


def test_the_unknown_user_hash_costs_what_a_real_one_does():
    """authenticate() checks an unknown username against a written-out hash: it must use the
    method (and cost) werkzeug gives new hashes, or a wrong username would answer faster."""
    method = auth.generate_password_hash("x").split("$")[0]
    assert auth._DUMMY_HASH.split("$")[0] == method
    assert auth.check_password_hash(auth._DUMMY_HASH, "not-a-real-password")
