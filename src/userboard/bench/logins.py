"""Section 8, logins: socket delivery latency while a burst of admins log in at once, beside the
same writes with no logins; and, as the baseline of before, the same burst with password hashing
on the gevent loop. One server, one run: only the hashing threads change between the phases
(instrumented.py's POST /bench/hashing).

Each login is a real POST /login with the right password: one scrypt hash (about 100 ms of CPU)
and a login row. Meanwhile a user is PATCHed every `gap` seconds (open loop: see
OpenLoopWriter) and connected clients record each event. Latency runs from when the write was
due to the client's arrival (a stalled loop delays the write's request as much as its
delivery), with commit-to-client beside it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from ..auth import HASHING
from .common import ADMIN_PASSWORD, latency_stats, log, now_ns
from .harness import LoadGens, UserboardWriter, start_userboard

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


class LoginBurst:
    """`n` browsers that have their login forms open and submit them together on start()."""

    def __init__(self, url: str, n: int):
        self.url = url
        self.browsers = []
        for _ in range(n):
            http = requests.Session()
            csrf = CSRF.search(http.get(url + "/login", timeout=30).text).group(1)
            self.browsers.append((http, csrf))
        self.failed = 0
        self._threads: list[threading.Thread] = []

    def _login(self, http, csrf, gate: threading.Barrier) -> None:
        gate.wait()
        answer = http.post(self.url + "/login", allow_redirects=False, timeout=60,
                           data={"username": "bench", "password": ADMIN_PASSWORD,
                                 "csrf_token": csrf})
        if answer.status_code != 302:
            self.failed += 1

    def start(self) -> None:
        gate = threading.Barrier(len(self.browsers))
        self._threads = [threading.Thread(target=self._login, args=(http, csrf, gate))
                         for http, csrf in self.browsers]
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)


class OpenLoopWriter:
    """PATCHes one user's email every `gap` seconds, whether or not earlier writes were answered.

    A writer that waits for each answer sends nothing while the server's loop is stalled, so the
    stall would hide from the figures (coordinated omission). Each write's latency counts from
    when it was due, even if every sending thread was still waiting.
    """

    def __init__(self, server, user: dict):
        self.server, self.user = server, user
        self._local = threading.local()

    def _write(self, due: int) -> tuple[int, int]:
        if not hasattr(self._local, "http"):
            self._local.http = requests.Session()
            self._local.http.headers["Authorization"] = f"Bearer {self.server.token}"
        # A new email every time: every write is an event of its own.
        email = f"{self.user['username']}-{uuid.uuid4().hex[:12]}@example.com"
        answer = self._local.http.patch(f"{self.server.url}/api/users/{self.user['id']}",
                                        json={"email": email}, timeout=60)
        answer.raise_for_status()
        return answer.json()["seq"], due

    def write_while(self, busy, gap: float, at_least: int) -> dict[int, int]:
        """Write every `gap` s while `busy()`, and at least `at_least` times: seq -> when due."""
        futures = []
        with ThreadPoolExecutor(max_workers=32) as pool:
            next_at = time.monotonic()
            while busy() or len(futures) < at_least:
                futures.append(pool.submit(self._write, now_ns()))
                next_at += gap
                time.sleep(max(0.0, next_at - time.monotonic()))
            return dict(future.result() for future in futures)


def phase(server, writer: OpenLoopWriter, logins: int | None, threads: int, gap: float,
          at_least: int) -> dict:
    """One phase: `logins` logins at once (None: none) with `threads` hashing threads."""
    requests.post(server.url + "/bench/hashing", json={"threads": threads}, timeout=30)
    if logins is None:
        return {"sends": writer.write_while(lambda: False, gap, at_least), "logins": 0}
    burst = LoginBurst(server.url, logins)
    started = time.monotonic()
    burst.start()
    sends = writer.write_while(burst.running, gap, 1)
    return {"sends": sends, "logins": logins, "failed": burst.failed,
            "burst_s": round(time.monotonic() - started, 3)}


def section_logins(cfg, tmp: Path) -> dict:
    server = start_userboard(tmp / "logins")
    try:
        target = UserboardWriter(server)
        target.write()
        writer = OpenLoopWriter(server, target.user)
        gens = LoadGens(server, cfg["logins_clients"])
        gap, n = cfg["logins_gap"], cfg["logins"]
        threads = cfg.get("logins_threads", HASHING.threads)
        runs = {"logins_off_loop": phase(server, writer, n, threads, gap, 0),
                "logins_on_loop": phase(server, writer, n, 0, gap, 0)}
        writes = len(runs["logins_off_loop"]["sends"])
        runs["no_logins"] = phase(server, writer, None, threads, gap, writes)
        time.sleep(0.3)  # the last deliveries
        arrivals = gens.stop()
        committed = server.commit_times()
    finally:
        server.stop()
    out = {"clients": cfg["logins_clients"], "logins": n, "gap_ms": gap * 1000,
           "hashing_threads": threads}
    for name, run in runs.items():
        sends = run.pop("sends")
        stats = latency_stats(arrivals, sends, gens.connected, gens.connected)
        stats.pop("samples_ms")
        commit = latency_stats(arrivals, {k: committed[k] for k in sends if k in committed},
                               gens.connected, gens.connected)
        out[name] = {**run, **stats, "commit_to_client": {
            "p50_ms": commit["p50_ms"], "p99_ms": commit["p99_ms"]}}
    log(f"logins: {n} logins, write-to-client p99 {out['no_logins']['p99_ms']} ms without, "
        f"{out['logins_off_loop']['p99_ms']} ms hashing off the loop, "
        f"{out['logins_on_loop']['p99_ms']} ms on it")
    return out
