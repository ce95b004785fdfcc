"""Test helpers for views: the view evaluated in plain Python, the protocol's client algorithm,
and a Socket.IO client that applies view messages in the order they arrived.

The reference evaluation is deliberately naive (filter every row, sort, slice) and shares no
code with `userboard.views`, so the SQL and the live engine are checked against something
independent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import engineio
import socketio

NAMESPACE = "/users"
VIEW_EVENTS = ("users_view", "users_view_changed", "heartbeat")
TABLE_EVENTS = ("users_snapshot", "users_too_large", "user_added", "user_updated", "user_deleted")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(value: str) -> str:
    """SQLite's LIKE folds ASCII letters only."""
    return value.translate(_ASCII_LOWER)


def sort_key(params: dict, row: dict) -> tuple:
    sort = params.get("sort") or "id"
    return (row[sort], row["id"])


def row_matches(params: dict, row: dict, lower: Callable[[str], str]) -> bool:
    if params.get("role") and row["role"] != params["role"]:
        return False
    if params.get("status") and row["status"] != params["status"]:
        return False
    q = (params.get("q") or "").strip()
    if not q:
        return True
    needle = lower(q)
    return needle in lower(row["username"]) or needle in lower(row["email"])


def ordered(rows: Iterable[dict], params: dict, lower: Callable[[str], str]) -> list[dict]:
    """Every row of the view, in its order (all pages)."""
    found = [row for row in rows if row_matches(params, row, lower)]
    found.sort(key=lambda row: sort_key(params, row), reverse=params.get("order") == "desc")
    return found


def after(params: dict, key: tuple, start: tuple | None) -> bool:
    if start is None:
        return True
    return key < start if params.get("order") == "desc" else key > start


def reference(rows: Iterable[dict], params: dict, start: tuple | None,
              lower: Callable[[str], str], limit: int) -> dict:
    """The view's window after `start`: {"users", "total", "more"}."""
    everything = ordered(rows, params, lower)
    following = [row for row in everything if after(params, sort_key(params, row), start)]
    return {"users": following[:limit], "total": len(everything), "more": len(following) > limit}


class ViewReplica:
    """What a client holds, following the client algorithm in docs/protocol.md."""

    def __init__(self):
        self.number = 0
        self.rows: list[dict] = []
        self.total: int | None = None
        self.next: str | None = None
        self.prev: str | None = None
        self.seq = -1

    def apply(self, event: str, payload: dict) -> None:
        if event == "heartbeat":
            self.seq = max(self.seq, payload["seq"])
        elif event == "users_view":
            if payload["view"] < self.number:
                return
            self.number = payload["view"]
            self.rows = list(payload["users"])
            self._take(payload)
        elif event == "users_view_changed":
            if payload["view"] != self.number:
                return
            fresh = {row["id"]: row for row in payload["users"]}
            held = {row["id"]: row for row in self.rows}
            missing = [i for i in payload["ids"] if i not in fresh and i not in held]
            assert not missing, f"users_view_changed names rows the client never got: {missing}"
            self.rows = [fresh.get(i) or held[i] for i in payload["ids"]]
            self._take(payload)

    def _take(self, payload: dict) -> None:
        self.total, self.next, self.prev = payload["total"], payload["next"], payload["prev"]
        self.seq = payload["seq"]

    def window(self) -> dict:
        return {"users": self.rows, "total": self.total, "next": self.next, "prev": self.prev}


class _InOrderEngineIO(engineio.Client):
    """Hand each message to the handlers on the reading thread, in arrival order.

    The stock client starts a thread per message, so two view messages can be applied in the
    wrong order (FIELD-NOTES: "Python Socket.IO clients in tests").
    """

    def _trigger_event(self, event, *args, **kwargs):
        if event == "message":
            kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)


class _InOrderClient(socketio.Client):
    def _engineio_client_class(self):
        return _InOrderEngineIO


class ViewClient:
    """A real Socket.IO client on /users that holds one view at a time."""

    def __init__(self, url: str, token: str, view: dict | None = None):
        self.url = url
        self.auth = {"token": token} if view is None else {"token": token, "view": view}
        self.sio = _InOrderClient(reconnection=False)
        self.replica = ViewReplica()
        self.log: list[tuple[str, dict]] = []  # everything received, in arrival order
        self._cond = threading.Condition()
        for name in VIEW_EVENTS + TABLE_EVENTS:
            self.sio.on(name, self._handler(name), namespace=NAMESPACE)

    def _handler(self, name: str):
        def handle(data):
            with self._cond:
                self.log.append((name, data))
                self.replica.apply(name, data)
                self._cond.notify_all()

        return handle

    def connect(self) -> ViewClient:
        self.sio.connect(self.url, namespaces=[NAMESPACE], auth=self.auth,
                         transports=["websocket"], wait_timeout=10)
        return self

    def close(self) -> None:
        self.sio.disconnect()

    def call(self, event: str, data) -> dict:
        return self.sio.call(event, data, namespace=NAMESPACE, timeout=10)

    def wait_for(self, predicate: Callable[[ViewReplica], bool], timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.replica), timeout)

    def snapshot(self) -> dict:
        with self._cond:
            return {**self.replica.window(), "seq": self.replica.seq, "view": self.replica.number}

    def table_events_after_first_view(self) -> list[str]:
        """Whole-table events received after this socket started holding a view."""
        with self._cond:
            names = [name for name, _ in self.log]
        if "users_view" not in names:
            return []
        first = names.index("users_view")
        return [n for n in names[first:] if n in TABLE_EVENTS]


def wait_all(clients: Iterable[ViewClient], seq: int, timeout: float = 10) -> list[ViewClient]:
    """Wait until every client's view is at `seq` or later; return the ones that are not."""
    deadline = time.monotonic() + timeout
    late = []
    for client in clients:
        if not client.wait_for(lambda r: r.seq >= seq, max(0.0, deadline - time.monotonic())):
            late.append(client)
    return late
