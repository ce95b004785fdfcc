"""Section 2, fan-out: deliveries per second with 1,000 clients under steady writes (four writer
threads), and a burst: one bulk UPDATE of 1,000 rows, committed by a script and sent through
Redis to 100 clients. Baseline: the bare broadcast server, fed the same payloads (steady) or the
same number of events emitted back to back (burst).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import requests

from .common import log, now_ns, pause
from .harness import BareWriter, BaselineServer, LoadGens, PushTarget, UserboardWriter, start_userboard


def measure_fanout(server: PushTarget, writer, clients: int, seconds: float,
                   writers: int = 4) -> dict:
    gens = LoadGens(server, clients)
    sends, lock = {}, threading.Lock()
    stop_at = time.monotonic() + seconds
    first = now_ns()

    def loop():
        while time.monotonic() < stop_at:
            started = now_ns()
            seq = writer.write()
            with lock:
                sends[seq] = started

    threads = [threading.Thread(target=loop) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pause(1.0 + writers * len(sends) * clients / 50_000)  # let the queues drain
    arrivals = [a for a in gens.stop() if a[1] in sends]
    unique = {(a[0], a[1]) for a in arrivals}  # a duplicate is no delivery
    last = max((a[2] for a in arrivals), default=first)
    elapsed = (last - first) / 1e9
    return {
        "clients": clients,
        "connected": gens.connected,
        "writes": len(sends),
        "deliveries": len(unique),
        "duplicates": len(arrivals) - len(unique),
        "expected": len(sends) * gens.connected,
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(len(unique) / elapsed) if elapsed > 0 else 0,
    }


def measure_burst(cfg, tmp: Path) -> dict:
    """One bulk UPDATE of N rows, committed by a script, through Redis to 100 clients."""
    redis_url = cfg.get("redis_url")
    if not redis_url:
        return {"skipped": "no Redis reachable (USERBOARD_BENCH_REDIS)"}
    from sqlalchemy import update

    from ..bootstrap import open_database
    from ..capture import last_commit_seq
    from ..models import User

    channel = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = tmp / "burst"
    workdir.mkdir(exist_ok=True)
    server = start_userboard(workdir, extra_env={"USERBOARD_MESSAGE_QUEUE": redis_url,
                                                 "USERBOARD_CHANNEL": channel})
    try:
        rows = cfg["burst_rows"]
        database = open_database(server.env["USERBOARD_DATABASE_URL"], redis_url, channel=channel)
        with database.session() as session:
            for i in range(rows):
                session.add(User(username=f"burst{i:05}", email=f"burst{i:05}@example.com"))
            session.commit()
        gens = LoadGens(server, cfg["burst_clients"])
        started = now_ns()
        with database.session() as session:
            session.execute(update(User).where(User.username.like("burst%")).values(status="disabled"))
            session.commit()
            last_seq = last_commit_seq(session)
        committed = now_ns()
        database.close(timeout=30)
        pause(max(1.5, rows * cfg["burst_clients"] / 40_000))
        arrivals = gens.stop()
        seqs = set(range(last_seq - rows + 1, last_seq + 1))
        mine = [a for a in arrivals if a[1] in seqs]
        done = max((a[2] for a in mine), default=started)
        return {
            "rows": rows,
            "clients": cfg["burst_clients"],
            "connected": gens.connected,
            "deliveries": len(mine),
            "expected": rows * gens.connected,
            "commit_s": round((committed - started) / 1e9, 3),
            "delivered_s": round((done - started) / 1e9, 3),
        }
    finally:
        server.stop()


def measure_burst_floor(cfg) -> dict:
    """The bare server emits the same number of events back to back, to the same clients."""
    bare = BaselineServer("bare")
    try:
        gens = LoadGens(bare, cfg["burst_clients"])
        count = cfg["burst_rows"]
        started = now_ns()
        requests.post(bare.url + "/emit-burst", json={"count": count}, timeout=60).raise_for_status()
        pause(max(1.5, count * cfg["burst_clients"] / 40_000))
        arrivals = [a for a in gens.stop() if a[1] >= 1_000_000]
        done = max((a[2] for a in arrivals), default=started)
        return {"rows": count, "clients": cfg["burst_clients"], "deliveries": len(arrivals),
                "expected": count * gens.connected, "delivered_s": round((done - started) / 1e9, 3)}
    finally:
        bare.stop()


def section_fanout(cfg, tmp: Path) -> dict:
    server = start_userboard(tmp / "fanout")
    bare = BaselineServer("bare")
    try:
        writer = UserboardWriter(server)
        writer.write()
        out = {
            "userboard": measure_fanout(server, writer, cfg["fanout_clients"], cfg["fanout_seconds"]),
            "baseline": measure_fanout(bare, BareWriter(bare, writer.sample_payload),
                                       cfg["fanout_clients"], cfg["fanout_seconds"]),
        }
    finally:
        server.stop()
        bare.stop()
    out["burst"] = measure_burst(cfg, tmp)
    out["burst_floor"] = measure_burst_floor(cfg)
    log(f"fan-out: userboard {out['userboard']['deliveries_per_s']}/s, "
        f"floor {out['baseline']['deliveries_per_s']}/s; burst {out['burst']}")
    return out
