"""Engine, session factory and declarative base. Imports no Flask.

The web app, the CLI and scripts build their engines here so that every one of them gets the same
SQLite fixes (working SAVEPOINTs, WAL, foreign keys) and the same naming convention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
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


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine; for SQLite, make SAVEPOINT work and let readers run beside a writer."""
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _fix_sqlite(engine)
    return engine


def _fix_sqlite(engine: Engine) -> None:
    # pysqlite's legacy transaction handling breaks SAVEPOINT; SQLAlchemy's documented recipe is
    # to switch the driver's own BEGIN off and emit BEGIN ourselves.
    memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN")


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
