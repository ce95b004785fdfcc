"""Writes from outside userboard become events: triggers, defaults, the capture marker.

- `capture_marker`: SQLite's capture puts a row here while it writes (see userboard.triggers).
- Database defaults for `version`, `role`, `status`, `created_at`, `updated_at`, so a plain
  `INSERT INTO users (username, email) VALUES (...)` from psql or sqlite3 works.
  SQLite cannot change a column's default in place: the table is rebuilt (same rows, same
  indexes), with foreign keys off (userboard.migrations.upgrade turns them off for SQLite).
- The triggers (`userboard.triggers.install`): they log outside writes with seqs from the same
  counter, move `version`, keep `user_totals` and SQLite's search table, NOTIFY on PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from userboard import triggers

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f000', 'now'))"
DEFAULTS = {  # column definition as 0001 created it -> with its default
    "role VARCHAR(16) NOT NULL": "role VARCHAR(16) DEFAULT 'user' NOT NULL",
    "status VARCHAR(16) NOT NULL": "status VARCHAR(16) DEFAULT 'active' NOT NULL",
    "version INTEGER NOT NULL": "version INTEGER DEFAULT 1 NOT NULL",
    "created_at DATETIME NOT NULL": f"created_at DATETIME DEFAULT {SQLITE_NOW} NOT NULL",
    "updated_at DATETIME NOT NULL": f"updated_at DATETIME DEFAULT {SQLITE_NOW} NOT NULL",
}


def upgrade() -> None:
    op.create_table(
        "capture_marker",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture_marker")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite_users_with_defaults(bind)
    else:
        now = "(now() AT TIME ZONE 'utc')"
        for column, default in (("role", "'user'"), ("status", "'active'"), ("version", "1"),
                                ("created_at", now), ("updated_at", now)):
            op.execute(f"ALTER TABLE users ALTER COLUMN {column} SET DEFAULT {default}")
    triggers.install(bind)


def _rebuild_sqlite_users_with_defaults(bind) -> None:
    table = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'").scalar_one()
    indexes = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'"
        " AND sql IS NOT NULL").scalars().all()
    for plain, with_default in DEFAULTS.items():
        if plain not in table:
            raise RuntimeError(f"users table is not as expected: no {plain!r}")
        table = table.replace(plain, with_default)
    bind.exec_driver_sql(table.replace("CREATE TABLE users", "CREATE TABLE users_rebuilt", 1))
    bind.exec_driver_sql("INSERT INTO users_rebuilt SELECT * FROM users")
    bind.exec_driver_sql("DROP TABLE users")  # its triggers and indexes go with it
    bind.exec_driver_sql("ALTER TABLE users_rebuilt RENAME TO users")
    for index in indexes:
        bind.exec_driver_sql(index)
    problems = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
    if problems:
        raise RuntimeError(f"foreign keys broken by the rebuild: {problems[:5]}")


def downgrade() -> None:
    bind = op.get_bind()
    for statement in triggers.statements(bind.dialect.name):
        dropped = statement.startswith("DROP TRIGGER")
        if dropped and ("outside" in statement or "version" in statement or "truncated" in statement):
            op.execute(statement)
    op.drop_table("capture_marker")
