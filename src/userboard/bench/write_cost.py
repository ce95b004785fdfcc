"""Section 4, write cost: what capture adds to a write. Baseline: the same write with capture
off, on the same database in the same process, the two interleaved.

- commit latency: p50/p99 of a one-row UPDATE commit through a capturing session factory vs. a
  plain one (SQLite, and PostgreSQL when USERBOARD_BENCH_POSTGRES is set);
- API throughput: PATCH /api/users/<id> per second through the WSGI app (no network).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from .common import log, pct


def commit_latency(url: str, commits: int) -> dict:
    """p50/p99 of a one-row UPDATE commit, capture on vs off, same engine, interleaved."""
    from sqlalchemy import select

    from ..capture import install_capture
    from ..db import make_engine, make_session_factory
    from ..migrations import upgrade
    from ..models import User

    upgrade(url)
    engine = make_engine(url)
    plain = make_session_factory(engine)
    captured = make_session_factory(engine)
    install_capture(captured, lambda events: None)
    ids = {}
    with plain() as s:
        for kind in ("off", "on"):  # one row each, so the two sessions never race on a version
            user = User(username=f"cost{uuid.uuid4().hex[:6]}", email=f"c{uuid.uuid4().hex[:6]}@example.com")
            s.add(user)
            s.commit()
            ids[kind] = user.id
    timings = {"off": [], "on": []}
    sessions = {"off": plain(), "on": captured()}
    users = {k: s.scalar(select(User).where(User.id == ids[k])) for k, s in sessions.items()}
    for block in range(commits // 100):
        for kind in (("off", "on") if block % 2 else ("on", "off")):
            session, user = sessions[kind], users[kind]
            for i in range(100):
                user.status = "disabled" if i % 2 else "active"
                started = time.perf_counter_ns()
                session.commit()
                timings[kind].append(time.perf_counter_ns() - started)
    for s in sessions.values():
        s.close()
    engine.dispose()
    result = {k: {"p50_us": round(pct(v, 50) / 1000, 1), "p99_us": round(pct(v, 99) / 1000, 1)}
              for k, v in timings.items()}
    result["added_p50_us"] = round(result["on"]["p50_us"] - result["off"]["p50_us"], 1)
    return result


def api_throughput(url: str, requests_count: int) -> dict:
    """API writes/s through the WSGI app (no network), capture on vs. off, same database.

    Two apps on one database file. The "off" app's database hands out sessions from a plain
    `make_session_factory(engine)`, so its writes meet no capture listener at all (an app whose
    capture merely has no publishers would still log and number every change): everything else,
    routes, auth and the users module, is the same code.
    """
    from ..app import create_app
    from ..auth import create_token
    from ..db import make_session_factory
    from ..extension import app_state
    from ..models import User

    config = {"DATABASE_URL": url, "SOCKETIO_ASYNC_MODE": "threading", "SECRET_KEY": "bench"}
    apps = {"on": create_app(config), "off": create_app(config)}
    off_database = app_state(apps["off"]).database
    off_database.sessions = make_session_factory(off_database.engine)
    with app_state(apps["on"]).database.session() as s:
        admin = User(username=f"api{uuid.uuid4().hex[:6]}", email=f"a{uuid.uuid4().hex[:6]}@example.com",
                     role="admin")
        s.add(admin)
        s.commit()
        token = create_token(s, admin)
        target = User(username=f"t{uuid.uuid4().hex[:6]}", email=f"t{uuid.uuid4().hex[:6]}@example.com")
        s.add(target)
        s.commit()
        target_id = target.id
    clients = {kind: app.test_client() for kind, app in apps.items()}
    headers = {"Authorization": f"Bearer {token}"}
    rates = {}
    for kind in ("on", "off", "on", "off"):
        started = time.perf_counter()
        for i in range(requests_count):
            answer = clients[kind].patch(f"/api/users/{target_id}", headers=headers,
                                         json={"status": "disabled" if i % 2 else "active"})
            assert answer.status_code == 200
        rate = requests_count / (time.perf_counter() - started)
        rates.setdefault(kind, []).append(rate)
    for app in apps.values():
        app_state(app).database.engine.dispose()
    on, off = max(rates["on"]), max(rates["off"])
    return {"on_per_s": round(on), "off_per_s": round(off), "ratio": round(on / off, 3)}


def section_write_cost(cfg, tmp: Path) -> dict:
    out = {"sqlite": {"commit": commit_latency(f"sqlite:///{tmp / 'cost.db'}", cfg["commits"]),
                      "api": api_throughput(f"sqlite:///{tmp / 'cost.db'}", cfg["api_requests"])}}
    if cfg.get("postgres_url"):
        out["postgresql"] = {"commit": commit_latency(cfg["postgres_url"], cfg["commits"])}
    log(f"write cost: {out}")
    return out
