"""Admin credentials: password hashing, login checks and API tokens. Imports no Flask.

Only a SHA-256 of a token is stored: tokens are 256 random bits, so a fast hash is enough and a
database leak does not reveal usable tokens. A token works only while its owner is an active admin.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .models import ApiToken, User

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


def active_admin(session: Session, user_id) -> User | None:
    """The user with this id if it is still an active admin (session cookies are checked so)."""
    if not isinstance(user_id, int):
        return None
    user = session.get(User, user_id)
    return user if user is not None and user.is_active_admin else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: User) -> str:
    """Store a new token's hash for an admin and return the token itself (shown once)."""
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token)))
    session.commit()
    return token


def user_for_token(session: Session, token) -> User | None:
    """The active admin owning this token, or None."""
    if not isinstance(token, str) or not token or len(token) > 512:
        return None
    user = session.scalar(
        select(User).join(ApiToken, ApiToken.user_id == User.id).where(
            ApiToken.token_hash == _digest(token)
        )
    )
    return user if user is not None and user.is_active_admin else None


class LoginThrottle:
    """Slow down password guessing: per client address and per account name.

    After `free` failures within `window` seconds for a key, every further attempt for that key
    must wait 2**(failures - free) seconds (at most `max_wait`) after the last failure. Kept in
    the memory of one process: each server process throttles on its own.
    """

    def __init__(self, free: int = 5, window: float = 900, max_wait: float = 300, clock=None):
        import time

        self.free, self.window, self.max_wait = free, window, max_wait
        self.clock = clock or time.monotonic
        self._failures: dict[str, tuple[int, float]] = {}

    def _current(self, key: str) -> tuple[int, float]:
        count, last = self._failures.get(key, (0, 0.0))
        if count and self.clock() - last > self.window:
            self._failures.pop(key, None)
            return 0, 0.0
        return count, last

    def wait_seconds(self, *keys: str) -> float:
        """How long the caller must wait before trying again (0 if it may try now)."""
        wait = 0.0
        for key in keys:
            count, last = self._current(key)
            if count >= self.free:
                delay = min(2 ** (count - self.free), self.max_wait)
                wait = max(wait, last + delay - self.clock())
        return max(wait, 0.0)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            count, _ = self._current(key)
            self._failures[key] = (count + 1, now)
        if len(self._failures) > 100_000:  # keep memory bounded under a flood of addresses
            self._failures.clear()

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
