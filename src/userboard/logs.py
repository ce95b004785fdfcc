"""Logging for the `userboard` command: text or JSON lines, an access log, request ids.

`configure()` is the one place a process sets up logging (cli.py calls it). In JSON mode every
line is an object with `time`, `level`, `logger`, `message`, and `request_id` when the line was
logged while serving a request (a socket handler's lines carry the id of the request that opened
the connection). `AccessLog` writes one line per HTTP request, Engine.IO's included.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import has_request_context, request
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = "userboard.request_id"  # in the WSGI environ
# Also in the environ: a dict the app fills in about the request ("route": the Flask rule it
# matched). A dict, because Flask-SocketIO hands Flask a copy of the environ.
NOTES_KEY = "userboard.notes"
# An incoming id is kept only if it is short and plain (it goes into logs and a header).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
JSON_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}

access_log = logging.getLogger("userboard.access")


class RequestIdFilter(logging.Filter):
    """Give each record the id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None and has_request_context():
            record.request_id = request.environ.get(REQUEST_ID_KEY)
        return True


class UTCJsonFormatter(JsonFormatter):
    """JSON lines with an ISO-8601 UTC time."""

    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) \
            + f".{int(record.msecs):03d}Z"


def configure(log_format: str = "text") -> None:
    """Send every log line to stderr, as text or JSON; userboard's own at INFO."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(UTCJsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                              rename_fields=JSON_FIELDS))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # Connections, refusals, rate-limit hits, failed logins, requests; never tokens or passwords.
    logging.getLogger("userboard").setLevel(logging.INFO)
    # Engine.IO and Socket.IO add a plain handler of their own to a logger with no level;
    # with one, their errors go through ours (and come out as JSON in JSON mode).
    for name in ("engineio.server", "socketio.server"):
        logging.getLogger(name).setLevel(logging.ERROR)


def request_id(environ) -> str:
    """The request's id: a sane incoming X-Request-ID, else a new random one."""
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    if SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return secrets.token_hex(16)


class AccessLog:
    """WSGI middleware: a request id for every request (echoed in X-Request-ID) and one
    access-log line when its response is done: client address, method, path (without the query
    string, which may hold search terms), status, bytes, duration and request id.

    `observe(route, method, status, seconds)` is also told about each request (the latency
    metric); `route` is None for a request the Flask app did not answer (Engine.IO's).
    The address is read when the response is done, so a ProxyFix around or inside this
    middleware has put the real client's there.
    """

    def __init__(self, app, observe=None):
        self.app = app
        self.observe = observe

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rid = environ[REQUEST_ID_KEY] = request_id(environ)
        notes = environ[NOTES_KEY] = {}
        status = ["-"]

        def start(status_line, headers, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            headers = [h for h in headers if h[0].lower() != REQUEST_ID_HEADER.lower()]
            headers.append((REQUEST_ID_HEADER, rid))
            return start_response(status_line, headers, exc_info)

        def done(size: int) -> None:
            seconds = time.perf_counter() - started
            if status[0] == "-" and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
                status[0] = "101"  # the websocket library answered the upgrade on the socket
            fields = {"client": environ.get("REMOTE_ADDR"), "method": environ.get("REQUEST_METHOD"),
                      "path": environ.get("PATH_INFO", "")[:500],
                      "status": int(status[0]) if status[0].isdigit() else None,
                      "bytes": size, "duration_ms": round(seconds * 1000, 3), "request_id": rid}
            access_log.info('%s "%s %s" %s %d %.1fms %s', fields["client"] or "-", fields["method"],
                            fields["path"], status[0], size, seconds * 1000, rid, extra=fields)
            if self.observe is not None:
                self.observe(notes.get("route"), environ.get("REQUEST_METHOD", ""), status[0],
                             seconds)

        result = self.app(environ, start)
        if isinstance(result, list | tuple):  # the whole body, already made: keep it a list
            done(sum(map(len, result)))
            return result
        return _CountedBody(result, done)


class _CountedBody:
    """A streamed response body that reports its size when the server closes it."""

    def __init__(self, body, done):
        self.body, self.done, self.size = body, done, 0

    def __iter__(self):
        for chunk in self.body:
            self.size += len(chunk)
            yield chunk

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.done(self.size)
