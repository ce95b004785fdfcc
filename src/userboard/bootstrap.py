"""One start-up for every entry point: engine, capturing session factory, publisher. No Flask.

The server, the CLI and scripts all open the database here, so all of them capture changes the
same way. A script that changes users needs just::

    from userboard.bootstrap import open_database
    db = open_database("sqlite:///userboard.db", message_queue="redis://127.0.0.1:6379/0",
                       actor="nightly-import")
    with db.session() as session:
        ...  # change User rows, commit: events are published
    db.close()
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import events as ev
from .capture import ACTOR_KEY, DEFAULT_MIN_AGE, DEFAULT_RETENTION, ChangeCapture, install_capture
from .db import ServerPools, make_engine, make_session_factory
from .publish import QueuedEmitter


@dataclass
class Database:
    """Capturing sessions for writes (`sessions`) and, on a server, a second pool (`reads`)
    for work that never takes the seq counter; elsewhere `reads` is `sessions`."""

    engine: Engine
    sessions: sessionmaker
    capture: ChangeCapture
    emitter: QueuedEmitter | None = None
    reads: sessionmaker | None = None
    read_engine: Engine | None = None  # the readers' pool, if it has one of its own

    def __post_init__(self) -> None:
        if self.reads is None:
            self.reads = self.sessions

    def session(self) -> Session:
        return self.sessions()

    def read_session(self) -> Session:
        """A session on the readers' pool: for reads and writes of no captured row (logins)."""
        return self.reads()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is still queued, then release connections."""
        if self.emitter is not None:
            self.emitter.flush(timeout)
        self.engine.dispose()
        if self.read_engine is not None:
            self.read_engine.dispose()


def open_database(
    url: str,
    message_queue: str | None = None,
    retention: int = DEFAULT_RETENTION,
    channel: str = "userboard",
    actor: dict | str | None = None,
    pools: ServerPools | None = None,
    min_age: float = DEFAULT_MIN_AGE,
) -> Database:
    """Open `url` with change capture; publish through `message_queue` (write-only) if given.

    `actor` says who the changes are by: a name (a script's, shown in every event and in the
    history) or a whole `events.actor(...)`. By default, a script named after the program.
    `pools` (the server's) gives writes and reads separate, bounded pools and writes timeouts;
    without it there is one engine with SQLAlchemy's defaults, as a script expects.
    `retention` and `min_age` say what the change log keeps (USERBOARD_CHANGE_LOG_SIZE and
    USERBOARD_CHANGE_LOG_MIN_AGE): use the servers' values.
    """
    engine = make_engine(url) if pools is None else pools.writer_engine(url)
    sessions = make_session_factory(engine)
    reads = sessions
    reader = None if pools is None else pools.reader_engine(url)
    if reader is not None:
        reads = make_session_factory(reader)
    if actor is not None:
        by = ev.actor("script", None, actor) if isinstance(actor, str) else actor
        sessions.configure(info={ACTOR_KEY: by})
        reads.configure(info={ACTOR_KEY: by})
    # Capture on the readers' sessions too: no write of a tracked row goes unpublished,
    # whichever pool it used.
    capture = install_capture(sessions, retention=retention, min_age=min_age)
    if reads is not sessions:
        capture.install(reads)
    emitter = None
    if message_queue:
        emitter = QueuedEmitter(write_only_emitter(message_queue, channel))
        capture.publishers.append(emitter)
    return Database(engine, sessions, capture, emitter, reads, reader)


def write_only_emitter(message_queue: str, channel: str = "userboard"):
    """A python-socketio client manager that only publishes to the queue (no server here)."""
    import socketio  # python-socketio, not Flask

    if message_queue.startswith(("redis://", "rediss://", "unix://")):
        return socketio.RedisManager(message_queue, channel=channel, write_only=True)
    return socketio.KombuManager(message_queue, channel=channel, write_only=True)


def cli_actor() -> dict:
    """Changes made with the `userboard` command are by the operating-system user who ran it."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        name = None
    return ev.actor("cli", None, name)
