"""The sequencer: every path's events reach the room in seq order, each once; gaps are filled
from the change log; pruned events are skipped; joining sockets are admitted in order."""

from __future__ import annotations

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
