"""The change log names the entity and the row key of each event, so any model can be captured.

Existing rows are all about users: they get entity "user" and keep their id as the row key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.add_column(sa.Column("entity", sa.String(32), nullable=False, server_default="user"))
        batch.alter_column("user_id", new_column_name="row_key", existing_type=sa.Integer(),
                           type_=sa.String(64), existing_nullable=False,
                           postgresql_using="user_id::text")
        batch.alter_column("event", existing_type=sa.String(32), type_=sa.String(64),
                           existing_nullable=False)
    with op.batch_alter_table("change_log") as batch:
        batch.alter_column("entity", server_default=None, existing_type=sa.String(32),
                           existing_nullable=False)
        batch.create_index("ix_change_log_entity_row_key", ["entity", "row_key"])


def downgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.drop_index("ix_change_log_entity_row_key")
        batch.alter_column("event", existing_type=sa.String(64), type_=sa.String(32),
                           existing_nullable=False)
        batch.alter_column("row_key", new_column_name="user_id", existing_type=sa.String(64),
                           type_=sa.Integer(), existing_nullable=False,
                           postgresql_using="row_key::integer")
        batch.drop_column("entity")
