"""The login throttle shared through Redis (several server processes), on a real Redis.

The policy itself is tested on the in-memory throttle with a fake clock (test_web.py); here Redis
keeps the time, so waits are checked against their bounds. tests/test_nginx.py shows two real
servers sharing the count behind nginx.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from userboard.throttle import RedisLoginThrottle

from .helpers import free_port, wait_until


@pytest.fixture
def shared(redis_url):
    """A factory of throttles on one Redis and one fresh prefix: as the processes of an install."""
    prefix = f"throttle-test-{uuid.uuid4().hex[:8]}"
    made = []

    def make(**policy):
        throttle = RedisLoginThrottle(redis_url, prefix=prefix, **policy)
        made.append(throttle)
        return throttle

    yield make
    for throttle in made:
        throttle.redis.close()


def test_failures_through_one_process_make_every_process_wait(shared):
    one, other = shared(free=2), shared(free=2)
    one.failed("addr:10.0.0.1", "user:root")
    one.failed("addr:10.0.0.1", "user:root")
    assert 0 < other.wait_seconds("addr:10.0.0.1") <= 1  # 2**0 s after the free attempts
    assert 0 < other.wait_seconds("user:root") <= 1
    assert other.wait_seconds("addr:10.0.0.2", "user:alice") == 0  # other keys are free
    other.succeeded("addr:10.0.0.1", "user:root")
    assert one.wait_seconds("addr:10.0.0.1", "user:root") == 0


def test_shared_waits_double_up_to_the_cap(shared):
    one, other = shared(free=2, max_wait=8), shared(free=2, max_wait=8)
    for _ in range(4):
        one.failed("user:root")
    assert 2 < other.wait_seconds("user:root") <= 4  # 2**2 s, less the time since
    for _ in range(10):
        one.failed("user:root")
    assert 4 < other.wait_seconds("user:root") <= 8  # capped


def test_shared_failures_are_forgotten_a_window_after_the_last_one(shared):
    one, other = shared(free=1, window=1, max_wait=8), shared(free=1, window=1, max_wait=8)
    for _ in range(4):
        one.failed("user:root")  # 2**3 s to wait, but the window ends first
    assert wait_until(lambda: other.wait_seconds("user:root") == 0), \
        "the failures were never forgotten"
    other.failed("user:root")
    assert 0 < one.wait_seconds("user:root") <= 1  # counting starts again: 2**0 s


def test_without_redis_each_process_throttles_on_its_own(caplog):
    caplog.set_level(logging.WARNING, logger="userboard")
    throttle = RedisLoginThrottle(f"redis://127.0.0.1:{free_port()}/0", free=2)  # nobody listens
    try:
        assert throttle.wait_seconds("addr:10.0.0.1") == 0  # logins still work
        throttle.failed("addr:10.0.0.1")
        throttle.failed("addr:10.0.0.1")
        assert 0 < throttle.wait_seconds("addr:10.0.0.1") <= 1  # and are still throttled
        throttle.succeeded("addr:10.0.0.1")
        assert throttle.wait_seconds("addr:10.0.0.1") == 0
    finally:
        throttle.redis.close()
    warnings = [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once, not on every attempt
