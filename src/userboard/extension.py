"""The app's state and its per-request database session, for blueprints and socket handlers.

The factory (app.py) puts one `Userboard` into `app.extensions["userboard"]`; views read it with
`app_state()` and their database session with `get_db()`, the way flaskr's `db.py` does. This
module imports no blueprint and not the factory, so anything may import it without a cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from flask_socketio import SocketIO
    from sqlalchemy.orm import Session

    from .auth import SessionTimeouts
    from .bootstrap import Database
    from .gate import SocketGate
    from .metrics import Metrics
    from .realtime import UsersNamespace
    from .relay import Sequencer
    from .throttle import LoginThrottle
    from .viewengine import ViewEngine
    from .views import Cursors

KEY = "userboard"

log = logging.getLogger(__name__)


@dataclass
class Userboard:
    """Everything one app shares across requests, socket events and its background loop."""

    database: Database
    socketio: SocketIO
    namespace: UsersNamespace
    sequencer: Sequencer
    login_throttle: LoginThrottle
    session_timeouts: SessionTimeouts
    cursors: Cursors
    views: ViewEngine
    gate: SocketGate
    metrics: Metrics


def app_state(app: Flask | None = None) -> Userboard:
    """The extension of `app`, or of the current app."""
    return (current_app if app is None else app).extensions[KEY]


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def get_db() -> Session:
    """The request's (or socket event's) database session, opened on first use.

    Only an HTTP write gets one on the writers' pool, whose transactions may wait for the seq
    counter; reads, socket events and views marked `@writes_no_events` (logins) get one on the
    readers' pool, which writers queued behind a stuck one can never use up.
    """
    if "db" not in g:
        database = app_state().database
        g.db = database.session() if _may_take_counter() else database.read_session()
    return g.db


def _may_take_counter() -> bool:
    if request.method not in WRITE_METHODS or getattr(request, "sid", None) is not None:
        return False  # a read, or a socket event (they only read)
    view = current_app.view_functions.get(request.endpoint)
    return not getattr(view, "writes_no_events", False)


def writes_no_events(view):
    """Mark a view whose writes touch no captured row (a login): it uses the readers' pool."""
    view.writes_no_events = True
    return view


def close_db(exc: BaseException | None = None) -> None:
    """Close the context's session, if one was opened.

    Never raises: the answer is made by now, and a connection the database dropped (its
    rollback fails) is discarded by the pool anyway.
    """
    db = g.pop("db", None)
    if db is not None:
        try:
            db.close()
        except SQLAlchemyError as error:
            log.warning("closing a database session failed: %s", type(error).__name__)


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
