"""Settings from the environment, with defaults for one process on SQLite. Imports no Flask.

USERBOARD_DATABASE_URL     default sqlite:///userboard.db (in the current directory)
USERBOARD_MESSAGE_QUEUE    e.g. redis://127.0.0.1:6379/0; unset means a single server process
USERBOARD_SECRET_KEY       unset: generated once, kept beside the database with mode 0600
USERBOARD_CHANNEL          the message queue channel (default "userboard"); installs that share
                           one Redis but not one database need different channels
USERBOARD_CHANGE_LOG_SIZE  how many recent events the change log keeps (default 10000)
USERBOARD_ALLOWED_ORIGINS  other origins whose pages may open the socket, comma-separated
                           (e.g. https://admin.example.com); the server's own is always allowed
USERBOARD_SECURE_COOKIES   auto (default: Secure when the request came over https), true, false
USERBOARD_SESSION_IDLE_MINUTES  a browser login ends after this many minutes without a request
                           or socket connect (default 720: 12 hours)
USERBOARD_SESSION_MAX_HOURS     a browser login ends this many hours after it began, however
                           much it is used (default 168: 7 days)
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "sqlite:///userboard.db"


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
    session_idle_minutes: int = 720
    session_max_hours: int = 168

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        size = _positive_int(env, "USERBOARD_CHANGE_LOG_SIZE", 10000)
        origins = tuple(
            o.strip().rstrip("/") for o in env.get("USERBOARD_ALLOWED_ORIGINS", "").split(",")
            if o.strip()
        )
        if "*" in origins:
            raise ConfigError("USERBOARD_ALLOWED_ORIGINS must list origins; '*' is not allowed")
        secure = env.get("USERBOARD_SECURE_COOKIES", "auto").lower()
        if secure not in ("auto", "true", "false"):
            raise ConfigError(f"USERBOARD_SECURE_COOKIES must be auto, true or false, not {secure!r}")
        return cls(
            allowed_origins=origins,
            secure_cookies=secure,
            database_url=env.get("USERBOARD_DATABASE_URL") or DEFAULT_DATABASE_URL,
            message_queue=env.get("USERBOARD_MESSAGE_QUEUE") or None,
            channel=env.get("USERBOARD_CHANNEL") or "userboard",
            secret_key=env.get("USERBOARD_SECRET_KEY") or None,
            change_log_size=size,
            # At most 10 years: beyond that a datetime subtraction could leave the calendar.
            session_idle_minutes=_positive_int(env, "USERBOARD_SESSION_IDLE_MINUTES", 720,
                                               most=10 * 366 * 24 * 60),
            session_max_hours=_positive_int(env, "USERBOARD_SESSION_MAX_HOURS", 168,
                                            most=10 * 366 * 24),
        )


def _positive_int(env, name: str, default: int, most: int | None = None) -> int:
    value = env.get(name, str(default)).strip()
    if not value.isdigit() or not value.isascii() or int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    if most is not None and int(value) > most:
        raise ConfigError(f"{name} must be at most {most}, not {value}")
    return int(value)


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
