"""For operators: `GET /healthz` (load balancers) and `GET /metrics` (Prometheus).

Neither needs a login or shows user data. Both answer anyone who reaches the server, unless
USERBOARD_MONITOR_ALLOW lists the addresses or networks that may read them (after ProxyFix, the
real client's address). Health is checked on every request, each check under a short timeout,
so a hung database or Redis gives a 503 instead of a hung probe.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .capture import current_seq
from .errors import error_response
from .extension import app_state
from .logs import NOTES_KEY

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

CHECK_TIMEOUT = 2.0  # seconds for each check (database, message queue), run side by side
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def allowed_networks(entries) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


@bp.before_request
def restrict_by_address():
    networks = current_app.extensions["userboard.monitor_allow"]
    if not networks:
        return None
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        address = None
    if address is None or not any(address in network for network in networks):
        return error_response("forbidden", "this address may not read health or metrics")
    return None


@bp.get("/healthz")
def healthz():
    """200 when the database and the message queue answer, else 503 naming what failed."""
    state = app_state()
    checks = {"database": lambda: relay_lag(state.database, state.sequencer)}
    queue_url = current_app.config["MESSAGE_QUEUE"]
    if queue_url and queue_url.startswith(REDIS_SCHEMES):
        checks["message_queue"] = _redis_ping(queue_url)
    results = run_checks(checks, CHECK_TIMEOUT)
    body = {name: "ok" if ok else problem for name, (ok, problem) in results.items()}
    body.setdefault("message_queue", "not checked" if queue_url else "not configured")
    database_ok, lag = results["database"]
    body["relay_lag"] = lag if database_ok else None
    healthy = all(ok for ok, _ in results.values())
    if not healthy:
        log.warning("health check failed: %s",
                    ", ".join(f"{name} {body[name]}" for name, (ok, _) in results.items() if not ok))
    return jsonify(status="ok" if healthy else "unavailable", **body), 200 if healthy else 503


@bp.get("/metrics")
def metrics():
    """This process's metrics in the Prometheus text format (or OpenMetrics, if asked)."""
    body, content_type = app_state().metrics.exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type)


def relay_lag(database, sequencer) -> int:
    """How many seqs the database's counter is ahead of what this process has sent to its
    whole-table sockets (reading the counter also proves the database answers)."""
    with database.read_session() as session:
        latest = current_seq(session)
    return max(latest - sequencer.delivered, 0)


def _redis_ping(url: str) -> Callable[[], object]:
    """A check that PINGs the Redis message queue (other kinds of queue are not checked)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT,
                                  socket_timeout=CHECK_TIMEOUT)

    def ping():
        try:
            return client.ping()
        finally:
            client.close()  # one short connection per check: nothing held between probes

    return ping


def run_checks(checks: dict[str, Callable[[], object]], timeout: float) -> dict[str, tuple]:
    """Run each check in its own thread (a greenlet under gevent), all within `timeout`.

    Returns name -> (True, its result) or (False, what went wrong, in a few words: an
    exception's class name, never its message, which may hold a host or a database name).
    """
    outcomes: dict[str, tuple] = {}

    def run(name, check):
        try:
            outcomes[name] = (True, check())
        except Exception as exc:
            outcomes[name] = (False, f"failed ({type(exc).__name__})")

    threads = [threading.Thread(target=run, args=item, daemon=True, name=f"health-{item[0]}")
               for item in checks.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    return {name: outcomes.get(name, (False, f"no answer within {timeout:g} s"))
            for name in checks}


def init_app(app: Flask) -> None:
    """Serve /healthz and /metrics; feed the metrics from every request."""
    app.extensions["userboard.monitor_allow"] = allowed_networks(app.config["MONITOR_ALLOW"])
    app.register_blueprint(bp)
    state = app_state(app)

    @app.after_request
    def _observe(response):
        notes = request.environ.get(NOTES_KEY)
        if notes is not None:  # the latency metric's label
            notes["route"] = request.url_rule.rule if request.url_rule else "unmatched"
        if request.endpoint == "web.login" and request.method == "POST":
            if response.status_code == 401:
                state.metrics.login_failures.labels("wrong_credentials").inc()
            elif response.status_code == 429:
                state.metrics.login_failures.labels("throttled").inc()
        return response
