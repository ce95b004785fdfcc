"""Change capture on a plain sessionmaker, no Flask: coalescing, transactions, bulk, seq."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest
from sqlalchemy import delete, func, select, update

from userboard.capture import current_seq, last_commit_seq
from userboard.models import ChangeLog, User
from userboard.publish import QueuedEmitter

from .conftest import CapturingDatabase


def add(session, name, **kw):
    user = User(username=name, email=f"{name}@example.com", **kw)
    session.add(user)
    return user


def log_rows(db):
    with db.Session() as s:
        return [(r.seq, r.event, r.user_id, r.payload) for r in s.scalars(
            select(ChangeLog).order_by(ChangeLog.seq))]


def test_add_emits_user_added_with_the_row(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.commit()
        assert db.names == ["user_added"]
        assert db.events[0].data == {"seq": 1, "user": user.to_dict()}
        assert "password_hash" not in db.events[0].data["user"]


def test_add_then_update_is_one_added_with_final_row(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.flush()
        user.role = "admin"
        s.commit()
        assert db.names == ["user_added"]
        assert db.events[0].data["user"]["role"] == "admin"


def test_add_then_delete_is_nothing(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.flush()
        s.delete(user)
        s.commit()
        assert db.events == []
        assert current_seq(s) == 0


def test_update_then_update_keeps_previous_from_transaction_start(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.commit()
        db.recorder.clear()
        user.email = "one@example.com"
        s.flush()
        user.email = "two@example.com"
        user.status = "disabled"
        s.commit()
        assert db.names == ["user_updated"]
        data = db.events[0].data
        assert data["id"] == user.id and data["version"] == user.version == 3
        assert data["changes"]["email"] == "two@example.com"
        assert data["changes"]["status"] == "disabled"
        assert data["previous"]["email"] == "alice@example.com"
        assert data["previous"]["status"] == "active"
        assert set(data["changes"]) == {"email", "status", "updated_at"}


def test_update_then_delete_is_deleted(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.commit()
        user_id = user.id
        db.recorder.clear()
        user.role = "admin"
        s.flush()
        s.delete(user)
        s.commit()
        assert [(e.name, e.data) for e in db.events] == [("user_deleted", {"seq": 2, "id": user_id})]


def test_update_that_changes_nothing_emits_nothing(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.commit()
        db.recorder.clear()
        user.role = "user"
        s.commit()
        user.email = "x@example.com"
        s.flush()
        user.email = "alice@example.com"
        s.commit()
        assert db.events == []


def test_update_of_an_expired_object_knows_the_old_value(db):
    with db.Session() as s:
        add(s, "alice")
        s.commit()
        db.recorder.clear()
    with db.Session() as s:
        user = s.scalar(select(User))
        s.expire(user)
        user.email = "new@example.com"
        s.commit()
        assert db.events[0].data["previous"]["email"] == "alice@example.com"


def test_rollback_emits_nothing_and_uses_no_seq(db):
    with db.Session() as s:
        add(s, "alice")
        s.flush()
        s.rollback()
        assert db.events == []
        add(s, "bob")
        s.commit()
        assert [e.seq for e in db.events] == [1]


def test_failed_flush_emits_nothing(db):
    with db.Session() as s:
        add(s, "alice")
        s.commit()
        db.recorder.clear()
        add(s, "ALICE")  # unique ignoring case
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            s.commit()
        s.rollback()
        assert db.events == []
        assert current_seq(s) == 1


def test_savepoint_release_is_not_a_commit(db):
    with db.Session() as s:
        with s.begin_nested():
            add(s, "alice")
        assert db.events == []
        s.commit()
        assert db.names == ["user_added"]


def test_savepoint_rollback_drops_its_changes_only(db):
    with db.Session() as s:
        add(s, "alice")
        savepoint = s.begin_nested()
        add(s, "bob")
        s.flush()
        savepoint.rollback()
        add(s, "carol")
        s.commit()
        names = [e.data["user"]["username"] for e in db.events]
        assert names == ["alice", "carol"]
        assert [e.seq for e in db.events] == [1, 2]


def test_savepoint_rollback_restores_an_earlier_update(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.commit()
        db.recorder.clear()
        user.role = "admin"
        s.flush()
        with pytest.raises(RuntimeError):
            with s.begin_nested():
                user.status = "disabled"
                s.flush()
                raise RuntimeError("abort the savepoint")
        s.commit()
        assert db.names == ["user_updated"]
        assert set(db.events[0].data["changes"]) == {"role", "updated_at"}


def test_events_of_one_transaction_are_consecutive(db):
    with db.Session() as s:
        for name in ("alice", "bob", "carol"):
            add(s, name)
        s.commit()
        assert [e.seq for e in db.events] == [1, 2, 3]
        assert last_commit_seq(s) == 3


def test_bulk_update_emits_one_event_per_changed_row(db):
    with db.Session() as s:
        alice, bob, carol = add(s, "alice"), add(s, "bob"), add(s, "carol", status="disabled")
        s.commit()
        db.recorder.clear()
        s.execute(update(User).where(User.username != "bob").values(status="disabled"))
        s.commit()
        assert db.names == ["user_updated"]  # carol was disabled already
        data = db.events[0].data
        assert data["id"] == alice.id and data["version"] == 2
        assert data["changes"]["status"] == "disabled"
        assert data["previous"]["status"] == "active"
        s.expire_all()
        assert alice.version == 2 and bob.version == 1 and carol.version == 1


def test_bulk_update_is_picked_up_by_later_orm_writes(db):
    with db.Session() as s:
        alice = add(s, "alice")
        s.commit()
        s.execute(update(User).values(role="admin"))
        alice.email = "boss@example.com"  # must not raise StaleDataError
        s.commit()
        # One transaction: the bulk and the ORM change coalesce into one update.
        assert db.names == ["user_added", "user_updated"]
        assert db.events[1].data["version"] == 3
        assert set(db.events[1].data["changes"]) == {"role", "email", "updated_at"}


def test_bulk_update_by_primary_key(db):
    with db.Session() as s:
        alice, bob = add(s, "alice"), add(s, "bob")
        s.commit()
        db.recorder.clear()
        s.execute(update(User), [
            {"id": alice.id, "version": 1, "role": "admin"},
            {"id": bob.id, "version": 1, "role": "user"},
        ])
        s.commit()
        assert [(e.name, e.data["id"]) for e in db.events] == [("user_updated", alice.id)]


def test_bulk_delete_emits_one_event_per_row(db):
    with db.Session() as s:
        alice, _bob, carol = add(s, "alice"), add(s, "bob"), add(s, "carol")
        s.commit()
        ids = [alice.id, carol.id]
        db.recorder.clear()
        s.execute(delete(User).where(User.id.in_(ids)))
        s.commit()
        assert [(e.name, e.data) for e in db.events] == [
            ("user_deleted", {"seq": 4, "id": ids[0]}),
            ("user_deleted", {"seq": 5, "id": ids[1]}),
        ]


def test_bulk_update_rolled_back_emits_nothing(db):
    with db.Session() as s:
        add(s, "alice")
        s.commit()
        db.recorder.clear()
        s.execute(update(User).values(role="admin"))
        s.rollback()
        assert db.events == []


def test_change_log_holds_every_event_in_the_same_transaction(db):
    with db.Session() as s:
        user = add(s, "alice")
        s.commit()
        user.role = "admin"
        s.commit()
        s.delete(user)
        s.commit()
    assert [(seq, name, data) for seq, name, _uid, data in log_rows(db)] == [
        (e.seq, e.name, e.data) for e in db.events
    ]


def test_change_log_keeps_only_the_retention(db):
    db.capture.retention = 5
    with db.Session() as s:
        for i in range(105):
            add(s, f"user{i:03}")
            s.commit()
    seqs = [row[0] for row in log_rows(db)]
    assert seqs[-1] == 105
    assert seqs[0] >= 96 and seqs[:1] != [1]


def test_failing_publisher_does_not_fail_the_commit(db, caplog):
    def broken(_events):
        raise ConnectionError("publisher is down")

    db.capture.publishers.insert(0, broken)
    with caplog.at_level(logging.ERROR, logger="userboard.capture"), db.Session() as s:
        add(s, "alice")
        s.commit()  # must not raise
        assert s.scalar(select(func.count()).select_from(User)) == 1
    assert db.names == ["user_added"]  # later publishers still got it
    assert "publisher is down" in caplog.text


def test_seq_follows_commit_order_not_start_order(postgres_url):
    # PostgreSQL only: SQLite admits one writer at a time, so both writes cannot be in flight.
    db = CapturingDatabase(postgres_url)
    first, second = db.Session(), db.Session()
    early = add(first, "early")
    first.flush()  # takes the lower id
    late = add(second, "late")
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
        "import sys, userboard.capture, userboard.bootstrap, userboard.users, userboard.testing;"
        "bad = [m for m in sys.modules if m == 'flask' or m.startswith('flask.')"
        " or m.startswith('flask_')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


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
        for name in ("alice", "bob"):
            add(s, name)
            s.commit()  # returns although the first send is still stuck
        assert sent == []
    release.set()
    assert emitter.flush(5)
    assert sent == [("user_added", 1, "/users", "admins"), ("user_added", 2, "/users", "admins")]


@pytest.mark.parametrize("count", [3, 600])  # PostgreSQL: one-statement path, then the fallback
def test_events_of_large_transactions_are_logged_with_their_seq(db, count):
    with db.Session() as s:
        for i in range(count):
            add(s, f"bulk{i:04}")
        s.commit()
    assert [e.seq for e in db.events] == list(range(1, count + 1))
    rows = log_rows(db)
    assert [r[0] for r in rows] == list(range(1, count + 1))
    assert all(r[3] == e.data for r, e in zip(rows, db.events, strict=True))
