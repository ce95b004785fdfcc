"""Views over big tables: sort indexes, substring search, trigger-kept totals, full rows in the log.

- `change_log.state`: the row as it is after the change (before it, for a delete), so the live
  view engine can tell where a row was and where it is without reading the users table.
- `user_totals`: users per (role, status), kept by triggers on every write, from any client, so
  a view's total without a search needs no scan of a million rows.
- Sort indexes `(column, id)` for keyset pages (PostgreSQL: text columns in the "C" collation,
  the order the SQL asks for).
- Substring search: SQLite an FTS5 trigram table kept by triggers; PostgreSQL pg_trgm GIN indexes.

These objects are created here only (not by `Base.metadata.create_all`); `userboard.migrations`
names them so comparisons with the models leave them out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SORTS = ("username", "email", "created_at", "updated_at")

SQLITE = [
    """CREATE TRIGGER user_totals_insert AFTER INSERT ON users BEGIN
         UPDATE user_totals SET n = n + 1 WHERE role = NEW.role AND status = NEW.status;
       END""",
    """CREATE TRIGGER user_totals_delete AFTER DELETE ON users BEGIN
         UPDATE user_totals SET n = n - 1 WHERE role = OLD.role AND status = OLD.status;
       END""",
    """CREATE TRIGGER user_totals_update AFTER UPDATE OF role, status ON users
       WHEN OLD.role IS NOT NEW.role OR OLD.status IS NOT NEW.status BEGIN
         UPDATE user_totals SET n = n - 1 WHERE role = OLD.role AND status = OLD.status;
         UPDATE user_totals SET n = n + 1 WHERE role = NEW.role AND status = NEW.status;
       END""",
    """CREATE VIRTUAL TABLE users_fts USING fts5(
         username, email, content='users', content_rowid='id', tokenize='trigram')""",
    "INSERT INTO users_fts(users_fts) VALUES ('rebuild')",
    """CREATE TRIGGER users_fts_insert AFTER INSERT ON users BEGIN
         INSERT INTO users_fts(rowid, username, email) VALUES (NEW.id, NEW.username, NEW.email);
       END""",
    """CREATE TRIGGER users_fts_delete AFTER DELETE ON users BEGIN
         INSERT INTO users_fts(users_fts, rowid, username, email)
         VALUES ('delete', OLD.id, OLD.username, OLD.email);
       END""",
    """CREATE TRIGGER users_fts_update AFTER UPDATE OF username, email ON users BEGIN
         INSERT INTO users_fts(users_fts, rowid, username, email)
         VALUES ('delete', OLD.id, OLD.username, OLD.email);
         INSERT INTO users_fts(rowid, username, email) VALUES (NEW.id, NEW.username, NEW.email);
       END""",
] + [f"CREATE INDEX ix_users_sort_{c} ON users ({c}, id)" for c in SORTS]

POSTGRESQL = [
    """CREATE FUNCTION userboard_totals_added() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE user_totals t SET n = t.n + c.k
         FROM (SELECT role, status, count(*) AS k FROM new_rows GROUP BY role, status) c
         WHERE t.role = c.role AND t.status = c.status;
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION userboard_totals_removed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE user_totals t SET n = t.n - c.k
         FROM (SELECT role, status, count(*) AS k FROM old_rows GROUP BY role, status) c
         WHERE t.role = c.role AND t.status = c.status;
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION userboard_totals_moved() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE user_totals SET n = n - 1 WHERE role = OLD.role AND status = OLD.status;
         UPDATE user_totals SET n = n + 1 WHERE role = NEW.role AND status = NEW.status;
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION userboard_totals_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE user_totals SET n = 0;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER user_totals_insert AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION userboard_totals_added()""",
    """CREATE TRIGGER user_totals_delete AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION userboard_totals_removed()""",
    """CREATE TRIGGER user_totals_update AFTER UPDATE OF role, status ON users FOR EACH ROW
       WHEN (OLD.role IS DISTINCT FROM NEW.role OR OLD.status IS DISTINCT FROM NEW.status)
       EXECUTE FUNCTION userboard_totals_moved()""",
    """CREATE TRIGGER user_totals_truncate AFTER TRUNCATE ON users
       FOR EACH STATEMENT EXECUTE FUNCTION userboard_totals_truncated()""",
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_users_trgm_username ON users USING gin (username gin_trgm_ops)",
    "CREATE INDEX ix_users_trgm_email ON users USING gin (email gin_trgm_ops)",
    'CREATE INDEX ix_users_sort_username ON users (username COLLATE "C", id)',
    'CREATE INDEX ix_users_sort_email ON users (email COLLATE "C", id)',
    "CREATE INDEX ix_users_sort_created_at ON users (created_at, id)",
    "CREATE INDEX ix_users_sort_updated_at ON users (updated_at, id)",
]


def upgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.add_column(sa.Column("state", sa.JSON(), nullable=True))
    op.create_table(
        "user_totals",
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("role", "status", name="pk_user_totals"),
    )
    op.execute(
        "INSERT INTO user_totals (role, status, n) SELECT r.role, s.status, 0 FROM"
        " (SELECT 'admin' AS role UNION ALL SELECT 'user') r,"
        " (SELECT 'active' AS status UNION ALL SELECT 'disabled') s"
    )
    op.execute(
        "UPDATE user_totals SET n = (SELECT count(*) FROM users"
        " WHERE users.role = user_totals.role AND users.status = user_totals.status)"
    )
    statements = SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("user_totals_insert", "user_totals_delete", "user_totals_update",
                     "users_fts_insert", "users_fts_delete", "users_fts_update"):
            op.execute(f"DROP TRIGGER {name}")
        op.execute("DROP TABLE users_fts")
    else:
        for name in ("user_totals_insert", "user_totals_delete", "user_totals_update",
                     "user_totals_truncate"):
            op.execute(f"DROP TRIGGER {name} ON users")
        for name in ("added", "removed", "moved", "truncated"):
            op.execute(f"DROP FUNCTION userboard_totals_{name}()")
        op.execute("DROP INDEX ix_users_trgm_username")
        op.execute("DROP INDEX ix_users_trgm_email")
    for column in SORTS:
        op.execute(f"DROP INDEX ix_users_sort_{column}")
    op.drop_table("user_totals")
    with op.batch_alter_table("change_log") as batch:
        batch.drop_column("state")
