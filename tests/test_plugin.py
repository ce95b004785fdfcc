"""The pytest plugin other applications use to assert broadcasts."""

from __future__ import annotations

import pytest

from userboard.models import User
from userboard.testing import assert_no_events, capture_events

from .gadgets import Gadget

pytest_plugins = ["pytester"]


def test_capture_events_records_names_and_payloads(db):
    with capture_events() as events, db.Session() as s:
        s.add(User(username="alice", email="alice@example.com"))
        s.commit()
    assert events.names == ["user_added"]
    assert events.payloads("user_added")[0]["user"]["username"] == "alice"


def test_capture_events_records_any_captured_model(db):
    with capture_events() as events, db.Session() as s:
        s.add(Gadget(code="G-1", name="widget"))
        s.add(User(username="alice", email="alice@example.com"))
        s.commit()
    assert events.names == ["gadget_added", "user_added"]
    assert events.payloads("gadget_added")[0]["gadget"]["code"] == "G-1"
    assert [e.seq for e in events] == [1, 2]


def test_capture_events_stops_recording_after_the_block(db):
    with capture_events() as events:
        pass
    with db.Session() as s:
        s.add(User(username="alice", email="alice@example.com"))
        s.commit()
    assert len(events) == 0


def test_assert_no_events_fails_when_something_was_broadcast(db):
    with pytest.raises(AssertionError, match="user_added"):
        with assert_no_events(), db.Session() as s:
            s.add(User(username="alice", email="alice@example.com"))
            s.commit()


def test_assert_no_events_passes_for_a_rollback(db):
    with assert_no_events() as events, db.Session() as s:
        s.add(User(username="alice", email="alice@example.com"))
        s.flush()
        s.rollback()
    assert events.names == []


def test_plugin_fixture_is_available_through_the_entry_point(pytester):
    """An outside project gets `userboard_events` without importing anything."""
    pytester.makepyfile(
        """
        from sqlalchemy.orm import sessionmaker
        from userboard.capture import install_capture
        from userboard.db import Base, make_engine
        from userboard.models import User

        def test_app(userboard_events, tmp_path):
            engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
            Base.metadata.create_all(engine)
            Session = sessionmaker(engine)
            install_capture(Session)
            with Session() as s:
                s.add(User(username="zed", email="zed@example.com"))
                s.commit()
            assert userboard_events.names == ["user_added"]
            engine.dispose()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
