"""Admin credentials: passwords, browser logins, API tokens. Imports no Flask.

Only a SHA-256 of a token or login key is stored: both are 256 random bits, so a fast hash is
enough and a database leak does not reveal usable credentials. Either works only while its owner
is an active admin, and only while its row exists (logging out deletes the login's row, revoking
a token deletes the token's). A login also ends after its idle or absolute timeout
(`SessionTimeouts`), a token at its `expires_at`.

Password hashes (scrypt, about 100 ms of CPU each) run in a small thread pool when gevent runs
the process (`HASHING`): on the gevent loop every socket and request of the process would stall
for the length of each login. No transaction may stay open across a hash (`end_transaction`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gevent import monkey
from sqlalchemy import delete, func, or_, select, true
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .db import iso, utcnow
from .models import TOKEN_LABEL_MAX, ApiToken, LoginSession, User

log = logging.getLogger(__name__)


class Hashing:
    """Where CPU-heavy password hashing runs: a pool of `threads` native threads under gevent
    (the calling greenlet waits, the loop serves everyone else), else the caller's thread.

    The pool is small on purpose: a flood of logins queues here instead of taking every core
    (hashlib's scrypt releases the GIL, so each thread can use a core of its own).
    """

    def __init__(self, threads: int):
        self.threads = threads  # 0: on the caller's thread, the loop included (a bench baseline)
        self._pool = None

    def run(self, function, *args):
        if self.threads < 1 or not monkey.is_module_patched("threading"):
            return function(*args)
        if self._pool is None or self._pool.maxsize != self.threads:
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(self.threads)
        return self._pool.apply(function, args)


# Half the cores, at most 4: the other half keeps serving sockets during a flood of logins
# (measured on 2 cores: a second hashing thread doubled the sockets' p99 during 20 logins).
HASHING = Hashing(threads=min(4, max(1, (os.cpu_count() or 2) // 2)))

# A hash to compare against when the username is unknown, so both paths cost the same time.
# Written out rather than computed at import (scrypt: about 90 ms in every process, CLI commands
# included); made with werkzeug's default method, which tests/test_credentials.py checks is still
# the one `generate_password_hash` uses.
_DUMMY_HASH = ("scrypt:32768:8:1$H7ifL4aCNwvKDlPY$1812837d814f335f5b123bbd0ca6d2b1189ec1f9cec67a5bff"
               "5a0ce7c6e11dd066f8d700c965cb091b636b5a338619c56e4e7841fb7fb95c89b34e049d5c4a90")


def hash_password(password: str) -> str:
    """A new password's hash. Call `end_transaction` first when a session is open."""
    return HASHING.run(generate_password_hash, password)  # scrypt, werkzeug's default


def end_transaction(session: Session) -> None:
    """Commit the session's transaction, if one is open, before hashing a password.

    Other greenlets commit while one waits for its hash, and on SQLite a transaction that read
    before such a commit can no longer write ("database is locked"): no transaction may stay
    open across a hash. (expire_on_commit is off: loaded objects keep their values.)
    """
    if session.in_transaction():
        session.commit()


def authenticate(session: Session, username: str, password: str) -> User | None:
    """Return the active admin with these credentials, or None. Ends the session's transaction:
    call it with nothing pending."""
    user = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    end_transaction(session)
    if user is None or user.password_hash is None:
        HASHING.run(check_password_hash, _DUMMY_HASH, password)
        return None
    if not HASHING.run(check_password_hash, user.password_hash, password) or not user.is_active_admin:
        return None
    return user


@dataclass(frozen=True)
class Principal:
    """Who is behind a request or socket: an active admin and the credential that proved it."""

    user_id: int
    kind: str  # "session" (a browser login) or "token" (an API token)
    credential_id: int


@dataclass(frozen=True)
class SessionTimeouts:
    """How long a browser login lasts: `idle` after its last use, `absolute` after it began."""

    idle: timedelta = timedelta(minutes=720)
    absolute: timedelta = timedelta(hours=168)

    def live(self, now: datetime):
        """The SQL condition of a login that has not timed out at `now`."""
        return (LoginSession.created_at > now - self.absolute) & (
            LoginSession.last_seen_at > now - self.idle)


DEFAULT_TIMEOUTS = SessionTimeouts()

# Last-use times are written at most this often per credential: not a write per request.
TOUCH_EVERY = timedelta(minutes=1)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _valid_secret(secret) -> bool:
    return isinstance(secret, str) and 0 < len(secret) <= 512


def start_login(session: Session, user: User, timeouts: SessionTimeouts = DEFAULT_TIMEOUTS,
                now: datetime | None = None) -> str:
    """Record a browser login and return the key its cookie carries; delete timed-out logins."""
    now = now or utcnow()
    session.execute(delete(LoginSession).where(~timeouts.live(now)))
    key = secrets.token_urlsafe(32)
    session.add(LoginSession(user_id=user.id, key_hash=_digest(key), created_at=now,
                             last_seen_at=now))
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


def end_logins(session: Session, user_id: int, keep: int | None = None) -> list[Principal]:
    """Delete every browser login of a user (but `keep`, a login id); return them. The caller
    commits, so this can be part of a larger change (a new password)."""
    query = select(LoginSession.id).where(LoginSession.user_id == user_id)
    if keep is not None:
        query = query.where(LoginSession.id != keep)
    ids = list(session.scalars(query))
    if ids:
        session.execute(delete(LoginSession).where(LoginSession.id.in_(ids)))
    return [Principal(user_id, "session", i) for i in ids]


def _admin_by_secret(session: Session, secret, credential, hash_column, kind: str):
    """The active admin and credential row (login or token) whose hash matches this secret."""
    if not _valid_secret(secret):
        return None
    row = session.execute(
        select(User, credential)
        .join(credential, credential.user_id == User.id)
        .where(hash_column == _digest(secret))
    ).first()
    if row is None or not row[0].is_active_admin:
        return None
    return row[0], row[1], Principal(row[0].id, kind, row[1].id)


def _touch(session: Session, credential, column: str, now: datetime) -> None:
    """Note a credential's use (unless that was noted less than TOUCH_EVERY ago), and end the
    transaction of the check: the request's own work starts on a fresh snapshot, so a wait
    before it writes (reading the request's body, a hash) cannot leave it unable to write on
    SQLite.

    Noting is best effort: while another writer holds SQLite's lock it is skipped (the next
    use notes it), so that a read never fails on this bookkeeping. (SQLite does not wait for a
    write lock in a transaction that has read already: it answers "busy" at once.)
    """
    last = getattr(credential, column)
    if last is None or now - last >= TOUCH_EVERY:
        try:
            setattr(credential, column, now)
            session.flush()
        except SQLAlchemyError as error:
            log.info("last use of a %s not noted this time: %s", column.split("_")[1],
                     type(error).__name__)
            session.rollback()
            return
    end_transaction(session)


def login_admin(session: Session, key, timeouts: SessionTimeouts = DEFAULT_TIMEOUTS,
                now: datetime | None = None) -> tuple[User, Principal] | None:
    """The active admin behind a login cookie's key (noting its use), or None."""
    found = _admin_by_secret(session, key, LoginSession, LoginSession.key_hash, "session")
    if found is None:
        return None
    user, login, principal = found
    now = now or utcnow()
    if login.created_at <= now - timeouts.absolute or login.last_seen_at <= now - timeouts.idle:
        return None
    _touch(session, login, "last_seen_at", now)
    return user, principal


def check_label(label) -> str | None:
    """A token label as stored: trimmed, None when empty; ValueError when it cannot be one."""
    if label is None or not label.strip():
        return None
    label = label.strip()
    if len(label) > TOKEN_LABEL_MAX or not label.isprintable():
        raise ValueError(f"a label is at most {TOKEN_LABEL_MAX} printable characters")
    return label


def create_token(session: Session, user: User, label: str | None = None,
                 expires_in: timedelta | None = None) -> str:
    """Store a new token's hash for an admin and return the token itself (shown once)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token), created_at=now,
                         label=check_label(label),
                         expires_at=now + expires_in if expires_in is not None else None))
    session.commit()
    return token


def token_admin(session: Session, token, now: datetime | None = None
                ) -> tuple[User, Principal] | None:
    """The active admin owning this unexpired API token (noting its use), or None."""
    found = _admin_by_secret(session, token, ApiToken, ApiToken.token_hash, "token")
    if found is None:
        return None
    user, row, principal = found
    now = now or utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        return None
    _touch(session, row, "last_used_at", now)
    return user, principal


def _tokens(session: Session, condition) -> list[dict]:
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    return [
        {"id": t.id, "username": username, "label": t.label, "created_at": iso(t.created_at),
         "expires_at": iso(t.expires_at), "last_used_at": iso(t.last_used_at)}
        for t, username in session.execute(query.where(condition).order_by(ApiToken.id))
    ]


def list_tokens(session: Session, user_id: int | None = None) -> list[dict]:
    """Every token (or a user's), oldest first, as {"id", "username", "label", "created_at",
    "expires_at", "last_used_at"}: never the token or its hash."""
    return _tokens(session, ApiToken.user_id == user_id if user_id is not None else true())


def revoke_token(session: Session, token_id: int) -> dict | None:
    """Delete a token (its sockets are cut at the servers' next check); return what it was."""
    found = _tokens(session, ApiToken.id == token_id)
    if not found:
        return None
    session.execute(delete(ApiToken).where(ApiToken.id == token_id))
    session.commit()
    return found[0]


def still_valid(session: Session, principals: Iterable[Principal],
                timeouts: SessionTimeouts = DEFAULT_TIMEOUTS,
                now: datetime | None = None) -> set[Principal]:
    """Those principals whose credential still exists and has not timed out or expired, and
    whose user is still an active admin."""
    principals = set(principals)
    if not principals:
        return set()
    now = now or utcnow()
    users = {p.user_id for p in principals}
    admins = set(
        session.scalars(
            select(User.id).where(User.id.in_(users), User.role == "admin", User.status == "active")
        )
    )
    logins = {p.credential_id for p in principals if p.kind == "session"}
    tokens = {p.credential_id for p in principals if p.kind == "token"}
    live_logins = set(session.scalars(
        select(LoginSession.id).where(LoginSession.id.in_(logins), timeouts.live(now))))
    live_tokens = set(session.scalars(select(ApiToken.id).where(
        ApiToken.id.in_(tokens), or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now))))
    live = {"session": live_logins, "token": live_tokens}
    return {p for p in principals if p.user_id in admins and p.credential_id in live[p.kind]}

