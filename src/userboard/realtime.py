"""The `/users` Socket.IO namespace: who may connect, and where each client starts from.

A client connects with a session cookie or `auth={"token": ...}`, optionally with
`"since": S`, the last seq it applied. It then gets the events after S replayed from the change
log, in order, or a `users_snapshot` when the log no longer holds them all. `resync` does the same
on demand. Live events reach the `admins` room through the change capture's publisher; this
module only admits clients to it, and cuts them off when their credential stops being valid.
What clients may send at all (rate, size, time to authenticate) is the gate's (gate.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import request, session
from flask_socketio import ConnectionRefusedError, Namespace, leave_room
from socketio import packet
from sqlalchemy import select

from . import auth, views
from .capture import current_seq
from .changelog import ChangeLog
from .db import connection_lost, read_snapshot, unavailable
from .errors import RETRY_AFTER
from .events import NAMESPACE, ROOM, USERS_SNAPSHOT
from .extension import app_state, get_db
from .models import User, user_dict
from .relay import Sequencer
from .users import UserError
from .viewengine import ViewEngine

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"
# Farther behind than this, a snapshot is cheaper than replaying every event.
REPLAY_LIMIT = 1000
# A whole-table snapshot holds at most this many users (about 1 MB at the longest values).
SNAPSHOT_MAX = 2000
USERS_TOO_LARGE = "users_too_large"
# What a connect or event gets when the database cannot answer now (as HTTP's 503).
UNAVAILABLE = {"code": "unavailable", "message": "the database cannot answer now; try again shortly",
               "fields": {}, "retry_after": RETRY_AFTER}


def _as_seq(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def catch_up(db, since) -> tuple[list[tuple[str, dict]], int]:
    """What brings a client at `since` up to date: [(event, payload)...] and the latest seq.

    Read in one consistent snapshot. Replays the change log when it holds every event after
    `since`; otherwise (unknown, too old, too far behind, or ahead of us) one users_snapshot.
    """
    with read_snapshot(db):
        latest = current_seq(db)
        since = _as_seq(since)
        if since is not None and since <= latest and latest - since <= REPLAY_LIMIT:
            rows = db.execute(
                select(ChangeLog.seq, ChangeLog.event, ChangeLog.payload)
                .where(ChangeLog.seq > since, ChangeLog.seq <= latest)
                .order_by(ChangeLog.seq)
            ).all()
            if len(rows) == latest - since:  # nothing pruned: every event is there
                return [(row.event, row.payload) for row in rows], latest
        total = views.count(db, views.View())
        if total > SNAPSHOT_MAX:  # no message may grow with the table: use a view instead
            return [(USERS_TOO_LARGE, {"seq": latest, "total": total, "max": SNAPSHOT_MAX})], latest
        users = [user_dict(u) for u in db.scalars(select(User).order_by(User.id))]
        return [(USERS_SNAPSHOT, {"seq": latest, "users": users})], latest


def _refusal(exc: UserError) -> dict:
    return {"error": {"code": exc.code, "message": exc.message, "fields": exc.fields}}


def socket_admin(db, auth_payload) -> tuple[User, auth.Principal] | None:
    """The active admin behind this connection: a token in `auth`, else the login cookie."""
    if isinstance(auth_payload, dict) and "token" in auth_payload:
        return auth.token_admin(db, auth_payload["token"])
    return auth.login_admin(db, session.get("login"), app_state().session_timeouts)


class UsersNamespace(Namespace):
    """Live user events for logged-in active admins and token holders."""

    def __init__(self, engine: ViewEngine, sequencer: Sequencer):
        super().__init__(NAMESPACE)
        self.views = engine  # the live views of this process's sockets
        self.sequencer = sequencer  # whole-table events, in order, to this process's room
        self.clients: dict[str, auth.Principal] = {}  # this process's sockets

    def trigger_event(self, event, *args):
        """Run a handler; if the database cannot answer now, refuse or answer with an error.

        A handler whose connection was dropped runs once more on a fresh one: handlers read
        before they send anything.
        """
        for last_try in (False, True):
            try:
                return super().trigger_event(event, *args)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                if last_try or not connection_lost(exc):
                    return self._unavailable(event, exc)
        return None

    @staticmethod
    def _unavailable(event: str, exc: Exception):
        """The database could not answer: refuse a connect, answer an event with an error."""
        log.warning("socket %s failed, database unavailable: %s", event,
                    type(getattr(exc, "orig", None) or exc).__name__)
        if event == "connect":
            raise ConnectionRefusedError("unavailable", UNAVAILABLE) from None
        return {"error": UNAVAILABLE}

    def enter(self, sid: str) -> None:
        """Put a socket into the whole-table room (the sequencer decides when)."""
        self.socketio.server.enter_room(sid, ROOM, namespace=NAMESPACE)

    def leave(self, sid: str) -> None:
        """Take a socket out of the whole-table room (it fell behind; the sequencer feeds it)."""
        self.socketio.server.leave_room(sid, ROOM, namespace=NAMESPACE)

    def members(self) -> list[str]:
        """This process's sockets in the whole-table room."""
        return [sid for sid, _eio in self.socketio.server.manager.get_participants(NAMESPACE, ROOM)]

    def queued(self, sid: str) -> int:
        """Packets waiting in the socket's Engine.IO send queue (0 once it is gone).

        The transport takes up to 16 packets at a time (`gate.PACKETS_PER_POLL`), so this is a
        lower bound of what the client has still to read.
        """
        server = self.socketio.server
        eio_socket = server.eio.sockets.get(server.manager.eio_sid_from_sid(sid, NAMESPACE))
        return eio_socket.queue.qsize() if eio_socket is not None else 0

    def emit_local(self, name: str, payload: dict, to: str = ROOM) -> None:
        """Send to this process's own clients in `to`, never through the message queue.

        Catch-ups, relayed events and heartbeats belong to this process: through the queue
        every process would deliver them to its clients, and a catch-up could arrive after the
        live events that follow it.
        """
        self.socketio.server.emit(name, payload, to=to, namespace=NAMESPACE, ignore_queue=True)

    def _send_all(self, sid: str, events: list[tuple[str, dict]]) -> None:
        """Send a catch-up (a replay, or one snapshot) to one socket."""
        for name, payload in events:
            if name in (USERS_SNAPSHOT, USERS_TOO_LARGE):
                app_state().metrics.snapshots.labels(name).inc()
            self.emit_local(name, payload, to=sid)

    def on_connect(self, auth_payload=None):
        """A browser or script connects; refuse anyone who is not an active admin.

        With `view` in `auth` the socket holds that view from the start (a `users_view`);
        otherwise it is a whole-table client (replay after `since`, or a snapshot).
        """
        found = socket_admin(get_db(), auth_payload)
        if found is None:
            log.info("refused socket from %s: not authenticated", request.remote_addr)
            raise ConnectionRefusedError("unauthorized", {"code": "unauthorized", "fields": {}})
        user, principal = found
        if isinstance(auth_payload, dict) and auth_payload.get("view") is not None:
            try:
                view = views.parse_view(auth_payload["view"], app_state().cursors)
            except UserError as exc:
                raise ConnectionRefusedError(exc.message, _refusal(exc)["error"]) from None
            self.clients[request.sid] = principal
            self.views.subscribe(get_db(), request.sid, view)
            log.info("socket %s connected for user %s (%s) with a view", request.sid, user.id,
                     principal.kind)
            return
        since = auth_payload.get("since") if isinstance(auth_payload, dict) else None
        events, latest = catch_up(get_db(), since)
        sid = request.sid
        self.clients[sid] = principal
        self._send_all(sid, events)
        # Into the room at the seq the catch-up reached: no event twice, none missing.
        self.emit_local(HEARTBEAT, {"seq": self.sequencer.admit(sid, latest)}, to=sid)
        log.info("socket %s connected for user %s (%s)", sid, user.id, principal.kind)

    def on_disconnect(self, reason=None):
        """The client went away (or was cut off)."""
        self.clients.pop(request.sid, None)
        self.views.unsubscribe(request.sid)
        self.sequencer.forget(request.sid)

    def on_watch(self, data=None):
        """A client subscribes to a view, or changes it: a fresh `users_view`, then the ack.

        From then on it gets that view's changes instead of the whole-table events.
        """
        if request.sid not in self.clients:
            return {"error": {"code": "unauthorized", "message": "not connected", "fields": {}}}
        try:
            view = views.parse_view(data if data is not None else {}, app_state().cursors)
        except UserError as exc:
            return _refusal(exc)
        leave_room(ROOM)
        self.sequencer.forget(request.sid)
        subscription = self.views.subscribe(get_db(), request.sid, view)
        return {"view": subscription.number, "seq": subscription.seq}

    def on_resync(self, data=None):
        """A client saw a gap (or a heartbeat ahead of it): replay after `since`, then ack.

        A socket holding a view gets the view whole again instead.
        """
        if request.sid not in self.clients:
            return {"error": "not connected"}
        app_state().metrics.resyncs.inc()
        engine = self.views
        if engine.holds(request.sid):
            subscription = engine.resend(get_db(), request.sid)
            return {"view": subscription.number, "seq": subscription.seq}
        since = data.get("since") if isinstance(data, dict) else None
        events, latest = catch_up(get_db(), since)
        self._send_all(request.sid, events)
        return {"seq": latest}

    # -- called by the server's background loop and by logout ---------------------------------

    def cut(self, sid: str) -> None:
        self.clients.pop(sid, None)
        self.views.unsubscribe(sid)
        self.socketio.server.disconnect(sid, namespace=NAMESPACE, ignore_queue=True)

    def cut_principals(self, principals: Iterable[auth.Principal]) -> None:
        """Cut this process's sockets of these credentials (other processes: at their next check)."""
        ended = set(principals)
        for sid, owner in list(self.clients.items()):
            if owner in ended:
                self.cut(sid)

    def revalidate(self, db, timeouts: auth.SessionTimeouts) -> None:
        """Cut sockets whose admin was disabled, demoted or deleted, whose login ended or timed
        out, or whose token was revoked or expired."""
        clients = dict(self.clients)
        if not clients:
            return
        valid = auth.still_valid(db, set(clients.values()), timeouts)
        db.rollback()
        for sid, principal in clients.items():
            if principal not in valid:
                log.info("cutting socket %s: credential of user %s no longer valid", sid,
                         principal.user_id)
                self.cut(sid)

    def heartbeat(self, seq: int) -> None:
        self.emit_local(HEARTBEAT, {"seq": seq})


# -- packets that do not decode ---------------------------------------------------------------

# What a client may send: binary packets are not part of the protocol, CONNECT_ERROR is the
# server's to send.
CLIENT_PACKET_TYPES = (packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK)


class MalformedPacket(ValueError):
    """A client's Socket.IO packet that cannot be decoded (bad JSON, too deep, bad framing)."""


class CheckedPacket(packet.Packet):
    """python-socketio's packet, whose decoding fails with MalformedPacket only.

    Its JSON module is `strictjson` (the server's `json=`), so a payload nested too deeply, a
    huge number or a duplicate key never reaches a handler.
    """

    def decode(self, encoded_packet):
        if not isinstance(encoded_packet, str):
            raise MalformedPacket("binary packets are not part of the protocol")
        try:
            attachments = super().decode(encoded_packet)
        except (ValueError, TypeError, IndexError) as exc:
            raise MalformedPacket(str(exc)[:200]) from None
        if self.packet_type not in CLIENT_PACKET_TYPES:
            raise MalformedPacket(f"packet type {self.packet_type} is not sent by clients")
        return attachments


def refuse_malformed_packets(server) -> None:
    """Close the connection of a client whose packet does not decode, with one log line.

    Left alone, python-socketio raises out of its message handler and Engine.IO logs a
    traceback for every such packet (which a client could send in a loop).
    """
    handle = server._handle_eio_message

    def on_message(eio_sid, data):
        try:
            handle(eio_sid, data)
        except MalformedPacket as exc:
            log.warning("socket connection %s sent a malformed packet (%s); disconnecting",
                        eio_sid, exc)
            connection = server.eio.sockets.get(eio_sid)
            if connection is not None:
                # Not eio.disconnect(): on long-polling it waits for the client to fetch the
                # close packet, which a hostile client never does.
                connection.close(wait=False, reason=server.eio.reason.SERVER_DISCONNECT)

    server.eio.on("message", on_message)
