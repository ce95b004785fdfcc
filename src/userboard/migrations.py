"""Bring a database to the latest schema with Alembic. Imports no Flask.

The migration scripts live in the package's `alembic/` folder (env.py, versions/; files that
Alembic runs, not modules to import), so any install, a wheel included, can migrate. The
Alembic configuration is built here in code, with no alembic.ini; the repository's alembic.ini
points at the same folder, for the `alembic` command in a source checkout
(`alembic revision --autogenerate -m ...`).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from . import triggers
from .db import make_engine

SCRIPTS = Path(__file__).resolve().parent / "alembic"

# The newest revision in alembic/versions (tests/test_migrations.py checks it is Alembic's head).
# A database already there is not handed to Alembic at all: importing and running it costs about
# 180 ms, in every server start and every CLI command.
HEAD = "0006"


def alembic_config(url: str):
    """Alembic's configuration for `url`, with no file: env.py leaves logging to the caller."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# Objects the migrations create that the models do not describe (triggers keep them, or they
# exist on one database only); comparisons between the schema and the models leave them out.
MIGRATION_ONLY = ("user_totals", "users_fts", "ix_users_sort_", "ix_users_trgm_")


def include_name(name, type_, _parent_names) -> bool:
    """Alembic's include_name hook: skip MIGRATION_ONLY objects."""
    return not (name and type_ in ("table", "index") and name.startswith(MIGRATION_ONLY))


# Any constant: servers starting together on PostgreSQL take turns migrating.
MIGRATION_LOCK = 0x75736572


def current_revision(connection) -> str | None:
    """The database's Alembic revision (None before the first migration)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(url: str) -> None:
    """Migrate the database at `url` to HEAD (Alembic only if it is not there), and install the
    users table's triggers as this release defines them."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                # Outside any transaction (where SQLite ignores it): a migration may rebuild a
                # table, and dropping the old one must not cascade to the rows referencing it.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()
            revision = current_revision(connection)
            connection.commit()  # Alembic runs in a transaction of its own
            if revision != HEAD:
                from alembic import command

                config = alembic_config(url)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            # The users table's triggers as this release defines them, whatever revision the
            # database was at: `userboard db upgrade` keeps them in step.
            triggers.install(connection)
            connection.commit()
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()
    finally:
        engine.dispose()
