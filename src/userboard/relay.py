"""In-order delivery: each socket of this process gets every event once, in seq order. No Flask.

Events reach a server process on several paths: its own commits (from the capture's publisher),
other processes' commits through the message queue, and the change log, read by `Sequencer.relay`
after a NOTIFY (PostgreSQL), on a short wait after a gap, and on every tick of the server's
loop. Every path hands events to one `Sequencer`, which sends them to the whole-table room in
strictly increasing seq order without gaps, each exactly once: an event that arrives early waits
for the missing ones (at most `gap_wait` seconds before the change log is read for them), and an
event at or below what was sent is dropped. So the simplest client, one that just applies
`user_*` events as they come, is a correct one.

A socket joining the room is admitted at the seq its catch-up reached (`admit`): if the room is
behind, it joins when the room gets there; if ahead, it is sent what it missed first.

Sockets take events at their own pace, and none buffers without bound. The relay reads the
change log a batch at a time and, before the next batch, lets the room take the last one (it
stops waiting for a socket that has not finished one for `PACE_WAIT` seconds). A socket with more
than `max_queued` events still to write leaves the room, so nobody waits for it; once it has
written them, it is sent what it missed from the change log, a batch at a time (`feed`), and
rejoins the room. The change log keeps every event for a while (capture.DEFAULT_MIN_AGE) however
many follow, so a burst larger than its retention still reaches every socket by push; only a
socket that falls further behind than that finds a gap, and resyncs, as the protocol says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import select

from .capture import current_seq
from .changelog import ChangeLog

log = logging.getLogger(__name__)

# Change-log rows read per query while relaying or catching a socket up.
BATCH = 1000
# How long an early event waits for the ones before it before the change log is asked.
GAP_WAIT = 0.05
# A socket with more events than this waiting to be written leaves the room and catches up
# from the change log (USERBOARD_SOCKET_MAX_QUEUED). A queued event costs a socket a reference
# (the packet is shared): the bound is on what a stopped client keeps alive, a few MB.
MAX_QUEUED = 5000
# How long the relay waits for the room's slowest socket to take a batch before reading on.
PACE_WAIT = 0.25


class Sequencer:
    """Whole-table delivery for one process: ordered, gap-free, exactly once per socket."""

    def __init__(self, sessions, emit: Callable[..., None], enter: Callable[[str], None],
                 gap_wait: float = GAP_WAIT, leave: Callable[[str], None] | None = None,
                 queued: Callable[[str], int] | None = None,
                 members: Callable[[], Iterable[str]] | None = None,
                 max_queued: int = MAX_QUEUED):
        self.sessions = sessions
        self.emit = emit  # emit(name, payload, to=ROOM or a sid): this process's sockets only
        self.enter = enter  # enter(sid): put a socket into the room
        self.leave = leave or (lambda sid: None)  # leave(sid): take a socket out of the room
        self.queued = queued or (lambda sid: 0)  # queued(sid): events not yet written to it
        self.members = members or (lambda: ())  # members(): the sockets in the room
        self.gap_wait = gap_wait
        self.max_queued = max_queued
        self._delivered = 0
        self._pending: dict[int, tuple[str, dict]] = {}
        self._waiting: dict[str, int] = {}  # sid -> the seq after which it joins the room
        self._behind: dict[str, int] = {}  # sid -> the last seq it was sent, outside the room
        self._feeding: set[str] = set()  # sids being sent a batch from the change log right now
        self._lock = threading.RLock()
        self._wake = threading.Event()

    @property
    def delivered(self) -> int:
        """The last seq sent to the room (every one before it was sent too)."""
        with self._lock:
            return self._delivered

    def start_at(self, seq: int) -> None:
        """Deliver what comes after `seq` (the history before start-up is not re-sent)."""
        with self._lock:
            self._delivered = max(self._delivered, seq)
            self._pending = {s: e for s, e in self._pending.items() if s > seq}

    def start_at_current(self) -> None:
        with self.sessions() as session:
            self.start_at(current_seq(session))

    # -- every path ends here ---------------------------------------------------------------

    def offer(self, name: str, payload: dict) -> None:
        """An event from any path; sent now if it is next, else kept until the gap is filled."""
        seq = payload.get("seq")
        if not isinstance(seq, int):
            return
        with self._lock:
            if seq <= self._delivered or seq in self._pending:
                return
            self._pending[seq] = (name, payload)
            self._drain()
            gap = bool(self._pending)
        if gap:
            self._wake.set()

    def _drain(self) -> None:
        """Send every pending event that is next in line (lock held: sends stay in order)."""
        while self._delivered + 1 in self._pending:
            name, payload = self._pending.pop(self._delivered + 1)
            self.emit(name, payload)
            self._delivered += 1
            self._admit_waiting()

    def _skip_to(self, seq: int) -> None:
        """Move past seqs the change log no longer has (lock held)."""
        if seq > self._delivered:
            log.warning("events %d-%d are no longer in the change log; clients will resync",
                        self._delivered + 1, seq)
            self._delivered = seq
            self._admit_waiting()
            self._drain()

    # -- sockets joining and falling behind ---------------------------------------------------

    def admit(self, sid: str, caught_up_to: int) -> int:
        """Put a socket that holds everything up to `caught_up_to` into the room, in order;
        return the seq it has been sent up to (the rest follows from `feed`)."""
        with self._lock:
            if self._delivered < caught_up_to:  # the room is behind this socket: join it later
                self._waiting[sid] = caught_up_to
                return caught_up_to
            self._behind[sid] = caught_up_to
        return self._catch_up(sid)

    def forget(self, sid: str) -> None:
        with self._lock:
            self._waiting.pop(sid, None)
            self._behind.pop(sid, None)

    def _admit_waiting(self) -> None:
        for sid, last in list(self._waiting.items()):
            if last <= self._delivered:
                del self._waiting[sid]
                self.enter(sid)

    def _step_out(self, sid: str) -> None:
        """Take a socket that falls behind out of the room; it catches up from the change log."""
        with self._lock:
            self.leave(sid)
            self._behind[sid] = self._delivered  # the room queued everything up to here for it
        log.info("socket %s is %d events behind; it catches up from the change log",
                 sid, self.queued(sid))

    def _catch_up(self, sid: str) -> int:
        """Send a socket outside the room its next batch from the change log, and let it in
        once it has everything the room was sent; return the seq it was sent up to."""
        with self._lock:
            last = self._behind.get(sid)
            if last is None:
                return self._delivered
            if sid in self._feeding:  # another greenlet is sending it this batch
                return last
            self._feeding.add(sid)
            upto = min(self._delivered, last + BATCH)
        try:
            for name, payload in self._read(last, upto) if upto > last else ():
                self.emit(name, payload, to=sid)  # not in the room: nothing else is sent to it
        finally:
            with self._lock:
                self._feeding.discard(sid)
                if sid in self._behind:
                    if upto == self._delivered:
                        del self._behind[sid]
                        self.enter(sid)
                    else:
                        self._behind[sid] = upto
        return upto

    def feed(self) -> bool:
        """Move sockets with more than `max_queued` events to write out of the room, and send the
        ones outside it that have written everything their next batch; return whether any
        socket is still behind the room."""
        for sid in list(self.members()):
            if self.queued(sid) > self.max_queued:
                self._step_out(sid)
        for sid in list(self._behind):
            if self.queued(sid) == 0:
                self._catch_up(sid)
        return bool(self._behind)

    def _pace(self) -> None:
        """Wait until every socket of the room has taken what it was sent, or until none has
        finished for PACE_WAIT seconds (a socket that stopped reading holds nobody up for long);
        a socket past `max_queued` leaves the room."""
        deadline, busy = time.monotonic() + PACE_WAIT, None
        while True:
            queued = {sid: self.queued(sid) for sid in self.members()}
            for sid, count in queued.items():
                if count > self.max_queued:
                    self._step_out(sid)
            still = {sid for sid, count in queued.items() if 0 < count <= self.max_queued}
            if not still:
                return
            if busy is not None and busy - still:  # some socket finished: the room is moving
                deadline = time.monotonic() + PACE_WAIT
            if time.monotonic() >= deadline:
                return
            busy = still
            time.sleep(0.005)

    # -- the change log -----------------------------------------------------------------------

    def wake(self) -> None:
        """Something committed elsewhere (a NOTIFY): read the change log soon."""
        self._wake.set()

    def wait(self, timeout: float) -> None:
        """Sleep until woken or `timeout`; a gap gets `gap_wait` for its push to arrive."""
        if self._wake.wait(timeout):
            self._wake.clear()
            with self._lock:
                gap = bool(self._pending)
            if gap:
                time.sleep(self.gap_wait)

    def relay(self) -> int:
        """Deliver, from the change log, every committed event not sent yet, a batch at a time
        and at the room's pace; return how many."""
        sent = 0
        while True:
            with self.sessions() as session:
                latest = current_seq(session)
                start = self.delivered
                if latest <= start:
                    return sent
                rows = session.execute(
                    select(ChangeLog.seq, ChangeLog.event, ChangeLog.payload)
                    .where(ChangeLog.seq > start, ChangeLog.seq <= latest)
                    .order_by(ChangeLog.seq).limit(BATCH)
                ).all()
            with self._lock:
                if rows and rows[0].seq > self._delivered + 1:
                    self._skip_to(rows[0].seq - 1)  # pruned before we got to them
                elif not rows:
                    self._skip_to(latest)
                for row in rows:
                    if row.seq > self._delivered:
                        self._pending.setdefault(row.seq, (row.event, row.payload))
                before = self._delivered
                self._drain()
                sent += self._delivered - before
            if len(rows) < BATCH:
                return sent
            self._pace()  # a backlog: the next batch once the room took this one
            time.sleep(0)  # (and sockets and requests run between batches in any case)

    def _read(self, after: int, upto: int) -> list[tuple[str, dict]]:
        with self.sessions() as session:
            rows = session.execute(
                select(ChangeLog.event, ChangeLog.payload)
                .where(ChangeLog.seq > after, ChangeLog.seq <= upto)
                .order_by(ChangeLog.seq)
            ).all()
        return [(row.event, row.payload) for row in rows]


class SequencedEmitter:
    """The server's own publisher target: local sockets through the sequencer, and, with a
    message queue, the other server processes through the queue (ours gets it back and drops
    it: the sequencer has it already)."""

    def __init__(self, sequencer: Sequencer, queue=None):
        self.sequencer = sequencer
        self.queue = queue  # a Flask-SocketIO server on a message queue, or None

    def emit(self, name, data, namespace=None, room=None):
        self.sequencer.offer(name, data)
        if self.queue is not None:
            self.queue.emit(name, data, namespace=namespace, to=room)


def listen_for_commits(url, wake: Callable[[], None], retry: float = 1.0) -> None:
    """PostgreSQL: call `wake()` on every NOTIFY of an outside write (see triggers.py),
    forever, reconnecting after errors. Runs in its own greenlet."""
    import psycopg

    from .triggers import NOTIFY_CHANNEL

    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True) as connection:
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                wake()  # whatever committed while we were not listening
                for _notify in connection.notifies():
                    wake()
        except Exception as exc:
            log.warning("listening for commits failed (%s); retrying", type(exc).__name__)
        time.sleep(retry)
