"""Run the app on gevent's WSGI server (HTTP and WebSocket), with TCP_NODELAY.

gevent's pywsgi writes headers and body in two sends; on keep-alive connections Nagle's algorithm
plus delayed ACK then adds about 40 ms to every response. Setting TCP_NODELAY on each accepted
socket removes that. The caller (cli.py) has monkey-patched already.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sys

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer
from sqlalchemy import func, select

from . import users
from .app import create_app
from .bootstrap import cli_actor
from .capture import set_actor
from .config import Settings
from .extension import app_state
from .models import User
from .relay import listen_for_commits

log = logging.getLogger(__name__)


class NoDelayHandler(WSGIHandler):
    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a unix socket)
            pass
        super().__init__(sock, address, server, rfile)

    def handle_one_response(self):
        super().handle_one_response()
        # After a WebSocket session the socket holds frames, not HTTP: do not read another request.
        if self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            self.close_connection = True


def ensure_first_admin(app) -> str | None:
    """On an empty users table, create `admin` with a random password and return it."""
    with app_state(app).database.session() as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
        password = secrets.token_urlsafe(12)
        set_actor(session, **cli_actor())  # `userboard serve`, run by this operating-system user
        users.create_user(
            session,
            {"username": "admin", "email": "admin@example.com", "role": "admin",
             "status": "active", "password": password},
        )
        return password


TICK = 0.5  # seconds between change-log polls and credential checks
HEARTBEAT_EVERY = 4  # ticks: the latest seq goes to every client every 2 s


def background_loop(app) -> None:
    """Start the server's greenlets: the sequencer's change-log relay (woken by NOTIFY on
    PostgreSQL, by gaps, and every tick), the view engine, and a loop that cuts sockets whose
    credential ended and sends heartbeats."""
    state = app_state(app)

    def relay():
        while True:
            state.sequencer.wait(TICK)
            try:
                state.sequencer.relay()
            except Exception:  # a database hiccup must not end the loop
                log.exception("change-log relay failed; retrying")

    def run():
        ticks = 0
        while True:
            gevent.sleep(TICK)
            ticks += 1
            try:
                with state.database.read_session() as db:
                    state.namespace.revalidate(db)
                if ticks % HEARTBEAT_EVERY == 0:
                    state.namespace.heartbeat(state.sequencer.delivered)
                    state.views.heartbeat()
            except Exception:  # a database hiccup must not end the loop
                log.exception("background loop failed; retrying")

    def wake_all():
        state.sequencer.wake()
        state.views.wake()

    state.socketio.start_background_task(relay)
    state.socketio.start_background_task(run)
    state.socketio.start_background_task(state.views.run, TICK)
    if state.database.engine.dialect.name == "postgresql":
        state.socketio.start_background_task(listen_for_commits, state.database.engine.url, wake_all)


def run_server(settings: Settings, host: str, port: int) -> None:
    """Build the app from `settings` and serve it until killed."""
    serve(create_app(settings=settings), host, port)


def serve(app, host: str, port: int) -> None:
    """Serve a built app on gevent (HTTP and WebSocket) with its background loop, until killed."""
    server = WSGIServer((host, port), app, handler_class=NoDelayHandler, log=None,
                        error_log=logging.getLogger("userboard.wsgi"))
    server.init_socket()
    actual_port = server.socket.getsockname()[1]
    url = f"http://{host}:{actual_port}/"
    password = ensure_first_admin(app)
    if password:
        print(f"Created admin 'admin' with password: {password}  (shown once)", flush=True)
    background_loop(app)
    print(f"userboard serving on {url}", flush=True)
    sys.stdout.flush()
    server.serve_forever()
