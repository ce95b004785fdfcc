"""The benchmark run: nine sections, each figure beside a baseline measured in the same run.

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
6. views       (views.py) views at a million users on SQLite and PostgreSQL: bulk seeding, the
               dashboard page and view changes over HTTP beside OFFSET / LIKE-scan / count(*)
               SQL; live views beside whole-table events; memory per view
7. outside     (outside.py) writes made outside userboard (plain SQL) to a connected client;
               baseline: the same change through the API
8. logins      (logins.py) socket latency during a burst of logins; baselines: no logins, and
               the same burst with password hashing on the gevent loop
9. relay       (relay_rate.py) a burst committed by another process, to the clients: events/s
               through the change-log relay (no message queue); baseline: the same through Redis

Servers, load generators and writers are in harness.py; the summary table and plot in report.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import FULL, QUICK, SECTION_NAMES, log, machine, reachable_services, set_pause_scale, versions
from .connections import section_connections
from .fanout import section_fanout
from .latency import section_latency
from .logins import section_logins
from .outside import section_outside
from .poller import section_poller
from .relay_rate import section_relay
from .report import summarize
from .views import section_views
from .write_cost import section_write_cost

SECTIONS = dict(zip(SECTION_NAMES, (section_latency, section_fanout, section_connections,
                                    section_write_cost, section_poller, section_views,
                                    section_outside, section_logins, section_relay),
                 strict=True))


def run(quick: bool = False, clients: int | None = None, sections: tuple[str, ...] = (),
        users: int | None = None) -> dict:
    """Run the sections (all when none are named) at quick or full size; return the results
    with their summary rows."""
    cfg = dict(QUICK if quick else FULL)
    if clients:
        cfg["latency_clients"] = sorted({1, min(100, clients), clients})
        cfg["fanout_clients"] = clients
    if users:
        cfg["views_users"] = users
    reachable_services(cfg)
    set_pause_scale(cfg["pause_scale"])
    started = time.monotonic()
    results = {"quick": quick, "config": {k: v for k, v in cfg.items() if not k.endswith("_url")},
               "machine": machine(), "versions": versions()}
    with tempfile.TemporaryDirectory(prefix="userboard-bench-") as tmp:
        tmp = Path(tmp)
        for name, section in SECTIONS.items():
            if sections and name not in sections:
                continue
            (tmp / name).mkdir(exist_ok=True)
            log(f"section {name} ...")
            results[name] = section(cfg, tmp)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["summary"] = summarize(results)
    return results
