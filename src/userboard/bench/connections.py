"""Section 3, connections: resident memory per idle connection, and the most clients a server
holds while a broadcast's p99 stays under 150 ms. Baseline: the bare broadcast server, measured
the same way in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

from .common import latency_stats, log, now_ns, pause
from .harness import BareWriter, BaselineServer, LoadGens, PushTarget, UserboardWriter, start_userboard


def idle_memory(server, clients: int, views: list[dict] | None = None) -> dict:
    pause(0.5)
    before = server.rss_kb()
    gens = LoadGens(server, clients, views=views)
    pause(1.5)
    after = server.rss_kb()
    gens.stop()
    return {"clients": clients, "connected": gens.connected, "rss_before_kb": before,
            "rss_after_kb": after,
            "kb_per_connection": round((after - before) / max(1, gens.connected), 1)}


def max_clients(server: PushTarget, steps: list[int], writes: int, writer=None) -> dict:
    """Grow the number of clients until broadcast p99 passes 150 ms (or clients are refused)."""
    writer = writer or UserboardWriter(server)
    results = []
    for step in steps:
        gens = LoadGens(server, step)
        pause(1.0 + step / 2000)  # let the connection storm settle
        sends = {}
        for i in range(writes + 2):
            started = now_ns()
            seq = writer.write()
            if i >= 2:  # the first two are warm-up
                sends[seq] = started
            time.sleep(max(0.2, step * 150e-6))  # one broadcast at a time
        pause(1.0)
        stats = latency_stats(gens.stop(), sends, step, gens.connected)
        stats.pop("samples_ms")
        results.append(stats)
        log(f"connections {step}: connected {gens.connected}, broadcast p99 {stats['p99_ms']} ms")
        if stats["p99_ms"] >= 150 or gens.connected < step:
            break
    held = [r for r in results if r["p99_ms"] < 150 and r["connected"] >= r["clients"]]
    return {"steps": results, "max_clients": max((r["clients"] for r in held), default=0)}


def section_connections(cfg, tmp: Path) -> dict:
    server = start_userboard(tmp / "connections" / "idle")
    bare = BaselineServer("bare")
    try:
        out = {
            "userboard": idle_memory(server, cfg["idle_clients"]),
            "baseline": idle_memory(bare, cfg["idle_clients"]),
        }
    finally:
        server.stop()
    # Fresh servers: right after a thousand disconnects a server measures worse than it is.
    server = start_userboard(tmp / "connections" / "max")
    try:
        out["max"] = max_clients(server, cfg["max_steps"], cfg["max_writes"])
        writer = UserboardWriter(server)
        writer.write()
        payload = writer.sample_payload
    finally:
        server.stop()
    try:
        out["max_baseline"] = max_clients(bare, cfg["max_steps"], cfg["max_writes"],
                                          BareWriter(bare, payload))
    finally:
        bare.stop()
    log(f"connections: {out['userboard']['kb_per_connection']} KB each "
        f"(bare {out['baseline']['kb_per_connection']} KB); held {out['max']['max_clients']} "
        f"(bare {out['max_baseline']['max_clients']})")
    return out
