"""A pytest plugin for asserting what a block of code broadcasts, with no server.

Installed with userboard (entry point `pytest11`), so an application's tests can write::

    from userboard.testing import capture_events, assert_no_events

    def test_promote(session):
        with capture_events() as events:
            promote(session, user_id=3)          # commits
        assert events.names == ["user_updated"]
        assert events[0].data["changes"]["role"] == "admin"

    def test_rolled_back_write_is_silent(session):
        with assert_no_events():
            ...

or use the `userboard_events` fixture, which records for the whole test. It sees every commit of
every session factory wired with `userboard.capture` in this process. Imports no Flask.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from .capture import observe_commits
from .events import Event


class CapturedEvents(Sequence):
    """Events published while recording, in commit order."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def _record(self, events: Sequence[Event]) -> None:
        with self._lock:
            self._events.extend(events)

    def __getitem__(self, index):
        return self._events[index]

    def __len__(self) -> int:
        return len(self._events)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._events]

    def payloads(self, name: str | None = None) -> list[dict]:
        """Payloads, optionally of one event name only."""
        return [e.data for e in self._events if name is None or e.name == name]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def assert_nothing_broadcast(self) -> None:
        __tracebackhide__ = True
        if self._events:
            raise AssertionError(f"expected no events, got {self.names}")


@contextmanager
def capture_events() -> Iterator[CapturedEvents]:
    """Record the events committed inside the block."""
    captured = CapturedEvents()
    with observe_commits(captured._record):
        yield captured


@contextmanager
def assert_no_events() -> Iterator[CapturedEvents]:
    """Fail if anything committed inside the block produced an event."""
    __tracebackhide__ = True
    with capture_events() as captured:
        yield captured
    captured.assert_nothing_broadcast()


@pytest.fixture
def userboard_events() -> Iterator[CapturedEvents]:
    """Events committed during the test."""
    with capture_events() as captured:
        yield captured
