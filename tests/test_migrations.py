"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text

from userboard.migrations import HEAD, alembic_config, include_name, upgrade
from userboard.models import Base, SeqCounter


def test_upgrade_matches_the_models(db_url):
    if not db_url.startswith("sqlite"):
        cleaner = create_engine(db_url)
        with cleaner.begin() as conn:  # the fixture db may hold tables
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        cleaner.dispose()
    upgrade(db_url)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite cannot reflect the expression indexes; that gap is checked below instead.
            warnings.simplefilter("ignore")
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"include_name": include_name}), Base.metadata)
        assert diff == []
        if not db_url.startswith("sqlite"):
            names = {i["name"] for i in inspect(engine).get_indexes("users")}
            assert {"uq_users_username_lower", "uq_users_email_lower"} <= names
        with engine.connect() as conn:
            assert conn.execute(select(SeqCounter.value)).scalar_one() == 0
    finally:
        engine.dispose()


def test_upgrade_twice_is_harmless(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM seq_counter")).scalar_one()
        indexes = {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='users'"))}
    engine.dispose()
    assert rows == 1
    assert {"uq_users_username_lower", "uq_users_email_lower"} <= indexes


def test_servers_starting_together_on_postgresql_take_turns(pg_database):
    import threading

    errors = []

    def migrate():
        try:
            upgrade(pg_database)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    engine = create_engine(pg_database)
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config(pg_database)).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
    engine.dispose()


def test_head_is_alembics_newest_revision():
    """A new migration must move HEAD too, or databases would stop one revision short."""
    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD


def test_a_database_at_head_is_not_handed_to_alembic(tmp_path):
    """Every server start and CLI command checks the schema: at HEAD, without importing Alembic."""
    url = f"sqlite:///{tmp_path / 'current.db'}"
    upgrade(url)
    probe = ("import sys; from userboard.migrations import upgrade; upgrade(sys.argv[1]); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
