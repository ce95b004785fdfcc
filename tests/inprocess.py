"""The app in this process: Flask's test client for HTTP, Flask-SocketIO's for the socket.

The app runs in threading mode with no message queue (the Socket.IO test client refuses to work
with one). This is the only test module that reaches into the app's internals (its database,
Socket.IO server, namespace and publishers), so when their home changes only this file follows.
"""

from __future__ import annotations

import itertools
import re

from flask_socketio.test_client import SocketIOTestClient
from socketio import packet
from sqlalchemy import select

from userboard.app import create_app
from userboard.auth import create_token, hash_password
from userboard.config import Settings
from userboard.events import NAMESPACE
from userboard.extension import app_state
from userboard.models import ChangeLog, User

from .helpers import migrated_sqlite

PASSWORD = "in-process-pass"
_addresses = itertools.count(1)


def csrf_of(html: str) -> str:
    """The CSRF token a page carries in its meta tag."""
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


class InProcess:
    """An app on its own SQLite file with an admin `root` (password PASSWORD, a token) and a
    plain user `other`."""

    def __init__(self, tmp_path, **config):
        self.database_url = migrated_sqlite(tmp_path / "inproc.db")
        # Defaults, not the environment: module fixtures are built before it is cleaned.
        self.app = create_app({"DATABASE_URL": self.database_url, "SOCKETIO_ASYNC_MODE": "threading",
                               "SECRET_KEY": "in-process", **config}, settings=Settings.from_env({}))
        with self.database.session() as s:
            admin = User(username="root", email="root@example.com", role="admin",
                         password_hash=hash_password(PASSWORD))
            s.add(admin)
            s.add(User(username="other", email="other@example.com"))
            s.commit()
            self.token = create_token(s, admin)
        self.client = self.new_client()
        self.headers = {"Authorization": f"Bearer {self.token}"}

    # -- the app's internals: everything that knows where they live ---------------------------

    @property
    def database(self):
        return app_state(self.app).database

    @property
    def app_state(self):
        return app_state(self.app)

    @property
    def socketio(self):
        return app_state(self.app).socketio

    @property
    def namespace(self):
        return app_state(self.app).namespace

    def flush(self, timeout: float = 5) -> None:
        """Wait until every committed event was handed to the sockets (publishers run in a thread)."""
        for publisher in self.database.capture.publishers:
            if hasattr(publisher, "flush"):  # the queued emitter (the view engine only wakes up)
                assert publisher.flush(timeout), "events still queued after the deadline"

    # -- clients ------------------------------------------------------------------------------

    def new_client(self):
        """A Flask test client with a cookie jar and a client address of its own.

        Distinct addresses keep one test's failed logins from throttling another's.
        """
        client = self.app.test_client()
        n = next(_addresses)
        client.environ_base["REMOTE_ADDR"] = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        return client

    def login(self, client=None, username: str = "root", password: str = PASSWORD):
        """Log `client` (or a new one) in through the form; return it and its CSRF token."""
        client = client or self.new_client()
        answer = client.post("/login", data={"username": username, "password": password,
                                             "csrf_token": csrf_of(client.get("/login").text)})
        assert answer.status_code == 302, answer.text[:300]
        return client, csrf_of(client.get("/").text)

    def socket(self, auth=None, client=None, headers=None) -> LiveSocket:
        """A Socket.IO test client on /users: with `auth`, or with `client`'s cookies."""
        return LiveSocket(self.app, self.socketio, namespace=NAMESPACE, auth=auth, headers=headers,
                          flask_test_client=client)

    def token_for(self, username: str) -> str:
        """A new API token for an existing user (what `userboard token create` does)."""
        with self.database.session() as s:
            return create_token(s, s.scalars(select(User).where(User.username == username)).one())

    # -- what the database holds --------------------------------------------------------------

    def state(self):
        """Everything a rejected request must leave alone: users and the change log."""
        with self.database.session() as s:
            users = [u.to_dict() for u in s.scalars(select(User).order_by(User.id))]
            log = s.scalars(select(ChangeLog.seq)).all()
        return users, log

    def users(self) -> list[dict]:
        return self.state()[0]

    def latest_seq(self) -> int:
        return self.client.get("/api/users", headers=self.headers).get_json()["seq"]

    def close(self):
        self.database.close()


class LiveSocket(SocketIOTestClient):
    """Flask-SocketIO's test client, plus the refusal it got and a non-destructive event list.

    Every packet the server sends to this client's connection is recorded, connected or not,
    so "received nothing" is a real observation and not a consequence of being refused.
    """

    def connect(self, namespace=None, query_string=None, headers=None, auth=None):
        self.connect_error = None
        record = self.socketio.server._send_packet

        def send_packet(eio_sid, pkt):
            if eio_sid == self.eio_sid and pkt.packet_type == packet.CONNECT_ERROR:
                self.connect_error = pkt.data
            record(eio_sid, pkt)

        self.socketio.server._send_packet = send_packet
        try:
            super().connect(namespace, query_string, headers, auth)
        finally:
            self.socketio.server._send_packet = record

    @property
    def connected_to_users(self) -> bool:
        return self.is_connected(NAMESPACE)

    def received(self, *names: str) -> list[tuple[str, dict]]:
        """(event, payload) received so far, in arrival order; only `names` if given."""
        return [(p["name"], p["args"][0]) for p in list(self.queue)
                if p["namespace"] == NAMESPACE and (not names or p["name"] in names)]

    def changes(self) -> list[tuple[str, dict]]:
        return self.received("user_added", "user_updated", "user_deleted")

    def close(self) -> None:
        if self.connected_to_users:
            self.disconnect(NAMESPACE)
