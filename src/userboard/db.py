"""Engine, session factory and declarative base. Imports no Flask.

The web app, the CLI and scripts build their engines here so that every one of them gets the same
SQLite fixes (working SAVEPOINTs, WAL, foreign keys) and the same naming convention. The server
also bounds its database work here (`ServerPools`): one stuck writer must not stall the rest.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """Store naive UTC, hand back aware UTC, whatever the database keeps of time zones."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, the form every payload carries."""
    if value is None:
        return None
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs) -> Engine:
    """Create an engine; for SQLite, make SAVEPOINT work and let readers run beside a writer.

    `busy_timeout_ms` is how long a SQLite connection waits for another one's write lock.
    """
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _fix_sqlite(engine, busy_timeout_ms)
    return engine


def is_memory_sqlite(url) -> bool:
    """An in-memory SQLite database: every connection to it is a database of its own."""
    url = make_url(url)
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _fix_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # pysqlite's legacy transaction handling breaks SAVEPOINT; SQLAlchemy's documented recipe is
    # to switch the driver's own BEGIN off and emit BEGIN ourselves.
    memory = is_memory_sqlite(engine.url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN")


@dataclass(frozen=True)
class ServerPools:
    """How a server bounds its database work, so that one stuck writer stalls only writers.

    Writes, which may wait for the seq counter's row lock, get a pool of their own
    (`pool_size`); everything that never takes the counter (reads, logins, snapshots, socket
    connects) gets another (`read_pool_size`) that queued writers cannot use up. No statement
    waits longer than `lock_timeout_ms` for a lock (a login's row waits for its user's row lock,
    a read for a migration's table lock) or runs longer than `statement_timeout_ms`, and a write
    waits at most `lock_timeout_ms` for a connection. SQLite has no statement timeout; its busy
    timeout is the lock timeout. `pre_ping` tests a pooled connection before each use, so one
    the database dropped is replaced instead of failing a request.
    """

    lock_timeout_ms: int = 2000
    statement_timeout_ms: int = 10000
    pool_size: int = 5
    read_pool_size: int = 10
    pre_ping: bool = True

    def writer_engine(self, url) -> Engine:
        if is_memory_sqlite(url):  # one database per connection: no pool to size
            return make_engine(url, busy_timeout_ms=self.lock_timeout_ms)
        return self._engine(url, self.pool_size, pool_timeout=self.lock_timeout_ms / 1000)

    def reader_engine(self, url) -> Engine | None:
        """The readers' engine, or None where reads must share the writers' (in-memory SQLite)."""
        if is_memory_sqlite(url):
            return None
        return self._engine(url, self.read_pool_size)

    def _engine(self, url, size: int, **pool) -> Engine:
        url = make_url(url)
        options = {}
        if url.get_backend_name() == "postgresql":
            # Set once per connection (libpq options), so no transaction pays a round trip for it.
            timeouts = (f"-c lock_timeout={self.lock_timeout_ms}"
                        f" -c statement_timeout={self.statement_timeout_ms}")
            given = url.query.get("options")
            options["connect_args"] = {"options": f"{given} {timeouts}" if given else timeouts}
        return make_engine(url, busy_timeout_ms=self.lock_timeout_ms, pool_size=size,
                           max_overflow=0, pool_pre_ping=self.pre_ping, **pool, **options)


def unavailable(error: BaseException) -> bool:
    """Whether a database error means "not now" rather than a bug: a lock or statement timeout,
    a busy SQLite database, no pooled connection in time, a connection the database dropped.

    The work it interrupted was rolled back; the caller may try again later (HTTP 503).
    """
    if isinstance(error, sa_exc.TimeoutError):  # the pool had no connection in time
        return True
    return isinstance(error, sa_exc.DBAPIError) and (
        error.connection_invalidated or isinstance(error, sa_exc.OperationalError))


def log_retry(logger: logging.Logger, what: str) -> None:
    """Log, from an `except` block, that a pass of a background loop failed and will be tried
    again: one warning line when the database is unavailable for now (the loop recovers once it
    is back), the traceback for anything else."""
    error = sys.exc_info()[1]
    if error is not None and unavailable(error):
        cause = getattr(error, "orig", None) or error
        logger.warning("%s failed, database unavailable (%s); retrying", what, type(cause).__name__)
    else:
        logger.exception("%s failed; retrying", what)


def connection_lost(error: BaseException) -> bool:
    """Whether the database dropped the connection (the pool has discarded it)."""
    return isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated


def make_session_factory(engine: Engine) -> sessionmaker:
    """Sessions that keep attribute values after commit, so views can answer without a reload."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def read_snapshot(session: Session) -> Iterator[Session]:
    """Run reads in one consistent snapshot of the database, then end that transaction.

    PostgreSQL: a REPEATABLE READ transaction. SQLite (WAL): any read transaction is one.
    """
    session.rollback()  # a fresh transaction, so its isolation level can still be chosen
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    try:
        yield session
    finally:
        session.rollback()
