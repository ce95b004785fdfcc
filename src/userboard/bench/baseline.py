"""Baseline servers for the benchmark, on the same stack as `userboard serve` (Flask-SocketIO,
gevent pywsgi with TCP_NODELAY), with no database:

- `bare`: POST /emit broadcasts the posted JSON as one event to every client of /users.
  The floor for what a push layer on this stack can do.
- `poller`: the design userboard replaces: every 5 s read the whole users table and send it to
  every client (`users_snapshot`), whatever changed.

    python -m userboard.bench.baseline bare --port 5100
    python -m userboard.bench.baseline poller --port 5101 --database sqlite:///big.db
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from userboard.server import NoDelayHandler  # noqa: E402

NAMESPACE, ROOM = "/users", "admins"


def make_app(mode: str, database: str | None, interval: float):
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="gevent")

    @socketio.on("connect", namespace=NAMESPACE)
    def _connect(auth=None):
        join_room(ROOM)

    emitted: dict[int, int] = {}  # seq -> when the emit began, like a commit's end for userboard

    @app.post("/emit")
    def emit():
        body = request.get_json()
        emitted[body["payload"].get("seq", 0)] = time.monotonic_ns()
        socketio.emit(body["name"], body["payload"], namespace=NAMESPACE, to=ROOM)
        return jsonify(ok=True)

    @app.post("/emit-burst")
    def emit_burst():
        """Emit `count` events back to back (seq from 1,000,000 up), like a bulk UPDATE would."""
        payload = {"seq": 0, "id": 1, "version": 2, "changes": {"status": "disabled"},
                   "previous": {"status": "active"}}
        for i in range(request.get_json()["count"]):
            socketio.emit("user_updated", {**payload, "seq": 1_000_000 + i}, namespace=NAMESPACE,
                          to=ROOM)
        return jsonify(ok=True)

    @app.get("/bench/commit-times")
    def commit_times():
        return jsonify(emitted)

    if mode == "poller":
        from sqlalchemy import select

        from userboard.db import make_engine, make_session_factory
        from userboard.models import User, user_dict

        sessions = make_session_factory(make_engine(database))

        def poll():
            while True:
                gevent.sleep(interval)
                taken = time.monotonic_ns()
                with sessions() as s:
                    users = [user_dict(u) for u in s.scalars(select(User).order_by(User.id))]
                socketio.emit("users_snapshot", {"taken_at_ns": taken, "users": users},
                              namespace=NAMESPACE, to=ROOM)

        socketio.start_background_task(poll)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["bare", "poller"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database")
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    app = make_app(args.mode, args.database, args.interval)
    server = WSGIServer(("127.0.0.1", args.port), app, handler_class=NoDelayHandler, log=None)
    print(f"baseline {args.mode} serving on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
