"""Commit-time change capture: rows of opted-in models in, ordered diff events out.

Imports no Flask and names no model. A model opts in with one declaration::

    from userboard.capture import tracked

    @tracked("note", changes=("title", "body"), serialize=note_dict)
    class Note(Base):
        ...

and a session factory (the web app's, the CLI's, a script's) is wired with::

    capture = install_capture(Session, publisher)

From then on every committed change to a `Note` becomes one event, `note_added`,
`note_updated` or `note_deleted` (see `events.py` for the payloads):

1. Before a flush, the values each dirty or deleted row had are noted; after the flush, the new
   values (keys, versions, defaults) are read. Both are kept as plain dicts in `session.info`,
   never as live ORM objects. ORM bulk statements, which bypass flush events, are seen in
   `do_orm_execute`: `insert(Model)` (with a list of rows, or `.returning(...)`) through
   RETURNING, `update(Model)` / `delete(Model)` by reading the rows they touch before and after.
2. Changes coalesce per row within the transaction (added+updated -> added, added+deleted ->
   nothing, updated+updated -> one update with the first "previous", updated+deleted -> deleted,
   an update that changes none of the model's `changes` fields -> nothing). A rolled-back
   SAVEPOINT restores what was pending when it began; releasing one is not a commit.
3. In `before_commit` of the outermost transaction the events get their `seq` from the one-row
   counter (its row lock is held until COMMIT, so seq follows commit order across processes) and
   are written to the change log in the same transaction. Every hundred or so seqs, rows past the
   retention are pruned, but none younger than `min_age` seconds (the servers relay them first).
4. After the commit, and only then, the events go to the publishers. No SQL runs there, and a
   publisher that raises is logged and ignored: publishing never fails a write.

Only plain SQLAlchemy ORM work is seen here: Core statements on tables and raw SQL bypass it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, event, func, inspect, select, text, update
from sqlalchemy.orm import Mapper, Session, SessionTransaction

from . import events as ev
from .changelog import ChangeLog, SeqCounter
from .db import UTCDateTime, utcnow

log = logging.getLogger(__name__)

STATE_KEY = "userboard.capture"
LAST_SEQ_KEY = "userboard.last_commit_seq"
ACTOR_KEY = "userboard.actor"
DEFAULT_RETENTION = 10_000
# Old change-log rows are trimmed when seq crosses a multiple of this (at most 100, or a tenth of
# the retention), not on every commit.
PRUNE_EVERY = 100
# Seconds every change-log row is kept, however many follow: a server's relay reads the log
# within a second, so even a burst (or one transaction) larger than the retention reaches it.
DEFAULT_MIN_AGE = 60.0


class Publisher(Protocol):
    def publish(self, events: Sequence[ev.Event]) -> None:
        """Hand committed events on. Must not block the committing caller."""


# -- what is captured --------------------------------------------------------------------------


class Tracked:
    """How one model's rows become events: its entity name, serializer and change fields."""

    def __init__(self, model: type, entity: str, changes: Sequence[str],
                 serialize: Callable[[Any], dict]):
        self.model = model
        self.entity = entity
        self.changes = tuple(changes)
        self.serialize = serialize

    @cached_property
    def mapper(self) -> Mapper:
        mapper = inspect(self.model)
        if len(mapper.primary_key) != 1:
            raise TypeError(f"{self.model.__name__}: capture needs a one-column primary key")
        return mapper

    @cached_property
    def table(self):
        return self.mapper.local_table

    @cached_property
    def key_column(self):
        return self.mapper.primary_key[0]

    @cached_property
    def key_attr(self) -> str:
        return self.mapper.get_property_by_column(self.key_column).key

    @cached_property
    def version_attr(self) -> str | None:
        column = self.mapper.version_id_col
        return None if column is None else self.mapper.get_property_by_column(column).key

    def key_of(self, row) -> Any:
        return getattr(row, self.key_attr)

    def version_of(self, row) -> int | None:
        return None if self.version_attr is None else getattr(row, self.version_attr)

    def differs(self, before: dict, after: dict) -> bool:
        """Whether an update changed a field whose change is an event."""
        return any(before[k] != after[k] for k in self.changes)

    def row_view(self, values) -> SimpleNamespace:
        """A table row (a mapping of column to value) by attribute name, as the ORM object reads."""
        return SimpleNamespace(**{
            prop.key: values[prop.columns[0]] for prop in self.mapper.column_attrs
        })


_tracked: dict[type, Tracked] = {}


def tracked(entity: str, *, changes: Sequence[str], serialize: Callable[[Any], dict]):
    """Class decorator: broadcast the model's committed changes as ENTITY_added/updated/deleted.

    `serialize(row)` gives the JSON-ready dict clients see (the same function the app's API
    should use); it is called with ORM objects and with plain objects carrying every column as
    an attribute. `changes` are the serialized fields whose change is an event; other fields
    (`updated_at`, ...) ride along in `changes` and `previous` when they differ too.
    """

    def decorate(model: type) -> type:
        _tracked[model] = Tracked(model, entity, changes, serialize)
        return model

    return decorate


def tracking(model: type) -> Tracked | None:
    """The declaration that applies to `model` (or a base class), if any."""
    for cls in model.__mro__:
        found = _tracked.get(cls)
        if found is not None:
            return found
    return None


# -- coalescing --------------------------------------------------------------------------------


@dataclass
class _Change:
    """What happened to one row in the current transaction, coalesced."""

    kind: str  # ev.ADDED | ev.UPDATED | ev.DELETED
    before: dict | None  # the serialized row at transaction start (updated, deleted)
    after: dict | None  # the serialized row now (added, updated)
    version: int | None = None  # the row's version now (updated)


def _merge(old: _Change | None, new: _Change) -> _Change | None:
    """Coalesce a newly observed change into what the transaction already holds."""
    if old is None:
        return new
    if old.kind == ev.ADDED:
        return None if new.kind == ev.DELETED else _Change(ev.ADDED, None, new.after)
    if new.kind == ev.DELETED:
        return _Change(ev.DELETED, old.before, None)
    # updated+updated, or deleted then the same key inserted again: one update
    return _Change(ev.UPDATED, old.before, new.after, new.version)


class _Pending:
    """Changes of one session's current transaction, plus snapshots for open savepoints."""

    def __init__(self) -> None:
        self.changes: dict[tuple[Tracked, Any], _Change] = {}
        self.savepoints: dict[SessionTransaction, tuple[dict, bool]] = {}
        self.before_flush: dict[int, dict] = {}
        self.prepared: list[ev.Event] = []
        # The transaction wrote tracked rows: the database's triggers must leave them to us.
        self.marked = False

    def observe(self, spec: Tracked, key: Any, change: _Change) -> None:
        merged = _merge(self.changes.pop((spec, key), None), change)
        if merged is not None:
            self.changes[(spec, key)] = merged

    def reset(self) -> None:
        self.changes.clear()
        self.savepoints.clear()
        self.before_flush.clear()
        self.prepared = []
        self.marked = False


def _pending(session: Session) -> _Pending:
    state = session.info.get(STATE_KEY)
    if state is None:
        state = session.info[STATE_KEY] = _Pending()
    return state


def _mark(session: Session, state: _Pending) -> None:
    """Tell the database's triggers that this transaction's writes are logged by the capture.

    SQLite: a row in capture_marker, before the first write (see userboard.triggers).
    PostgreSQL needs nothing yet: its trigger runs at COMMIT and reads a flag set then.
    """
    if state.marked:
        return
    state.marked = True
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(_SQLITE_MARK)


def _is_real(spec: Tracked, change: _Change) -> bool:
    return change.kind != ev.UPDATED or spec.differs(change.before, change.after)


def _row_before_flush(session: Session, spec: Tracked, obj) -> dict:
    """The serialized row as the database holds it, before the object's unflushed changes."""
    state = inspect(obj)
    values = {}
    for prop in state.mapper.column_attrs:
        history = state.attrs[prop.key].history
        if history.deleted:
            values[prop.key] = history.deleted[0]
        elif history.unchanged:
            values[prop.key] = history.unchanged[0]
        elif history.added:  # set while not loaded, without active_history: ask the database
            row = session.connection().execute(
                select(spec.table).where(spec.key_column == spec.key_of(obj))
            ).one()
            return spec.serialize(spec.row_view(row._mapping))
        else:  # not loaded and not changed: load it
            values[prop.key] = getattr(obj, prop.key)
    return spec.serialize(SimpleNamespace(**values))


def _build_events(
    changes: Iterable[tuple[Tracked, Any, _Change]], first_seq: int, by: dict
) -> list[ev.Event]:
    built = []
    for spec, key, change in changes:
        seq = first_seq + len(built)
        if change.kind == ev.ADDED:
            built.append(ev.added(spec.entity, seq, key, change.after, by))
        elif change.kind == ev.DELETED:
            built.append(ev.deleted(spec.entity, seq, key, by))
        else:
            before, after = change.before, change.after
            quiet = (spec.key_attr, spec.version_attr)
            fields = [k for k in after if k not in quiet and before.get(k) != after[k]]
            built.append(ev.updated(
                spec.entity, seq, key, change.version,
                {k: after[k] for k in fields}, {k: before.get(k) for k in fields}, by,
            ))
    return built


# -- the commit path: seqs and change log, one statement per database -------------------------

_counter = SeqCounter.__table__
_change_log = ChangeLog.__table__

# SQLite: plain driver statements, because SQLAlchemy's per-statement work (about 30 us each)
# was most of the capture's cost on this path. Claim `count` seqs (the write lock is held until
# COMMIT anyway), then insert the log rows; committed_at is SQLite's clock, in UTCDateTime's
# stored form.
_SQLITE_CLAIM = "UPDATE seq_counter SET value = value + ? WHERE id = 1 RETURNING value"
_SQLITE_LOG = (
    "INSERT INTO change_log (seq, event, entity, row_key, payload, state, committed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, strftime('%Y-%m-%d %H:%M:%f000', 'now'))"
)
_SQLITE_MARK = "INSERT OR IGNORE INTO capture_marker (id) VALUES (1)"
_SQLITE_UNMARK = "DELETE FROM capture_marker"

_FLAG_CAPTURED = text("SELECT set_config('userboard.captured', 'on', true)")

# PostgreSQL: all in one round trip. The drafts carry seq 0; each row gets its real seq inside
# the statement, which answers with the first one. It also flags the transaction as captured
# (the triggers leave it alone). No NOTIFY here: it cost about 200 us a commit (measured); the
# servers learn of captured commits through the queue or their change-log tick.
_CLAIM_AND_LOG_POSTGRESQL = text("""
    WITH flagged AS (
        SELECT set_config('userboard.captured', 'on', true)
    ), claimed AS (
        UPDATE seq_counter SET value = value + :count WHERE id = 1
        RETURNING value - :count AS before
    ), logged AS (
        INSERT INTO change_log (seq, event, entity, row_key, payload, state, committed_at)
        SELECT claimed.before + e.k, e.event, e.entity, e.row_key,
               CAST(jsonb_set(e.payload, '{seq}', to_jsonb(claimed.before + e.k)) AS json),
               CAST(e.state AS json), :now
        FROM claimed, jsonb_to_recordset(CAST(:events AS jsonb))
             AS e(k int, event text, entity text, row_key text, payload jsonb, state jsonb)
        RETURNING seq
    )
    SELECT (SELECT min(seq) FROM logged), (SELECT count(*) FROM flagged)
""").bindparams(bindparam("now", type_=UTCDateTime()))


def _log_events(connection, drafts: list[ev.Event], states: list[dict]) -> int:
    """Give `drafts` consecutive seqs and write them to the change log; return the first seq.

    `states` holds each row as it is after its change (before it, for a delete).
    """
    if connection.dialect.name == "postgresql":
        rows = [
            {"k": k, "event": d.name, "entity": d.entity, "row_key": str(d.key), "payload": d.data,
             "state": state}
            for k, (d, state) in enumerate(zip(drafts, states, strict=True), start=1)
        ]
        return connection.execute(
            _CLAIM_AND_LOG_POSTGRESQL,
            {"count": len(drafts), "events": json.dumps(rows), "now": utcnow()},
        ).first()[0]
    if connection.dialect.name != "sqlite":
        raise NotImplementedError(f"capture supports SQLite and PostgreSQL, not {connection.dialect.name}")
    first = connection.exec_driver_sql(_SQLITE_CLAIM, (len(drafts),)).scalar_one() - len(drafts) + 1
    connection.exec_driver_sql(_SQLITE_LOG, [
        (first + k, d.name, d.entity, str(d.key), json.dumps({**d.data, "seq": first + k}),
         json.dumps(state))
        for k, (d, state) in enumerate(zip(drafts, states, strict=True))
    ])
    return first


def _prune(upto: int, min_age: float):
    """Delete change-log rows up to seq `upto`, but none committed less than `min_age` s ago.

    Rows go in seq order up to the first young one, so the statement reads only what it
    deletes (a burst of young rows is not scanned again by every prune).
    """
    columns = _change_log.c
    if min_age <= 0:
        return delete(_change_log).where(columns.seq <= upto)
    cutoff = utcnow() - timedelta(seconds=min_age)
    first_young = (select(columns.seq).where(columns.seq <= upto, columns.committed_at >= cutoff)
                   .order_by(columns.seq).limit(1).scalar_subquery())
    return delete(_change_log).where(columns.seq <= upto,
                                     columns.seq < func.coalesce(first_young, upto + 1))


def _unmark(connection, logged: bool) -> None:
    """Before COMMIT: SQLite's marker row goes; PostgreSQL's transaction says "captured".

    When the capture logs events, PostgreSQL's flag is set by that same statement instead.
    """
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(_SQLITE_UNMARK)
    elif not logged:
        connection.execute(_FLAG_CAPTURED)


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

    def __init__(self, publishers: Iterable[Publisher] = (), retention: int = DEFAULT_RETENTION,
                 min_age: float = DEFAULT_MIN_AGE):
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self.publishers: list[Publisher] = list(publishers)
        self.retention = retention
        self.min_age = min_age

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

    # -- collecting ---------------------------------------------------------------------------

    def _before_flush(self, session, _flush_context, _instances):
        state = _pending(session)
        if not state.marked and any(
            tracking(type(obj)) is not None
            for obj in (*session.new, *session.dirty, *session.deleted)
        ):
            _mark(session, state)
        for obj in list(session.dirty) + list(session.deleted):
            spec = tracking(type(obj))
            if spec is not None and id(obj) not in state.before_flush and inspect(obj).has_identity:
                state.before_flush[id(obj)] = _row_before_flush(session, spec, obj)

    def _after_flush(self, session, _flush_context):
        state = _pending(session)
        before = state.before_flush
        for obj in session.new:
            spec = tracking(type(obj))
            if spec is not None:
                state.observe(spec, spec.key_of(obj), _Change(ev.ADDED, None, spec.serialize(obj)))
        for obj in session.dirty:
            spec = tracking(type(obj))
            if spec is not None and id(obj) in before:
                change = _Change(ev.UPDATED, before[id(obj)], spec.serialize(obj), spec.version_of(obj))
                state.observe(spec, spec.key_of(obj), change)
        for obj in session.deleted:
            spec = tracking(type(obj))
            if spec is not None and id(obj) in before:
                state.observe(spec, spec.key_of(obj), _Change(ev.DELETED, before[id(obj)], None))
        before.clear()

    def _do_orm_execute(self, orm_state):
        if not (orm_state.is_insert or orm_state.is_update or orm_state.is_delete):
            return None
        mapper = orm_state.bind_mapper
        spec = None if mapper is None else tracking(mapper.class_)
        if spec is None:
            return None
        _mark(orm_state.session, _pending(orm_state.session))
        if orm_state.is_insert:
            return self._bulk_insert(orm_state, spec)
        return self._bulk_change(orm_state, spec)

    def _bulk_insert(self, orm_state, spec: Tracked):
        """Run an ORM INSERT with RETURNING of every column, and observe each row it added.

        The caller gets back exactly the columns it asked for (none, without `.returning()`).
        """
        columns = list(spec.table.c)
        result = orm_state.invoke_statement(statement=orm_state.statement.returning(*columns))
        frozen = result.freeze()
        rows = frozen().all()
        state = _pending(orm_state.session)
        asked = len(result.keys()) - len(columns)
        for row in rows:
            view = spec.row_view(dict(zip(columns, row[asked:], strict=True)))
            state.observe(spec, spec.key_of(view), _Change(ev.ADDED, None, spec.serialize(view)))
        # Without RETURNING of its own the caller gets the (consumed) result: no rows to read.
        return frozen().columns(*range(asked)) if asked else result

    def _bulk_change(self, orm_state, spec: Tracked):
        """Run an ORM bulk UPDATE/DELETE and observe each row it touched."""
        session = orm_state.session
        table, key = spec.table, spec.key_column
        by_primary_key = isinstance(orm_state.parameters, list)  # a dict per row, keyed by pk
        if by_primary_key:
            target = key.in_([p[spec.key_attr] for p in orm_state.parameters if spec.key_attr in p])
        else:
            target = orm_state.statement.whereclause
        query = select(table).order_by(key).with_for_update()
        if target is not None:
            query = query.where(target)
        connection = session.connection()
        before = self._read(connection, spec, None, query)
        result = orm_state.invoke_statement()
        state = _pending(session)
        if orm_state.is_delete:
            for row_key, (row, _version) in before.items():
                state.observe(spec, row_key, _Change(ev.DELETED, row, None))
            return result
        after = self._read(connection, spec, key.in_(list(before)))
        changed = [k for k in before if k in after and spec.differs(before[k][0], after[k][0])]
        # A WHERE-form bulk UPDATE skips version_id_col (the by-primary-key form and a database
        # trigger may not): move it where it did not move, so clients can tell versions apart.
        unmoved = [k for k in changed if after[k][1] == before[k][1]]
        if unmoved and spec.version_attr is not None:
            version = spec.mapper.version_id_col
            connection.execute(update(table).where(key.in_(unmoved)).values({version: version + 1}))
            after.update(self._read(connection, spec, key.in_(unmoved)))
        for row_key in changed:
            obj = session.identity_map.get(spec.mapper.identity_key_from_primary_key([row_key]))
            if obj is not None:
                session.expire(obj)  # reload what the statement (or a trigger) wrote
            row, version = after[row_key]
            state.observe(spec, row_key, _Change(ev.UPDATED, before[row_key][0], row, version))
        return result

    @staticmethod
    def _read(connection, spec: Tracked, where, query=None) -> dict[Any, tuple[dict, int | None]]:
        """Serialized rows and versions by key (of `query`, or of the rows `where` selects)."""
        found = {}
        for row in connection.execute(query if query is not None else select(spec.table).where(where)):
            view = spec.row_view(row._mapping)
            found[spec.key_of(view)] = (spec.serialize(view), spec.version_of(view))
        return found

    # -- transactions -------------------------------------------------------------------------

    def _after_transaction_create(self, session, transaction):
        if transaction.nested:
            state = _pending(session)
            state.savepoints[transaction] = (
                {k: replace(v) for k, v in state.changes.items()}, state.marked)

    def _before_commit(self, session):
        if session.in_nested_transaction():
            return
        session.flush()  # capture what was changed right before commit() now, not after it
        state = _pending(session)
        changes = [(spec, key, c) for (spec, key), c in state.changes.items() if _is_real(spec, c)]
        state.prepared = []
        if state.marked:
            _unmark(session.connection(), logged=bool(changes))
        if not changes:
            return
        connection = session.connection()
        states = [c.after if c.after is not None else c.before for _spec, _key, c in changes]
        by = actor_of(session)
        first = _log_events(connection, _build_events(changes, 0, by), states)
        state.prepared = _build_events(changes, first, by)
        last = first + len(changes) - 1
        every = max(1, min(PRUNE_EVERY, self.retention // 10))
        if last // every != (first - 1) // every:
            connection.execute(_prune(last - self.retention, self.min_age))

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
            if snapshot is not None:  # still there: the savepoint was rolled back (and its marker)
                state.changes, state.marked = snapshot
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
    target, publisher: Publisher | None = None, retention: int = DEFAULT_RETENTION,
    min_age: float = DEFAULT_MIN_AGE,
) -> ChangeCapture:
    """Wire change capture onto a session factory; return it so publishers can be added."""
    return ChangeCapture([publisher] if publisher else [], retention, min_age).install(target)


def set_actor(session: Session, kind: str, user_id: int | None, name: str | None) -> None:
    """Say who makes the session's changes from now on (kept in `session.info`).

    A session factory can carry a default: `sessionmaker(info={ACTOR_KEY: ev.actor(...)})`.
    """
    session.info[ACTOR_KEY] = ev.actor(kind, user_id, name)


def program_actor() -> dict:
    """A script, named after its program, when nobody said otherwise."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return ev.actor("script", None, name or "python")


def actor_of(session: Session) -> dict:
    """Who makes the session's changes (a script named after its program by default)."""
    return session.info.get(ACTOR_KEY) or program_actor()


def last_commit_seq(session: Session) -> int | None:
    """The seq of the last event the session's latest commit produced, or None if it made none."""
    return session.info.get(LAST_SEQ_KEY)


def answer_seq(session: Session) -> int:
    """The seq a write answers with: its last event's, or the current one if it made none."""
    seq = last_commit_seq(session)
    return seq if seq is not None else current_seq(session)


def current_seq(session: Session) -> int:
    """The last seq handed out, as this session's transaction sees it."""
    return session.execute(select(_counter.c.value).where(_counter.c.id == 1)).scalar_one()
