"""The socket's door: what an Engine.IO connection may hold and send. Imports no Flask.

Anyone can open an Engine.IO connection without credentials, and each one costs a file
descriptor, memory and work per message. The gate bounds that, per client address and per
connection, in front of the Socket.IO server and inside it:

- New connections (handshakes) per address are rate-limited, and an address may hold only a few
  connections that have not joined the namespace yet. Past either, the handshake gets 429.
- A connection that has not joined the namespace `auth_timeout` seconds after it opened is
  closed (`expire`, called by the server's background loop).
- Every message a client sends costs one from its connection's budget and one from its
  address's. Past either, the whole connection is closed, not just a namespace: the budget
  belongs to the connection, so joining the namespace again cannot refill it.
- A polling POST without a length or over the size limit is refused before its body is read,
  and its session is closed; so is one whose body is not UTF-8. Any Engine.IO request answered
  with a 4xx closes its HTTP connection (keep-alive would let the client hold it).

It also makes python-engineio's `Server.disconnect` return at once (`_disconnect_at_once`), and
sends at most 16 packets per polling response (`_poll_at_most`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections import Counter
from urllib.parse import parse_qs

import limits
from engineio.exceptions import QueueEmpty
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

PATH = "/socket.io/"  # where Flask-SocketIO serves Engine.IO


def _disconnect_at_once(eio) -> None:
    """Make `eio.disconnect` close sessions without waiting for their clients.

    python-engineio's `Server.disconnect(sid)` calls `Socket.close()`, which waits
    (`queue.join()`) until the client has collected the session's last packets. A polling client
    that never polls again never collects them, so the caller blocks forever. The library itself
    calls it from the greenlet of a polling POST it refuses (a body over `max_http_buffer_size`,
    or an unknown packet type): that request is never answered and its connection stays open.
    See docs/security.md, "python-engineio: a refused polling POST never answers".
    """

    def disconnect(sid=None):
        for key in [sid] if sid is not None else list(eio.sockets):
            socket = eio.sockets.get(key)
            if socket is not None:
                socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
            eio.sockets.pop(key, None)

    eio.disconnect = disconnect


# python-engineio's client drops a connection whose polling response holds more than this many
# packets ("Too many packets in payload": engineio.payload.Payload.max_decode_packets, its
# guard against a flood). Its server sends whatever is queued: a Python client polling through
# a burst (or a catch-up) lost its connection, and again after every reconnect.
PACKETS_PER_POLL = 16


def _poll_at_most(socket, limit: int = PACKETS_PER_POLL) -> None:
    """Make an Engine.IO socket hand at most `limit` packets to each poll: a polling response, or
    a turn of the websocket writer. The rest wait in the queue for the next one.

    python-engineio's `Socket.poll`, with the bound: it waits for one packet, then takes what
    else is queued up to the close sentinel (None), which stays queued for the next poll.
    """
    queue_empty = socket.server.get_queue_empty_exception()

    def poll():
        server = socket.server
        try:
            first = socket.queue.get(timeout=server.ping_interval + server.ping_timeout)
        except queue_empty:
            raise QueueEmpty() from None
        socket.queue.task_done()
        if first is None:
            return []
        packets = [first]
        while len(packets) < limit:
            try:
                item = socket.queue.get(block=False)
            except queue_empty:
                break
            socket.queue.task_done()
            if item is None:
                socket.queue.put(None)
                break
            packets.append(item)
        return packets

    socket.poll = poll


def _refusal(start_response, status: str, code: str, message: str, retry_after: int | None = None):
    body = json.dumps({"error": {"code": code, "message": message, "fields": {}}}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Connection", "close")]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    start_response(status, headers)
    return [body]


class SocketGate:
    """WSGI middleware in front of the Socket.IO server `server`, and its Engine.IO handlers.

    `app` is the WSGI app it wraps (Flask-SocketIO's middleware); a connection counts as
    authenticated once it has joined `namespace`.
    """

    def __init__(self, server, app, namespace: str, *, auth_timeout: float,
                 pending_per_address: int, handshakes_per_address: str,
                 messages_per_connection: str, messages_per_address: str, clock=time.monotonic):
        self.server, self.app, self.namespace = server, app, namespace
        self.eio = server.eio
        self.auth_timeout = auth_timeout
        self.pending_per_address = pending_per_address
        self.handshakes = limits.parse(handshakes_per_address)
        self.per_connection = limits.parse(messages_per_connection)
        self.per_address = limits.parse(messages_per_address)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.clock = clock
        self.addresses: dict[str, str] = {}  # open connection (Engine.IO sid) -> client address
        self.pending: dict[str, float] = {}  # connection not in the namespace yet -> deadline
        self.pending_count: Counter[str] = Counter()  # address -> its connections in `pending`
        _disconnect_at_once(self.eio)
        handlers = self.eio.handlers
        self._opened, self._received, self._closed = (
            handlers["connect"], handlers["message"], handlers["disconnect"])
        self.eio.on("connect", self._on_connect)
        self.eio.on("message", self._on_message)
        self.eio.on("disconnect", self._on_disconnect)

    # -- HTTP, before Engine.IO sees the request ------------------------------------------------

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(PATH):
            return self.app(environ, start_response)
        refused = self._refuse(environ, start_response)
        if refused is not None:
            return refused

        def start(status, headers, exc_info=None):
            if status.startswith("4"):  # refused by Engine.IO: do not keep the connection alive
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def _refuse(self, environ, start_response):
        """Answer a handshake past its address's limits, or an oversized polling POST."""
        sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [None])[0]
        method = environ.get("REQUEST_METHOD")
        address = environ.get("REMOTE_ADDR") or "unknown"
        if sid is None and method == "GET":
            if self.pending_count[address] >= self.pending_per_address:
                log.warning("refused socket handshake from %s: %d connections not authenticated",
                            address, self.pending_count[address])
                return _refusal(start_response, "429 Too Many Requests", "too_many_requests",
                                "too many unauthenticated connections from this address",
                                math.ceil(self.auth_timeout))
            if not self.limiter.hit(self.handshakes, "handshake", address):
                reset = self.limiter.get_window_stats(self.handshakes, "handshake", address).reset_time
                log.warning("refused socket handshake from %s: too many handshakes", address)
                return _refusal(start_response, "429 Too Many Requests", "too_many_requests",
                                "too many new connections from this address",
                                max(1, math.ceil(reset - time.time())))
        elif sid is not None and method == "POST":
            length = environ.get("CONTENT_LENGTH") or ""
            if not length.isdigit() or int(length) > self.eio.max_http_buffer_size:
                log.warning("closing socket connection from %s: a POST of %s", address,
                            f"{length} bytes" if length else "unknown length")
                if sid in self.addresses:
                    self.close(sid)
                return _refusal(start_response, "413 Request Entity Too Large", "too_large",
                                "socket message too large")
            # Engine.IO decodes the body as UTF-8 and, when it is not, logs a traceback and keeps
            # the session: read it here (it is small now), and refuse it like a malformed one.
            body = environ["wsgi.input"].read(int(length))
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                log.warning("closing socket connection from %s: a POST that is not UTF-8", address)
                if sid in self.addresses:
                    self.close(sid)
                return _refusal(start_response, "400 Bad Request", "bad_request",
                                "socket messages must be UTF-8")
            environ["wsgi.input"] = io.BytesIO(body)
        return None

    # -- Engine.IO events -------------------------------------------------------------------------

    def _on_connect(self, eio_sid, environ):
        address = environ.get("REMOTE_ADDR") or "unknown"
        self.addresses[eio_sid] = address
        self.pending[eio_sid] = self.clock() + self.auth_timeout
        self.pending_count[address] += 1
        _poll_at_most(self.eio.sockets[eio_sid])
        answer = self._opened(eio_sid, environ)
        if answer is not None and answer is not True:  # refused: no disconnect event follows
            self._forget(eio_sid)
        return answer

    def _on_message(self, eio_sid, data):
        address = self.addresses.get(eio_sid)
        if address is None:  # closed by us; the transport may still deliver what was in flight
            return None
        if not (self.limiter.hit(self.per_connection, "connection", eio_sid)
                and self.limiter.hit(self.per_address, "address", address)):
            log.warning("socket connection from %s sent messages too fast; closing it", address)
            self.close(eio_sid)
            return None
        answer = self._received(eio_sid, data)
        if eio_sid in self.pending and self._joined(eio_sid):
            self._settle(eio_sid)
        return answer

    def _on_disconnect(self, eio_sid, reason=None):
        self._forget(eio_sid)
        return self._closed(eio_sid, reason)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _joined(self, eio_sid: str) -> bool:
        manager = self.server.manager
        sid = manager.sid_from_eio_sid(eio_sid, self.namespace)
        return sid is not None and manager.is_connected(sid, self.namespace)

    def _settle(self, eio_sid: str) -> None:
        """The connection is no longer pending (it joined, or it is gone)."""
        if self.pending.pop(eio_sid, None) is not None:
            address = self.addresses.get(eio_sid)
            self.pending_count[address] -= 1
            if self.pending_count[address] <= 0:
                del self.pending_count[address]

    def _forget(self, eio_sid: str) -> None:
        self._settle(eio_sid)
        self.addresses.pop(eio_sid, None)

    def close(self, eio_sid: str) -> None:
        """Close the whole connection (every namespace and the transport), without waiting."""
        self.eio.disconnect(eio_sid)
        self._forget(eio_sid)

    def expire(self) -> None:
        """Close connections that did not join the namespace in time."""
        now = self.clock()
        for eio_sid, deadline in list(self.pending.items()):
            if deadline <= now:
                log.info("closing socket connection from %s: not authenticated within %g s",
                         self.addresses.get(eio_sid), self.auth_timeout)
                self.close(eio_sid)
