"""Section 7, writes made outside userboard: a plain SQL UPDATE (sqlite3 / psycopg, no userboard
code) until a connected client has the event, on SQLite and PostgreSQL. Baseline: the same
change through the API (the capture path), to the same clients, in the same run.

Also the triggers' cost on outside writes, per row: one UPDATE of many rows with the triggers
logging it, beside the same statement while they are told to skip it (the capture's marker on
SQLite; the transaction flag on PostgreSQL), so the difference is the logging alone.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .common import latency_stats, log, now_ns, pause
from .harness import LoadGens, UserboardWriter, start_userboard
from .views import postgres_scratch


def _raw(url: str):
    """A DB-API connection that is not userboard's, and its placeholder."""
    if url.startswith("sqlite"):
        return sqlite3.connect(url.split("///", 1)[1], isolation_level=None), "?"
    import psycopg

    return psycopg.connect(url.replace("+psycopg", ""), autocommit=True), "%s"


def measure(url: str, workdir: Path, clients: int, writes: int, gap: float) -> dict:
    server = start_userboard(workdir, database_url=url)
    try:
        writer = UserboardWriter(server)
        writer.write()
        target = writer.user["id"]
        raw, mark = _raw(url)
        gens = LoadGens(server, clients)
        outside, api = {}, {}
        for i in range(writes):
            raw.execute(f"UPDATE users SET status = {mark} WHERE id = {mark}",
                        ("disabled" if i % 2 == 0 else "active", target))
            committed = now_ns()
            seq = raw.execute("SELECT value FROM seq_counter WHERE id = 1").fetchone()[0]
            outside[seq] = committed
            time.sleep(gap)
            started = now_ns()
            api[writer.write()] = started
            time.sleep(gap)
        pause(1.5)  # SQLite: the last outside write waits for the next poll
        arrivals = gens.stop()
        raw.close()
        return {"outside": latency_stats(arrivals, outside, clients, gens.connected),
                "api": latency_stats(arrivals, api, clients, gens.connected)}
    finally:
        server.stop()


def trigger_cost(url: str, rows: int) -> dict:
    """Microseconds per row of an outside UPDATE: logged by the triggers vs. skipped by them."""
    from sqlalchemy import text

    from ..db import make_engine
    from ..migrations import upgrade

    upgrade(url)
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM users WHERE username LIKE 'cost%'"))
        if sqlite:
            connection.execute(text("INSERT INTO capture_marker (id) VALUES (1)"))
        else:
            connection.execute(text("SELECT set_config('userboard.captured', 'on', true)"))
        for i in range(rows):
            connection.execute(text(
                "INSERT INTO users (username, email) VALUES "
                f"('cost{i:06}', 'cost{i:06}@example.com')"))
        if sqlite:
            connection.execute(text("DELETE FROM capture_marker"))
    timings = {}
    for run, kind in enumerate(("skipped", "logged", "skipped", "logged")):
        flip = "disabled" if run % 2 == 0 else "active"  # every run changes every row
        with engine.begin() as connection:
            if kind == "skipped" and sqlite:
                connection.execute(text("INSERT INTO capture_marker (id) VALUES (1)"))
            elif kind == "skipped":
                connection.execute(text("SELECT set_config('userboard.captured', 'on', true)"))
            started = time.perf_counter()
            connection.execute(text(
                f"UPDATE users SET status = '{flip}' WHERE username LIKE 'cost%'"))
            if kind == "skipped" and sqlite:
                connection.execute(text("DELETE FROM capture_marker"))
        timings.setdefault(kind, []).append(time.perf_counter() - started)  # COMMIT included
    engine.dispose()
    per_row = {k: round(min(v) / rows * 1e6, 1) for k, v in timings.items()}
    per_row["added_us_per_row"] = round(per_row["logged"] - per_row["skipped"], 1)
    return {"rows": rows, **per_row}


def section_outside(cfg, tmp: Path) -> dict:
    out = {"sqlite": {
        "latency": measure(f"sqlite:///{tmp / 'outside' / 'ub.db'}", tmp / "outside" / "sqlite",
                           cfg["outside_clients"], cfg["outside_writes"], gap=0.3),
        "trigger_cost": trigger_cost(f"sqlite:///{tmp / 'outside' / 'cost.db'}",
                                     cfg["outside_rows"]),
    }}
    if cfg.get("postgres_url"):
        url, drop = postgres_scratch(cfg["postgres_url"])
        try:
            out["postgresql"] = {
                "latency": measure(url, tmp / "outside" / "postgresql", cfg["outside_clients"],
                                   cfg["outside_writes"], gap=0.05),
                "trigger_cost": trigger_cost(url, cfg["outside_rows"]),
            }
        finally:
            drop()
    for db, result in out.items():
        log(f"outside {db}: outside write p50 {result['latency']['outside']['p50_ms']} ms, "
            f"API write p50 {result['latency']['api']['p50_ms']} ms; triggers "
            f"+{result['trigger_cost']['added_us_per_row']} us/row")
    return out
