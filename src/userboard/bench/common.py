"""What every section shares: the clock, percentiles, the run's sizes, logging, and a record of
the machine and package versions. Measures nothing itself."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ADMIN_PASSWORD = "bench-password-1"
# The sections in the order they run (runner.py maps each to its module).
SECTION_NAMES = ("latency", "fanout", "connections", "write_cost", "poller", "views", "outside",
                 "logins", "relay")

# --quick is the smoke run CI does: every section, tiny sizes (its numbers mean nothing).
QUICK = {
    "latency_clients": [1, 10], "writes": 10,
    "fanout_clients": 20, "fanout_seconds": 0.5, "burst_rows": 20, "burst_clients": 5,
    "idle_clients": 20, "max_steps": [40], "max_writes": 3,
    "commits": 100, "api_requests": 30,
    "poller_users": 200, "poller_clients": 5, "poller_changes": 1,
    "views_users": 2_000, "views_reps": 5, "views_live_clients": 5, "views_live_writes": 5,
    "views_idle_clients": 10,
    "outside_clients": 2, "outside_writes": 3, "outside_rows": 200,
    "relay_events": 1_000, "relay_clients": 2,
    "pause_scale": 0.2, "poller_interval": 1.0,
    "logins": 4, "logins_clients": 3, "logins_gap": 0.02,
}
FULL = {
    "latency_clients": [1, 100, 1000], "writes": 200,
    "fanout_clients": 1000, "fanout_seconds": 5.0, "burst_rows": 1000, "burst_clients": 100,
    "idle_clients": 1000, "max_steps": [1000, 2000, 3000, 4000, 5000], "max_writes": 20,
    "commits": 4000, "api_requests": 2000,
    "poller_users": 10_000, "poller_clients": 100, "poller_changes": 4,
    "views_users": 1_000_000, "views_reps": 200, "views_live_clients": 100,
    "views_live_writes": 200, "views_idle_clients": 1000,
    "outside_clients": 10, "outside_writes": 50, "outside_rows": 10_000,
    "relay_events": 16_000, "relay_clients": 10,
    "pause_scale": 1.0, "poller_interval": 5.0,
    "logins": 20, "logins_clients": 100, "logins_gap": 0.05,
}

# Fixed waits (a connection storm settling, queues draining) are written at full-run length;
# a --quick run shortens every one of them by `pause_scale`, so the smoke run stays short.
_pause_scale = 1.0


def set_pause_scale(scale: float) -> None:
    global _pause_scale
    _pause_scale = scale


def pause(seconds: float) -> None:
    """Sleep for a fixed wait of the full run, scaled for this run."""
    time.sleep(seconds * _pause_scale)


def now_ns() -> int:
    """The machine-wide monotonic clock, the one load generators stamp arrivals with."""
    return time.monotonic_ns()


def pct(values, q: float) -> float:
    """The q-th percentile (0-100) of values, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def latency_stats(arrivals, sends, clients, connected) -> dict:
    """Latency of each arrival whose key was sent, from its send time in `sends`."""
    per_write: dict[int, int] = {}
    latencies = []
    for _client, key, t, _size in arrivals:
        if key in sends:
            lat = t - sends[key]
            latencies.append(lat)
            per_write[key] = max(per_write.get(key, 0), lat)
    return {
        "clients": clients,
        "connected": connected,
        "writes": len(sends),
        "deliveries": len(latencies),
        "expected": len(sends) * connected,
        "p50_ms": ms(pct(latencies, 50)),
        "p99_ms": ms(pct(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else float("nan")),
        "last_client_p50_ms": ms(pct(list(per_write.values()), 50)),
        "samples_ms": [ms(x) for x in latencies[:: max(1, len(latencies) // 2000)]],
    }


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def reachable_services(cfg: dict) -> None:
    """Note in `cfg` the Redis and PostgreSQL the run may use (sections skip what is missing)."""
    redis_url = os.environ.get("USERBOARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
        client.ping()
        client.close()
        cfg["redis_url"] = redis_url
    except Exception:
        cfg["redis_url"] = None
    pg = os.environ.get("USERBOARD_BENCH_POSTGRES")
    cfg["postgres_url"] = pg or None


def versions() -> dict:
    from importlib.metadata import version

    names = ["flask", "flask-socketio", "python-socketio", "python-engineio", "gevent",
             "sqlalchemy", "simple-websocket", "websockets"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:
            out[name] = "?"
    return out


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()}
