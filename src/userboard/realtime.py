"""The `/users` Socket.IO namespace: who may connect, and the snapshot they start from.

Events themselves are emitted by the change capture's publisher (publish.py) to the `admins`
room; this module only admits clients to that room.
"""

from __future__ import annotations

import logging

from flask import request, session
from flask_socketio import ConnectionRefusedError, Namespace, emit, join_room
from sqlalchemy import select

from . import auth
from .capture import current_seq
from .events import NAMESPACE, ROOM, USERS_SNAPSHOT
from .models import User, user_dict

log = logging.getLogger(__name__)


def read_snapshot(db) -> dict:
    """All users and the seq of the last change included, read in one consistent snapshot."""
    if db.get_bind().dialect.name == "postgresql":
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    seq = current_seq(db)
    users = [user_dict(u) for u in db.scalars(select(User).order_by(User.id))]
    db.rollback()
    return {"seq": seq, "users": users}


def socket_user(db, auth_payload) -> User | None:
    """The active admin behind this connection: a token in `auth`, else the session cookie."""
    if isinstance(auth_payload, dict) and "token" in auth_payload:
        return auth.user_for_token(db, auth_payload["token"])
    return auth.active_admin(db, session.get("user_id"))


class UsersNamespace(Namespace):
    """Live user events for logged-in active admins and token holders."""

    def __init__(self):
        super().__init__(NAMESPACE)

    def on_connect(self, auth_payload=None):
        """A browser or script connects; refuse anyone who is not an active admin."""
        from .app import db_session

        db = db_session()
        user = socket_user(db, auth_payload)
        if user is None:
            log.info("refused socket from %s: not authenticated", request.remote_addr)
            raise ConnectionRefusedError({"code": "unauthorized"})
        # Join first, then read: an event committed meanwhile is delivered (and perhaps also in
        # the snapshot); clients drop events whose seq is not above the snapshot's.
        join_room(ROOM)
        emit(USERS_SNAPSHOT, read_snapshot(db))
        log.info("socket %s connected for user %s", request.sid, user.id)

    def on_disconnect(self, reason=None):
        """The client went away; nothing to clean up until resume state exists."""
