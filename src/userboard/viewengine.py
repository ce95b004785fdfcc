"""Live views: keep every subscribed socket's window equal to its query. Imports no Flask.

Each server process keeps, per subscribed socket, the view (views.View), the window it sent
(at most 200 rows), whether more rows follow, the exact total and the seq they reflect. After
commits (its own, another process's through the queue, or the change-log poll) the engine reads
the change log past the oldest seq it holds, in one snapshot, and for every event decides per
view, in Python, with the same rules as the SQL (views.matches / views.sort_key):

- the total moves by +1 / -1 when the row starts or stops matching;
- a row leaving the window is removed; if more rows follow, the window is refilled from the
  database in the same snapshot (one keyset query), so the next row moves up;
- a row entering the window's range is inserted at its sorted place; a full window drops its
  last row;
- anything else (a row on another page, or past a full window) changes only the total.

The change log carries each row's full state (`change_log.state`), so nothing needs the users
table except refills. A view whose seq the log no longer covers is read again from scratch.
Only views that changed get a message (`users_view_changed`: the window's ids in order, and
the rows the client does not have yet).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sqlalchemy import literal, or_, select

from . import views
from .capture import current_seq
from .changelog import ChangeLog
from .db import log_retry, read_snapshot

log = logging.getLogger(__name__)

ENTITY = "user"
USERS_VIEW = "users_view"
USERS_VIEW_CHANGED = "users_view_changed"
# Change-log rows handled between two yields to the other greenlets.
CHUNK = 200
# Read at most this many events per pass; a longer backlog is read again from scratch.
MAX_BATCH = 5000


@dataclass
class Subscription:
    """One socket's view and what the engine last sent it."""

    number: int  # the socket's view number: clients drop messages of older ones
    view: views.View  # anchored: `start` is a key or None
    rows: list[dict]
    has_more: bool
    total: int
    seq: int
    sent: dict[int, dict] = field(default_factory=dict)  # id -> row, as the client holds it
    sent_cursors: tuple = (None, None)  # next and prev, as the client holds them
    dirty: bool = False  # the window must be read again (in this pass's snapshot)

    def __post_init__(self):
        self.sent = {row["id"]: row for row in self.rows}

    def apply(self, before: dict | None, after: dict | None,
              matches: Callable[[views.View, dict], bool]) -> None:
        """Apply one committed change of one row (None: it did not exist)."""
        view = self.view
        was = before is not None and matches(view, before)
        now = after is not None and matches(view, after)
        self.total += int(now) - int(was)
        if self.dirty:
            return  # the window is read again at the end of the pass anyway
        row_id = (after or before)["id"]
        position = next((i for i, row in enumerate(self.rows) if row["id"] == row_id), None)
        key = views.sort_key(view, after) if now else None
        if position is not None:
            del self.rows[position]
            if self.has_more:
                # Still before the last remaining row: it stays in the window, at its new place.
                if now and self.rows and views.after_start(view, key) and views.comes_before(
                        view, key, views.sort_key(view, self.rows[-1])):
                    self._insert(after, key)
                    return
                self.dirty = True  # the next row must move up: only the database knows it
                return
        elif was and self.has_more and self._beyond(before) and not (now and self._beyond(after)):
            # A row past the window left that region: it may have been the only one there, and
            # only the database knows whether `next` still leads anywhere.
            self.dirty = True
            return
        if not now:
            return
        if not views.after_start(view, key):
            return
        if not self.has_more:
            self._insert(after, key)
            if len(self.rows) > view.limit:
                self.rows.pop()
                self.has_more = True
        elif views.comes_before(view, key, views.sort_key(view, self.rows[-1])):
            self._insert(after, key)
            self.rows.pop()

    def _beyond(self, row: dict) -> bool:
        """Whether the row sorts after the (full) window's last row."""
        return bool(self.rows) and views.comes_before(
            self.view, views.sort_key(self.view, self.rows[-1]), views.sort_key(self.view, row))

    def _insert(self, row: dict, key: tuple) -> None:
        view = self.view
        at = next((i for i, other in enumerate(self.rows)
                   if views.comes_before(view, key, views.sort_key(view, other))), len(self.rows))
        self.rows.insert(at, row)

    def message(self, cursors: views.Cursors) -> dict:
        following, previous = cursors.next_and_prev(self.view, self.rows, self.has_more)
        self.sent_cursors = (following, previous)
        return {"view": self.number, "seq": self.seq, "total": self.total, "users": self.rows,
                "next": following, "prev": previous}

    def changes(self, cursors: views.Cursors, total_before: int, seq: int) -> dict | None:
        """The `users_view_changed` payload at `seq` for what differs from what was sent."""
        fresh = [row for row in self.rows if self.sent.get(row["id"]) != row]
        ids = [row["id"] for row in self.rows]
        following, previous = cursors.next_and_prev(self.view, self.rows, self.has_more)
        if (not fresh and ids == list(self.sent) and self.total == total_before
                and (following, previous) == self.sent_cursors):
            return None
        self.sent = {row["id"]: row for row in self.rows}
        self.sent_cursors = (following, previous)
        return {"view": self.number, "seq": seq, "total": self.total, "ids": ids,
                "users": fresh, "next": following, "prev": previous}


def read_subscription(session, view: views.View, number: int) -> Subscription:
    """A view read from scratch, in one snapshot."""
    with read_snapshot(session):
        seq = current_seq(session)
        view = views.anchor(session, view)
        rows, has_more = views.read_window(session, view)
        total = views.count(session, view)
    return Subscription(number, view, rows, has_more, total, seq)


class ViewEngine:
    """The subscriptions of this process's sockets, and the pass that keeps them current."""

    def __init__(self, sessions, cursors: views.Cursors, send: Callable[[str, str, dict], None]):
        self.sessions = sessions
        self.cursors = cursors
        self.send = send  # send(sid, event, payload): to one local socket, in order
        self.subscriptions: dict[str, Subscription] = {}
        self._numbers: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._passing = threading.Lock()

    # -- called by socket handlers ----------------------------------------------------------

    def subscribe(self, session, sid: str, view: views.View, again: bool = False) -> Subscription:
        """Read the view, remember it for `sid` (replacing its last one) and send it whole.

        `again` re-reads the socket's current view under the same number (a resync).
        """
        with self._lock:
            number = self._numbers.get(sid, 0) + (0 if again else 1)
            self._numbers[sid] = number
        subscription = read_subscription(session, view, number)
        with self._lock:
            if self._numbers.get(sid) != number:  # a newer watch of this socket won the race
                return subscription
            self.subscriptions[sid] = subscription
        self.send(sid, USERS_VIEW, subscription.message(self.cursors))
        self.wake()  # events committed meanwhile are applied by the next pass
        return subscription

    def resend(self, session, sid: str) -> Subscription | None:
        """Send the socket's view whole again, read fresh."""
        current = self.subscriptions.get(sid)
        if current is None:
            return None
        return self.subscribe(session, sid, current.view, again=True)

    def unsubscribe(self, sid: str) -> None:
        with self._lock:
            self.subscriptions.pop(sid, None)
            self._numbers.pop(sid, None)

    def holds(self, sid: str) -> bool:
        return sid in self.subscriptions

    # -- driven by commits and the server's tick ---------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def publish(self, _events) -> None:
        """A capture publisher: this process committed something; look soon, never block."""
        self._wake.set()

    def run(self, tick: float) -> None:
        """The engine's own greenlet (or thread): a pass after each wake-up, at least every tick."""
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            try:
                self.process()
            except Exception:  # a database hiccup must not end the loop
                log_retry(log, "view pass")

    def heartbeat(self) -> None:
        """Tell every viewer the seq its view is at (every change up to it is applied and sent)."""
        for sid, subscription in list(self.subscriptions.items()):
            self.send(sid, "heartbeat", {"seq": subscription.seq})

    def process(self) -> int:
        """One pass: apply every change past the oldest view's seq; return how many views changed."""
        with self._passing:
            subscriptions = dict(self.subscriptions)
            if not subscriptions:
                return 0
            with self.sessions() as session:
                return self._pass(session, subscriptions)

    def _pass(self, session, subscriptions: dict[str, Subscription]) -> int:
        dialect = session.get_bind().dialect.name

        def matches(view: views.View, row: dict) -> bool:
            return _matches(session, dialect, view, row)

        floor = min(s.seq for s in subscriptions.values())
        totals = {sid: s.total for sid, s in subscriptions.items()}
        with read_snapshot(session):
            latest = current_seq(session)
            if latest <= floor:
                return 0
            rows = session.execute(
                select(ChangeLog.seq, ChangeLog.entity, ChangeLog.payload, ChangeLog.state)
                .where(ChangeLog.seq > floor, ChangeLog.seq <= latest)
                .order_by(ChangeLog.seq)
                .limit(MAX_BATCH)
            ).all()
            covered = len(rows) == latest - floor and all(
                row.state is not None for row in rows if row.entity == ENTITY)
            for done, row in enumerate(rows if covered else ()):
                if done and done % CHUNK == 0:
                    time.sleep(0)  # under gevent: let sockets and requests run
                if row.entity != ENTITY:
                    continue
                before, after = _states(row.payload, row.state)
                for subscription in subscriptions.values():
                    if row.seq > subscription.seq:
                        subscription.apply(before, after, matches)
            for subscription in subscriptions.values():
                if not covered:  # the log no longer holds it all: read the view from scratch
                    fresh = _read_in_snapshot(session, subscription.view)
                    subscription.rows, subscription.has_more, subscription.total = fresh
                elif subscription.dirty:
                    subscription.rows, subscription.has_more = views.read_window(
                        session, subscription.view)
                subscription.dirty = False
        changed = 0
        for sid, subscription in subscriptions.items():
            seq = max(subscription.seq, latest)
            payload = subscription.changes(self.cursors, totals[sid], seq)
            if payload is not None and self.subscriptions.get(sid) is subscription:
                self.send(sid, USERS_VIEW_CHANGED, payload)
                changed += 1
            # Only now: a heartbeat must never report a seq whose change was not sent yet.
            subscription.seq = seq
        return changed


def _states(payload: dict, state: dict) -> tuple[dict | None, dict | None]:
    """The row before and after one logged event."""
    if "user" in payload:  # added
        return None, state
    if "changes" in payload:  # updated: the fields that changed had these values before
        return {**state, **payload["previous"]}, state
    return state, None  # deleted


def _matches(session, dialect: str, view: views.View, row: dict) -> bool:
    """views.matches, except where Python's case folding may differ from PostgreSQL's lower()
    (non-ASCII text in a search): there the database itself decides, exactly as ILIKE does."""
    if dialect != "postgresql" or view.q is None or (
            view.q + row["username"] + row["email"]).isascii():
        return views.matches(view, row, dialect)
    if not views.matches(replace(view, q=None), row, dialect):
        return False
    pattern = "%" + views.escape_like(view.q) + "%"
    return bool(session.execute(
        select(or_(literal(row["username"]).ilike(pattern, escape="\\"),
                   literal(row["email"]).ilike(pattern, escape="\\")))).scalar())


def _read_in_snapshot(session, view: views.View) -> tuple[list[dict], bool, int]:
    rows, has_more = views.read_window(session, view)
    return rows, has_more, views.count(session, view)
