"""Login throttling: slow password guessing down, per client address and per account name.

The policy: after `free` failures for a key, each further attempt must wait 2**(failures - free)
seconds after the last failure (at most `max_wait`); a key's failures are forgotten `window`
seconds after its last one, and on a successful login.

`LoginThrottle` counts in this process's memory. `RedisLoginThrottle` counts in Redis as well,
so that every server process of an install (one USERBOARD_MESSAGE_QUEUE) shares the count and an
attacker spread over the processes gets no more guesses than one process would give him.
Imports no Flask.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class LoginThrottle:
    """The policy, with failures kept in the memory of one process."""

    def __init__(self, free: int = 5, window: float = 900, max_wait: float = 300, clock=None):
        self.free, self.window, self.max_wait = free, window, max_wait
        self.clock = clock or time.monotonic
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, failures: int) -> float:
        """How long after the last of `failures` failures the next attempt must wait."""
        if failures < self.free:
            return 0.0
        return min(2.0 ** min(failures - self.free, 32), self.max_wait)

    def _current(self, key: str) -> tuple[int, float]:
        count, last = self._failures.get(key, (0, 0.0))
        if count and self.clock() - last > self.window:
            self._failures.pop(key, None)
            return 0, 0.0
        return count, last

    def wait_seconds(self, *keys: str) -> float:
        """How long the caller must wait before trying again (0 if it may try now)."""
        wait = 0.0
        for key in keys:
            count, last = self._current(key)
            if count:
                wait = max(wait, last + self.delay(count) - self.clock())
        return max(wait, 0.0)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            count, _ = self._current(key)
            self._failures[key] = (count + 1, now)
        if len(self._failures) > 100_000:  # keep memory bounded under a flood of addresses
            self._failures.clear()

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


class RedisLoginThrottle(LoginThrottle):
    """The same policy, counted in Redis so that all processes of an install share it.

    One Redis key per throttle key holds the failure count and expires `window` seconds after
    the last failure, so the time since that failure is `window` minus the key's remaining time
    to live: Redis keeps the time, and no two hosts' clocks are ever compared.

    If Redis cannot be reached, logins are neither all refused (Redis would become a way to lock
    every admin out, and it is not needed for anything else a login does) nor unthrottled: every
    process also counts in its own memory, and that count applies while Redis is away. Once Redis
    answers again only its count applies (a success through another process cleared it there).
    """

    def __init__(self, url: str, prefix: str = "userboard", **policy):
        import redis

        super().__init__(**policy)
        self.prefix = f"{prefix}:login-failures:"
        # Short timeouts: a login waits at most this long for an unreachable Redis.
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._redis_errors = redis.RedisError
        self._redis_down = False

    def _shared(self, build):
        """Run the commands `build` adds to one MULTI/EXEC; None if Redis cannot be reached."""
        try:
            pipe = self.redis.pipeline()
            build(pipe)
            answers = pipe.execute()
        except self._redis_errors as exc:
            if not self._redis_down:
                log.warning("login throttle: Redis unreachable (%s); counting failed logins"
                            " in this process only until it is back", type(exc).__name__)
            self._redis_down = True
            return None
        if self._redis_down:
            log.warning("login throttle: Redis is back; failed logins are shared again")
        self._redis_down = False
        return answers

    def wait_seconds(self, *keys: str) -> float:
        def read(pipe):
            for key in keys:
                pipe.get(self.prefix + key)
                pipe.pttl(self.prefix + key)

        answers = self._shared(read)
        if answers is None:
            return super().wait_seconds(*keys)
        wait = 0.0
        for count, ttl_ms in zip(answers[::2], answers[1::2], strict=True):
            # A key in its last millisecond has a TTL of 0 and still counts: the next failure
            # would add to it (-2: no key; -1 cannot happen, every write sets the expiry).
            if count is not None and ttl_ms >= 0:
                since_last = self.window - ttl_ms / 1000
                wait = max(wait, self.delay(int(count)) - since_last)
        return max(wait, 0.0)

    def failed(self, *keys: str) -> None:
        super().failed(*keys)

        def count(pipe):
            for key in keys:
                pipe.incr(self.prefix + key)
                pipe.pexpire(self.prefix + key, int(self.window * 1000))

        self._shared(count)

    def succeeded(self, *keys: str) -> None:
        super().succeeded(*keys)
        self._shared(lambda pipe: pipe.delete(*(self.prefix + key for key in keys)))
