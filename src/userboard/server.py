"""Run the app on gevent's WSGI server (HTTP and WebSocket), with TCP_NODELAY.

gevent's pywsgi writes headers and body in two sends; on keep-alive connections Nagle's algorithm
plus delayed ACK then adds about 40 ms to every response. Setting TCP_NODELAY on each accepted
socket removes that. Accepted sockets also write whole websocket frames (`WholeSendSocket`).
The caller (cli.py) has monkey-patched already.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sys
from weakref import WeakKeyDictionary

import gevent
import gevent.lock
import gevent.socket
from gevent.pywsgi import Input, WSGIHandler, WSGIServer
from sqlalchemy import func, select

from . import users
from .app import create_app
from .bootstrap import cli_actor
from .capture import set_actor
from .config import Settings
from .db import log_retry
from .extension import app_state
from .models import User
from .relay import listen_for_commits

log = logging.getLogger(__name__)


class WholeSendSocket(gevent.socket.socket):
    """A gevent socket whose send() writes all it is given, one writer at a time.

    simple-websocket (1.1.0, what python-engineio uses under gevent) writes each frame with one
    `sock.send()` and ignores a partial write, which gevent's send() makes whenever the client
    reads slower than the server writes: the rest of the frame was lost and the client's stream
    corrupt (measured: a client reading about 4,000 events/s lost its connection in a burst of
    16,000). Reported upstream (miguelgrinberg/simple-websocket#45, closed, in no release after
    1.1.0 yet); until then the socket simple-websocket writes to (a dup of this one, so of this
    class) does it.
    """

    __slots__ = ()
    _writers: WeakKeyDictionary = WeakKeyDictionary()  # socket -> its lock (slots: no attribute)

    def send(self, data, flags=0, timeout=None):
        lock = self._writers.get(self)
        if lock is None:
            lock = self._writers[self] = gevent.lock.Semaphore()
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        with lock:  # no other frame starts while the rest of this one waits to go out
            sent = super().send(data, flags)
            if sent < size:  # (gevent's sendall() calls send(): it cannot be used here)
                view = memoryview(data).cast("B")
                while sent < size:
                    sent += super().send(view[sent:], flags)
        return sent


class NoDelayHandler(WSGIHandler):
    """pywsgi's handler with TCP_NODELAY, and with no way for a client to hold it for nothing.

    gevent waits for a request (or the rest of a request head) forever; an idle keep-alive
    connection would keep its file descriptor until the client lets go. Here the wait is at most
    the server's `idle_timeout` seconds, between requests and between the bytes of a head.
    """

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a unix socket)
            pass
        if type(sock) is gevent.socket.socket:
            sock.__class__ = WholeSendSocket  # same layout: only send() differs
        super().__init__(sock, address, server, rfile)

    def read_requestline(self):
        self.socket.settimeout(getattr(self.server, "idle_timeout", None))
        return super().read_requestline()  # a timeout here just closes the connection

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        except TimeoutError:
            return False  # a head too slow to come: 400, and the connection closes

    def run_application(self):
        self.socket.settimeout(None)  # the head is in; long polls and websockets take their time
        super().run_application()
        if self.close_connection:
            # The answer hangs up (a refused socket request, say): read no more of the request.
            # gevent would otherwise read and discard the rest of its body first, however large
            # or slow the client makes it; an empty input leaves nothing to discard.
            self.wsgi_input = Input(self.rfile, 0)

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
BUSY_TICK = 0.01  # between change-log polls while events keep coming or sockets catch up


def background_loop(app) -> None:
    """Start the server's greenlets: the sequencer's change-log relay (woken by NOTIFY on
    PostgreSQL, by gaps, and every tick; sooner while busy), the view engine, a loop that
    closes connections that did not authenticate in time and cuts sockets whose credential
    ended, and the heartbeats (every HEARTBEAT_SECONDS)."""
    state = app_state(app)

    def relay():
        busy = False
        while True:
            state.sequencer.wait(BUSY_TICK if busy else TICK)
            try:
                sent = state.sequencer.relay()
                busy = state.sequencer.feed() or sent > 0
            except Exception:  # a database hiccup must not end the loop
                log_retry(log, "change-log relay")

    def run():
        while True:
            gevent.sleep(TICK)
            try:
                state.gate.expire()
                with state.database.read_session() as db:
                    state.namespace.revalidate(db, state.session_timeouts)
            except Exception:  # a database hiccup must not end the loop
                log_retry(log, "background loop")

    def heartbeats():
        while True:
            gevent.sleep(app.config["HEARTBEAT_SECONDS"])
            try:
                state.namespace.heartbeat(state.sequencer.delivered)
                state.views.heartbeat()
            except Exception:  # a database hiccup must not end the loop
                log_retry(log, "heartbeat")

    def wake_all():
        state.sequencer.wake()
        state.views.wake()

    state.socketio.start_background_task(relay)
    state.socketio.start_background_task(run)
    state.socketio.start_background_task(heartbeats)
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
    server.idle_timeout = app.config["HTTP_IDLE_TIMEOUT"]  # read by NoDelayHandler
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
