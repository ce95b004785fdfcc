"""Tables: users, their API tokens, the change log and the commit-ordered sequence counter.

`user_dict()` is the one serializer of a user: the API, the Socket.IO events, the change log and
the templates all use it, so a password hash can never leak through a second code path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    event,
    func,
    insert,
)
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, UTCDateTime, utcnow
from .fields import EMAIL, ROLE, STATUS, USERNAME

ROLES = ("admin", "user")
STATUSES = ("active", "disabled")

# Fields a client sees; the change capture tracks exactly these.
USER_FIELDS = ("id", "username", "email", "role", "status", "version", "created_at", "updated_at")
# Fields whose change is an event. `version` and `updated_at` follow any of them.
DATA_FIELDS = ("username", "email", "role", "status")


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, the form every payload carries."""
    if value is None:
        return None
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def user_dict(row: Any) -> dict:
    """Return the public, JSON-ready form of a user (ORM object or a Core row)."""
    return {
        "id": row.id,
        "username": row.username,
        "email": row.email,
        "role": row.role,
        "status": row.status,
        "version": row.version,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # active_history: the capture layer needs the old value even when it was not loaded yet.
    username: Mapped[str] = mapped_column(String(USERNAME.max_length), active_history=True)
    email: Mapped[str] = mapped_column(String(EMAIL.max_length), active_history=True)
    role: Mapped[str] = mapped_column(String(ROLE.max_length), default="user", active_history=True)
    status: Mapped[str] = mapped_column(String(STATUS.max_length), default="active", active_history=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'user')", name="role"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_lower", func.lower(email), unique=True),
    )

    def to_dict(self) -> dict:
        return user_dict(self)

    @property
    def is_active_admin(self) -> bool:
        return self.role == "admin" and self.status == "active"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


class ApiToken(Base):
    """A bearer token; only its SHA-256 is kept. It works while its owner is an active admin."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """A browser login. The cookie carries a random key; only its SHA-256 is kept here.

    Logging out deletes the row, so a copied cookie stops working, and open sockets of that
    login are cut: server-side state is what makes a signed cookie revocable.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeLog(Base):
    """One row per published event, written in the transaction of the change it describes."""

    __tablename__ = "change_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict] = mapped_column(JSON)
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SeqCounter(Base):
    """A single row holding the last seq handed out.

    Updating it inside the writing transaction locks it until commit, which is what makes seq
    follow commit order across processes (an auto-increment id does not).
    """

    __tablename__ = "seq_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


@event.listens_for(SeqCounter.__table__, "after_create")
def _insert_counter_row(target, connection, **_kw):
    # create_all() (tests, scripts) gets the row too; the Alembic migration inserts it itself.
    connection.execute(insert(target).values(id=1, value=0))
