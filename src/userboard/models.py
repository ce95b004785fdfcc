"""Tables: users, their API tokens and login sessions. `User` is the first captured model.

`user_dict()` is the one serializer of a user: the API, the Socket.IO events, the change log and
the templates all use it, so a password hash can never leak through a second code path. The
change log and the seq counter are the capture layer's own tables (`changelog.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from .capture import tracked
from .changelog import ChangeLog, SeqCounter  # noqa: F401  (one import gives Base.metadata the whole schema)
from .db import Base, UTCDateTime, iso, utcnow
from .fields import EMAIL, ROLE, STATUS, USERNAME

ROLES = ("admin", "user")
STATUSES = ("active", "disabled")

# Fields whose change is an event. `version` and `updated_at` follow any of them.
DATA_FIELDS = ("username", "email", "role", "status")


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


@tracked("user", changes=DATA_FIELDS, serialize=user_dict)
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


# A token's label: what it is for (e.g. "backup script"), shown by `userboard token list`.
TOKEN_LABEL_MAX = 100


class ApiToken(Base):
    """A bearer token; only its SHA-256 is kept. It works while its owner is an active admin and
    until `expires_at` (never, when NULL). Revoking it deletes the row."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    label: Mapped[str | None] = mapped_column(String(TOKEN_LABEL_MAX), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Updated at most once a minute (auth.TOUCH_EVERY), so using a token is not a write each time.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class LoginSession(Base):
    """A browser login. The cookie carries a random key; only its SHA-256 is kept here.

    Logging out deletes the row, so a copied cookie stops working, and open sockets of that
    login are cut: server-side state is what makes a signed cookie revocable. A login also ends
    when it was not used for the idle timeout, or is older than the absolute one
    (auth.SessionTimeouts); such rows are deleted at the next login.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Updated at most once a minute (auth.TOUCH_EVERY), so a request is not a write each time.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
