"""Change capture on a plain sessionmaker, no Flask: coalescing, transactions, bulk, seq.

Every behaviour is checked for two captured models, `User` and the test-only `Gadget` (text
primary key, another version column, no active_history), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select, update

import userboard.capture
from userboard.capture import current_seq, last_commit_seq, set_actor
from userboard.db import utcnow
from userboard.models import ChangeLog, User, user_dict
from userboard.publish import QueuedEmitter

from .conftest import CapturingDatabase
from .gadgets import Gadget, gadget_dict


@dataclass(frozen=True)
class Kit:
    """What the generic tests need to know of one captured model."""

    model: type
    entity: str
    key: str  # primary key attribute
    version: str  # version column attribute
    name: str  # a unique field whose change is an event
    other: str  # another field whose change is an event
    other_values: tuple[str, str]  # its default, then another value
    quiet: str  # a column that is not serialized: changing it alone is no event
    serialize: object
    unique_ignores_case: bool

    @property
    def added(self):
        return f"{self.entity}_added"

    @property
    def updated(self):
        return f"{self.entity}_updated"

    @property
    def deleted(self):
        return f"{self.entity}_deleted"

    def values(self, label: str, **kw) -> dict:
        if self.model is User:
            return {"username": label, "email": f"{label}@example.com", **kw}
        return {"code": f"G-{label}", "name": label, **kw}

    def add(self, session, label: str, **kw):
        obj = self.model(**self.values(label, **kw))
        session.add(obj)
        return obj

    def key_of(self, obj):
        return getattr(obj, self.key)

    def label(self, event) -> str:
        return event.data[self.entity][self.name]


# Sessions that nobody named: a script, named after the program (pytest here).
SCRIPT = {"kind": "script", "user_id": None, "name": Path(sys.argv[0]).name}

USER = Kit(User, "user", "id", "version", "username", "status", ("active", "disabled"),
           "password_hash", user_dict, True)
GADGET = Kit(Gadget, "gadget", "code", "revision", "name", "color", ("grey", "red"), "secret",
             gadget_dict, False)


@pytest.fixture(params=[USER, GADGET], ids=["user", "gadget"])
def kit(request):
    return request.param


def log_rows(db):
    with db.Session() as s:
        return [(r.seq, r.event, r.entity, r.row_key, r.payload) for r in s.scalars(
            select(ChangeLog).order_by(ChangeLog.seq))]


def test_add_emits_added_with_the_serialized_row(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        assert db.names == [kit.added]
        assert db.events[0].data == {"seq": 1, kit.entity: kit.serialize(obj), "actor": SCRIPT}
        assert kit.quiet not in db.events[0].data[kit.entity]


def test_add_then_update_is_one_added_with_final_row(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.flush()
        setattr(obj, kit.other, kit.other_values[1])
        s.commit()
        assert db.names == [kit.added]
        assert db.events[0].data[kit.entity][kit.other] == kit.other_values[1]


def test_add_then_delete_is_nothing(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.flush()
        s.delete(obj)
        s.commit()
        assert db.events == []
        assert current_seq(s) == 0


def test_update_then_update_keeps_previous_from_transaction_start(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        db.recorder.clear()
        setattr(obj, kit.name, "one")
        s.flush()
        setattr(obj, kit.name, "two")
        setattr(obj, kit.other, kit.other_values[1])
        s.commit()
        assert db.names == [kit.updated]
        data = db.events[0].data
        assert data["id"] == kit.key_of(obj)
        assert data["version"] == getattr(obj, kit.version) == 3
        assert data["changes"][kit.name] == "two"
        assert data["changes"][kit.other] == kit.other_values[1]
        assert data["previous"][kit.name] == "alice"
        assert data["previous"][kit.other] == kit.other_values[0]
        assert set(data["changes"]) == {kit.name, kit.other, "updated_at"}
        assert set(data["previous"]) == set(data["changes"])


def test_update_then_delete_is_deleted(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        key = kit.key_of(obj)
        db.recorder.clear()
        setattr(obj, kit.other, kit.other_values[1])
        s.flush()
        s.delete(obj)
        s.commit()
        assert [(e.name, e.data) for e in db.events] == [
            (kit.deleted, {"seq": 2, "id": key, "actor": SCRIPT})]


def test_update_that_changes_nothing_emits_nothing(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        db.recorder.clear()
        setattr(obj, kit.other, kit.other_values[0])  # the value it has
        s.commit()
        setattr(obj, kit.name, "x")
        s.flush()
        setattr(obj, kit.name, "alice")  # and back, in one transaction
        s.commit()
        setattr(obj, kit.quiet, "not serialized")
        s.commit()
        assert db.events == []


def test_update_of_an_expired_object_knows_the_old_value(db, kit):
    with db.Session() as s:
        kit.add(s, "alice")
        s.commit()
        db.recorder.clear()
    with db.Session() as s:
        obj = s.scalar(select(kit.model))
        s.expire(obj)
        setattr(obj, kit.name, "renamed")  # set while not loaded
        s.commit()
        assert db.events[0].data["previous"][kit.name] == "alice"
        assert db.events[0].data["changes"][kit.name] == "renamed"


def test_rollback_emits_nothing_and_uses_no_seq(db, kit):
    with db.Session() as s:
        kit.add(s, "alice")
        s.flush()
        s.rollback()
        assert db.events == []
        kit.add(s, "bob")
        s.commit()
        assert [e.seq for e in db.events] == [1]


def test_failed_flush_emits_nothing(db, kit):
    with db.Session() as s:
        kit.add(s, "alice")
        s.commit()
        db.recorder.clear()
        twin = "ALICE" if kit.unique_ignores_case else "alice"
        obj = kit.model(**{**kit.values("twin"), kit.name: twin})
        s.add(obj)
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            s.commit()
        s.rollback()
        assert db.events == []
        assert current_seq(s) == 1


def test_savepoint_release_is_not_a_commit(db, kit):
    with db.Session() as s:
        with s.begin_nested():
            kit.add(s, "alice")
        assert db.events == []
        s.commit()
        assert db.names == [kit.added]


def test_savepoint_rollback_drops_its_changes_only(db, kit):
    with db.Session() as s:
        kit.add(s, "alice")
        savepoint = s.begin_nested()
        kit.add(s, "bob")
        s.flush()
        savepoint.rollback()
        kit.add(s, "carol")
        s.commit()
        assert [kit.label(e) for e in db.events] == ["alice", "carol"]
        assert [e.seq for e in db.events] == [1, 2]


def test_savepoint_rollback_restores_an_earlier_update(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        db.recorder.clear()
        setattr(obj, kit.name, "renamed")
        s.flush()
        with pytest.raises(RuntimeError):
            with s.begin_nested():
                setattr(obj, kit.other, kit.other_values[1])
                s.flush()
                raise RuntimeError("abort the savepoint")
        s.commit()
        assert db.names == [kit.updated]
        assert set(db.events[0].data["changes"]) == {kit.name, "updated_at"}


def test_events_of_one_transaction_are_consecutive(db, kit):
    with db.Session() as s:
        for label in ("alice", "bob", "carol"):
            kit.add(s, label)
        s.commit()
        assert [e.seq for e in db.events] == [1, 2, 3]
        assert last_commit_seq(s) == 3


def test_bulk_update_emits_one_event_per_changed_row(db, kit):
    model, other, (old, new) = kit.model, kit.other, kit.other_values
    with db.Session() as s:
        alice, bob, carol = kit.add(s, "alice"), kit.add(s, "bob"), kit.add(s, "carol", **{other: new})
        s.commit()
        db.recorder.clear()
        s.execute(update(model).where(getattr(model, kit.name) != "bob").values({other: new}))
        s.commit()
        assert db.names == [kit.updated]  # carol had the value already
        data = db.events[0].data
        assert data["id"] == kit.key_of(alice) and data["version"] == 2
        assert data["changes"][other] == new and data["previous"][other] == old
        assert set(data["changes"]) == {other, "updated_at"}
        s.expire_all()
        assert [getattr(o, kit.version) for o in (alice, bob, carol)] == [2, 1, 1]


def test_bulk_update_is_picked_up_by_later_orm_writes(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        s.execute(update(kit.model).values({kit.other: kit.other_values[1]}))
        setattr(obj, kit.name, "renamed")  # must not raise StaleDataError
        s.commit()
        # One transaction: the bulk and the ORM change coalesce into one update.
        assert db.names == [kit.added, kit.updated]
        assert db.events[1].data["version"] == 3
        assert set(db.events[1].data["changes"]) == {kit.other, kit.name, "updated_at"}


def test_bulk_update_by_primary_key(db, kit):
    with db.Session() as s:
        alice, bob = kit.add(s, "alice"), kit.add(s, "bob")
        s.commit()
        db.recorder.clear()
        s.execute(update(kit.model), [
            {kit.key: kit.key_of(alice), kit.version: 1, kit.other: kit.other_values[1]},
            {kit.key: kit.key_of(bob), kit.version: 1, kit.other: kit.other_values[0]},
        ])
        s.commit()
        assert [(e.name, e.data["id"]) for e in db.events] == [(kit.updated, kit.key_of(alice))]


def test_bulk_delete_emits_one_event_per_row(db, kit):
    with db.Session() as s:
        alice, _bob, carol = kit.add(s, "alice"), kit.add(s, "bob"), kit.add(s, "carol")
        s.commit()
        keys = sorted([kit.key_of(alice), kit.key_of(carol)])
        db.recorder.clear()
        s.execute(delete(kit.model).where(getattr(kit.model, kit.key).in_(keys)))
        s.commit()
        assert [(e.name, e.data) for e in db.events] == [
            (kit.deleted, {"seq": 4, "id": keys[0], "actor": SCRIPT}),
            (kit.deleted, {"seq": 5, "id": keys[1], "actor": SCRIPT}),
        ]


def test_bulk_update_rolled_back_emits_nothing(db, kit):
    with db.Session() as s:
        kit.add(s, "alice")
        s.commit()
        db.recorder.clear()
        s.execute(update(kit.model).values({kit.other: kit.other_values[1]}))
        s.rollback()
        assert db.events == []


def test_bulk_insert_emits_one_added_per_row(db, kit):
    with db.Session() as s:
        result = s.execute(insert(kit.model), [kit.values(f"bulk{i}") for i in range(3)])
        s.commit()
        assert db.names == [kit.added] * 3
        assert [e.seq for e in db.events] == [1, 2, 3]
        assert [kit.label(e) for e in db.events] == ["bulk0", "bulk1", "bulk2"]
        stored = {kit.key_of(o): kit.serialize(o) for o in s.scalars(select(kit.model))}
        assert {e.key: e.data[kit.entity] for e in db.events} == stored
        assert result.all() == []  # the caller asked for no rows


def test_bulk_insert_with_returning_answers_what_was_asked(db, kit):
    key, name = getattr(kit.model, kit.key), getattr(kit.model, kit.name)
    with db.Session() as s:
        rows = s.execute(insert(kit.model).returning(key, name),
                         [kit.values(f"r{i}") for i in range(2)]).all()
        objects = s.scalars(insert(kit.model).returning(kit.model), [kit.values("entity")]).all()
        s.commit()
        assert [tuple(r) for r in rows] == [(e.key, kit.label(e)) for e in db.events[:2]]
        assert [kit.key_of(o) for o in objects] == [db.events[2].key]
        assert db.names == [kit.added] * 3


def test_bulk_insert_coalesces_with_later_changes(db, kit):
    with db.Session() as s:
        s.execute(insert(kit.model), [kit.values("alice"), kit.values("bob")])
        obj = s.scalar(select(kit.model).where(getattr(kit.model, kit.name) == "alice"))
        setattr(obj, kit.other, kit.other_values[1])
        s.execute(delete(kit.model).where(getattr(kit.model, kit.name) == "bob"))
        s.commit()
        assert db.names == [kit.added]
        assert db.events[0].data[kit.entity][kit.other] == kit.other_values[1]


def test_bulk_insert_in_a_rolled_back_savepoint_emits_nothing(db, kit):
    with db.Session() as s:
        with pytest.raises(RuntimeError), s.begin_nested():
            s.execute(insert(kit.model), [kit.values("alice")])
            raise RuntimeError("abort the savepoint")
        s.commit()
        assert db.events == []
        s.execute(insert(kit.model), [kit.values("bob")])
        s.rollback()
        assert db.events == []


def test_change_log_holds_every_event_with_entity_and_key(db, kit):
    with db.Session() as s:
        obj = kit.add(s, "alice")
        s.commit()
        setattr(obj, kit.other, kit.other_values[1])
        s.commit()
        s.delete(obj)
        s.commit()
    assert log_rows(db) == [
        (e.seq, e.name, kit.entity, str(e.key), e.data) for e in db.events
    ]


def test_models_share_one_seq_sequence(db):
    with db.Session() as s:
        USER.add(s, "alice")
        GADGET.add(s, "widget")
        s.commit()
        USER.add(s, "bob")
        s.commit()
    assert [(e.seq, e.name) for e in db.events] == [
        (1, "user_added"), (2, "gadget_added"), (3, "user_added")]
    assert [row[:3] for row in log_rows(db)] == [
        (1, "user_added", "user"), (2, "gadget_added", "gadget"), (3, "user_added", "user")]


def test_change_log_keeps_only_the_retention(db, kit):
    db.capture.retention, db.capture.min_age = 5, 0
    with db.Session() as s:
        for i in range(105):
            kit.add(s, f"n{i:03}")
            s.commit()
    seqs = [row[0] for row in log_rows(db)]
    assert seqs[-1] == 105
    assert seqs[0] >= 96 and seqs[:1] != [1]


def test_change_log_keeps_young_rows_past_the_retention_and_prunes_old_ones(db, kit):
    db.capture.retention = 5  # min_age stays at its default: a minute
    with db.Session() as s:
        for i in range(105):
            kit.add(s, f"n{i:03}")
            s.commit()
    assert [row[0] for row in log_rows(db)] == list(range(1, 106))  # all younger than a minute
    with db.Session() as s:
        s.execute(update(ChangeLog).where(ChangeLog.seq <= 60)
                  .values(committed_at=utcnow() - timedelta(minutes=5)))
        s.commit()
        for i in range(105, 200):
            kit.add(s, f"n{i:03}")
            s.commit()
    assert [row[0] for row in log_rows(db)] == list(range(61, 201))


def test_failing_publisher_does_not_fail_the_commit(db, caplog):
    def broken(_events):
        raise ConnectionError("publisher is down")

    db.capture.publishers.insert(0, broken)
    with caplog.at_level(logging.ERROR, logger="userboard.capture"), db.Session() as s:
        USER.add(s, "alice")
        s.commit()  # must not raise
        assert s.scalar(select(func.count()).select_from(User)) == 1
    assert db.names == ["user_added"]  # later publishers still got it
    assert "publisher is down" in caplog.text


def test_seq_follows_commit_order_not_start_order(postgres_url):
    # PostgreSQL only: SQLite admits one writer at a time, so both writes cannot be in flight.
    db = CapturingDatabase(postgres_url)
    first, second = db.Session(), db.Session()
    early = USER.add(first, "early")
    first.flush()  # takes the lower id
    late = USER.add(second, "late")
    second.flush()
    second.commit()
    first.commit()
    assert early.id < late.id
    by_name = {e.data["user"]["username"]: e.seq for e in db.events}
    assert by_name == {"late": 1, "early": 2}
    first.close()
    second.close()
    db.engine.dispose()


def test_capture_imports_without_flask():
    code = (
        "import sys, userboard.capture, userboard.events, userboard.bootstrap, userboard.users,"
        " userboard.testing;"
        "bad = [m for m in sys.modules if m == 'flask' or m.startswith('flask.')"
        " or m.startswith('flask_')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_capture_names_no_model():
    source = Path(userboard.capture.__file__).read_text()
    assert re.findall(r"User|user_dict|from \.models|userboard\.models", source) == []


def test_slow_network_does_not_hold_up_the_commit(db):
    """The socket emitter sends from its own worker: a stuck send leaves commits free."""
    release, sent = threading.Event(), []

    class StuckEmitter:
        def emit(self, name, data, namespace, room):
            release.wait(10)
            sent.append((name, data["seq"], namespace, room))

    emitter = QueuedEmitter(StuckEmitter())
    db.capture.publishers.append(emitter)
    with db.Session() as s:
        for label in ("alice", "bob"):
            USER.add(s, label)
            s.commit()  # returns although the first send is still stuck
        assert sent == []
    release.set()
    assert emitter.flush(5)
    assert sent == [("user_added", 1, "/users", "admins"), ("user_added", 2, "/users", "admins")]


@pytest.mark.parametrize("count", [3, 600])
def test_events_of_large_transactions_are_logged_with_their_seq(db, kit, count):
    with db.Session() as s:
        for i in range(count):
            kit.add(s, f"bulk{i:04}")
        s.commit()
    assert [e.seq for e in db.events] == list(range(1, count + 1))
    rows = log_rows(db)
    assert [r[0] for r in rows] == list(range(1, count + 1))
    assert all(r[4] == e.data for r, e in zip(rows, db.events, strict=True))


def test_the_actor_a_session_names_is_on_its_events_and_in_the_log(db):
    with db.Session() as s:
        set_actor(s, "token", 7, "alice")
        USER.add(s, "carol")
        s.commit()
    with db.Session() as s:
        USER.add(s, "dave")
        s.commit()
    assert [e.data["actor"] for e in db.events] == [
        {"kind": "token", "user_id": 7, "name": "alice"}, SCRIPT]
    assert [row[4]["actor"] for row in log_rows(db)] == [e.data["actor"] for e in db.events]
