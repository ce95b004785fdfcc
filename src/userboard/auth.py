"""Admin credentials: passwords, browser logins, API tokens. Imports no Flask.

Only a SHA-256 of a token or login key is stored: both are 256 random bits, so a fast hash is
enough and a database leak does not reveal usable credentials. Either works only while its owner
is an active admin, and only while its row exists (logging out deletes the login's row).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .models import ApiToken, LoginSession, User

# A hash to compare against when the username is unknown, so both paths cost the same time.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def hash_password(password: str) -> str:
    return generate_password_hash(password)  # scrypt, werkzeug's default


def authenticate(session: Session, username: str, password: str) -> User | None:
    """Return the active admin with these credentials, or None."""
    user = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if user is None or user.password_hash is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active_admin:
        return None
    return user


@dataclass(frozen=True)
class Principal:
    """Who is behind a request or socket: an active admin and the credential that proved it."""

    user_id: int
    kind: str  # "session" (a browser login) or "token" (an API token)
    credential_id: int


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _valid_secret(secret) -> bool:
    return isinstance(secret, str) and 0 < len(secret) <= 512


def start_login(session: Session, user: User) -> str:
    """Record a browser login and return the key its cookie carries."""
    key = secrets.token_urlsafe(32)
    session.add(LoginSession(user_id=user.id, key_hash=_digest(key)))
    session.commit()
    return key


def end_login(session: Session, key) -> Principal | None:
    """Forget a browser login (log out); return who it was, if it existed."""
    if not _valid_secret(key):
        return None
    row = session.scalar(select(LoginSession).where(LoginSession.key_hash == _digest(key)))
    if row is None:
        return None
    principal = Principal(row.user_id, "session", row.id)
    session.delete(row)
    session.commit()
    return principal


def _admin_by_secret(session: Session, secret, credential, hash_column, kind: str):
    """The active admin whose credential row (login or token) has this secret's hash."""
    if not _valid_secret(secret):
        return None
    row = session.execute(
        select(User, credential.id)
        .join(credential, credential.user_id == User.id)
        .where(hash_column == _digest(secret))
    ).first()
    if row is None or not row[0].is_active_admin:
        return None
    return row[0], Principal(row[0].id, kind, row[1])


def login_admin(session: Session, key) -> tuple[User, Principal] | None:
    """The active admin behind a login cookie's key, or None."""
    return _admin_by_secret(session, key, LoginSession, LoginSession.key_hash, "session")


def create_token(session: Session, user: User) -> str:
    """Store a new token's hash for an admin and return the token itself (shown once)."""
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token)))
    session.commit()
    return token


def token_admin(session: Session, token) -> tuple[User, Principal] | None:
    """The active admin owning this API token, or None."""
    return _admin_by_secret(session, token, ApiToken, ApiToken.token_hash, "token")


def still_valid(session: Session, principals: Iterable[Principal]) -> set[Principal]:
    """Those principals whose credential still exists and whose user is still an active admin."""
    principals = set(principals)
    if not principals:
        return set()
    users = {p.user_id for p in principals}
    admins = set(
        session.scalars(
            select(User.id).where(User.id.in_(users), User.role == "admin", User.status == "active")
        )
    )
    logins = {p.credential_id for p in principals if p.kind == "session"}
    tokens = {p.credential_id for p in principals if p.kind == "token"}
    live_logins = set(session.scalars(select(LoginSession.id).where(LoginSession.id.in_(logins))))
    live_tokens = set(session.scalars(select(ApiToken.id).where(ApiToken.id.in_(tokens))))
    live = {"session": live_logins, "token": live_tokens}
    return {p for p in principals if p.user_id in admins and p.credential_id in live[p.kind]}

