"""A burst larger than the change log's retention, committed by a script without a message queue,
reaches every connected client by push: all of it, once, in order, with no snapshot or resync.

One real server on SQLite, no Redis. The script is its own process (tests/bulk_writer.py): the
change log is the only way its events reach the server. Two whole-table clients watch:

- python-socketio's client, which hands each message to a thread of its own: about 3,000
  events/s here, slower than the burst comes, so the relay goes at its pace;
- a raw websocket client (tests/wire.py) that stops reading during the burst, as a busy or
  stopped client would: the socket buffers fill (where partial writes once cut frames short),
  the server's queue for it passes USERBOARD_SOCKET_MAX_QUEUED (1,000 here), and it catches up
  from the change log once it reads again. It records frames in arrival order, so order is
  checked on the wire.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import LiveClient, ServerProcess, seed_admin
from .wire import CHANGES, WireClient

ROOT = Path(__file__).resolve().parents[1]
# Two transactions; the first alone is larger than the change log's default size (10,000).
BURST = (12_000, 4_000)
TOTAL = sum(BURST)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("throughput"),
                         {"USERBOARD_SOCKET_MAX_QUEUED": "1000"})
    seed_admin(proc)
    proc.start()
    yield proc
    proc.stop()


def commit_burst(server, prefix: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bulk_writer", server.env["USERBOARD_DATABASE_URL"], prefix,
         *map(str, BURST)], cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def reached(seq: int):
    """A wait_for predicate for a WireClient: a change at `seq` has arrived. It looks at each
    frame once (the client calls it on every frame)."""
    looked = 0

    def check(client: WireClient) -> bool:
        nonlocal looked
        fresh, looked = client.events[looked:], len(client.events)
        return client.closed or any(n in CHANGES and p["seq"] >= seq for n, p in fresh)

    return check


def test_a_scripts_burst_reaches_every_client_by_push_in_order(server):
    plain = LiveClient(server.url, auth={"token": server.token}).connect()
    stalled = WireClient(server.url, {"token": server.token}, receive_buffer=16_384).connect()
    try:
        assert plain.wait_for(lambda c: c.snapshots())
        start = plain.snapshots()[0]["seq"]
        stalled.pause()
        commit_burst(server, "burst")
        stalled.resume()
        expected = list(range(start + 1, start + TOTAL + 1))

        assert plain.wait_for(lambda c: len(c.received) > TOTAL, timeout=60), len(plain.received)
        assert len(plain.snapshots()) == 1  # the one at connect: everything else came by push
        changes = plain.changes()  # ordered by seq: this client's threads may reorder them
        assert [d["seq"] for _, d in changes] == expected
        assert {n for n, _ in changes} == {"user_added"}
        assert changes[-1][1]["user"]["username"] == f"burst{TOTAL - 1:06}"

        assert stalled.wait_for(reached(start + TOTAL), timeout=60), stalled.seqs()[-3:]
        assert not stalled.closed
        assert stalled.seqs(after=start) == expected  # as they came off the wire
        assert [n for n, _ in stalled.events].count("users_snapshot") == 1
        assert any("it catches up from the change log" in line for line in server.output)
    finally:
        plain.close()
        stalled.close()
