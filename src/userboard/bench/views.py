"""Section 6, views at a million users, on SQLite and PostgreSQL side by side.

1. Seed N users with bulk statements into a freshly migrated database (SQLite: `executemany` in
   batches inside one transaction; PostgreSQL: one `INSERT ... SELECT generate_series`), then
   ANALYZE; check the trigger-kept `user_totals` against real counts. The seeding transaction
   is flagged the way the capture flags its own (triggers.py), so the outside-write triggers
   log no million `user_added` events; `user_totals` and the search table are kept by their
   triggers for every row.
2. A real server on it: the first dashboard page (GET / as a logged-in admin) and GET /api/users
   for five view changes, p50/p95 from request to the whole answer. Baseline: the same window and
   total done the pre-views way (an unindexed LIKE scan, `count(*)` instead of the kept totals,
   OFFSET instead of a cursor), timed with SQL in the same run, beside the view's own SQL timed
   in-process. The plan of every statement is recorded (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE).
3. Live: commit-to-client latency of a write with 100 clients each holding a different view that
   the write changes (so 100 `users_view_changed` per write), beside the same writes to 100
   whole-table clients of the same server; and the server's memory per subscribed view (RSS
   with idle viewers minus RSS with as many idle whole-table clients).

The seeded tables are the bench's own: a SQLite file in the run's folder, and on PostgreSQL a
database `<USERBOARD_BENCH_POSTGRES database>_views` created and dropped by this section.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import requests

from ..triggers import CAPTURED_SETTING
from .common import ADMIN_PASSWORD, log, pct
from .connections import idle_memory
from .harness import UserboardWriter, start_userboard
from .latency import measure_latency

SEED = 11
DOMAINS = ("example.com", "example.org", "mail.example", "corp.example", "users.example")
DOMAIN_ARRAY = "ARRAY[" + ", ".join(f"'{d}'" for d in DOMAINS) + "]"
CREATED_SPREAD, UPDATED_SPREAD = 3 * 365 * 86400, 200 * 86400
# created_at spreads over the three years before the last 200 days; updated_at follows within
# 200 days. Every seeded row is older than a write made during the run.
EPOCH = int(time.time()) - CREATED_SPREAD - UPDATED_SPREAD
BATCH = 100_000
SECRET = "bench"  # start_userboard's USERBOARD_SECRET_KEY: the section can sign cursors too
PAGE = 50
DEEP_PAGE = 1000  # or the middle page of a smaller table

# The view changes of the issue; "next" and a deep page follow `recently_updated` by cursor.
CASES = {
    "search": {"q": "user00012"},
    # Beyond the list: a term every row contains, the worst case for an exact total.
    "search_every_row": {"q": "example"},
    "disabled": {"status": "disabled"},
    "active_admins_by_email": {"role": "admin", "status": "active", "sort": "email"},
    "recently_updated": {"sort": "updated_at", "order": "desc"},
}

SQLITE_INSERT = (
    "INSERT INTO users (username, email, role, status, version, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, 1, strftime('%Y-%m-%d %H:%M:%S', ?5, 'unixepoch') || printf('.%06d', ?6),"
    " strftime('%Y-%m-%d %H:%M:%S', ?7, 'unixepoch') || printf('.%06d', ?6))"
)
POSTGRES_INSERT = f"""
INSERT INTO users (username, email, role, status, version, created_at, updated_at)
SELECT 'user' || lpad(i::text, 7, '0'),
       'user' || lpad(i::text, 7, '0') || '@'
         || ({DOMAIN_ARRAY})[1 + mod(i, {len(DOMAINS)})],
       CASE WHEN r1 < 0.1 THEN 'admin' ELSE 'user' END,
       CASE WHEN r2 < 0.1 THEN 'disabled' ELSE 'active' END,
       1, created, created + random() * interval '{UPDATED_SPREAD} seconds'
FROM (SELECT i, random() AS r1, random() AS r2,
             to_timestamp({EPOCH} + random() * {CREATED_SPREAD}) AT TIME ZONE 'UTC' AS created
      FROM generate_series(0, %(last)s) AS i) AS s
"""


# -- 1. seeding ----------------------------------------------------------------------------------


def _sqlite_rows(rng, start: int, stop: int):
    for i in range(start, stop):
        created = EPOCH + rng.randrange(CREATED_SPREAD)
        name = f"user{i:07}"
        yield (name, f"{name}@{DOMAINS[i % len(DOMAINS)]}",
               "admin" if rng.random() < 0.1 else "user",
               "disabled" if rng.random() < 0.1 else "active",
               created, rng.randrange(1_000_000), created + rng.randrange(UPDATED_SPREAD))


def seed_sqlite(url: str, users: int) -> dict:
    """Bulk-load `users` rows into a migrated SQLite file, triggers live; then ANALYZE."""
    import random
    import sqlite3

    from sqlalchemy.engine import make_url

    connection = sqlite3.connect(make_url(url).database, isolation_level=None)
    try:
        # Every row fires the FTS5 and user_totals triggers, so each INSERT keeps a statement
        # journal: in memory it costs about half of what a temp file does. A big page cache
        # holds the six indexes that random timestamps write all over.
        connection.execute("PRAGMA temp_store=MEMORY")
        connection.execute("PRAGMA cache_size=-400000")
        rng = random.Random(SEED)
        started = time.perf_counter()
        connection.execute("BEGIN")
        connection.execute("INSERT INTO capture_marker (id) VALUES (1)")  # seed data is no event
        for start in range(0, users, BATCH):
            connection.executemany(SQLITE_INSERT, _sqlite_rows(rng, start, min(users, start + BATCH)))
        connection.execute("DELETE FROM capture_marker")
        connection.execute("COMMIT")
        seeded = time.perf_counter() - started
        started = time.perf_counter()
        connection.execute("ANALYZE")
        analyzed = time.perf_counter() - started
    finally:
        connection.close()
    return {"seconds": round(seeded, 2), "method": f"executemany, {BATCH:,} rows a batch, one "
            "transaction; user_totals and FTS5 triggers per row", "after": "ANALYZE",
            "after_seconds": round(analyzed, 2)}


def seed_postgresql(url: str, users: int) -> dict:
    """Bulk-load `users` rows with one INSERT ... SELECT generate_series; then VACUUM ANALYZE."""
    from sqlalchemy import text

    from ..db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            started = time.perf_counter()
            connection.execute(text("SELECT setseed(:seed), set_config(:flag, 'on', true)"),
                               {"seed": SEED / 100, "flag": CAPTURED_SETTING})  # no events
            connection.exec_driver_sql(POSTGRES_INSERT, {"last": users - 1})
            connection.commit()
            seeded = time.perf_counter() - started
            started = time.perf_counter()
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE users")
            analyzed = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"seconds": round(seeded, 2), "method": "INSERT ... SELECT generate_series, one "
            "statement; statement-level user_totals trigger", "after": "VACUUM ANALYZE users",
            "after_seconds": round(analyzed, 2)}


def totals_check(engine) -> dict:
    """The trigger-kept user_totals beside a real count per (role, status)."""
    from sqlalchemy import text

    with engine.connect() as connection:
        kept = {f"{r}/{s}": n for r, s, n in connection.execute(
            text("SELECT role, status, n FROM user_totals ORDER BY role, status"))}
        counted = {f"{r}/{s}": n for r, s, n in connection.execute(
            text("SELECT role, status, count(*) FROM users GROUP BY role, status"))}
    counted = {key: counted.get(key, 0) for key in kept}
    return {"user_totals": kept, "counted": counted, "equal": kept == counted}


# -- 2. view changes over HTTP, beside their pre-views baselines ------------------------------------


def timed(action, reps: int, budget: float = 10.0) -> dict:
    """p50/p95 in ms of `action()` over `reps` runs (fewer, at least 3, past `budget` seconds)."""
    action()  # warm-up: caches, prepared statements, pools
    samples = []
    deadline = time.perf_counter() + budget
    while len(samples) < reps and (len(samples) < 3 or time.perf_counter() < deadline):
        started = time.perf_counter_ns()
        action()
        samples.append(time.perf_counter_ns() - started)
    return {"p50_ms": round(pct(samples, 50) / 1e6, 3), "p95_ms": round(pct(samples, 95) / 1e6, 3),
            "runs": len(samples)}


def login(url: str, username: str, password: str) -> requests.Session:
    """An HTTP session logged in through the login form, as a browser would be."""
    http = requests.Session()
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', http.get(url + "/login").text)
    answer = http.post(url + "/login", data={"username": username, "password": password,
                                             "csrf_token": csrf.group(1)})
    answer.raise_for_status()
    if answer.url.rstrip("/") != url:
        raise RuntimeError(f"bench login failed: ended at {answer.url}")
    return http


def baseline_sql(dialect: str, deep_page: int) -> dict[str, tuple[str, list[str], dict]]:
    """Per case: what the baseline does, its statements (window, then total) and parameters.

    The search scans with LIKE on lower() so that no index can serve it, on either database;
    the other totals are `count(*)` over the filter instead of the trigger-kept `user_totals`;
    later pages use OFFSET instead of a cursor.
    """
    email = 'email COLLATE "C"' if dialect == "postgresql" else "email"
    recent = "ORDER BY updated_at DESC, id DESC"
    like = "(lower(username) LIKE :pattern OR lower(email) LIKE :pattern)"
    count = "SELECT count(*) FROM users"
    searches = {name: ("unindexed LIKE scan (window and count)", [
        f"SELECT * FROM users WHERE {like} ORDER BY id LIMIT {PAGE + 1}",
        f"{count} WHERE {like}"], {"pattern": f"%{CASES[name]['q']}%"})
        for name in ("search", "search_every_row")}
    others = {
        "disabled": ("same window, total by count(*)", [
            f"SELECT * FROM users WHERE status = 'disabled' ORDER BY id LIMIT {PAGE + 1}",
            f"{count} WHERE status = 'disabled'"]),
        "active_admins_by_email": ("same window, total by count(*)", [
            f"SELECT * FROM users WHERE role = 'admin' AND status = 'active' ORDER BY {email}, id"
            f" LIMIT {PAGE + 1}",
            f"{count} WHERE role = 'admin' AND status = 'active'"]),
        "recently_updated": ("same window, total by count(*)", [
            f"SELECT * FROM users {recent} LIMIT {PAGE + 1}", count]),
        "recently_updated_next": ("OFFSET 50, total by count(*)", [
            f"SELECT * FROM users {recent} LIMIT {PAGE + 1} OFFSET {PAGE}", count]),
        "recently_updated_deep_page": (f"OFFSET {PAGE * (deep_page - 1):,}, total by count(*)", [
            f"SELECT * FROM users {recent} LIMIT {PAGE + 1} OFFSET {PAGE * (deep_page - 1)}",
            count]),
    }
    return {**searches, **{name: (what, sql, {}) for name, (what, sql) in others.items()}}


class StatementLog:
    """The SELECTs an engine runs while it is on, with their parameters (to EXPLAIN them)."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.statements: list[tuple[str, object]] = []
        self.on = False

        @event.listens_for(engine, "before_cursor_execute")
        def _note(_conn, _cursor, statement, parameters, _context, _many):
            if self.on and statement.lstrip().upper().startswith("SELECT"):
                self.statements.append((statement, parameters))


def explain(connection, dialect: str, statement: str, parameters, driver: bool = True) -> list[str]:
    """The plan of one statement: EXPLAIN QUERY PLAN (SQLite) or EXPLAIN ANALYZE (PostgreSQL).

    `driver`: the statement is in the driver's own form (as the engine ran it); else text().
    """
    from sqlalchemy import text

    def run(prefix):
        if driver:
            return connection.exec_driver_sql(prefix + statement, parameters).all()
        return connection.execute(text(prefix + statement), parameters).all()

    if dialect == "sqlite":
        rows = run("EXPLAIN QUERY PLAN ")
        depth = {0: 0}
        lines = []
        for node, parent, _unused, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * (depth[node] - 1) + detail)
        return lines
    return [row[0] for row in run("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ")]


def view_cases(url: str, server, users: int, reps: int) -> dict:
    """Each view change over HTTP, its own SQL in-process, and its baseline SQL; with plans."""
    from sqlalchemy import select, text

    from .. import views
    from ..db import make_engine, make_session_factory
    from ..models import User, iso

    engine = make_engine(url)
    dialect = engine.dialect.name
    sessions = make_session_factory(engine)
    statements = StatementLog(engine)
    cursors = views.Cursors(SECRET)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {server.token}"

    def api(params: dict) -> dict:
        answer = http.get(server.url + "/api/users", params=params)
        answer.raise_for_status()
        return answer.json()

    cases = {name: {**params, "limit": PAGE} for name, params in CASES.items()}
    first = api(cases["recently_updated"])
    cases["recently_updated_next"] = {**cases["recently_updated"], "after": first["next"]}
    deep_page = max(2, min(DEEP_PAGE, users // PAGE // 2))
    table = User.__table__
    with engine.connect() as connection:  # the last row of the page before, as a cursor has it
        deep = connection.execute(
            select(table.c.updated_at, table.c.id)
            .order_by(table.c.updated_at.desc(), table.c.id.desc())
            .limit(1).offset(PAGE * (deep_page - 1) - 1)).one()
    recent = views.parse_view(cases["recently_updated"], cursors)
    cases["recently_updated_deep_page"] = {
        **cases["recently_updated"], "after": cursors.make(recent, views.AFTER, (iso(deep[0]), deep[1]))}

    baselines = baseline_sql(dialect, deep_page)
    out = {}
    for name, params in cases.items():
        answer = api(params)
        view = views.parse_view(params, cursors)
        with sessions() as session:
            statements.statements.clear()
            statements.on = True
            direct = views.answer(session, view, cursors)
            statements.on = False
            assert direct["total"] == answer["total"], (name, direct["total"], answer["total"])
            own_sql = timed(lambda s=session, v=view: views.answer(s, v, cursors), reps)
        what, sql, base_params = baselines[name]
        window, total = text(sql[0]), text(sql[1])
        with engine.connect() as connection:
            base_rows = connection.execute(window, base_params).all()
            base_total = connection.execute(total, base_params).scalar_one()
            assert base_total == answer["total"], (name, base_total, answer["total"])
            assert [r.id for r in base_rows[:PAGE]] == [u["id"] for u in answer["users"]], name

            def run_baseline(c=connection, w=window, t=total, p=base_params):
                c.execute(w, p).all()
                c.execute(t, p).scalar_one()

            baseline = timed(run_baseline, reps)
            plans = {"view": [explain(connection, dialect, s, p) for s, p in statements.statements
                              if "change_log" not in s and "seq_counter" not in s],
                     "baseline": [explain(connection, dialect, s, base_params, driver=False)
                                  for s in sql]}
            connection.rollback()
        out[name] = {
            "params": {k: (v if k != "after" else "(cursor)") for k, v in params.items()},
            **({"page": deep_page} if name == "recently_updated_deep_page" else {}),
            "rows": len(answer["users"]), "total": answer["total"],
            "bytes": len(http.get(server.url + "/api/users", params=params).content),
            "api": timed(lambda p=params: api(p), reps),
            "view_sql": own_sql,
            "baseline": {"what": what, **baseline},
            "plans": plans,
        }
        log(f"views {dialect} {name}: API p50 {out[name]['api']['p50_ms']} ms, view SQL "
            f"{own_sql['p50_ms']} ms, baseline {baseline['p50_ms']} ms ({what}); "
            f"total {answer['total']}")
    engine.dispose()
    return out


def dashboard_page(server, reps: int) -> dict:
    """GET / as a logged-in admin, whole HTML answer."""
    http = login(server.url, "bench", ADMIN_PASSWORD)
    page = http.get(server.url + "/")
    page.raise_for_status()

    def get():
        http.get(server.url + "/").raise_for_status()

    return {"bytes": len(page.content), "rows": len(re.findall(r'<tr data-user-id="\d+"', page.text)),
            **timed(get, reps)}


# -- 3. live views ------------------------------------------------------------------------------


def live_views(username: str, count: int) -> list[dict]:
    """`count` different views that all show user `username` on their first page.

    Half search for a prefix of its name (the window is that one row), half list the most
    recently updated or newest users with various filters and page sizes (a full window that
    the written row is at the top of, with more rows after it).
    """
    searches = [{"q": username[:n], "sort": sort, "order": order}
                for n in range(3, len(username) + 1)
                for sort in ("id", "username", "email", "created_at", "updated_at")
                for order in ("asc", "desc")]
    lists = [{"sort": sort, "order": "desc", "limit": limit, **role, **status}
             for limit in (50, 10, 20, 30, 75, 100, 200)
             for sort in ("updated_at", "id")
             for role in ({}, {"role": "user"})
             for status in ({}, {"status": "active"})]
    half = count // 2
    chosen = searches[::max(1, len(searches) // max(1, count - half))][:count - half] + lists[:half]
    assert len(chosen) == count and len({str(sorted(v.items())) for v in chosen}) == count
    return chosen


def memory_views(count: int) -> list[dict]:
    """`count` different views with full 50-row windows (a five-digit search matches 100+ rows)."""
    sorts = ("id", "username", "email", "created_at", "updated_at")
    return [{"q": f"{j:05d}", "sort": sorts[j % len(sorts)]} for j in range(count)]


def pooled(blocks: list[dict]) -> dict:
    """One latency figure from several measure_latency blocks (their evenly spaced samples)."""
    samples = [x for block in blocks for x in block["samples_ms"]]
    return {"clients": blocks[0]["clients"], "connected": min(b["connected"] for b in blocks),
            **{k: sum(b[k] for b in blocks) for k in ("writes", "deliveries", "expected")},
            "p50_ms": round(pct(samples, 50), 3), "p99_ms": round(pct(samples, 99), 3),
            "max_ms": max(b["max_ms"] for b in blocks),
            "blocks_p50_ms": [b["p50_ms"] for b in blocks]}


def live(server, cfg) -> dict:
    """Commit-to-client latency, view clients vs. whole-table clients; memory per view."""
    writer = UserboardWriter(server)
    writer.write()
    clients, writes = cfg["views_live_clients"], cfg["views_live_writes"]
    view_list = live_views(writer.name, clients)
    blocks = {"whole_table": [], "views": []}
    # A-B-B-A, so that load drifting on the shared cores weighs on both alike. One write every
    # 50 ms, for both: each one is over at every client before the next.
    for kind in ("whole_table", "views", "views", "whole_table"):
        blocks[kind].append(measure_latency(server, writer, clients, max(1, writes // 2), gap=0.05,
                                            views=view_list if kind == "views" else None))
    out = {kind: pooled(stats) for kind, stats in blocks.items()}
    out["ratio_p50"] = round(out["views"]["p50_ms"] / out["whole_table"]["p50_ms"], 2)
    out["views"]["kinds"] = {"search": sum("q" in v for v in view_list),
                             "lists": sum("q" not in v for v in view_list)}
    idle = cfg["views_idle_clients"]
    rss = {}
    for kind, held in (("whole_table", None), ("views", memory_views(idle))):
        server.start(timeout=60)  # a fresh process each, so neither reuses the other's freed memory
        rss[kind] = idle_memory(server, idle, views=held)
    grown = {kind: r["rss_after_kb"] - r["rss_before_kb"] for kind, r in rss.items()}
    out["memory"] = {"clients": idle, "whole_table_kb": grown["whole_table"],
                     "views_kb": grown["views"],
                     "connected": {kind: r["connected"] for kind, r in rss.items()},
                     "kb_per_view": round((grown["views"] - grown["whole_table"]) / max(1, idle), 1)}
    log(f"views live: p50 {out['views']['p50_ms']} ms with views, "
        f"{out['whole_table']['p50_ms']} ms whole-table; {out['memory']['kb_per_view']} KB a view")
    return out


# -- the section --------------------------------------------------------------------------------


def one_database(url: str, cfg, workdir: Path) -> dict:
    from ..db import make_engine
    from ..migrations import upgrade

    upgrade(url)
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    log(f"views {dialect}: seeding {cfg['views_users']:,} users ...")
    seeding = (seed_sqlite if dialect == "sqlite" else seed_postgresql)(url, cfg["views_users"])
    engine = make_engine(url)
    seeding["totals"] = totals_check(engine)
    engine.dispose()
    log(f"views {dialect}: seeded in {seeding['seconds']} s; totals equal: "
        f"{seeding['totals']['equal']}")
    server = start_userboard(workdir, url)
    try:
        out = {"users": cfg["views_users"], "seeding": seeding,
               "dashboard": dashboard_page(server, cfg["views_reps"]),
               "api": view_cases(url, server, cfg["views_users"], cfg["views_reps"]),
               "live": live(server, cfg)}
    finally:
        server.stop()
    log(f"views {dialect}: dashboard p50 {out['dashboard']['p50_ms']} ms")
    return out


def postgres_scratch(url: str):
    """A database of its own next to USERBOARD_BENCH_POSTGRES's: (its URL, a drop function)."""
    from sqlalchemy.engine import make_url

    from ..db import make_engine

    base = make_url(url)
    name = f"{base.database}_views"
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop():
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


def section_views(cfg, tmp: Path) -> dict:
    folder = tmp / "views" / "sqlite"
    folder.mkdir(parents=True, exist_ok=True)
    out = {"sqlite": one_database(f"sqlite:///{folder / 'bench.db'}", cfg, folder)}
    if cfg.get("postgres_url"):
        url, drop = postgres_scratch(cfg["postgres_url"])
        try:
            out["postgresql"] = one_database(url, cfg, tmp / "views" / "postgresql")
        finally:
            drop()
    return out
