"""The sequencer: every path's events reach the room in seq order, each once; gaps are filled
from the change log; pruned events are skipped; joining sockets are admitted in order; the relay
goes at the room's pace, and a socket that falls behind catches up from the change log."""

from __future__ import annotations

from userboard import relay
from userboard.models import User
from userboard.relay import Sequencer


def add_users(db, *names):
    with db.Session() as s:
        for name in names:
            s.add(User(username=name, email=f"{name}@example.com"))
            s.commit()


class Room:
    """What the sequencer sent, where, in order."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []  # (to, seq)
        self.members: list[tuple[str, int]] = []  # (sid, seq sent to the room before it joined)

    def emit(self, name, payload, to="room"):
        self.sent.append((to, payload["seq"]))

    def room_seqs(self):
        return [seq for to, seq in self.sent if to == "room"]


def sequencer(db, room):
    made = Sequencer(db.Session, emit=room.emit,
                     enter=lambda sid: room.members.append((sid, made.delivered)))
    return made


def events_of(db):
    return {e.seq: e for e in db.events}


def test_early_events_wait_and_duplicates_are_dropped(db):
    room = Room()
    seq = sequencer(db, room)
    seq.start_at_current()
    add_users(db, "a", "b", "c", "d")
    by_seq = events_of(db)
    for s in (3, 1, 3, 4, 1, 2):
        seq.offer(by_seq[s].name, by_seq[s].data)
    assert room.room_seqs() == [1, 2, 3, 4]


def test_the_change_log_fills_a_gap_and_relays_what_no_one_pushed(db):
    room = Room()
    seq = sequencer(db, room)
    seq.start_at_current()
    add_users(db, "a", "b", "c")
    seq.offer("user_added", events_of(db)[3].data)  # 1 and 2 were never pushed
    assert room.room_seqs() == []
    assert seq.relay() == 3
    assert room.room_seqs() == [1, 2, 3]
    assert seq.relay() == 0


def test_pruned_events_are_skipped_in_order(db):
    add_users(db, "old")
    room = Room()
    seq = sequencer(db, room)
    seq.start_at_current()
    db.capture.retention, db.capture.min_age = 2, 0
    add_users(db, *[f"user{i:03}" for i in range(120)])
    seq.relay()
    sent = room.room_seqs()
    assert sent == sorted(sent) and sent[-1] == 121 and sent[0] > 2
    assert seq.delivered == 121


def test_a_socket_behind_the_room_gets_what_it_missed_then_joins(db):
    room = Room()
    seq = sequencer(db, room)
    seq.start_at_current()
    add_users(db, "a", "b", "c")
    seq.relay()
    seq.admit("late", 1)  # its catch-up reached seq 1; the room is at 3
    assert [s for to, s in room.sent if to == "late"] == [2, 3]
    assert room.members == [("late", 3)]


def test_a_socket_ahead_of_the_room_joins_when_the_room_gets_there(db):
    room = Room()
    seq = sequencer(db, room)
    seq.start_at_current()
    add_users(db, "a", "b", "c")
    seq.admit("early", 2)  # its catch-up read seq 2; the room has sent nothing yet
    assert room.members == []
    by_seq = events_of(db)
    seq.offer("user_added", by_seq[1].data)
    seq.offer("user_added", by_seq[2].data)
    assert room.members == [("early", 2)]  # joined right after 2 went out: 3 reaches it once


class Sockets(Room):
    """A room whose sockets each have a send queue: what is sent to a socket waits there until
    `take` (its client reading) empties it, except for `readers`, which take everything at once;
    `inside` are the sockets in the room."""

    def __init__(self, *sids, readers=()):
        super().__init__()
        self.queue = {sid: 0 for sid in (*sids, *readers)}
        self.inside = {*sids, *readers}
        self.readers = set(readers)

    def emit(self, name, payload, to="room"):
        super().emit(name, payload, to)
        for sid in self.inside if to == "room" else [to]:
            self.queue[sid] += sid not in self.readers

    def take(self, sid):
        self.queue[sid] = 0

    def queued(self, sid):
        return self.queue.get(sid, 0)

    def sequencer(self, db, queued=None):
        return Sequencer(db.Session, emit=self.emit, enter=self.inside.add,
                         leave=self.inside.discard, queued=queued or self.queued,
                         members=lambda: list(self.inside))

    def sent_to(self, sid):
        return [seq for to, seq in self.sent if to == sid]


def test_a_socket_with_too_much_to_write_leaves_the_room_and_catches_up_from_the_change_log(db):
    sockets = Sockets("slow", readers=["fast"])
    seq = sockets.sequencer(db)
    seq.max_queued = 3
    seq.start_at_current()
    add_users(db, *[f"a{i}" for i in range(5)])
    seq.relay()
    assert seq.feed() and sockets.inside == {"fast"}  # 5 waiting for "slow": out of the room
    add_users(db, "b", "c")
    seq.relay()  # the room goes on without it
    assert sockets.room_seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert seq.feed() and sockets.sent_to("slow") == []  # it has not written what it holds yet
    sockets.take("slow")
    assert not seq.feed()  # now it is sent what it missed, and is back in the room
    assert sockets.sent_to("slow") == [6, 7] and sockets.inside == {"fast", "slow"}
    add_users(db, "d")
    seq.relay()
    assert sockets.room_seqs()[-1] == 8 and sockets.queue["slow"] == 3  # 6, 7, then 8 from the room


def test_a_socket_behind_catches_up_a_batch_at_a_time_as_it_takes_them(db, monkeypatch):
    monkeypatch.setattr(relay, "BATCH", 2)
    sockets = Sockets()
    seq = sockets.sequencer(db)
    seq.start_at_current()
    add_users(db, *[f"u{i}" for i in range(5)])
    seq.relay()
    sockets.queue["late"] = 0
    assert seq.admit("late", 0) == 2  # the first batch at once
    for sent in ([1, 2], [1, 2, 3, 4], [1, 2, 3, 4, 5]):
        assert sockets.sent_to("late") == sent
        assert seq.feed() is (sent[-1] < 5) and seq.feed() is (sent[-1] < 5)  # waits for a take
        sockets.take("late")
        seq.feed()
    assert "late" in sockets.inside


def test_the_relay_reads_the_next_batch_once_the_room_took_the_last(db, monkeypatch):
    monkeypatch.setattr(relay, "BATCH", 3)
    sockets = Sockets("reader")
    held = []  # what the socket still held each time the relay read a batch

    def reading_socket(sid):  # the reader takes one event each time the relay looks
        held.append(sockets.queue[sid])
        sockets.queue[sid] = max(0, sockets.queue[sid] - 1)
        return sockets.queue[sid]

    seq = sockets.sequencer(db, queued=reading_socket)
    seq.start_at_current()
    add_users(db, *[f"p{i}" for i in range(7)])
    assert seq.relay() == 7
    assert sockets.room_seqs() == list(range(1, 8))
    assert held == [3, 2, 1, 3, 2, 1]  # each batch taken whole before the next was read


def test_the_relay_does_not_wait_long_for_a_socket_that_stopped_reading(db, monkeypatch):
    monkeypatch.setattr(relay, "BATCH", 2)
    monkeypatch.setattr(relay, "PACE_WAIT", 0.01)
    sockets = Sockets("stopped", readers=["reader"])
    seq = sockets.sequencer(db)
    seq.start_at_current()
    add_users(db, *[f"s{i}" for i in range(5)])
    assert seq.relay() == 5  # it went on without the stopped socket
    assert sockets.room_seqs() == [1, 2, 3, 4, 5] and sockets.queue["stopped"] == 5
