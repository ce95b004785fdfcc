"""`userboard serve`, plus a record of when each event's commit finished (benchmark only).

The benchmark needs commit-to-client latency: a client's arrival time minus the moment the
commit returned in the server. This entry point builds the normal app and server and adds one
more publisher that notes `time.monotonic_ns()` per seq, readable at GET /bench/commit-times.
POST /bench/hashing {"threads": N} sets how many threads hash passwords (0: on the gevent loop,
the logins section's baseline). Everything else is exactly what `userboard serve` runs.

    python -m userboard.bench.instrumented --port 5100
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import time  # noqa: E402

from flask import jsonify, request  # noqa: E402

from userboard import auth  # noqa: E402
from userboard.app import create_app  # noqa: E402
from userboard.config import Settings  # noqa: E402
from userboard.extension import app_state  # noqa: E402
from userboard.migrations import upgrade  # noqa: E402
from userboard.server import serve  # noqa: E402


class CommitClock:
    """A publisher that only timestamps: it runs in after_commit, before the real emitter."""

    def __init__(self):
        self.times: dict[int, int] = {}

    def publish(self, events):
        now = time.monotonic_ns()
        for event in events:
            self.times[event.seq] = now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    upgrade(settings.database_url)
    app = create_app(settings=settings)
    clock = CommitClock()
    app_state(app).database.capture.publishers.insert(0, clock)

    @app.get("/bench/commit-times")
    def commit_times():
        return jsonify(clock.times)

    @app.post("/bench/hashing")
    def hashing():
        auth.HASHING.threads = int(request.get_json()["threads"])
        return jsonify(threads=auth.HASHING.threads)

    serve(app, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
