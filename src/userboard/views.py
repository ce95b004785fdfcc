"""Views over users: search, filters, sort and keyset pages. Imports no Flask.

A `View` is what the dashboard shows, what `GET /api/users` answers and what a socket keeps
live: rows matching `q` / `role` / `status`, in `sort` / `order` with `id` as the tie-breaker,
`limit` of them starting right after `start` (a sort key, or None for the first page).

Everything about a view lives here, once:
- `parse_view()` checks parameters (from a query string or a socket payload) and decodes cursors;
- `read_window()` / `count()` / `iter_rows()` build the SQL (keyset, never OFFSET; an FTS5 trigram
  table on SQLite and pg_trgm indexes on PostgreSQL for `q`; a trigger-kept `user_totals` table
  for totals without `q`);
- `matches()` and `sort_key()` say the same thing in Python, for the live engine
  (`viewengine.py`): strings compare by code point, which is SQLite's BINARY collation and
  PostgreSQL's "C" collation, the one the SQL asks for.
Cursors are signed (itsdangerous), so a forged or foreign cursor is a clean 400.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, literal, literal_column, or_, select, text, tuple_
from sqlalchemy.orm import Session

from .capture import current_seq
from .db import read_snapshot
from .models import ROLES, STATUSES, User, iso, user_dict
from .users import BadRequest

SORTS = ("id", "username", "email", "created_at", "updated_at")
ORDERS = ("asc", "desc")
PARAMS = ("q", "role", "status", "sort", "order", "limit", "after")
LIMIT_MAX = 200
PAGE_LIMIT = 50  # the dashboard's page size, and a socket view's default
API_LIMIT = 1000  # GET /api/users without `limit`
Q_MAX = 100
TEXT_SORTS = ("username", "email")
# The FTS5 trigram index needs 3 characters; shorter searches scan (see docs/benchmarks.md).
TRIGRAM = 3

# Cursor directions: the page after a key; the page ending before a key (or at it, inclusive).
AFTER, BEFORE, BEFORE_OR_AT = "a", "b", "B"


@dataclass(frozen=True)
class View:
    q: str | None = None
    role: str | None = None
    status: str | None = None
    sort: str = "id"
    order: str = "asc"
    limit: int = PAGE_LIMIT
    start: tuple | None = None  # the page starts right after this (value, id)
    # Set while a "prev" cursor is not yet turned into a start (see `anchor`).
    before: tuple | None = None
    before_inclusive: bool = False

    @property
    def descending(self) -> bool:
        return self.order == "desc"

    def params(self) -> dict:
        """The filter and sort parameters, without defaults (for URLs and CSV links)."""
        out = {k: getattr(self, k) for k in ("q", "role", "status") if getattr(self, k)}
        if self.sort != "id":
            out["sort"] = self.sort
        if self.order != "asc":
            out["order"] = self.order
        return out


class Cursors:
    """Opaque, signed page cursors: a key and a direction, tied to one sort and order."""

    def __init__(self, secret: str | bytes):
        self._signer = URLSafeSerializer(secret, salt="userboard.view-cursor")

    def make(self, view: View, direction: str, key: tuple) -> str:
        return self._signer.dumps([view.sort, view.order, direction, key[0], key[1]])

    def read(self, token: str, sort: str, order: str) -> tuple[str, tuple]:
        try:
            got_sort, got_order, direction, value, row_id = self._signer.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise _bad("after", "not a cursor this server made") from None
        if (got_sort, got_order) != (sort, order):
            raise _bad("after", f"this cursor is for sort={got_sort}&order={got_order}")
        return direction, (value, row_id)

    def next_and_prev(self, view: View, rows: list[dict], has_more: bool) -> tuple[str | None, str | None]:
        """The `next` and `prev` cursors of a window."""
        following = self.make(view, AFTER, sort_key(view, rows[-1])) if rows and has_more else None
        if view.start is None:
            return following, None
        if rows:
            return following, self.make(view, BEFORE, sort_key(view, rows[0]))
        return following, self.make(view, BEFORE_OR_AT, view.start)


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"bad view parameter {field}: {message}", {field: message})


def parse_view(params: Mapping[str, Any], cursors: Cursors, default_limit: int = PAGE_LIMIT) -> View:
    """A View from request parameters or a socket payload; BadRequest (400) if anything is off."""
    if not isinstance(params, Mapping):
        raise BadRequest("a view is an object of parameters")
    unknown = sorted(str(k) for k in params if k not in PARAMS)
    if unknown:
        raise BadRequest("unknown view parameter(s): " + ", ".join(unknown)[:200],
                         {k[:40]: "unknown parameter" for k in unknown[:10]})
    values = {}
    for key in PARAMS:
        value = params.get(key)
        if value is not None and not isinstance(value, str | int) or isinstance(value, bool):
            raise _bad(key, "must be a string")
        values[key] = None if value is None or value == "" else str(value)
    q = values["q"]
    if q is not None:
        if len(q) > Q_MAX:
            raise _bad("q", f"at most {Q_MAX} characters")
        # Controls (C0 and C1; the OpenAPI spec's pattern says the same) and lone surrogates
        # (a socket's JSON can carry them; a URL cannot).
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in q):
            raise _bad("q", "must not contain control characters")
        q = q.strip() or None
    role, status = values["role"], values["status"]
    if role is not None and role not in ROLES:
        raise _bad("role", "must be admin or user")
    if status is not None and status not in STATUSES:
        raise _bad("status", "must be active or disabled")
    sort = values["sort"] or "id"
    if sort not in SORTS:
        raise _bad("sort", "must be one of " + ", ".join(SORTS))
    order = values["order"] or "asc"
    if order not in ORDERS:
        raise _bad("order", "must be asc or desc")
    limit = default_limit
    if params.get("limit") is not None:
        given = str(params["limit"])
        if not re.fullmatch(r"[0-9]{1,4}", given) or not 1 <= int(given) <= LIMIT_MAX:
            raise _bad("limit", f"must be a whole number from 1 to {LIMIT_MAX}")
        limit = int(given)
    view = View(q=q, role=role, status=status, sort=sort, order=order, limit=limit)
    if values["after"] is None:
        return view
    direction, key = cursors.read(values["after"], sort, order)
    if not _valid_key(sort, key) or direction not in (AFTER, BEFORE, BEFORE_OR_AT):
        raise _bad("after", "not a cursor this server made")
    if direction == AFTER:
        return replace(view, start=key)
    return replace(view, before=key, before_inclusive=direction == BEFORE_OR_AT)


def _valid_key(sort: str, key: tuple) -> bool:
    value, row_id = key
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        return False
    if sort == "id":
        return value == row_id
    return isinstance(value, str)


# -- the same view in Python, for the live engine ------------------------------------------------


def _fold_ascii(value: str) -> str:
    return value.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def matches(view: View, row: Mapping, dialect: str) -> bool:
    """Whether a serialized user row is in the view's result (any page)."""
    if view.role is not None and row["role"] != view.role:
        return False
    if view.status is not None and row["status"] != view.status:
        return False
    if view.q is None:
        return True
    fold = _fold_ascii if dialect == "sqlite" else str.lower
    needle = fold(view.q)
    return needle in fold(row["username"]) or needle in fold(row["email"])


def sort_key(view: View, row: Mapping) -> tuple:
    """The row's position in the view: (sort value, id), as cursors carry it."""
    return (row[view.sort], row["id"])


def comes_before(view: View, a: tuple, b: tuple) -> bool:
    """Whether key `a` is before key `b` in the view's order."""
    return a > b if view.descending else a < b


def after_start(view: View, key: tuple) -> bool:
    return view.start is None or comes_before(view, view.start, key)


# -- SQL --------------------------------------------------------------------------------------

_users = User.__table__


def _sort_column(view: View, dialect: str):
    column = _users.c[view.sort]
    if view.sort in TEXT_SORTS and dialect == "postgresql":
        column = column.collate("C")  # code point order, as Python compares
    return column


def _bind_value(view: View, value):
    if view.sort in ("created_at", "updated_at"):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(view: View, dialect: str) -> list:
    clauses = []
    if view.role is not None:
        clauses.append(_users.c.role == view.role)
    if view.status is not None:
        clauses.append(_users.c.status == view.status)
    if view.q is not None:
        pattern = f"%{escape_like(view.q)}%"
        if dialect == "sqlite":
            clauses.append(or_(_users.c.username.like(pattern, escape="\\"),
                               _users.c.email.like(pattern, escape="\\")))
            if len(view.q) >= TRIGRAM:  # narrow by the trigram index first; LIKE keeps it exact
                phrase = '"' + view.q.replace('"', '""') + '"'
                clauses.append(_users.c.id.in_(
                    select(literal_column("rowid")).select_from(text("users_fts"))
                    .where(text("users_fts MATCH :fts").bindparams(fts=phrase))
                ))
        else:
            clauses.append(or_(_users.c.username.ilike(pattern, escape="\\"),
                               _users.c.email.ilike(pattern, escape="\\")))
    return clauses



def _window_query(view: View, dialect: str, start: tuple | None, limit: int):
    query = select(_users).where(*_filters(view, dialect))
    if start is not None:
        query = query.where(_keyset_after(view, dialect, start))
    column = _sort_column(view, dialect)
    if view.descending:
        return query.order_by(column.desc(), _users.c.id.desc()).limit(limit)
    return query.order_by(column.asc(), _users.c.id.asc()).limit(limit)


def _keyset_after(view: View, dialect: str, start: tuple):
    """Rows after `start` in the view's order."""
    key = tuple_(_sort_column(view, dialect), _users.c.id)
    value = tuple_(literal(_bind_value(view, start[0]), _users.c[view.sort].type), literal(start[1]))
    return key < value if view.descending else key > value


def _keyset_before(view: View, dialect: str, end: tuple, inclusive: bool):
    key = tuple_(_sort_column(view, dialect), _users.c.id)
    value = tuple_(literal(_bind_value(view, end[0]), _users.c[view.sort].type), literal(end[1]))
    if view.descending:
        return key >= value if inclusive else key > value
    return key <= value if inclusive else key < value


def _reversed_order(view: View, dialect: str):
    column = _sort_column(view, dialect)
    if view.descending:
        return [column.asc(), _users.c.id.asc()]
    return [column.desc(), _users.c.id.desc()]


def anchor(session: Session, view: View) -> View:
    """Turn a "prev" cursor (the page ending before a key) into a start key."""
    if view.before is None:
        return view
    dialect = session.get_bind().dialect.name
    rows = session.execute(
        select(_users.c.id, _users.c[view.sort])
        .where(*_filters(view, dialect), _keyset_before(view, dialect, view.before, view.before_inclusive))
        .order_by(*_reversed_order(view, dialect))
        .limit(view.limit + 1)
    ).all()
    start = None
    if len(rows) > view.limit:  # there is a row before the page: the page starts after it
        start = _key_of_row(view, rows[-1])
    return replace(view, start=start, before=None, before_inclusive=False)


def _key_of_row(view: View, row) -> tuple:
    """The sort key of an (id, sort column) row, serialized as user_dict does."""
    value = row[1]
    return (iso(value) if isinstance(value, datetime) else value, row[0])


def read_window(session: Session, view: View) -> tuple[list[dict], bool]:
    """The view's rows (serialized) and whether more follow."""
    dialect = session.get_bind().dialect.name
    rows = [user_dict(r) for r in session.execute(
        _window_query(view, dialect, view.start, view.limit + 1)
    )]
    return rows[:view.limit], len(rows) > view.limit


def count(session: Session, view: View) -> int:
    """How many users match the view's filters (all pages)."""
    if view.q is None:  # kept by triggers: no scan, whatever the table's size
        query = select(func.coalesce(func.sum(text("n")), 0)).select_from(text("user_totals"))
        if view.role is not None:
            query = query.where(text("role = :role").bindparams(role=view.role))
        if view.status is not None:
            query = query.where(text("status = :status").bindparams(status=view.status))
        return int(session.execute(query).scalar_one())
    dialect = session.get_bind().dialect.name
    return session.execute(
        select(func.count()).select_from(_users).where(*_filters(view, dialect))
    ).scalar_one()


def iter_rows(session: Session, view: View, batch: int = 1000) -> Iterator[dict]:
    """Every row of the view from its start, in order, read `batch` at a time by keyset."""
    dialect = session.get_bind().dialect.name
    start = view.start
    while True:
        rows = [user_dict(r) for r in session.execute(_window_query(view, dialect, start, batch))]
        yield from rows
        if len(rows) < batch:
            return
        start = sort_key(view, rows[-1])


def answer(session: Session, view: View, cursors: Cursors) -> dict:
    """The view at one seq: `{"seq", "users", "total", "next", "prev"}`, read in one snapshot."""
    with read_snapshot(session):
        seq = current_seq(session)
        view = anchor(session, view)
        rows, has_more = read_window(session, view)
        total = count(session, view)
    following, previous = cursors.next_and_prev(view, rows, has_more)
    return {"seq": seq, "users": rows, "total": total, "next": following, "prev": previous}
