"""The benchmark run: five sections, each figure beside a baseline measured in the same run.

1. latency     (latency.py) commit-to-client latency with 1, 100 and 1,000 clients, one write at
               a time; baseline: a bare Flask-SocketIO broadcast of an equal payload (no database)
2. fanout      (fanout.py) deliveries per second with 1,000 clients under steady writes, and a
               burst (one bulk UPDATE of 1,000 rows to 100 clients, through Redis); baseline:
               bare broadcast
3. connections (connections.py) memory per idle connection and the most clients with broadcast
               p99 < 150 ms; baseline: bare broadcast
4. write_cost  (write_cost.py) ORM commit latency and API writes/s with capture on vs. off (same
               DB and process)
5. poller      (poller.py) against the timed snapshot poller userboard replaces (whole table
               every 5 s)

Servers, load generators and writers are in harness.py; the summary table and plot in report.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import FULL, QUICK, log, machine, reachable_services, versions
from .connections import section_connections
from .fanout import section_fanout
from .latency import section_latency
from .poller import section_poller
from .report import summarize
from .write_cost import section_write_cost

SECTIONS = (("latency", section_latency), ("fanout", section_fanout),
            ("connections", section_connections), ("write_cost", section_write_cost),
            ("poller", section_poller))


def run(quick: bool = False, clients: int | None = None) -> dict:
    """Run every section at quick or full size; return the results with their summary rows."""
    cfg = dict(QUICK if quick else FULL)
    if clients:
        cfg["latency_clients"] = sorted({1, min(100, clients), clients})
        cfg["fanout_clients"] = clients
    reachable_services(cfg)
    started = time.monotonic()
    results = {"quick": quick, "config": {k: v for k, v in cfg.items() if not k.endswith("_url")},
               "machine": machine(), "versions": versions()}
    with tempfile.TemporaryDirectory(prefix="userboard-bench-") as tmp:
        tmp = Path(tmp)
        for name, section in SECTIONS:
            (tmp / name).mkdir(exist_ok=True)
            log(f"section {name} ...")
            results[name] = section(cfg, tmp)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["summary"] = summarize(results)
    return results
