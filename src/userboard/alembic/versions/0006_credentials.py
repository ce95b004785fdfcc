"""Credentials an operator can manage: login timeouts, token labels, expiry and last use.

- `login_sessions.last_seen_at`: when the login was last used (the idle timeout counts from it);
  existing logins start from their `created_at`.
- `api_tokens.label`, `expires_at` (NULL: never) and `last_used_at`. Revoking a token deletes
  its row, so no "revoked" column is needed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from userboard.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("login_sessions", sa.Column("last_seen_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE login_sessions SET last_seen_at = created_at")
    # SQLite rebuilds the table for NOT NULL; from this description, not by reflecting it (which
    # would reflect `users` too, whose expression indexes SQLAlchemy cannot read).
    with op.batch_alter_table("login_sessions", copy_from=_login_sessions()) as batch:
        batch.alter_column("last_seen_at", existing_type=UTCDateTime(), nullable=False)
    op.add_column("api_tokens", sa.Column("label", sa.String(100), nullable=True))
    op.add_column("api_tokens", sa.Column("expires_at", UTCDateTime(), nullable=True))
    op.add_column("api_tokens", sa.Column("last_used_at", UTCDateTime(), nullable=True))


def _login_sessions() -> sa.Table:
    """login_sessions as 0002 made it, plus the nullable column added above."""
    return sa.Table(
        "login_sessions", sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_login_sessions_user_id_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_login_sessions"),
        sa.UniqueConstraint("key_hash", name="uq_login_sessions_key_hash"),
        sa.Index("ix_login_sessions_user_id", "user_id"),
    )


def downgrade() -> None:
    for column in ("last_used_at", "expires_at", "label"):
        op.drop_column("api_tokens", column)
    with op.batch_alter_table("login_sessions", copy_from=_login_sessions()) as batch:
        batch.drop_column("last_seen_at")
