"""Child processes for the benchmark and the test suite: a free port, the `userboard` command,
and a server process that is ready once it prints "serving on".

The one copy of these helpers: tests/helpers.py builds on them rather than repeating them.
Imports no Flask and no userboard module, so that tests and the bench driver stay clients.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args, cwd, env=None, input=None, timeout=60) -> subprocess.CompletedProcess:
    """Run the `userboard` command as a user would, in its own process."""
    return subprocess.run(
        [PY, "-m", "userboard.cli", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ChildProcess:
    """A child process whose output is read in the background; ready once `ready` is printed."""

    def __init__(self, args, env=None, cwd=None, ready="serving on", timeout: float = 60):
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._ready = False
        self._answered = threading.Event()  # the ready line came, or the output ended
        self._pump = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._pump.start()
        if not (self._answered.wait(timeout) and self._ready):
            self.stop()
            raise RuntimeError(f"{' '.join(map(str, args[1:4]))} did not start:\n"
                               + "".join(self.lines[-40:]))

    def _read(self, ready: str) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)
            if not self._ready and ready in line:
                self._ready = True
                self._answered.set()
        self._answered.set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kb(self) -> int:
        """Resident memory of the process now, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        """Terminate (kill after 10 s) if still running, then release the output pipe."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if not self.popen.stdout.closed:
            self._pump.join(5)
            self.popen.stdout.close()


# Every client of the tests and the benchmark comes from 127.0.0.1: per-address socket limits
# sized for a crowd behind one address. A caller's `env` still wins (tests/test_abuse.py).
ONE_ADDRESS_LIMITS = {
    "USERBOARD_SOCKET_HANDSHAKES_PER_ADDRESS": "100000/minute",
    "USERBOARD_SOCKET_PENDING_PER_ADDRESS": "10000",
    "USERBOARD_SOCKET_MESSAGES_PER_ADDRESS": "1000000/minute",
}


class UserboardProcess:
    """A userboard server (`python -m <entry> --port N`) in a child process, on a free port, with
    its own working directory and an environment free of the caller's USERBOARD_* settings."""

    entry: tuple[str, ...] = ("userboard.cli", "serve")
    database_file = "userboard.db"

    def __init__(self, workdir: Path, env: dict | None = None):
        self.workdir = Path(workdir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("USERBOARD_")}
        self.env.setdefault("USERBOARD_DATABASE_URL",
                            f"sqlite:///{self.workdir / self.database_file}")
        self.env.update(ONE_ADDRESS_LIMITS)
        self.env.update(env or {})
        self.token: str | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._child: ChildProcess | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        """The running (or last) server process."""
        return self._child.popen if self._child is not None else None

    @property
    def output(self) -> list[str]:
        """What the server printed since its last start."""
        return self._child.lines if self._child is not None else []

    def cli(self, *args, input=None) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=self.workdir, env=self.env, input=input)

    def setup_admin(self, username: str, password: str) -> str:
        """Create an admin and an API token for it through the CLI; keep the token."""
        steps = [(("create-admin", username, "--email", f"{username}@example.com",
                   "--password-stdin"), password + "\n"),
                 (("token", "create", username), None)]
        for args, stdin in steps:
            done = self.cli(*args, input=stdin)
            if done.returncode != 0:
                raise RuntimeError(f"userboard {' '.join(args)} failed: {done.stderr.strip()}")
        self.token = done.stdout.strip()
        return self.token

    def start(self, timeout: float = 20) -> None:
        """Start the server (again, on the same port) and wait until it serves."""
        if self._child is not None:
            self._child.stop()  # releases the last process's pipe if it ended on its own
        self._child = ChildProcess([PY, "-m", *self.entry, "--port", str(self.port)],
                                   env=self.env, cwd=self.workdir, timeout=timeout)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    def rss_kb(self) -> int:
        return self._child.rss_kb()
