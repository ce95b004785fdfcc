"""Fixtures: databases (SQLite file and PostgreSQL), capturing sessions, the app in this process
(`site`, `app`, `client`, `auth`, flaskr-style) and a real server process (`server`)."""

from __future__ import annotations

import os

import pytest

from userboard.capture import install_capture
from userboard.db import Base, make_engine, make_session_factory
from userboard.publish import EventRecorder

from .browser import chromium  # noqa: F401  (a fixture: one Chromium per test process)
from .gadgets import GadgetBase
from .helpers import (
    IN_CI,
    ServerProcess,
    need,
    new_postgres_database,
    seed_admin,
    temp_root,
    templates,
)
from .inprocess import PASSWORD, InProcess

temp_root()  # before pytest makes its first temporary folder

# The files that take longest, longest first: on several workers (pytest -n N --dist loadfile,
# with --no-loadscope-reorder in pyproject.toml) they start first, and the short ones fill the
# gaps, so the workers finish together instead of one running a long file at the end alone.
LONGEST_FILES = ("test_cli.py", "test_bench.py", "test_browser.py", "test_views.py", "test_scale.py",
                 "test_capture.py", "test_wheel.py", "test_ordering.py", "test_views_live.py",
                 "test_credentials.py", "test_fuzz.py", "test_actors.py", "test_db_faults.py",
                 "test_relay_throughput.py", "test_resume.py", "test_imports.py",
                 "test_outside_writes.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the shared server shows what the server printed meanwhile
    (its log: sockets cut, relay warnings), so a failure in CI can be read without a rerun."""
    report = yield
    server = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and call.when == "call" and isinstance(server, ServerProcess):
        lines = server.output[item.stash.get(_SERVER_LINES, 0):]
        report.sections.append(("server output during the test", "".join(lines[-80:])))
    return report


_SERVER_LINES = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, request):
    """Tests set what they need; nothing leaks in from the developer's shell."""
    for key in list(os.environ):
        if key.startswith(("USERBOARD_", "FLASK_")):
            monkeypatch.delenv(key)
    if "server" in request.fixturenames:  # where the server's output for this test starts
        request.node.stash[_SERVER_LINES] = len(request.getfixturevalue("server").output)


@pytest.fixture(scope="session", autouse=True)
def _database_templates():
    """The migrated templates tests copy (tests/helpers.py), dropped at the end of the run."""
    yield templates
    templates.drop()


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL database for this test run (tests reset its tables)."""
    with new_postgres_database("userboard_test") as url:
        yield url


REDIS_URL = os.environ.get("USERBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url():
    """A reachable Redis server for message-queue tests."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        need(False, f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def pg_database():
    """A new, empty PostgreSQL database for one test."""
    with new_postgres_database("userboard_scale") as url:
        yield url


@pytest.fixture
def migrated_pg_database():
    """A new PostgreSQL database for one test, migrated (a copy of the template)."""
    with new_postgres_database("userboard_migrated", migrated=True) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'capture.db'}"
    return request.getfixturevalue("postgres_url")


class CapturingDatabase:
    """A plain sessionmaker with capture wired, and what it published."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        for metadata in (GadgetBase.metadata, Base.metadata):
            metadata.drop_all(self.engine)
            metadata.create_all(self.engine)
        self.Session = make_session_factory(self.engine)
        self.recorder = EventRecorder()
        self.capture = install_capture(self.Session, self.recorder)

    @property
    def events(self):
        return self.recorder.events

    @property
    def names(self):
        return [e.name for e in self.recorder.events]


@pytest.fixture
def db(db_url):
    database = CapturingDatabase(db_url)
    yield database
    database.engine.dispose()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real `userboard serve` process on SQLite with one admin and one API token.

    Shared by every module: tests on it only add their own uniquely named users and compare
    relative to what they saw first.
    """
    proc = ServerProcess(tmp_path_factory.mktemp("server"))
    seed_admin(proc)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The app in this process, shared by a module's tests (like `server`)."""
    app = InProcess(tmp_path_factory.mktemp("site"))
    yield app
    app.close()


@pytest.fixture
def fresh_site(tmp_path):
    """The app in this process on a database of its own: root is its only admin."""
    app = InProcess(tmp_path)
    yield app
    app.close()


@pytest.fixture
def app(site):
    return site.app


@pytest.fixture
def client(site):
    """A Flask test client with its own cookies and client address."""
    return site.new_client()


class AuthActions:
    """Log the `client` in and out through the forms, as a browser would."""

    def __init__(self, site, client):
        self.site, self.client = site, client
        self.csrf: str | None = None

    def login(self, username: str = "root", password: str = PASSWORD) -> str:
        """Log in; return (and keep) the CSRF token of the logged-in pages."""
        _, self.csrf = self.site.login(self.client, username, password)
        return self.csrf

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.csrf})


@pytest.fixture
def auth(site, client):
    return AuthActions(site, client)


__all__ = ["IN_CI", "new_postgres_database"]
