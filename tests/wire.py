"""A plain Socket.IO client that records `/users` events in the order they came off the wire.

python-socketio's threaded client hands each message to its own thread, so its handlers may see
two events in either order (docs/protocol.md, FIELD-NOTES). The in-order delivery promise is
about the wire, so tests that check it read the wire themselves: one websocket (Engine.IO v4,
Socket.IO v5, spoken by hand), one reader thread, one list. Nothing is reordered, deduplicated
or resynced here: `table()` applies events as the simplest client would, so it equals the
database only if the server sent every event once, in order.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import websocket

NAMESPACE = "/users"
# Events that carry a seq of the change log (users_reset empties the table).
CHANGES = ("user_added", "user_updated", "user_deleted", "users_reset")


class WireClient:
    """One websocket to `/users` with `auth`; `events` is [(name, payload)] in arrival order.

    A client that resumes (`"since"` in `auth`) passes the users it held at that seq as `holding`.
    `receive_buffer` (bytes) makes its socket's receive buffer that small: a client that stops
    reading then fills it at once, and the server's queue for it grows.
    """

    def __init__(self, url: str, auth: dict, holding: dict[int, dict] | None = None,
                 receive_buffer: int | None = None):
        self.ws_url = url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.auth = auth
        self.holding = holding or {}
        self.receive_buffer = receive_buffer
        self.events: list[tuple[str, dict]] = []
        self.connected = False
        self.refused: dict | None = None
        self.closed = False  # the server or the network ended the connection
        self._cond = threading.Condition()
        self._ws: websocket.WebSocket | None = None
        self._reader: threading.Thread | None = None
        self._reading = threading.Event()  # cleared: the reader stops taking frames (`pause`)
        self._reading.set()

    def connect(self, timeout: float = 10) -> WireClient:
        """Open the websocket, join /users and wait for the catch-up (the first heartbeat
        follows it); raise if refused or not answered in time."""
        options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)] \
            if self.receive_buffer else ()
        self._ws = websocket.create_connection(self.ws_url, timeout=timeout, sockopt=options)
        self._ws.settimeout(None)  # the reader blocks; close() wakes it with abort()
        self._reader = threading.Thread(target=self._read, name="wire-reader", daemon=True)
        self._reader.start()
        self._ws.send(f"40{NAMESPACE},{json.dumps(self.auth)}")
        with self._cond:
            answered = self._cond.wait_for(
                lambda: self.connected or self.refused is not None or self.closed, timeout)
        problem = None
        if not self.connected:
            problem = f"not connected to {NAMESPACE}: {self.refused if answered else 'no answer'}"
        elif not self.wait_for(lambda c: any(n == "heartbeat" for n, _ in c.events), timeout):
            problem = "no heartbeat after the catch-up"
        if problem:
            self.close()
            raise ConnectionError(problem)
        return self

    def pause(self) -> None:
        """Stop reading: what the server sends piles up in the sockets' buffers, then in its
        queue, as for a client that is busy or stopped."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def close(self) -> None:
        if self._ws is None:
            return
        self._reading.set()
        try:
            self._ws.send(f"41{NAMESPACE},")
            self._ws.send("1")  # Engine.IO close
        except (OSError, websocket.WebSocketException):
            pass  # already gone
        self._ws.abort()  # wakes the reader
        self._reader.join(5)
        self._ws.shutdown()  # closes the socket

    # -- the one reader -----------------------------------------------------------------------

    def _read(self) -> None:
        """Every frame, in order. Engine.IO's open packet ("0{...}") needs no answer."""
        try:
            while True:
                self._reading.wait()
                frame = self._ws.recv()
                if frame == "2":  # Engine.IO ping: answer, or the server drops us
                    self._ws.send("3")
                elif isinstance(frame, str) and frame.startswith("4"):
                    self._on_packet(frame[1:])
                elif frame in ("1", ""):  # Engine.IO close, or the socket ended
                    break
        except (OSError, websocket.WebSocketException):
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def _on_packet(self, packet: str) -> None:
        """A Socket.IO packet: type digit, "/users,", an optional ack id, JSON data."""
        kind, rest = packet[0], packet[1:]
        if not rest.startswith(NAMESPACE + ","):
            return  # another namespace: not ours
        rest = rest[len(NAMESPACE) + 1:]
        body = rest.lstrip("0123456789")  # an ack id, never asked for by this server
        data = json.loads(body) if body else None
        with self._cond:
            if kind == "0":
                self.connected = True
            elif kind == "4":
                self.refused = data
            elif kind == "1":
                self.closed = True
            elif kind == "2":
                self.events.append((data[0], data[1] if len(data) > 1 else None))
            self._cond.notify_all()

    # -- what arrived -------------------------------------------------------------------------

    def wait_for(self, predicate, timeout: float = 10) -> bool:
        """Wait until `predicate(self)` holds (re-checked on every packet), or the deadline."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def changes(self, after: int = 0) -> list[tuple[str, dict]]:
        """Change events with a seq above `after`, in arrival order."""
        with self._cond:
            return [(n, p) for n, p in self.events if n in CHANGES and p["seq"] > after]

    def seqs(self, after: int = 0) -> list[int]:
        return [p["seq"] for _, p in self.changes(after)]

    def last_seq(self) -> int | None:
        """The seq of the last change (or snapshot) received, whatever the order."""
        with self._cond:
            seqs = [p["seq"] for n, p in self.events if n in CHANGES or n == "users_snapshot"]
        return seqs[-1] if seqs else None

    def wait_for_seq(self, seq: int, timeout: float = 10) -> bool:
        """Wait until a change (or snapshot) at `seq` or later has arrived."""
        return self.wait_for(lambda c: any(
            p["seq"] >= seq for n, p in c.events if n in CHANGES or n == "users_snapshot"), timeout)

    def table(self, upto: int | None = None) -> dict[int, dict]:
        """The users a naive client holds: `holding`, then every snapshot and event applied as it
        came (stopping after seq `upto`), with no seq or version check. A row updated or deleted
        before it was added, or added twice, is an error of the server's, raised here."""
        with self._cond:
            events = list(self.events)
        users = {i: dict(u) for i, u in self.holding.items()}
        for name, p in events:
            if name not in CHANGES and name != "users_snapshot":
                continue
            if upto is not None and p["seq"] > upto:
                break
            if name == "users_snapshot":
                users = {u["id"]: dict(u) for u in p["users"]}
            elif name == "users_reset":
                users = {}
            elif name == "user_added":
                assert p["user"]["id"] not in users, f"seq {p['seq']}: user added twice"
                users[p["user"]["id"]] = dict(p["user"])
            elif name == "user_updated":
                assert p["id"] in users, f"seq {p['seq']}: update of a user not held"
                users[p["id"]].update(p["changes"], version=p["version"])
            else:
                assert users.pop(p["id"], None) is not None, f"seq {p['seq']}: delete of a user not held"
        return users


def database_users(server) -> tuple[int, dict[int, dict]]:
    """The seq and the users the server's database holds, read in one snapshot by the API."""
    answer = server.api().get(server.url + "/api/users")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["seq"], {u["id"]: u for u in body["users"]}


def assert_matches_database(client: WireClient, server, timeout: float = 10) -> int:
    """Wait until `client` has what the database holds now; assert its naive table equals it.

    Returns that seq.
    """
    seq, users = database_users(server)
    assert client.wait_for_seq(seq, timeout), f"seq {seq} never arrived; got {client.seqs()[-5:]}"
    held = client.table(upto=seq)
    differ = {i: {"client": held.get(i), "database": users.get(i)}
              for i in sorted(held.keys() | users.keys()) if held.get(i) != users.get(i)}
    assert not differ, f"at seq {seq} the client differs from the database: {differ}"
    return seq


# -- a raw websocket, for floods: no reader thread, the test reads what it wants ----------------


def open_websocket(server, sock=None) -> websocket.WebSocket:
    """An Engine.IO websocket to `server` (over `sock`, if given) that has joined nothing yet."""
    url = server.url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=5, **({"socket": sock} if sock else {}))
    assert ws.recv().startswith("0{")  # open
    return ws


def join(ws: websocket.WebSocket, token: str) -> websocket.WebSocket:
    """Join /users with `token` and read up to the ack (the catch-up comes before it)."""
    ws.send(f"40{NAMESPACE}," + json.dumps({"token": token}))
    while not ws.recv().startswith(f"40{NAMESPACE}"):
        pass
    return ws


def flood(ws: websocket.WebSocket, frames: list[str]) -> tuple[int, int] | None:
    """Send `frames` back to back, then read until the server hangs up.

    Returns (snapshots, other events) it served meanwhile (heartbeats not counted), or None if
    it had not hung up 5 s later. The websocket is shut down either way.
    """
    for frame in frames:
        try:
            ws.send(frame)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            break  # already cut
    snapshots = events = 0
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:  # heartbeats keep coming while it is open
            frame = ws.recv()
            if frame == "":
                return snapshots, events
            if frame.startswith(f'42{NAMESPACE},["users_snapshot"'):
                snapshots += 1
            elif frame.startswith("42") and '"heartbeat"' not in frame:
                events += 1
        return None
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return snapshots, events
    except websocket.WebSocketTimeoutException:
        return None
    finally:
        ws.shutdown()
