"""Section 5, against the snapshot poller userboard replaces: how long a client waits to see a
change, and how many bytes a change costs, with N users and M clients. Baseline: the `poller`
server of baseline.py, which sends the whole users table to every client every 5 s.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .common import latency_stats, log, ms, now_ns, pause, pct
from .harness import BaselineServer, LoadGens, UserboardWriter, start_userboard


def section_poller(cfg, tmp: Path) -> dict:
    from sqlalchemy import insert, update

    from ..db import make_engine, utcnow
    from ..migrations import upgrade
    from ..models import User

    workdir = tmp / "poller"
    workdir.mkdir(exist_ok=True)
    url = f"sqlite:///{workdir / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:  # a plain bulk load: no events for the seed data
        conn.execute(insert(User.__table__), [
            {"username": f"user{i:05}", "email": f"user{i:05}@example.com", "role": "user",
             "status": "active", "version": 1, "created_at": utcnow(), "updated_at": utcnow()}
            for i in range(cfg["poller_users"])
        ])
    interval = cfg["poller_interval"]
    poller = BaselineServer("poller", url, interval=interval)
    try:
        gens = LoadGens(poller, cfg["poller_clients"], snapshots=True)
        changes = []
        for i in range(cfg["poller_changes"]):
            time.sleep(interval * (0.4 + (i % 3) * 0.22))  # land at different points of the cycle
            with engine.begin() as conn:
                conn.execute(update(User.__table__).where(User.__table__.c.id == 1 + i)
                             .values(status="disabled"))
            changes.append(now_ns())
        time.sleep(interval * 1.1)
        arrivals = gens.stop()
    finally:
        poller.stop()
    latencies = []
    for changed in changes:
        per_client = {}
        for client, taken, t, _size in arrivals:
            if taken > changed and (client not in per_client or t < per_client[client]):
                per_client[client] = t
        latencies.extend(t - changed for t in per_client.values())
    span = (max(a[2] for a in arrivals) - min(a[2] for a in arrivals)) / 1e9 if arrivals else 0
    snapshots = len(arrivals)
    sizes = [a[3] for a in arrivals]
    poller_bytes_per_interval = (sum(sizes) / max(1, snapshots)) * gens.connected
    engine.dispose()

    server = start_userboard(workdir, url)
    try:
        gens = LoadGens(server, cfg["poller_clients"])
        writer = UserboardWriter(server)
        sends = {}
        for _ in range(cfg["writes"]):
            started = now_ns()
            sends[writer.write()] = started
            time.sleep(0.02)
        pause(0.5)
        arrivals = gens.stop()
    finally:
        server.stop()
    stats = latency_stats(arrivals, sends, cfg["poller_clients"], gens.connected)
    event_bytes = [a[3] for a in arrivals if a[1] in sends]
    out = {
        "users": cfg["poller_users"],
        "clients": cfg["poller_clients"],
        "poller": {"p50_ms": ms(pct(latencies, 50)), "max_ms": ms(max(latencies, default=0)),
                   "bytes_per_change": round(poller_bytes_per_interval),
                   "snapshot_bytes": round(statistics.mean(sizes)) if sizes else 0,
                   "seconds_observed": round(span, 1)},
        "userboard": {"p50_ms": stats["p50_ms"], "max_ms": stats["max_ms"],
                      "bytes_per_change": round(statistics.mean(event_bytes) * gens.connected)
                      if event_bytes else 0},
    }
    log(f"poller: {out}")
    return out
