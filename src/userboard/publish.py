"""Publishers: where committed events go. Imports no Flask.

- `QueuedEmitter` sends events through anything with a Socket.IO `emit(event, data, namespace,
  room)` (a Flask-SocketIO server, or python-socketio's write-only `RedisManager` in a CLI or a
  script) from its own worker, so the committing caller never waits on the network.
- `EventRecorder` keeps events in memory, for tests.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from .events import NAMESPACE, ROOM, Event

log = logging.getLogger(__name__)


class QueuedEmitter:
    """Emit events in commit order from one background worker.

    Under gevent (the server, the CLI) the worker is a greenlet because threading is patched.
    The queue is bounded: when the network is down for long, events past the bound are dropped
    and logged; clients notice the gap by seq and resync from the change log.
    """

    def __init__(self, emitter, maxsize: int = 10_000):
        self.emitter = emitter
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish(self, events: Sequence[Event]) -> None:
        self._ensure_worker()
        for item in events:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                log.warning("publish queue full; dropped event seq=%s", item.seq)
        # No yield here: under gevent the worker runs once the caller's request has answered.
        # Yielding would send about 0.3 ms sooner to one client, but make every write's HTTP
        # answer wait for the whole broadcast (measured: fan-out at 1,000 clients halved).

    def _ensure_worker(self) -> None:
        if self._worker is None:
            with self._lock:
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._run, name="userboard-publisher", daemon=True
                    )
                    self._worker.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self.emitter.emit(item.name, item.data, namespace=NAMESPACE, room=ROOM)
            except Exception:  # the servers' relays read it from the change log instead
                log.exception("emit of seq=%s failed; servers will relay it from the change log",
                              item.seq)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued was handed to the emitter (for short-lived processes)."""
        done = threading.Event()

        def wait():
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)


class EventRecorder:
    """Keep every published event in memory, in arrival order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def publish(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.events.extend(events)

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


def sequenced_redis_manager(url: str, channel: str, offer):
    """A Socket.IO Redis manager that hands this namespace's events to `offer(name, payload)`.

    Whether an event was published here or by another process, python-socketio would deliver
    it to local clients in `_handle_emit`, in whatever order the queue brings it; the server's
    sequencer (relay.Sequencer) delivers it instead, in seq order, exactly once.
    """
    import socketio

    class SequencedRedisManager(socketio.RedisManager):
        def _handle_emit(self, message):
            data = message.get("data")
            payload = data[0] if isinstance(data, list) and data else data
            if (message.get("namespace") == NAMESPACE and message.get("room") == ROOM
                    and isinstance(payload, dict) and isinstance(payload.get("seq"), int)):
                offer(message.get("event"), payload)
                return
            super()._handle_emit(message)

    return SequencedRedisManager(url, channel=channel)
