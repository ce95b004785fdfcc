"""Bring a database to the latest schema with Alembic. Imports no Flask.

The migration scripts live in the repository's top-level `alembic/` folder (the package is
installed in editable mode, as the README says), next to `alembic.ini` for the `alembic` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from . import triggers
from .db import make_engine

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(f"alembic.ini not found at {ini}; install userboard with pip -e")
    config = Config(str(ini))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


# Objects the migrations create that the models do not describe (triggers keep them, or they
# exist on one database only); comparisons between the schema and the models leave them out.
MIGRATION_ONLY = ("user_totals", "users_fts", "ix_users_sort_", "ix_users_trgm_")


def include_name(name, type_, _parent_names) -> bool:
    """Alembic's include_name hook: skip MIGRATION_ONLY objects."""
    return not (name and type_ in ("table", "index") and name.startswith(MIGRATION_ONLY))


# Any constant: servers starting together on PostgreSQL take turns migrating.
MIGRATION_LOCK = 0x75736572


def upgrade(url: str) -> None:
    config = alembic_config(url)
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
