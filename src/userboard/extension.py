"""The app's state and its per-request database session, for blueprints and socket handlers.

The factory (app.py) puts one `Userboard` into `app.extensions["userboard"]`; views read it with
`app_state()` and their database session with `get_db()`, the way flaskr's `db.py` does. This
module imports no blueprint and not the factory, so anything may import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app, g

if TYPE_CHECKING:
    from flask_socketio import SocketIO
    from sqlalchemy.orm import Session

    from .bootstrap import Database
    from .gate import SocketGate
    from .realtime import UsersNamespace
    from .relay import Sequencer
    from .throttle import LoginThrottle
    from .viewengine import ViewEngine
    from .views import Cursors

KEY = "userboard"


@dataclass
class Userboard:
    """Everything one app shares across requests, socket events and its background loop."""

    database: Database
    socketio: SocketIO
    namespace: UsersNamespace
    sequencer: Sequencer
    login_throttle: LoginThrottle
    cursors: Cursors
    views: ViewEngine
    gate: SocketGate


def app_state(app: Flask | None = None) -> Userboard:
    """The extension of `app`, or of the current app."""
    return (current_app if app is None else app).extensions[KEY]


def get_db() -> Session:
    """The request's (or socket event's) database session, opened on first use."""
    if "db" not in g:
        g.db = app_state().database.session()
    return g.db


def close_db(exc: BaseException | None = None) -> None:
    """Close the context's session, if one was opened."""
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
