"""Section 1, latency: commit-to-client latency with 1, 100 and 1,000 clients, one write at a
time. Baseline: a bare Flask-SocketIO broadcast of an equal payload, no database (the floor).

Commit-to-client runs from the moment the server's commit returned (noted by the commit clock in
instrumented.py; for the floor, the moment its emit began) to the moment a client's socket hands
over the event, on the machine-wide monotonic clock. Write-to-client latency, from just before
the HTTP write request is sent, is reported beside it.
"""

from __future__ import annotations

import time
from pathlib import Path

from .common import latency_stats, log, now_ns, pause
from .harness import BareWriter, BaselineServer, LoadGens, PushTarget, UserboardWriter, start_userboard


def measure_latency(server: PushTarget, writer, clients: int, writes: int,
                    gap: float | None = None, views: list[dict] | None = None) -> dict:
    """Latency of `writes` writes to `clients` clients (holding `views`, if given)."""
    gens = LoadGens(server, clients, views=views)
    sends = {}
    gap = gap or max(0.005, clients * 100e-6)  # let each broadcast finish before the next write
    for _ in range(writes):
        started = now_ns()
        sends[writer.write()] = started
        time.sleep(gap)
    pause(0.5)
    arrivals = gens.stop()
    committed = server.commit_times()
    stats = latency_stats(arrivals, {k: committed[k] for k in sends if k in committed}, clients,
                          gens.connected)
    stats["write_to_client"] = {
        k: v for k, v in latency_stats(arrivals, sends, clients, gens.connected).items()
        if k in ("p50_ms", "p99_ms")
    }
    return stats


def section_latency(cfg, tmp: Path) -> dict:
    out = {"userboard": [], "baseline": []}
    server = start_userboard(tmp / "latency")
    bare = BaselineServer("bare")
    try:
        writer = UserboardWriter(server)
        writer.write()
        bare_writer = BareWriter(bare, writer.sample_payload)
        for clients in cfg["latency_clients"]:
            out["userboard"].append(measure_latency(server, writer, clients, cfg["writes"]))
            out["baseline"].append(measure_latency(bare, bare_writer, clients, cfg["writes"]))
            log(f"latency {clients:>5} clients: userboard p50 {out['userboard'][-1]['p50_ms']} ms, "
                f"floor p50 {out['baseline'][-1]['p50_ms']} ms")
    finally:
        server.stop()
        bare.stop()
    return out
