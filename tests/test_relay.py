"""The change-log relay that delivers other processes' events, on a plain database."""

from __future__ import annotations

from userboard.models import User
from userboard.relay import ChangeLogRelay, SentSeqs


def test_sent_seqs_tracks_a_contiguous_floor():
    sent = SentSeqs()
    for seq in (1, 3, 4):
        sent.mark(seq)
    assert sent.floor == 1 and 3 in sent and 2 not in sent
    sent.mark(2)
    assert sent.floor == 4
    sent.skip_to(10)
    assert sent.floor == 10 and 7 in sent


def add_users(db, *names):
    with db.Session() as s:
        for name in names:
            s.add(User(username=name, email=f"{name}@example.com"))
            s.commit()


def test_relay_emits_only_what_was_not_sent(db):
    emitted = []
    sent = SentSeqs()
    relay = ChangeLogRelay(db.Session, lambda name, data: emitted.append((name, data["seq"])), sent,
                           grace=False)
    relay.start_at_current()
    add_users(db, "alice", "bob", "carol")
    sent.mark(2)  # this process sent seq 2 itself
    assert relay.poll_once() == 2
    assert emitted == [("user_added", 1), ("user_added", 3)]
    assert relay.poll_once() == 0 and sent.floor == 3


def test_relay_starts_after_history_and_skips_pruned_rows(db):
    add_users(db, "old")
    emitted = []
    relay = ChangeLogRelay(db.Session, lambda name, data: emitted.append(data["seq"]), SentSeqs(),
                           grace=False)
    relay.start_at_current()
    db.capture.retention = 2
    add_users(db, *[f"user{i:03}" for i in range(120)])
    relay.poll_once()
    # Rows beyond the retention are gone; the relay sends what the log still has and moves on.
    assert emitted and emitted == sorted(emitted) and emitted[-1] == 121
    assert relay.sent.floor == 121


def test_relay_with_grace_waits_one_poll_for_the_queue_to_deliver(db):
    emitted = []
    sent = SentSeqs()
    relay = ChangeLogRelay(db.Session, lambda name, data: emitted.append(data["seq"]), sent)
    relay.start_at_current()
    add_users(db, "alice", "bob")
    assert relay.poll_once() == 0  # first sight: give the publisher a chance
    sent.mark(1)  # the queue delivered seq 1 meanwhile
    add_users(db, "carol")
    assert relay.poll_once() == 1 and emitted == [2]  # 2 was still missing; 3 is new: waits
    assert relay.poll_once() == 1 and emitted == [2, 3]


def test_queued_events_are_not_relayed_twice_and_failed_sends_are(db):
    """Queued here counts as handled; a send that fails goes back to the relay."""
    from userboard.publish import QueuedEmitter

    class FlakyEmitter:
        def __init__(self):
            self.sent = []

        def emit(self, name, data, namespace, room):
            if data["seq"] == 2:
                raise ConnectionError("queue down")
            self.sent.append(data["seq"])

    sent, relayed, flaky = SentSeqs(), [], FlakyEmitter()
    relay = ChangeLogRelay(db.Session, lambda name, data: relayed.append(data["seq"]), sent,
                           grace=False)
    relay.start_at_current()
    emitter = QueuedEmitter(flaky, sent=sent)
    db.capture.publishers.append(emitter)
    add_users(db, "alice", "bob", "carol")
    assert emitter.flush(5)
    assert flaky.sent == [1, 3]
    assert relay.poll_once() == 1 and relayed == [2]  # only the failed one
    assert sent.last_delivered == 3 and relay.poll_once() == 0
