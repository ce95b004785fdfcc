"""A Python mirror of the users table, kept live over Socket.IO. Imports no Flask.

It follows the client algorithm in docs/protocol.md, so scripts (and this project's tests) get
the same guarantees as the browser: events are applied in seq order exactly once, a gap or a
heartbeat ahead of us triggers `resync`, and a reconnect resumes from the last applied seq::

    from userboard.client import LiveUsers

    live = LiveUsers("http://127.0.0.1:5000", token=TOKEN).connect()
    live.wait_until(lambda users: any(u["username"] == "carol" for u in users.values()))
    print(live.seq, live.users)
    live.close()

Needs python-socketio's client (`pip install "python-socketio[client]"`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import socketio

NAMESPACE = "/users"
# users_reset: the table was emptied at once (TRUNCATE, outside userboard): drop every row.
CHANGE_EVENTS = ("user_added", "user_updated", "user_deleted", "users_reset")


class LiveUsers:
    """users: {id: USER}; seq: the last seq applied (None before the first snapshot).

    A whole-table copy: on a table over the server's snapshot limit (2,000 users) the server
    sends `users_too_large` instead of a snapshot; `too_large` then holds its total and `users`
    stays empty (use `GET /api/users` pages or a view instead).
    """

    def __init__(self, url: str, token: str | None = None, headers: dict | None = None,
                 transports=("websocket",), since: int | None = None):
        self.url, self.token, self.headers, self.transports = url, token, headers, list(transports)
        self.users: dict[int, dict] = {}
        self.seq: int | None = since
        self.snapshots = 0  # how many users_snapshot were applied
        self.too_large: int | None = None  # the table's size, when too big for a snapshot
        self.applied: list[int] = []  # seqs of the change events applied, in order
        self._pending: dict[int, tuple[str, dict]] = {}
        self._resyncing = False
        self._cond = threading.Condition(threading.RLock())
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.2,
                                   reconnection_delay_max=1)
        self.sio.on("users_snapshot", self._on_snapshot, namespace=NAMESPACE)
        self.sio.on("heartbeat", self._on_heartbeat, namespace=NAMESPACE)
        self.sio.on("users_too_large", self._on_too_large, namespace=NAMESPACE)
        for name in CHANGE_EVENTS:
            self.sio.on(name, self._receiver(name), namespace=NAMESPACE)

    # -- connection ---------------------------------------------------------------------------

    def _auth(self) -> dict:
        auth = {} if self.token is None else {"token": self.token}
        with self._cond:
            if self.seq is not None:
                auth["since"] = self.seq
        return auth

    def connect(self) -> LiveUsers:
        self.sio.connect(self.url, namespaces=[NAMESPACE], auth=self._auth, headers=self.headers,
                         transports=self.transports, wait_timeout=10)
        return self

    def close(self) -> None:
        """Disconnect; if the connection was lost, stop reconnecting (disconnect() alone would
        leave the attempts running in the background)."""
        self.sio.shutdown()

    # -- the algorithm ------------------------------------------------------------------------

    def _on_snapshot(self, snapshot: dict) -> None:
        with self._cond:
            self.users = {u["id"]: dict(u) for u in snapshot["users"]}
            self.seq = snapshot["seq"]
            self.snapshots += 1
            self._drain()
            self._cond.notify_all()

    def _on_too_large(self, notice: dict) -> None:
        with self._cond:
            self.too_large = notice["total"]
            self._cond.notify_all()

    def _receiver(self, name: str):
        def receive(payload: dict) -> None:
            self.receive(name, payload)

        return receive

    def receive(self, name: str, payload: dict) -> None:
        """Take one change event, in whatever order or number it arrives."""
        with self._cond:
            if self.seq is not None and payload["seq"] <= self.seq:
                return  # already applied
            self._pending[payload["seq"]] = (name, payload)
            self._drain()
            gap = bool(self._pending) and self.seq is not None
            self._cond.notify_all()
        if gap:
            self.resync()

    def _drain(self) -> None:
        if self.seq is None:
            return
        for seq in [s for s in self._pending if s <= self.seq]:
            del self._pending[seq]
        while self.seq + 1 in self._pending:
            name, payload = self._pending.pop(self.seq + 1)
            self._apply(name, payload)
            self.seq = payload["seq"]
            self.applied.append(self.seq)

    def _apply(self, name: str, payload: dict) -> None:
        if name == "users_reset":
            self.users.clear()
        elif name == "user_added":
            user = payload["user"]
            shown = self.users.get(user["id"])
            if shown is None or shown["version"] < user["version"]:
                self.users[user["id"]] = dict(user)
        elif name == "user_updated":
            shown = self.users.get(payload["id"])
            if shown is not None and shown["version"] < payload["version"]:
                shown.update(payload["changes"], version=payload["version"])
        elif name == "user_deleted":
            self.users.pop(payload["id"], None)

    def _on_heartbeat(self, beat: dict) -> None:
        with self._cond:
            behind = self.seq is not None and beat["seq"] > self.seq
        if behind:
            self.resync()

    def resync(self) -> None:
        """Ask for everything after our seq; at most one request in flight."""
        with self._cond:
            if self._resyncing or self.seq is None or not self.sio.connected:
                return
            self._resyncing = True
            since = self.seq

        def done(*_ack):
            with self._cond:
                self._resyncing = False
                self._drain()
                again = bool(self._pending)
                self._cond.notify_all()
            if again:
                self.resync()

        try:
            self.sio.emit("resync", {"since": since}, namespace=NAMESPACE, callback=done)
        except socketio.exceptions.SocketIOError:
            with self._cond:
                self._resyncing = False  # the reconnect resumes instead

    # -- waiting ------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[dict], bool], timeout: float = 10) -> bool:
        """Wait until predicate(users) holds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.users), timeout)

    def wait_for_seq(self, seq: int, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.seq is not None and self.seq >= seq, timeout)
