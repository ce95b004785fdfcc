"""Creating, changing and deleting users: the one place their rules are enforced (the rules
themselves are the table in fields.py). Imports no Flask.

The JSON API, the web forms and the CLI all call these functions and translate `UserError` into
their own kind of answer (HTTP status, form message, one-line CLI error). Each write commits, so
its events are published by the change capture wired on the session's factory.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .auth import end_logins, end_transaction, hash_password
from .fields import EMAIL, FIELDS, PASSWORD, ROLES, STATUSES, USERNAME
from .models import User

USERNAME_RE = re.compile(USERNAME.pattern)
WRITABLE_FIELDS = tuple(FIELDS)
MAX_ID = 2**63 - 1


def N_(message: str) -> str:
    """Mark a message for translation (the web pages translate it; this module stays Babel-free)."""
    return message


class UserError(Exception):
    """A write that was refused; nothing was changed.

    `code` is one of bad_request, invalid, conflict, not_found; `fields` maps a field name to a
    message a person can act on.
    """

    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class BadRequest(UserError):
    code = "bad_request"


class Invalid(UserError):
    code = "invalid"


class Conflict(UserError):
    code = "conflict"


class NotFound(UserError):
    code = "not_found"


def _has_control_chars(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value)


def clean(data, *, partial: bool) -> dict:
    """Check types, names and values of user fields; return them normalized.

    Wrong shapes (not an object, unknown field, not a string) are `BadRequest`; values that break
    a rule are `Invalid`, with one message per field.
    """
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    unknown = sorted(k for k in data if k not in WRITABLE_FIELDS)
    if unknown:
        raise BadRequest(
            "unknown field(s): " + ", ".join(unknown), {k: N_("unknown field") for k in unknown}
        )
    wrong = {k: N_("must be a string") for k, v in data.items() if not isinstance(v, str)}
    if wrong:
        raise BadRequest("wrong type for: " + ", ".join(sorted(wrong)), wrong)
    if not partial:
        missing = {k: N_("this field is required") for k in ("username", "email") if not data.get(k)}
        if missing:
            raise Invalid(N_("some fields are not valid"), missing)

    out, errors = {}, {}
    for key, value in data.items():
        # Passwords are hashed, never shown: any character may be in one.
        if key != "password":
            value = value.strip()
        if key != "password" and _has_control_chars(value):
            errors[key] = N_("must not contain control characters")
            continue
        check = _CHECKS[key]
        try:
            out[key] = check(value)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise Invalid(N_("some fields are not valid"), errors)
    return out


def _check_username(value: str) -> str:
    if not USERNAME_RE.fullmatch(value):
        raise ValueError(N_("use 3-32 characters: letters, digits, '_', '.' or '-'"))
    return value


def _check_email(value: str) -> str:
    if len(value) > EMAIL.max_length:
        raise ValueError(N_("must be at most 254 characters"))
    try:
        # Syntax only: no DNS look-up; intranet hosts and the reserved .test names (which
        # email-validator only admits as a "test environment") are fine for an admin tool.
        return validate_email(
            value, check_deliverability=False, globally_deliverable=False, test_environment=True
        ).normalized
    except EmailNotValidError as exc:
        raise ValueError(N_("not a valid email address")) from exc


def _check_role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(N_("must be admin or user"))
    return value


def _check_status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(N_("must be active or disabled"))
    return value


def _check_password(value: str) -> str:
    if not PASSWORD.min_length <= len(value) <= PASSWORD.max_length:
        raise ValueError(N_("must be 8-256 characters"))
    return value


_CHECKS = {
    "username": _check_username,
    "email": _check_email,
    "role": _check_role,
    "status": _check_status,
    "password": _check_password,
}


def _check_unique(session: Session, values: dict, user_id: int | None = None) -> None:
    taken = {}
    for key, message in (
        ("username", N_("this username is already taken")),
        ("email", N_("this email is already in use")),
    ):
        if key not in values:
            continue
        column = getattr(User, key)
        query = select(User.id).where(func.lower(column) == values[key].lower())
        if user_id is not None:
            query = query.where(User.id != user_id)
        if session.scalar(query.limit(1)) is not None:
            taken[key] = message
    if taken:
        raise Conflict(" and ".join(taken.values()), taken)


def _commit(session: Session) -> None:
    try:
        session.commit()
    except IntegrityError:
        # A concurrent writer took the name between our check and our commit.
        session.rollback()
        raise Conflict(N_("this username or email is already in use")) from None


def get_user(session: Session, user_id) -> User:
    """Return the user or raise NotFound (also for ids no database could hold)."""
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 1 <= user_id <= MAX_ID:
        raise NotFound(f"no user with id {user_id}")
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def list_users(session: Session) -> Iterator[User]:
    """Every user by id, read in batches: a million rows never sit in memory at once."""
    return session.scalars(
        select(User).order_by(User.id).execution_options(yield_per=1000))


def _hash_new_password(session: Session, data) -> str | None:
    """The hash of a valid new password in `data`, made before the write reads anything.

    What the session holds is committed first (auth.end_transaction): the hash runs off the
    gevent loop, and a transaction must not stay open while others commit. An invalid password
    is not hashed; `clean` reports it.
    """
    password = data.get("password") if isinstance(data, dict) else None
    try:
        password = _check_password(password) if isinstance(password, str) else None
    except ValueError:
        return None
    if password is None:
        return None
    end_transaction(session)
    return hash_password(password)


def create_user(session: Session, data) -> User:
    values = clean(data, partial=False)
    password_hash = _hash_new_password(session, data)
    _check_unique(session, values)
    values.pop("password", None)
    user = User(**values)
    if password_hash is not None:
        user.password_hash = password_hash
    session.add(user)
    _commit(session)
    return user


class StaleVersion(Conflict):
    """The caller edited an older version of the row; `current` is the row as it is now."""

    def __init__(self, current: dict):
        super().__init__(
            N_("this user was changed by someone else; review the current values and try again"),
            {"version": f"the current version is {current['version']}"},
        )
        self.current = current


class LastAdmin(Conflict):
    """The change would leave nobody able to log in."""


def _keep_an_admin(session: Session, user: User, values: dict | None) -> None:
    """Refuse to delete (values=None), demote or disable the last active admin.

    The active admins' rows are locked (FOR UPDATE on PostgreSQL) so two concurrent demotions
    cannot both see "one other admin is left".
    """
    if not user.is_active_admin:
        return
    if values is not None and values.get("role", "admin") == "admin" and values.get(
        "status", "active"
    ) == "active":
        return
    admins = session.scalars(
        select(User.id).where(User.role == "admin", User.status == "active").with_for_update()
    ).all()
    if len(admins) <= 1:
        field = "status" if values and "status" in values and values["status"] != "active" else "role"
        raise LastAdmin(
            N_("this is the last active admin; make another user an active admin first"),
            {} if values is None else {field: N_("the last active admin must stay an active admin")},
        )


def update_user(session: Session, user_id, data, expected_version=None,
                keep_login: int | None = None) -> User:
    """Change fields of a user; with `expected_version`, refuse if the row has moved on.

    A new password ends the user's browser logins in the same transaction, but `keep_login`
    (the login making the change, when it is theirs); their API tokens stay. Commits what the
    session holds before hashing a new password (see `_hash_new_password`).
    """
    password_hash = _hash_new_password(session, data)
    user = get_user(session, user_id)
    values = clean(data, partial=True)
    if expected_version is not None and expected_version != user.version:
        raise StaleVersion(user.to_dict())
    _keep_an_admin(session, user, values)
    _check_unique(session, values, user.id)
    values.pop("password", None)
    for key, value in values.items():
        setattr(user, key, value)
    if password_hash is not None:
        # A statement of its own, leaving version and updated_at alone: a password is nothing
        # a client sees, so it is no event, and views sorted by updated_at must not move.
        users = User.__table__
        session.execute(update(users).where(users.c.id == user.id).values(
            password_hash=password_hash, updated_at=users.c.updated_at))
        session.expire(user, ["password_hash"])
        end_logins(session, user.id, keep=keep_login)
    _commit(session)
    return user


def delete_user(session: Session, user_id) -> None:
    user = get_user(session, user_id)
    _keep_an_admin(session, user, None)
    session.delete(user)
    _commit(session)


# What each bulk action sets (None: delete the rows).
BULK_ACTIONS = {
    "disable": {"status": "disabled"},
    "enable": {"status": "active"},
    "make-admin": {"role": "admin"},
    "make-user": {"role": "user"},
    "delete": None,
}
BULK_MAX = 1000


def bulk_update(session: Session, action, ids) -> list[int]:
    """Apply one action to many users in one transaction; return the ids whose row changed.

    All or nothing: an unknown id, or a batch that would leave no active admin, changes nothing.
    Each changed row is one event, with consecutive seqs (one commit).
    """
    if not isinstance(action, str) or action not in BULK_ACTIONS:
        raise BadRequest("unknown action", {"action": "must be one of " + ", ".join(BULK_ACTIONS)})
    if isinstance(ids, list):  # JSON has one number type: 7.0 is the integer 7
        ids = [int(i) if isinstance(i, float) and i.is_integer() else i for i in ids]
    if (not isinstance(ids, list) or not ids or len(ids) > BULK_MAX
            or any(not isinstance(i, int) or isinstance(i, bool) for i in ids)):
        raise BadRequest(f"ids must be a list of 1-{BULK_MAX} user ids",
                         {"ids": f"a list of 1-{BULK_MAX} user ids"})
    wanted = sorted(set(ids))
    if any(not 1 <= i <= MAX_ID for i in wanted):
        raise NotFound("no user with some of these ids", {"ids": "unknown ids"})
    found = {u.id: u for u in session.scalars(
        select(User).where(User.id.in_(wanted)).order_by(User.id).with_for_update())}
    missing = [i for i in wanted if i not in found]
    if missing:
        session.rollback()
        raise NotFound(f"no user with id(s) {', '.join(map(str, missing[:20]))}", {"ids": "unknown ids"})
    values = BULK_ACTIONS[action]
    _keep_an_admin_in_batch(session, list(found.values()), values)
    changed = []
    for user in found.values():
        if values is None:
            session.delete(user)
            changed.append(user.id)
        elif any(getattr(user, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(user, key, value)
            changed.append(user.id)
    _commit(session)
    return changed


def _keep_an_admin_in_batch(session: Session, batch: list[User], values: dict | None) -> None:
    """Refuse a batch that would leave no active admin (the admins' rows are locked)."""
    stays = values is not None and values.get("role", "admin") == "admin" and values.get(
        "status", "active") == "active"
    if stays:
        return
    admins = set(session.scalars(
        select(User.id).where(User.role == "admin", User.status == "active").with_for_update()
    ).all())
    if admins and admins <= {u.id for u in batch}:
        session.rollback()
        raise LastAdmin(
            N_("this is the last active admin; make another user an active admin first"),
            {"ids": N_("the batch includes every active admin")},
        )
