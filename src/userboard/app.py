"""The Flask application factory: wiring only."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask_socketio import SocketIO
from flask_wtf.csrf import generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from . import errors, extension, i18n, ops, security, strictjson
from .api import StrictJSONProvider
from .api import bp as api_bp
from .auth import SessionTimeouts
from .bootstrap import open_database
from .config import Settings, load_or_create_secret_key, secret_key_path
from .db import ServerPools
from .events import NAMESPACE, ROOM
from .extension import Userboard
from .gate import SocketGate
from .logs import AccessLog
from .metrics import Metrics
from .publish import QueuedEmitter, sequenced_redis_manager
from .realtime import CheckedPacket, UsersNamespace, refuse_malformed_packets
from .relay import SequencedEmitter, Sequencer
from .throttle import LoginThrottle, RedisLoginThrottle
from .viewengine import USERS_VIEW, ViewEngine
from .views import Cursors
from .web import bp as web_bp

MAX_BODY_BYTES = 64 * 1024


def create_app(test_config: dict | None = None, settings: Settings | None = None) -> Flask:
    """Build the app: settings from the environment, then `test_config` wins."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.json = StrictJSONProvider(app)
    app.config.from_mapping(
        DATABASE_URL=settings.database_url,
        MESSAGE_QUEUE=settings.message_queue,
        CHANNEL=settings.channel,
        ALLOWED_ORIGINS=settings.allowed_origins,
        SECURE_COOKIES=settings.secure_cookies,
        PROXY_HOPS=settings.proxy_hops,
        HTTP_IDLE_TIMEOUT=settings.http_idle_timeout,
        SOCKET_AUTH_TIMEOUT=settings.socket_auth_timeout,
        SOCKET_PENDING_PER_ADDRESS=settings.socket_pending_per_address,
        SOCKET_HANDSHAKES_PER_ADDRESS=settings.socket_handshakes_per_address,
        SOCKET_MESSAGES_PER_CONNECTION=settings.socket_messages_per_connection,
        SOCKET_MESSAGES_PER_ADDRESS=settings.socket_messages_per_address,
        MONITOR_ALLOW=settings.monitor_allow,
        CHANGE_LOG_SIZE=settings.change_log_size,
        CHANGE_LOG_MIN_AGE=settings.change_log_min_age,
        SOCKET_MAX_QUEUED=settings.socket_max_queued,
        HEARTBEAT_SECONDS=settings.heartbeat_seconds,
        LOCK_TIMEOUT_MS=settings.lock_timeout_ms,
        STATEMENT_TIMEOUT_MS=settings.statement_timeout_ms,
        DB_POOL_SIZE=settings.db_pool_size,
        DB_READ_POOL_SIZE=settings.db_read_pool_size,
        DB_PRE_PING=settings.db_pre_ping,
        SESSION_IDLE_MINUTES=settings.session_idle_minutes,
        SESSION_MAX_HOURS=settings.session_max_hours,
        SECRET_KEY=settings.secret_key,
        SOCKETIO_ASYNC_MODE="gevent",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
    )
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        path = secret_key_path(app.config["DATABASE_URL"])
        app.config["SECRET_KEY"] = load_or_create_secret_key(path)

    pools = ServerPools(
        lock_timeout_ms=app.config["LOCK_TIMEOUT_MS"],
        statement_timeout_ms=app.config["STATEMENT_TIMEOUT_MS"],
        pool_size=app.config["DB_POOL_SIZE"], read_pool_size=app.config["DB_READ_POOL_SIZE"],
        pre_ping=app.config["DB_PRE_PING"],
    )
    database = open_database(app.config["DATABASE_URL"], retention=app.config["CHANGE_LOG_SIZE"],
                             min_age=app.config["CHANGE_LOG_MIN_AGE"], pools=pools)
    cursors = Cursors(app.config["SECRET_KEY"])
    metrics = Metrics()

    # The namespace, its sequencer (whole-table events) and its view engine (views) send
    # to this process's sockets only; the names below are bound before any of them sends.
    def send_view(sid: str, name: str, payload: dict) -> None:
        if name == USERS_VIEW:
            metrics.snapshots.labels(name).inc()
        namespace.emit_local(name, payload, to=sid)

    def send_in_order(name: str, payload: dict, to: str = ROOM) -> None:
        if to == ROOM:
            metrics.events_delivered.inc()
        namespace.emit_local(name, payload, to=to)

    # Background reads (views, the relay) use the readers' pool: writers never starve them.
    engine = ViewEngine(database.reads, cursors, send=send_view)
    sequencer = Sequencer(database.reads, emit=send_in_order,
                          enter=lambda sid: namespace.enter(sid),
                          leave=lambda sid: namespace.leave(sid),
                          queued=lambda sid: namespace.queued(sid),
                          members=lambda: namespace.members(),
                          max_queued=app.config["SOCKET_MAX_QUEUED"])
    namespace = UsersNamespace(engine, sequencer)
    sequencer.start_at_current()  # history before start-up is for catch-ups, not the room
    queue_options = {}
    if app.config["MESSAGE_QUEUE"]:
        # Every process's events reach every server through the queue, into its sequencer;
        # each also wakes the view engine (the change log has the rows it needs).
        def arrived(name: str, payload: dict) -> None:
            sequencer.offer(name, payload)
            engine.wake()

        queue_options["client_manager"] = sequenced_redis_manager(
            app.config["MESSAGE_QUEUE"], app.config["CHANNEL"], arrived
        )
    socketio = SocketIO(
        app,
        async_mode=app.config["SOCKETIO_ASYNC_MODE"],
        max_http_buffer_size=MAX_BODY_BYTES,  # a bigger message closes the connection
        cors_allowed_origins=security.origin_checker(tuple(app.config["ALLOWED_ORIGINS"])),
        namespaces=[NAMESPACE],  # any other, the default "/" included, is refused
        json=strictjson,  # client packets: depth-limited, strict (Engine.IO's too: process-wide)
        serializer=CheckedPacket,
        **queue_options,
    )
    socketio.on_namespace(namespace)
    refuse_malformed_packets(socketio.server)  # before the gate, which wraps its handlers
    # In front of Flask-SocketIO's middleware (a proxy fix goes around it, for the address).
    gate = SocketGate(
        socketio.server, app.wsgi_app, NAMESPACE,
        auth_timeout=app.config["SOCKET_AUTH_TIMEOUT"],
        pending_per_address=app.config["SOCKET_PENDING_PER_ADDRESS"],
        handshakes_per_address=app.config["SOCKET_HANDSHAKES_PER_ADDRESS"],
        messages_per_connection=app.config["SOCKET_MESSAGES_PER_CONNECTION"],
        messages_per_address=app.config["SOCKET_MESSAGES_PER_ADDRESS"],
    )
    # Every request, Engine.IO's and the gate's refusals included, gets an id and a log line.
    app.wsgi_app = AccessLog(gate, observe=metrics.observe_request)
    if app.config["PROXY_HOPS"]:
        # Around what the server calls, Flask-SocketIO's middleware included: pages, the API and
        # every Engine.IO request (origin check, socket handlers) see the client's address,
        # scheme and host.
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    queue = socketio if app.config["MESSAGE_QUEUE"] else None
    database.capture.publishers.append(QueuedEmitter(SequencedEmitter(sequencer, queue)))
    database.capture.publishers.append(engine)  # wakes it: views follow this process's commits
    database.capture.publishers.append(metrics)  # counts them
    metrics.watch(sockets=lambda: len(namespace.clients),
                  relay_lag=lambda: ops.relay_lag(database, sequencer))
    if app.config["MESSAGE_QUEUE"]:  # several processes: they share the count of failed logins
        throttle = RedisLoginThrottle(app.config["MESSAGE_QUEUE"], prefix=app.config["CHANNEL"])
    else:
        throttle = LoginThrottle()
    app.extensions[extension.KEY] = Userboard(
        database=database, socketio=socketio, namespace=namespace, sequencer=sequencer,
        login_throttle=throttle, cursors=cursors, views=engine, gate=gate, metrics=metrics,
        session_timeouts=SessionTimeouts(idle=timedelta(minutes=app.config["SESSION_IDLE_MINUTES"]),
                                         absolute=timedelta(hours=app.config["SESSION_MAX_HOURS"])),
    )

    app.jinja_env.globals["csrf_token"] = generate_csrf
    extension.init_app(app)
    i18n.init_app(app)
    security.init_app(app)
    errors.init_app(app)
    ops.init_app(app)
    app.register_blueprint(web_bp)
    app.register_blueprint(api_bp)
    return app
