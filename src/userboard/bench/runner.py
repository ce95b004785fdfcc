"""The benchmark: five sections, each figure beside a baseline measured in the same run.

1. latency     commit-to-client latency with 1, 100 and 1,000 clients, one write at a time;
               baseline: a bare Flask-SocketIO broadcast of an equal payload (no database)
2. fanout      deliveries per second with 1,000 clients under steady writes, and a burst (one
               bulk UPDATE of 1,000 rows to 100 clients, through Redis); baseline: bare broadcast
3. connections memory per idle connection and the most clients with broadcast p99 < 150 ms
4. write cost  ORM commit latency and API writes/s with capture on vs. off (same DB and process)
5. poller      against the timed snapshot poller userboard replaces (whole table every 5 s)

Servers run as their own processes; clients run in load-generator processes (loadgen.py).
Commit-to-client latency runs from the moment the server's commit returned (noted by an extra
publisher in `instrumented.py`; for the bare baseline, the moment its emit began) to the moment a
client's socket hands over the event, on the machine-wide monotonic clock. Write-to-client
latency, from just before the HTTP write request is sent, is reported beside it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

PY = sys.executable
ADMIN_PASSWORD = "bench-password-1"


def now_ns() -> int:
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


# -- processes ---------------------------------------------------------------------------------


class Proc:
    """A child process whose output is read in the background until a ready line appears."""

    def __init__(self, args, env=None, cwd=None, ready="serving on", timeout=60):
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        seen = threading.Event()

        def pump():
            for line in self.popen.stdout:
                self.lines.append(line)
                if ready in line:
                    seen.set()

        threading.Thread(target=pump, daemon=True).start()
        if not seen.wait(timeout):
            self.stop()
            raise RuntimeError(f"{args[:4]} did not start:\n" + "".join(self.lines[-20:]))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Server:
    proc: Proc
    url: str
    token: str | None = None
    kind: str = "userboard"
    workdir: Path | None = None
    env: dict = field(default_factory=dict)

    def commit_times(self) -> dict[int, int]:
        """seq -> when the server finished the commit (or began the bare emit)."""
        answer = requests.get(self.url + "/bench/commit-times", timeout=30)
        return {int(k): v for k, v in answer.json().items()}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    def auth(self) -> dict:
        return {"token": self.token} if self.token else {}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(args, env, cwd) -> str:
    done = subprocess.run([PY, "-m", "userboard.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, input=ADMIN_PASSWORD + "\n")
    if done.returncode != 0:
        raise RuntimeError(f"userboard {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def start_userboard(workdir: Path, database_url: str | None = None, extra_env=None) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERBOARD_")}
    env["USERBOARD_DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.db'}"
    env["USERBOARD_SECRET_KEY"] = "bench"
    env.update(extra_env or {})
    cli(["create-admin", "bench", "--email", "bench@example.com", "--password-stdin"], env, workdir)
    token = cli(["token", "create", "bench"], env, workdir)
    port = free_port()
    proc = Proc([PY, "-m", "userboard.bench.instrumented", "--port", str(port)], env=env,
                cwd=workdir)
    return Server(proc, f"http://127.0.0.1:{port}", token, "userboard", workdir, env)


def start_baseline(mode: str, database_url: str | None = None) -> Server:
    port = free_port()
    args = [PY, "-m", "userboard.bench.baseline", mode, "--port", str(port)]
    if database_url:
        args += ["--database", database_url]
    return Server(Proc(args), f"http://127.0.0.1:{port}", None, mode)


class LoadGens:
    """Clients spread over load-generator processes of at most `per_process` clients each."""

    def __init__(self, server: Server, clients: int, per_process: int | None = None,
                 snapshots: bool = False):
        per_process = per_process or int(os.environ.get("USERBOARD_BENCH_PER_LOADGEN", "500"))
        self.procs = []
        offset = 0
        while offset < clients:
            n = min(per_process, clients - offset)
            args = [PY, "-m", "userboard.bench.loadgen", "--url", server.ws_url,
                    "--auth", json.dumps(server.auth()), "--clients", str(n),
                    "--offset", str(offset)]
            if snapshots:
                args.append("--snapshots")
            self.procs.append(subprocess.Popen(args, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, text=True))
            offset += n
        self.connected = 0
        for proc in self.procs:
            line = json.loads(proc.stdout.readline() or '{"ready": 0}')
            self.connected += line.get("ready", 0)
        time.sleep(0.3)  # let snapshots and first heartbeats pass

    def stop(self) -> list[tuple[int, int, int, int]]:
        arrivals = []
        for proc in self.procs:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc in self.procs:
            line = proc.stdout.readline()
            arrivals.extend(tuple(a) for a in json.loads(line or '{"arrivals": []}')["arrivals"])
            proc.wait(30)
        return arrivals


# -- writers -----------------------------------------------------------------------------------


class UserboardWriter:
    """PATCHes one user's email back and forth: one user_updated event per write."""

    def __init__(self, server: Server):
        self.server = server
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {server.token}"
        name = f"target{uuid.uuid4().hex[:6]}"
        answer = self.http.post(server.url + "/api/users",
                                json={"username": name, "email": f"{name}-a@example.com"})
        answer.raise_for_status()
        self.user = answer.json()["user"]
        self.name, self.flip = name, False
        self.sample_payload = None

    def write(self) -> int:
        self.flip = not self.flip
        email = f"{self.name}-{'b' if self.flip else 'a'}@example.com"
        answer = self.http.patch(f"{self.server.url}/api/users/{self.user['id']}",
                                 json={"email": email})
        answer.raise_for_status()
        body = answer.json()
        if self.sample_payload is None:
            user = body["user"]
            self.sample_payload = {
                "seq": body["seq"], "id": user["id"], "version": user["version"],
                "changes": {"email": email, "updated_at": user["updated_at"]},
                "previous": {"email": f"{self.name}-a@example.com", "updated_at": user["created_at"]},
            }
        return body["seq"]


class BareWriter:
    """POSTs a payload shaped and sized like a userboard user_updated event to the bare server."""

    def __init__(self, server: Server, payload: dict):
        self.server, self.payload, self.seq = server, payload, 0
        self.http = requests.Session()
        self.lock = threading.Lock()

    def write(self) -> int:
        with self.lock:
            self.seq += 1
            seq = self.seq
        answer = self.http.post(self.server.url + "/emit",
                                json={"name": "user_updated", "payload": {**self.payload, "seq": seq}})
        answer.raise_for_status()
        return seq


# -- section 1: latency ------------------------------------------------------------------------


def measure_latency(server: Server, writer, clients: int, writes: int) -> dict:
    gens = LoadGens(server, clients)
    sends = {}
    gap = max(0.005, clients * 100e-6)  # let each broadcast finish before the next write
    for _ in range(writes):
        started = now_ns()
        sends[writer.write()] = started
        time.sleep(gap)
    time.sleep(0.5)
    arrivals = gens.stop()
    committed = server.commit_times()
    stats = latency_stats(arrivals, {k: committed[k] for k in sends if k in committed}, clients,
                          gens.connected)
    stats["write_to_client"] = {
        k: v for k, v in latency_stats(arrivals, sends, clients, gens.connected).items()
        if k in ("p50_ms", "p99_ms")
    }
    return stats


def latency_stats(arrivals, sends, clients, connected) -> dict:
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


def section_latency(cfg, tmp: Path) -> dict:
    out = {"userboard": [], "baseline": []}
    server = start_userboard(tmp / "latency")
    bare = start_baseline("bare")
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
        server.proc.stop()
        bare.proc.stop()
    return out


# -- section 2: fan-out ------------------------------------------------------------------------


def measure_fanout(server: Server, writer, clients: int, seconds: float, writers: int = 4) -> dict:
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
    time.sleep(1.0 + writers * len(sends) * clients / 50_000)  # let the queues drain
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
        time.sleep(max(1.5, rows * cfg["burst_clients"] / 40_000))
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
        server.proc.stop()


def measure_burst_floor(cfg) -> dict:
    """The bare server emits the same number of events back to back, to the same clients."""
    bare = start_baseline("bare")
    try:
        gens = LoadGens(bare, cfg["burst_clients"])
        count = cfg["burst_rows"]
        started = now_ns()
        requests.post(bare.url + "/emit-burst", json={"count": count}, timeout=60).raise_for_status()
        time.sleep(max(1.5, count * cfg["burst_clients"] / 40_000))
        arrivals = [a for a in gens.stop() if a[1] >= 1_000_000]
        done = max((a[2] for a in arrivals), default=started)
        return {"rows": count, "clients": cfg["burst_clients"], "deliveries": len(arrivals),
                "expected": count * gens.connected, "delivered_s": round((done - started) / 1e9, 3)}
    finally:
        bare.proc.stop()


def section_fanout(cfg, tmp: Path) -> dict:
    server = start_userboard(tmp / "fanout")
    bare = start_baseline("bare")
    try:
        writer = UserboardWriter(server)
        writer.write()
        out = {
            "userboard": measure_fanout(server, writer, cfg["fanout_clients"], cfg["fanout_seconds"]),
            "baseline": measure_fanout(bare, BareWriter(bare, writer.sample_payload),
                                       cfg["fanout_clients"], cfg["fanout_seconds"]),
        }
    finally:
        server.proc.stop()
        bare.proc.stop()
    out["burst"] = measure_burst(cfg, tmp)
    out["burst_floor"] = measure_burst_floor(cfg)
    log(f"fan-out: userboard {out['userboard']['deliveries_per_s']}/s, "
        f"floor {out['baseline']['deliveries_per_s']}/s; burst {out['burst']}")
    return out


# -- section 3: connections --------------------------------------------------------------------


def idle_memory(server: Server, clients: int) -> dict:
    time.sleep(0.5)
    before = server.proc.rss_kb()
    gens = LoadGens(server, clients)
    time.sleep(1.5)
    after = server.proc.rss_kb()
    gens.stop()
    return {"clients": clients, "connected": gens.connected, "rss_before_kb": before,
            "rss_after_kb": after,
            "kb_per_connection": round((after - before) / max(1, gens.connected), 1)}


def max_clients(server: Server, steps: list[int], writes: int, writer=None) -> dict:
    """Grow the number of clients until broadcast p99 passes 150 ms (or clients are refused)."""
    writer = writer or UserboardWriter(server)
    results = []
    for step in steps:
        gens = LoadGens(server, step)
        time.sleep(1.0 + step / 2000)  # let the connection storm settle
        sends = {}
        for i in range(writes + 2):
            started = now_ns()
            seq = writer.write()
            if i >= 2:  # the first two are warm-up
                sends[seq] = started
            time.sleep(max(0.2, step * 150e-6))  # one broadcast at a time
        time.sleep(1.0)
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
    bare = start_baseline("bare")
    try:
        out = {
            "userboard": idle_memory(server, cfg["idle_clients"]),
            "baseline": idle_memory(bare, cfg["idle_clients"]),
        }
    finally:
        server.proc.stop()
    # Fresh servers: right after a thousand disconnects a server measures worse than it is.
    server = start_userboard(tmp / "connections" / "max")
    try:
        out["max"] = max_clients(server, cfg["max_steps"], cfg["max_writes"])
        writer = UserboardWriter(server)
        writer.write()
        payload = writer.sample_payload
    finally:
        server.proc.stop()
    try:
        out["max_baseline"] = max_clients(bare, cfg["max_steps"], cfg["max_writes"],
                                          BareWriter(bare, payload))
    finally:
        bare.proc.stop()
    log(f"connections: {out['userboard']['kb_per_connection']} KB each "
        f"(bare {out['baseline']['kb_per_connection']} KB); held {out['max']['max_clients']} "
        f"(bare {out['max_baseline']['max_clients']})")
    return out


# -- section 4: write cost ---------------------------------------------------------------------


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
    """API writes/s through the WSGI app (no network), capture on vs. off, same database."""
    from ..app import create_app
    from ..auth import create_token
    from ..extension import app_state
    from ..models import User

    app = create_app({"DATABASE_URL": url, "SOCKETIO_ASYNC_MODE": "threading",
                      "SECRET_KEY": "bench"})
    database = app_state(app).database
    with database.session() as s:
        admin = User(username=f"api{uuid.uuid4().hex[:6]}", email=f"a{uuid.uuid4().hex[:6]}@example.com",
                     role="admin")
        s.add(admin)
        s.commit()
        token = create_token(s, admin)
        target = User(username=f"t{uuid.uuid4().hex[:6]}", email=f"t{uuid.uuid4().hex[:6]}@example.com")
        s.add(target)
        s.commit()
        target_id = target.id
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    rates = {}
    for kind in ("on", "off", "on", "off"):
        if kind == "off":
            database.capture.uninstall(database.sessions)
        started = time.perf_counter()
        for i in range(requests_count):
            answer = client.patch(f"/api/users/{target_id}", headers=headers,
                                  json={"status": "disabled" if i % 2 else "active"})
            assert answer.status_code == 200
        rate = requests_count / (time.perf_counter() - started)
        rates.setdefault(kind, []).append(rate)
        if kind == "off":
            database.capture.install(database.sessions)
    database.engine.dispose()
    on, off = max(rates["on"]), max(rates["off"])
    return {"on_per_s": round(on), "off_per_s": round(off), "ratio": round(on / off, 3)}


def section_write_cost(cfg, tmp: Path) -> dict:
    out = {"sqlite": {"commit": commit_latency(f"sqlite:///{tmp / 'cost.db'}", cfg["commits"]),
                      "api": api_throughput(f"sqlite:///{tmp / 'cost.db'}", cfg["api_requests"])}}
    if cfg.get("postgres_url"):
        out["postgresql"] = {"commit": commit_latency(cfg["postgres_url"], cfg["commits"])}
    log(f"write cost: {out}")
    return out


# -- section 5: against the snapshot poller ----------------------------------------------------


def section_poller(cfg, tmp: Path) -> dict:
    from sqlalchemy import insert, update

    from ..db import make_engine
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
             "status": "active", "version": 1, "created_at": time_now(), "updated_at": time_now()}
            for i in range(cfg["poller_users"])
        ])
    poller = start_baseline("poller", url)
    try:
        gens = LoadGens(poller, cfg["poller_clients"], snapshots=True)
        changes = []
        for i in range(cfg["poller_changes"]):
            time.sleep(2.0 + (i % 3) * 1.1)  # land at different points of the 5 s cycle
            with engine.begin() as conn:
                conn.execute(update(User.__table__).where(User.__table__.c.id == 1 + i)
                             .values(status="disabled"))
            changes.append(now_ns())
        time.sleep(5.5)
        arrivals = gens.stop()
    finally:
        poller.proc.stop()
    latencies, sizes = [], []
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
        time.sleep(0.5)
        arrivals = gens.stop()
    finally:
        server.proc.stop()
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


def time_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


# -- the run -----------------------------------------------------------------------------------

QUICK = {
    "latency_clients": [1, 50], "writes": 20,
    "fanout_clients": 100, "fanout_seconds": 1.0, "burst_rows": 100, "burst_clients": 10,
    "idle_clients": 100, "max_steps": [200], "max_writes": 5,
    "commits": 200, "api_requests": 100,
    "poller_users": 1000, "poller_clients": 10, "poller_changes": 1,
}
FULL = {
    "latency_clients": [1, 100, 1000], "writes": 200,
    "fanout_clients": 1000, "fanout_seconds": 5.0, "burst_rows": 1000, "burst_clients": 100,
    "idle_clients": 1000, "max_steps": [1000, 2000, 3000, 4000, 5000], "max_writes": 20,
    "commits": 4000, "api_requests": 2000,
    "poller_users": 10_000, "poller_clients": 100, "poller_changes": 4,
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def reachable_services(cfg: dict) -> None:
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


def run(quick: bool = False, clients: int | None = None) -> dict:
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
        for name, section in (("latency", section_latency), ("fanout", section_fanout),
                              ("connections", section_connections),
                              ("write_cost", section_write_cost), ("poller", section_poller)):
            (tmp / name).mkdir(exist_ok=True)
            log(f"section {name} ...")
            results[name] = section(cfg, tmp)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["summary"] = summarize(results)
    return results


def ratio(a, b):
    try:
        return round(a / b, 2) if b else None
    except TypeError:
        return None


def summarize(r: dict) -> list[dict]:
    rows = []

    def row(figure, result, baseline, target, met, unit=""):
        rows.append({"figure": figure, "result": result, "baseline": baseline,
                     "ratio": ratio(result, baseline) if isinstance(result, (int, float)) else None,
                     "target": target, "met": met, "unit": unit})

    for ub, floor in zip(r["latency"]["userboard"], r["latency"]["baseline"], strict=True):
        n = ub["clients"]
        row(f"latency p50, {n} clients", ub["p50_ms"], floor["p50_ms"], "<= 1.25x floor",
            ub["p50_ms"] <= 1.25 * floor["p50_ms"], "ms")
        row(f"latency p99, {n} clients", ub["p99_ms"], floor["p99_ms"],
            "<= 5 ms" if n == 100 else "-", ub["p99_ms"] <= 5 if n == 100 else None, "ms")
        row(f"latency max / last client p50, {n} clients",
            f"{ub['max_ms']} / {ub['last_client_p50_ms']}",
            f"{floor['max_ms']} / {floor['last_client_p50_ms']}", "-", None, "ms")
        if n == 100:
            row("latency p50, 100 clients (absolute)", ub["p50_ms"], floor["p50_ms"], "<= 2 ms",
                ub["p50_ms"] <= 2, "ms")
    f = r["fanout"]
    row(f"fan-out deliveries/s, {f['userboard']['clients']} clients",
        f["userboard"]["deliveries_per_s"], f["baseline"]["deliveries_per_s"], ">= 60,000/s",
        f["userboard"]["deliveries_per_s"] >= 60_000, "/s")
    b, bf = f["burst"], f["burst_floor"]
    if "skipped" not in b:
        row(f"burst: {b['rows']} rows to {b['clients']} clients, delivered in",
            b["delivered_s"], bf["delivered_s"], "< 1 s",
            b["delivered_s"] < 1 and b["deliveries"] == b["expected"], "s")
    c = r["connections"]
    row("memory per idle connection", c["userboard"]["kb_per_connection"],
        c["baseline"]["kb_per_connection"], "<= 40 KB", c["userboard"]["kb_per_connection"] <= 40, "KB")
    row("clients held with broadcast p99 < 150 ms", c["max"]["max_clients"],
        c.get("max_baseline", {}).get("max_clients"), ">= 5,000", c["max"]["max_clients"] >= 5000, "")
    w = r["write_cost"]["sqlite"]
    row("commit p50, capture on (SQLite)", w["commit"]["on"]["p50_us"], w["commit"]["off"]["p50_us"],
        "adds <= 50 us", w["commit"]["added_p50_us"] <= 50, "us")
    if "postgresql" in r["write_cost"]:
        pgc = r["write_cost"]["postgresql"]["commit"]
        row("commit p50, capture on (PostgreSQL)", pgc["on"]["p50_us"], pgc["off"]["p50_us"],
            "adds <= 50 us", pgc["added_p50_us"] <= 50, "us")
    row("API writes/s, capture on", w["api"]["on_per_s"], w["api"]["off_per_s"], ">= 0.8x",
        w["api"]["ratio"] >= 0.8, "/s")
    p = r["poller"]
    row(f"time to see a change ({p['users']} users, {p['clients']} clients)",
        p["userboard"]["p50_ms"], p["poller"]["p50_ms"], "-", None, "ms")
    row("bytes sent per change", p["userboard"]["bytes_per_change"], p["poller"]["bytes_per_change"],
        "-", None, "B")
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| figure | result | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        unit = f" {r['unit']}" if r["unit"] and r["result"] is not None else ""
        base = "-" if r["baseline"] is None else f"{r['baseline']}{unit}"
        ratio_text = "-" if r["ratio"] is None else f"{r['ratio']}x"
        lines.append(f"| {r['figure']} | {r['result']}{unit} | {base} | {ratio_text} | "
                     f"{r['target']} | {met} |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, color in (("userboard", "#2f6fde"), ("baseline", "#999999")):
        label = "userboard" if kind == "userboard" else "bare broadcast (floor)"
        for stats in results["latency"][kind]:
            samples = sorted(stats["samples_ms"])
            if not samples:
                continue
            ys = [i / len(samples) for i in range(len(samples))]
            style = "-" if kind == "userboard" else "--"
            left.plot(samples, ys, style, color=color, alpha=0.4 + 0.2 * min(3, len(str(stats["clients"]))),
                      label=f"{label}, {stats['clients']} clients")
    left.set_xscale("log")
    left.set_xlabel("write-to-client latency (ms, log)")
    left.set_ylabel("fraction of deliveries")
    left.set_title("Latency CDF, one write at a time")
    left.legend(fontsize=7)
    p = results["poller"]
    names = ["userboard", "5 s snapshot poller"]
    values = [p["userboard"]["p50_ms"], p["poller"]["p50_ms"]]
    right.bar(names, values, color=["#2f6fde", "#c53030"])
    right.set_yscale("log")
    right.set_ylabel("median time to see a change (ms, log)")
    right.set_title(f"{p['users']:,} users, {p['clients']} clients")
    for i, v in enumerate(values):
        right.text(i, v, f"{v:g} ms", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
