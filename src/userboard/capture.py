"""Commit-time change capture: User rows in, ordered diff events out. Imports no Flask.

Wire any session factory (the web app's, the CLI's, a script's) with::

    from userboard.capture import install_capture
    capture = install_capture(Session, publisher)

and every committed change to a `User` becomes one event:

1. Before a flush, the values each dirty or deleted user had are noted; after the flush, the new
   values (ids, versions, defaults) are read. Both are kept as plain dicts in `session.info`,
   never as live ORM objects. ORM bulk `update(User)` / `delete(User)` statements, which bypass
   flush events, are seen in `do_orm_execute`: the rows they touch are read before and after.
2. Changes coalesce per user within the transaction (added+updated -> added, added+deleted ->
   nothing, updated+updated -> one update with the first "previous", updated+deleted -> deleted,
   an update that changes no field -> nothing). A rolled-back SAVEPOINT restores what was pending
   when it began; releasing one is not a commit.
3. In `before_commit` of the outermost transaction the events get their `seq` from the one-row
   counter (its row lock is held until COMMIT, so seq follows commit order across processes) and
   are written to the change log in the same transaction.
4. After the commit, and only then, the events go to the publishers. No SQL runs there, and a
   publisher that raises is logged and ignored: publishing never fails a write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Protocol

from sqlalchemy import delete, event, inspect, select, update
from sqlalchemy.orm import Session, SessionTransaction

from . import events as ev
from .db import utcnow
from .models import DATA_FIELDS, USER_FIELDS, ChangeLog, SeqCounter, User, iso, user_dict

log = logging.getLogger(__name__)

STATE_KEY = "userboard.capture"
LAST_SEQ_KEY = "userboard.last_commit_seq"
DEFAULT_RETENTION = 10_000
# Old change-log rows are trimmed when seq crosses a multiple of this (at most 100, or a tenth of
# the retention), not on every commit.
PRUNE_EVERY = 100


class Publisher(Protocol):
    def publish(self, events: Sequence[ev.Event]) -> None:
        """Hand committed events on. Must not block the committing caller."""


@dataclass
class _Change:
    """What happened to one user in the current transaction, coalesced."""

    kind: str  # "added" | "updated" | "deleted"
    before: dict | None  # the row at transaction start (updated, deleted)
    after: dict | None  # the row now (added, updated)


def _merge(old: _Change | None, new: _Change) -> _Change | None:
    """Coalesce a newly observed change into what the transaction already holds."""
    if old is None:
        return new
    if old.kind == "added":
        if new.kind == "deleted":
            return None
        return _Change("added", None, new.after)
    if new.kind == "deleted":
        return _Change("deleted", old.before, None)
    if old.kind == "deleted":  # the same primary key inserted again
        return _Change("updated", old.before, new.after)
    return _Change("updated", old.before, new.after)


class _Pending:
    """Changes of one session's current transaction, plus snapshots for open savepoints."""

    def __init__(self) -> None:
        self.changes: dict[int, _Change] = {}
        self.savepoints: dict[SessionTransaction, dict[int, _Change]] = {}
        self.before_flush: dict[int, dict] = {}
        self.prepared: list[ev.Event] = []

    def observe(self, user_id: int, change: _Change) -> None:
        merged = _merge(self.changes.pop(user_id, None), change)
        if merged is not None:
            self.changes[user_id] = merged

    def reset(self) -> None:
        self.changes.clear()
        self.savepoints.clear()
        self.before_flush.clear()
        self.prepared = []


def _pending(session: Session) -> _Pending:
    state = session.info.get(STATE_KEY)
    if state is None:
        state = session.info[STATE_KEY] = _Pending()
    return state


def _committed_row(obj: User) -> dict:
    """The values an object had before its unflushed changes, as a public user dict."""
    attrs = inspect(obj).attrs
    values = {}
    for key in USER_FIELDS:
        history = attrs[key].history
        if history.deleted:
            values[key] = history.deleted[0]
        elif history.unchanged:
            values[key] = history.unchanged[0]
        else:  # not loaded and not changed: load it
            values[key] = getattr(obj, key)
    return user_dict(SimpleNamespace(**values))


def _build_events(changes: Iterable[tuple[int, _Change]], first_seq: int) -> list[ev.Event]:
    events = []
    for user_id, change in changes:
        seq = first_seq + len(events)
        if change.kind == "added":
            events.append(ev.user_added(seq, change.after))
        elif change.kind == "deleted":
            events.append(ev.user_deleted(seq, user_id))
        else:
            before, after = change.before, change.after
            keys = [k for k in DATA_FIELDS if before[k] != after[k]]
            keys.append("updated_at")
            events.append(
                ev.user_updated(
                    seq,
                    user_id,
                    after["version"],
                    {k: after[k] for k in keys},
                    {k: before[k] for k in keys},
                )
            )
    return events


def _is_real(change: _Change) -> bool:
    if change.kind != "updated":
        return True
    return any(change.before[k] != change.after[k] for k in DATA_FIELDS)


# The two statements every capturing commit runs. On the commit path, so on SQLite and
# PostgreSQL they go straight to the driver: SQLAlchemy's statement compilation and caching
# cost about 150 us a commit here (measured; see docs/benchmarks.md).
_RAW_SQL = {
    "qmark": (
        "UPDATE seq_counter SET value = value + ? WHERE id = 1 RETURNING value",
        "INSERT INTO change_log (seq, event, user_id, payload, committed_at)"
        " VALUES (?, ?, ?, ?, ?)",
    ),
    "format": (
        "UPDATE seq_counter SET value = value + %s WHERE id = 1 RETURNING value",
        "INSERT INTO change_log (seq, event, user_id, payload, committed_at)"
        " VALUES (%s, %s, %s, %s::json, %s)",
    ),
}
_RAW_SQL["pyformat"] = _RAW_SQL["format"]


# Up to this many events, PostgreSQL takes the seqs and writes the log in one statement.
ONE_TRIP_MAX = 500


def _log_in_one_trip(connection, changes) -> list[ev.Event]:
    """PostgreSQL: bump the counter and insert the log rows in one round trip (a CTE).

    The payloads are built with seq 0 and get their real seq inside the statement
    (jsonb_set); the events handed to publishers are rebuilt from the seqs it returns.
    """
    drafts = _build_events(changes, 0)
    now = utcnow().replace(tzinfo=None)
    rows = ", ".join(["(%s::int, %s, %s::int, %s, %s::timestamp)"] * len(drafts))
    sql = (
        "WITH s AS (UPDATE seq_counter SET value = value + %s WHERE id = 1 RETURNING value) "
        "INSERT INTO change_log (seq, event, user_id, payload, committed_at) "
        "SELECT s.value - %s + v.k, v.event, v.user_id, "
        "jsonb_set(v.payload::jsonb, '{seq}', to_jsonb(s.value - %s + v.k))::json, v.at "
        f"FROM s, (VALUES {rows}) AS v(k, event, user_id, payload, at) RETURNING seq"
    )
    params = [len(drafts), len(drafts), len(drafts)]
    for k, draft in enumerate(drafts, start=1):
        params += [k, draft.name, draft.user_id, json.dumps(draft.data), now]
    last = max(connection.exec_driver_sql(sql, tuple(params)).scalars())
    return _build_events(changes, last - len(drafts) + 1)


def _take_seqs(connection, count: int) -> int:
    """Add `count` to the counter row (locking it until commit); return the new last seq."""
    raw = _RAW_SQL.get(connection.dialect.paramstyle)
    if raw is not None:
        return connection.exec_driver_sql(raw[0], (count,)).scalar_one()
    counter = SeqCounter.__table__
    return connection.execute(
        update(counter)
        .where(counter.c.id == 1)
        .values(value=counter.c.value + count)
        .returning(counter.c.value)
    ).scalar_one()


def _write_log(connection, events: list[ev.Event]) -> None:
    """Insert one change-log row per event, in the committing transaction."""
    now = utcnow()
    raw = _RAW_SQL.get(connection.dialect.paramstyle)
    if raw is not None:
        naive = now.replace(tzinfo=None)  # stored as naive UTC, like UTCDateTime does
        stamp = naive.isoformat(" ") if connection.dialect.name == "sqlite" else naive
        connection.exec_driver_sql(
            raw[1],
            [(e.seq, e.name, e.user_id, json.dumps(e.data), stamp) for e in events],
        )
        return
    connection.execute(
        ChangeLog.__table__.insert(),
        [
            {"seq": e.seq, "event": e.name, "user_id": e.user_id, "payload": e.data,
             "committed_at": now}
            for e in events
        ],
    )


# Everything the pytest plugin and scripts may want to watch, whatever session it came from.
_observers: list[Callable[[Sequence[ev.Event]], None]] = []


@contextmanager
def observe_commits(callback: Callable[[Sequence[ev.Event]], None]) -> Iterator[None]:
    """Call `callback(events)` after every capturing commit in this process while inside."""
    _observers.append(callback)
    try:
        yield
    finally:
        _observers.remove(callback)


class ChangeCapture:
    """Listeners for one session factory, and the publishers its committed events go to."""

    def __init__(self, publishers: Iterable[Publisher] = (), retention: int = DEFAULT_RETENTION):
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self.publishers: list[Publisher] = list(publishers)
        self.retention = retention

    HOOKS = (
        "before_flush",
        "after_flush",
        "do_orm_execute",
        "after_transaction_create",
        "before_commit",
        "after_commit",
        "after_transaction_end",
    )

    def install(self, target) -> ChangeCapture:
        """Listen on a sessionmaker, a Session subclass or a single Session."""
        for name in self.HOOKS:
            event.listen(target, name, getattr(self, "_" + name))
        return self

    def uninstall(self, target) -> None:
        """Stop listening on `target` (the benchmark compares writes with and without)."""
        for name in self.HOOKS:
            event.remove(target, name, getattr(self, "_" + name))

    # -- collecting ---------------------------------------------------------------------------

    def _before_flush(self, session, _flush_context, _instances):
        state = _pending(session)
        for obj in list(session.dirty) + list(session.deleted):
            if isinstance(obj, User) and obj.id is not None and id(obj) not in state.before_flush:
                state.before_flush[id(obj)] = _committed_row(obj)

    def _after_flush(self, session, _flush_context):
        state = _pending(session)
        before = state.before_flush
        for obj in session.new:
            if isinstance(obj, User):
                state.observe(obj.id, _Change("added", None, user_dict(obj)))
        for obj in session.dirty:
            if isinstance(obj, User) and id(obj) in before:
                state.observe(obj.id, _Change("updated", before[id(obj)], user_dict(obj)))
        for obj in session.deleted:
            if isinstance(obj, User) and id(obj) in before:
                state.observe(obj.id, _Change("deleted", before[id(obj)], None))
        before.clear()

    def _do_orm_execute(self, orm_state):
        if not (orm_state.is_update or orm_state.is_delete):
            return None
        mapper = orm_state.bind_mapper
        if mapper is None or not issubclass(mapper.class_, User):
            return None
        return self._bulk(orm_state)

    def _bulk(self, orm_state):
        """Run an ORM bulk UPDATE/DELETE and observe each row it touched."""
        session = orm_state.session
        table = User.__table__
        statement = orm_state.statement
        params = orm_state.parameters
        by_primary_key = isinstance(params, list)  # "bulk update by primary key": a dict per row
        if by_primary_key:
            target = table.c.id.in_([p["id"] for p in params if "id" in p])
        else:
            target = statement.whereclause
        query = select(table).order_by(table.c.id).with_for_update()
        if target is not None:
            query = query.where(target)
        connection = session.connection()
        before = {row.id: user_dict(row) for row in connection.execute(query)}
        result = orm_state.invoke_statement()
        state = _pending(session)
        if orm_state.is_delete:
            for user_id, row in before.items():
                state.observe(user_id, _Change("deleted", row, None))
            return result
        ids = list(before)
        after = {
            row.id: user_dict(row)
            for row in connection.execute(select(table).where(table.c.id.in_(ids)))
        }
        changed = [
            i for i in ids if i in after and _is_real(_Change("updated", before[i], after[i]))
        ]
        if changed and not by_primary_key:
            # A WHERE-form bulk UPDATE skips version_id_col (the by-primary-key form does not):
            # bump it, so clients can tell row versions apart, and reload it in the session.
            now = utcnow()
            connection.execute(
                update(table)
                .where(table.c.id.in_(changed))
                .values(version=table.c.version + 1, updated_at=now)
            )
            for user_id in changed:
                key = inspect(User).identity_key_from_primary_key([user_id])
                obj = session.identity_map.get(key)
                if obj is not None:
                    session.expire(obj, ["version", "updated_at"])
                after[user_id].update(version=after[user_id]["version"] + 1, updated_at=iso(now))
        for user_id in changed:
            state.observe(user_id, _Change("updated", before[user_id], after[user_id]))
        return result

    # -- transactions -------------------------------------------------------------------------

    def _after_transaction_create(self, session, transaction):
        if transaction.nested:
            state = _pending(session)
            state.savepoints[transaction] = {k: replace(v) for k, v in state.changes.items()}

    def _before_commit(self, session):
        if session.in_nested_transaction():
            return
        session.flush()  # capture what was changed right before commit() now, not after it
        state = _pending(session)
        changes = [(uid, c) for uid, c in state.changes.items() if _is_real(c)]
        if not changes:
            state.prepared = []
            return
        connection = session.connection()
        if connection.dialect.name == "postgresql" and len(changes) <= ONE_TRIP_MAX:
            state.prepared = _log_in_one_trip(connection, changes)
            last = state.prepared[-1].seq
            first = state.prepared[0].seq
        else:
            last = _take_seqs(connection, len(changes))
            first = last - len(changes) + 1
            state.prepared = _build_events(changes, first)
            _write_log(connection, state.prepared)
        every = max(1, min(PRUNE_EVERY, self.retention // 10))
        if last // every != (first - 1) // every:
            log_table = ChangeLog.__table__
            connection.execute(delete(log_table).where(log_table.c.seq <= last - self.retention))

    def _after_commit(self, session):
        nested = session.get_nested_transaction()
        state = _pending(session)
        if nested is not None:  # a SAVEPOINT was released: not a commit
            state.savepoints.pop(nested, None)
            return
        events = state.prepared
        state.reset()
        session.info[LAST_SEQ_KEY] = events[-1].seq if events else None
        if events:
            self._deliver(events)

    def _after_transaction_end(self, session, transaction):
        state = session.info.get(STATE_KEY)
        if state is None:
            return
        if transaction.nested:
            snapshot = state.savepoints.pop(transaction, None)
            if snapshot is not None:  # still there: the savepoint was rolled back
                state.changes = snapshot
                state.before_flush.clear()
        elif transaction.parent is None:
            state.reset()  # after a commit this is a no-op; after a rollback it drops everything

    def _deliver(self, events: list[ev.Event]) -> None:
        for target in [*self.publishers, *_observers]:
            publish = getattr(target, "publish", target)
            try:
                publish(events)
            except Exception:  # publishing must never fail a committed write
                log.exception("publisher %r failed; %d event(s) not sent", target, len(events))


def install_capture(
    target, publisher: Publisher | None = None, retention: int = DEFAULT_RETENTION
) -> ChangeCapture:
    """Wire change capture onto a session factory; return it so publishers can be added."""
    return ChangeCapture([publisher] if publisher else [], retention).install(target)


def last_commit_seq(session: Session) -> int | None:
    """The seq of the last event the session's latest commit produced, or None if it made none."""
    return session.info.get(LAST_SEQ_KEY)


def answer_seq(session: Session) -> int:
    """The seq a write answers with: its last event's, or the current one if it made none."""
    seq = last_commit_seq(session)
    return seq if seq is not None else current_seq(session)


def current_seq(session: Session) -> int:
    """The last seq handed out, as this session's transaction sees it."""
    counter = SeqCounter.__table__
    return session.execute(select(counter.c.value).where(counter.c.id == 1)).scalar_one()
