"""Section 9, relay: how fast a burst that another process commits reaches the clients.

A script (its own process, through the capture layer) adds N users in transactions of 1,000 rows
(`relay_chunk`) while C clients hold the whole table. Without a message queue its events reach the server only
through the change-log relay; the baseline is the same burst published through Redis, which the
server delivers as it arrives. Both bursts go to one server (configured with Redis when it is
reachable: a script that publishes nothing still reaches it only through the change log).
Figure: events per second from the script's first commit to the last arrival at every client,
and how long after the script's last commit the last client had everything.

The writer is this module run as a script, started ahead and told when to go:
    python -m userboard.bench.relay_rate URL N CHUNK [QUEUE CHANNEL]
It prints {"ready": true}, waits for a line on stdin, commits, then prints the seqs it committed
and when (`time.monotonic_ns()`, the clock the load generators stamp arrivals with).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .common import log
from .harness import InstrumentedServer, LoadGens
from .processes import PY


def seed(url: str) -> str:
    """Add the admin "bench" (the server migrated the database); return an API token for it."""
    from ..auth import create_token
    from ..bootstrap import open_database
    from ..users import create_user

    database = open_database(url)
    try:
        with database.session() as session:
            admin = create_user(session, {"username": "bench", "email": "bench@example.com",
                                          "role": "admin"})  # a token is all the clients need
            return create_token(session, admin)
    finally:
        database.close()


class Writer:
    """A writer process, started ahead so that its start-up is not measured."""

    def __init__(self, url: str, events: int, chunk: int, queue: str | None, channel: str):
        self.proc = subprocess.Popen(
            [PY, "-m", "userboard.bench.relay_rate", url, str(events), str(chunk)]
            + ([queue, channel] if queue else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self) -> dict:
        """Once it is ready, commit; return what and when."""
        ready = json.loads(self.proc.stdout.readline() or '{"ready": false}')["ready"]
        if ready:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.wait(60)
        if not line:
            raise RuntimeError("the bench writer failed")
        return json.loads(line)


def burst(gens: LoadGens, writer: Writer) -> dict:
    """Run one writer; wait until every client has its last event; measure."""
    wrote = writer.run()
    arrivals_complete = gens.wait_for(wrote["last_seq"], timeout=120)
    return {**wrote, "complete": arrivals_complete}


def figures(wrote: dict, arrivals, clients: int, connected: int) -> dict:
    mine = [a for a in arrivals if wrote["first_seq"] <= a[1] <= wrote["last_seq"]]
    unique = {(a[0], a[1]) for a in mine}
    last = max((a[2] for a in mine), default=wrote["last_ns"])
    seconds = (last - wrote["first_ns"]) / 1e9
    events = wrote["last_seq"] - wrote["first_seq"] + 1
    return {
        "events": events,
        "clients": clients,
        "connected": connected,
        "deliveries": len(unique),
        "expected": events * connected,
        "commit_s": round((wrote["last_ns"] - wrote["first_ns"]) / 1e9, 3),
        "delivered_s": round(seconds, 3),
        "after_last_commit_s": round((last - wrote["last_ns"]) / 1e9, 3),
        "events_per_s": round(events / seconds) if seconds > 0 else 0,
    }


def measure(url: str, workdir: Path, cfg: dict) -> dict:
    events, clients, redis_url = cfg["relay_events"], cfg["relay_clients"], cfg.get("redis_url")
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"USERBOARD_DATABASE_URL": url, "USERBOARD_SECRET_KEY": "bench"}
    if redis_url:
        env.update(USERBOARD_MESSAGE_QUEUE=redis_url, USERBOARD_CHANNEL=channel)
    workdir.mkdir(parents=True, exist_ok=True)
    server = InstrumentedServer(workdir, env)
    chunk = cfg.get("relay_chunk", 1000)
    writers = {"relay": Writer(url, events, chunk, None, channel)}  # they get ready meanwhile
    if redis_url:
        writers["redis"] = Writer(url, events, chunk, redis_url, channel)
    try:
        server.start(timeout=60)
        server.token = seed(url)
        gens = LoadGens(server, clients)
        wrote = {name: burst(gens, writer) for name, writer in writers.items()}
        arrivals = gens.stop()
        out = {name: {**figures(w, arrivals, clients, gens.connected), "complete": w["complete"]}
               for name, w in wrote.items()}
        out.setdefault("redis", {"skipped": "no Redis reachable (USERBOARD_BENCH_REDIS)"})
        return out
    finally:
        for writer in writers.values():
            if writer.proc.poll() is None:
                writer.proc.kill()
        server.stop()


def section_relay(cfg, tmp: Path) -> dict:
    from .views import postgres_scratch

    out = {"sqlite": measure(f"sqlite:///{tmp / 'relay' / 'ub.db'}", tmp / "relay" / "sqlite", cfg)}
    if cfg.get("postgres_url"):
        url, drop = postgres_scratch(cfg["postgres_url"])
        try:
            out["postgresql"] = measure(url, tmp / "relay" / "postgresql", cfg)
        finally:
            drop()
    for db, result in out.items():
        relay, redis = result["relay"], result["redis"].get("events_per_s", "-")
        log(f"relay {db}: {relay['events_per_s']} events/s without a queue "
            f"({relay['deliveries']}/{relay['expected']} delivered), {redis} events/s via Redis")
    return out


def write(url: str, events: int, chunk: int, queue: str | None, channel: str) -> None:
    """The writer process: `events` user adds, `chunk` rows a transaction, through the capture."""
    from sqlalchemy import insert

    from ..bootstrap import open_database
    from ..capture import last_commit_seq
    from ..models import User

    database = open_database(url, message_queue=queue, channel=channel, actor="bench-writer")
    prefix = f"relay{uuid.uuid4().hex[:6]}_"
    batches = [[{"username": f"{prefix}{i:06}", "email": f"{prefix}{i:06}@example.com"}
                for i in range(start, min(events, start + chunk))]
               for start in range(0, events, chunk)]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    try:
        with database.session() as session:
            first_ns = time.monotonic_ns()
            for rows in batches:
                session.execute(insert(User), rows)
                session.commit()
            last_ns = time.monotonic_ns()
            last_seq = last_commit_seq(session)
    finally:
        database.close(timeout=60)
    print(json.dumps({"first_seq": last_seq - events + 1, "last_seq": last_seq,
                      "first_ns": first_ns, "last_ns": last_ns}), flush=True)


if __name__ == "__main__":
    url, count, chunk, *queue = sys.argv[1:]
    write(url, int(count), int(chunk), *(queue or [None, "userboard"]))
