"""Settings from the environment, with defaults for one process on SQLite. Imports no Flask.

USERBOARD_DATABASE_URL     default sqlite:///userboard.db (in the current directory)
USERBOARD_MESSAGE_QUEUE    e.g. redis://127.0.0.1:6379/0; unset means a single server process
USERBOARD_SECRET_KEY       unset: generated once, kept beside the database with mode 0600
USERBOARD_CHANNEL          the message queue channel (default "userboard"); installs that share
                           one Redis but not one database need different channels
USERBOARD_CHANGE_LOG_SIZE  how many recent events the change log keeps (default 10000)
USERBOARD_CHANGE_LOG_MIN_AGE seconds every event stays in the change log, however many follow
                           (default 60, 0 to 86400): bursts larger than the size still reach
                           every client by push; clients further behind resync
USERBOARD_ALLOWED_ORIGINS  other origins whose pages may open the socket, comma-separated
                           (e.g. https://admin.example.com); the server's own is always allowed
USERBOARD_SECURE_COOKIES   auto (default: Secure when the request came over https), true, false
USERBOARD_HEARTBEAT_SECONDS how often every socket is told the latest seq (default 2): the longest a
                           client that missed an event goes without noticing
USERBOARD_PROXY_HOPS       how many reverse proxies in front of the server to trust (default 0):
                           the client address, scheme and host are taken from the last N values
                           of X-Forwarded-For, -Proto and -Host. It must equal the real number of
                           proxies: with more, a client can spoof its address (docs/security.md)
USERBOARD_LOG_FORMAT       text (default) or json: one JSON object per line, with a request_id
USERBOARD_MONITOR_ALLOW    addresses or networks that may read /healthz and /metrics,
                           comma-separated (e.g. 127.0.0.1,10.0.0.0/8); unset: anyone

USERBOARD_HTTP_IDLE_TIMEOUT  seconds a connection may wait for its next request, or between the
                             bytes of a request's head, before the server closes it (default 10)

Socket limits (docs/security.md, "Holding connections and flooding: limits and timeouts"); rates
are in the notation of the `limits` library, e.g. 60/minute or 20/4 seconds:
USERBOARD_SOCKET_AUTH_TIMEOUT             seconds a socket connection may stay open without
                                          joining /users (default 10)
USERBOARD_SOCKET_PENDING_PER_ADDRESS      such not-yet-joined connections one address may hold at
                                          once (default 10)
USERBOARD_SOCKET_HANDSHAKES_PER_ADDRESS   new socket connections per address (default 60/minute)
USERBOARD_SOCKET_MESSAGES_PER_CONNECTION  messages one connection may send (default 20/4 seconds)
USERBOARD_SOCKET_MESSAGES_PER_ADDRESS     messages all connections of one address may send
                                          (default 100/10 seconds)
USERBOARD_SOCKET_MAX_QUEUED               events a socket may have waiting to be sent before it
                                          leaves the live stream and catches up from the change
                                          log at its own pace (default 5000, 1 to 1000000)
USERBOARD_LOCK_TIMEOUT_MS  how long the server's statements wait for a lock (the seq counter, a row)
                           before the request fails with 503 and Retry-After (default 2000); also
                           how long a write waits for a connection. SQLite: the busy timeout
USERBOARD_STATEMENT_TIMEOUT_MS
                           the longest one of the server's statements may run (default 10000;
                           PostgreSQL only: SQLite has no statement timeout)
USERBOARD_DB_POOL_SIZE     database connections per server process for writes (default 5)
USERBOARD_DB_READ_POOL_SIZE
                           connections per server process for everything that never takes the seq
                           counter: reads, logins, snapshots, socket connects (default 10)
USERBOARD_DB_PRE_PING      true (default): test each pooled connection before use, so one the
                           database dropped is replaced instead of failing a request; false
USERBOARD_SESSION_IDLE_MINUTES  a browser login ends after this many minutes without a request
                           or socket connect (default 720: 12 hours)
USERBOARD_SESSION_MAX_HOURS     a browser login ends this many hours after it began, however
                           much it is used (default 168: 7 days)
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import limits
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "sqlite:///userboard.db"
MAX_TIMEOUT_MS = 2_147_483_647  # PostgreSQL's largest lock_timeout / statement_timeout
MAX_POOL_SIZE = 1000


class ConfigError(Exception):
    """A setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    message_queue: str | None
    channel: str
    secret_key: str | None
    change_log_size: int
    allowed_origins: tuple[str, ...] = ()
    secure_cookies: str = "auto"
    heartbeat_seconds: float = 2.0
    proxy_hops: int = 0
    http_idle_timeout: float = 10.0
    socket_auth_timeout: float = 10.0
    socket_pending_per_address: int = 10
    socket_handshakes_per_address: str = "60/minute"
    socket_messages_per_connection: str = "20/4 seconds"
    socket_messages_per_address: str = "100/10 seconds"
    lock_timeout_ms: int = 2000
    statement_timeout_ms: int = 10000
    db_pool_size: int = 5
    db_read_pool_size: int = 10
    db_pre_ping: bool = True
    log_format: str = "text"
    monitor_allow: tuple[str, ...] = ()
    session_idle_minutes: int = 720
    session_max_hours: int = 168
    change_log_min_age: float = 60.0
    socket_max_queued: int = 5000

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        size = env.get("USERBOARD_CHANGE_LOG_SIZE", "10000")
        if not size.isdigit() or int(size) < 1:
            raise ConfigError(f"USERBOARD_CHANGE_LOG_SIZE must be a positive integer, not {size!r}")
        origins = tuple(
            o.strip().rstrip("/") for o in env.get("USERBOARD_ALLOWED_ORIGINS", "").split(",")
            if o.strip()
        )
        if "*" in origins:
            raise ConfigError("USERBOARD_ALLOWED_ORIGINS must list origins; '*' is not allowed")
        secure = env.get("USERBOARD_SECURE_COOKIES", "auto").lower()
        if secure not in ("auto", "true", "false"):
            raise ConfigError(f"USERBOARD_SECURE_COOKIES must be auto, true or false, not {secure!r}")
        heartbeat_seconds = _seconds(env, "USERBOARD_HEARTBEAT_SECONDS", 2, 0.05, 60)
        change_log_min_age = _seconds(env, "USERBOARD_CHANGE_LOG_MIN_AGE", 60, 0, 86400)
        hops = env.get("USERBOARD_PROXY_HOPS", "0").strip()
        if not hops.isdigit() or not hops.isascii():
            raise ConfigError(f"USERBOARD_PROXY_HOPS must be 0 or a positive integer, not {hops!r}")
        pre_ping = env.get("USERBOARD_DB_PRE_PING", "true").lower()
        if pre_ping not in ("true", "false"):
            raise ConfigError(f"USERBOARD_DB_PRE_PING must be true or false, not {pre_ping!r}")
        monitor_allow = tuple(
            a.strip() for a in env.get("USERBOARD_MONITOR_ALLOW", "").split(",") if a.strip()
        )
        for entry in monitor_allow:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError("USERBOARD_MONITOR_ALLOW must list addresses or networks "
                                  f"(like 10.0.0.0/8), not {entry[:100]!r}") from None
        return cls(
            log_format=log_format_from_env(env),
            monitor_allow=monitor_allow,
            heartbeat_seconds=heartbeat_seconds,
            proxy_hops=int(hops),
            **_connection_limits(env),
            lock_timeout_ms=_positive(env, "USERBOARD_LOCK_TIMEOUT_MS", 2000, MAX_TIMEOUT_MS),
            statement_timeout_ms=_positive(env, "USERBOARD_STATEMENT_TIMEOUT_MS", 10000,
                                           MAX_TIMEOUT_MS),
            db_pool_size=_positive(env, "USERBOARD_DB_POOL_SIZE", 5, MAX_POOL_SIZE),
            db_read_pool_size=_positive(env, "USERBOARD_DB_READ_POOL_SIZE", 10, MAX_POOL_SIZE),
            db_pre_ping=pre_ping == "true",
            allowed_origins=origins,
            secure_cookies=secure,
            database_url=env.get("USERBOARD_DATABASE_URL") or DEFAULT_DATABASE_URL,
            message_queue=env.get("USERBOARD_MESSAGE_QUEUE") or None,
            channel=env.get("USERBOARD_CHANNEL") or "userboard",
            secret_key=env.get("USERBOARD_SECRET_KEY") or None,
            change_log_size=int(size),
            # At most 10 years: beyond that a datetime subtraction could leave the calendar.
            session_idle_minutes=_positive(env, "USERBOARD_SESSION_IDLE_MINUTES", 720,
                                           10 * 366 * 24 * 60),
            session_max_hours=_positive(env, "USERBOARD_SESSION_MAX_HOURS", 168, 10 * 366 * 24),
            change_log_min_age=change_log_min_age,
            socket_max_queued=_positive(env, "USERBOARD_SOCKET_MAX_QUEUED", 5000, 1_000_000),
        )


def _connection_limits(env) -> dict:
    """The connection and socket limits, checked; unset (or empty) ones keep their defaults."""
    found = {}
    for name in ("http_idle_timeout", "socket_auth_timeout"):
        key = "USERBOARD_" + name.upper()
        if env.get(key):
            found[name] = _seconds(env, key, 0, 0, 3600, above_low=True)
    pending = env.get("USERBOARD_SOCKET_PENDING_PER_ADDRESS")
    if pending:
        if not pending.isdigit() or int(pending) < 1:
            raise ConfigError("USERBOARD_SOCKET_PENDING_PER_ADDRESS must be a positive integer, "
                              f"not {pending!r}")
        found["socket_pending_per_address"] = int(pending)
    for name in ("handshakes_per_address", "messages_per_connection", "messages_per_address"):
        key = "USERBOARD_SOCKET_" + name.upper()
        rate = env.get(key)
        if rate:
            found["socket_" + name] = check_rate(key, rate)
    return found


def check_rate(key: str, rate: str) -> str:
    """`rate` if the `limits` library reads it as a positive rate, else a ConfigError."""
    try:
        parsed = limits.parse_many(rate)
    except ValueError:
        parsed = []
    if len(parsed) != 1 or parsed[0].amount < 1:
        raise ConfigError(f"{key} must be a rate such as 60/minute or 20/4 seconds, not {rate!r}")
    return rate


def _positive(env, name: str, default: int, maximum: int) -> int:
    """An integer setting from 1 to `maximum`."""
    value = env.get(name, str(default)).strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
        raise ConfigError(f"{name} must be an integer from 1 to {maximum}, not {value!r}")
    return int(value)


def _seconds(env, name: str, default: float, low: float, high: float, *,
             above_low: bool = False) -> float:
    """A number of seconds from `low` (or, `above_low`, more than it) to `high`; NaN and text
    are refused."""
    value = env.get(name, str(default))
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (low < seconds if above_low else low <= seconds) or not seconds <= high:
        bounds = f"more than {low:g} and at most {high:g}" if above_low else f"from {low:g} to {high:g}"
        raise ConfigError(f"{name} must be a number of seconds {bounds}, not {value!r}")
    return seconds


def log_format_from_env(env=None) -> str:
    """USERBOARD_LOG_FORMAT: `text` or `json` (read on its own too: logging starts first)."""
    env = os.environ if env is None else env
    value = env.get("USERBOARD_LOG_FORMAT", "text").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ConfigError(f"USERBOARD_LOG_FORMAT must be text or json, not {value[:100]!r}")
    return value


def secret_key_path(database_url: str) -> Path:
    """Where the generated secret key lives: beside a SQLite file, else in the current folder."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        db_file = Path(url.database)
        return db_file.with_name(db_file.name + "-secret-key")
    return Path("userboard-secret-key")


def load_or_create_secret_key(path: Path) -> str:
    """Read the key file, or create it readable by its owner only."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
