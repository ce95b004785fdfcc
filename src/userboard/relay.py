"""The server's change-log relay: deliver events committed by other processes. Imports no Flask.

A CLI job or script without a message queue cannot reach the server's sockets, and a publish can
be lost (a Redis outage). The change log has every event, so the server polls it: on each tick of
its background loop (server.TICK) it reads the rows after the highest seq it knows was sent in
order, and emits those it has not sent itself, to its own clients only.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from .capture import current_seq
from .changelog import ChangeLog

log = logging.getLogger(__name__)

BATCH = 1000


class SentSeqs:
    """Which seqs this process has taken care of: all up to `floor`, plus a few beyond it.

    A seq counts from the moment it is queued for sending here, so the relay never sends a
    second copy of an event that is merely waiting in a busy emitter's queue. If that send then
    fails, `retry()` hands the seq back to the relay.

    The emitter's worker, the queue's listener, the relay and the heartbeat all touch it from
    their own greenlets or threads: every read and write takes the lock.
    """

    def __init__(self, floor: int = 0):
        self._floor = floor
        self._last_delivered = floor
        self._above: set[int] = set()
        self._retries: set[int] = set()
        self._lock = threading.Lock()

    @property
    def floor(self) -> int:
        """Every seq up to this one is taken care of."""
        with self._lock:
            return self._floor

    @property
    def last_delivered(self) -> int:
        """The highest seq actually sent to this process's clients."""
        with self._lock:
            return self._last_delivered

    @property
    def retries(self) -> frozenset[int]:
        """Seqs whose send failed here: the relay sends them from the change log."""
        with self._lock:
            return frozenset(self._retries)

    def delivered(self, seq: int) -> None:
        """The event went out to this process's clients (the heartbeat reports these)."""
        with self._lock:
            self._mark(seq)
            self._last_delivered = max(self._last_delivered, seq)

    def retry(self, seq: int) -> None:
        with self._lock:
            self._retries.add(seq)

    def mark(self, seq: int) -> None:
        with self._lock:
            self._mark(seq)

    def skip_to(self, seq: int) -> None:
        """Treat everything up to `seq` as sent (history before start, or pruned rows)."""
        with self._lock:
            if seq > self._floor:
                self._floor = seq
                self._last_delivered = max(self._last_delivered, seq)
                self._above = {s for s in self._above if s > seq}
            self._advance()

    def _mark(self, seq: int) -> None:
        """Count `seq` as taken care of (lock held)."""
        self._retries.discard(seq)
        if seq > self._floor:
            self._above.add(seq)
        self._advance()

    def _advance(self) -> None:
        """Move the floor over every seq now contiguous with it (lock held)."""
        while self._floor + 1 in self._above:
            self._floor += 1
            self._above.discard(self._floor)

    def __contains__(self, seq: int) -> bool:
        with self._lock:
            if seq in self._retries:
                return False
            return seq <= self._floor or seq in self._above


class ChangeLogRelay:
    """Poll the change log and emit what this process has not sent."""

    def __init__(self, sessions, emit, sent: SentSeqs, grace: bool = True):
        self.sessions = sessions
        self.emit = emit  # emit(name, payload): to this process's own clients only
        self.sent = sent
        # With grace, a row is relayed only when it was still unsent at the previous poll too:
        # the message queue or our own publisher normally delivers it first, and the relay
        # then stays silent instead of sending a duplicate.
        self.grace = grace
        self._missing: set[int] = set()

    def start_at_current(self) -> None:
        with self.sessions() as session:
            self.sent.skip_to(current_seq(session))

    def poll_once(self) -> int:
        """Emit unsent events from the change log; return how many were emitted."""
        emitted = 0
        with self.sessions() as session:
            latest = current_seq(session)
            floor, retries = self.sent.floor, sorted(self.sent.retries)
            if latest <= floor and not retries:
                return 0
            rows = session.execute(
                select(ChangeLog.seq, ChangeLog.event, ChangeLog.payload)
                .where(ChangeLog.seq > floor, ChangeLog.seq <= latest)
                .order_by(ChangeLog.seq)
                .limit(BATCH)
            ).all()
            if retries:  # sends that failed here, below the floor: the log still has them
                rows = session.execute(
                    select(ChangeLog.seq, ChangeLog.event, ChangeLog.payload)
                    .where(ChangeLog.seq.in_(retries[:BATCH]))
                    .order_by(ChangeLog.seq)
                ).all() + rows
        floor = self.sent.floor  # it may have moved while we read
        ahead = [row for row in rows if row.seq > floor]
        if ahead and ahead[0].seq > floor + 1:
            # Committed (seq <= latest) yet not in the log: pruned before we got to them.
            self.sent.skip_to(ahead[0].seq - 1)
        missing, waiting = set(), False
        for row in rows:
            if row.seq in self.sent:
                continue
            if waiting or (self.grace and row.seq not in self._missing):
                missing.add(row.seq)  # next time; and nothing is sent past a waiting row
                waiting = True
                continue
            self.emit(row.event, row.payload)
            self.sent.delivered(row.seq)
            emitted += 1
        self._missing = missing
        return emitted
