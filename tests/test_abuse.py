"""Anonymous resource holding and floods, against a real server with tight limits.

Every test speaks from its own loopback address (127.0.0.0/8 is all this machine), so the
per-address limits of one test leave the others alone, and the oversized-POST flood comes from
300 addresses at once, the way a botnet would get past the per-address limits. Attackers keep
their end of every connection open: only the server can release its file descriptors.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
from pathlib import Path

import pytest
import requests
import websocket

from userboard.config import ConfigError, Settings

from .helpers import ServerProcess, seed_admin, wait_until
from .wire import flood, join, open_websocket

POLLING = "/socket.io/?EIO=4&transport=polling"
RESYNC = '42/users,["resync",{"since":1000000000}]'  # ahead of the server: a snapshot each time
LIMITS = {
    "USERBOARD_HTTP_IDLE_TIMEOUT": "2",
    "USERBOARD_SOCKET_AUTH_TIMEOUT": "1",
    "USERBOARD_SOCKET_PENDING_PER_ADDRESS": "3",
    "USERBOARD_SOCKET_HANDSHAKES_PER_ADDRESS": "6/minute",
    "USERBOARD_SOCKET_MESSAGES_PER_CONNECTION": "20/4 seconds",
    "USERBOARD_SOCKET_MESSAGES_PER_ADDRESS": "30/minute",
}
_addresses = (f"127.0.9.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("abuse"), env=LIMITS)
    seed_admin(proc)
    proc.start()
    yield proc
    proc.stop()


# -- a client that speaks HTTP and Engine.IO by hand, from a chosen address ---------------------


class Raw:
    """One TCP connection from `address`, with HTTP/1.1 requests written and read by hand."""

    def __init__(self, server, address: str):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                             source_address=(address, 0))
        self.rfile = self.sock.makefile("rb")

    def request(self, method: str, target: str, body: bytes = b"", length: int | None = None):
        """(status, headers with lower-case names, body); the connection stays open."""
        length = len(body) if length is None else length
        self.sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Content-Type: text/plain\r\nContent-Length: {length}\r\n\r\n".encode()
                          + body)
        status = int(self.rfile.readline().split()[1])
        headers = {}
        while (line := self.rfile.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        return status, headers, self.rfile.read(int(headers.get("content-length", 0)))

    def handshake(self) -> str:
        status, _, body = self.request("GET", POLLING)
        assert status == 200, body
        return json.loads(body[1:])["sid"]

    def hung_up(self) -> bool:
        """Whether the server closes this connection (within 5 s; what it still sends is read)."""
        try:
            while self.rfile.read1(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ws_open(server, address: str) -> websocket.WebSocket:
    """A websocket Engine.IO connection from `address` that has joined nothing yet."""
    return open_websocket(server, socket.create_connection(
        ("127.0.0.1", server.port), timeout=5, source_address=(address, 0)))


def ws_join(server, address: str) -> websocket.WebSocket:
    """A websocket from `address` that has joined /users with the server's token."""
    return join(ws_open(server, address), server.token)


def ws_hung_up(ws: websocket.WebSocket) -> bool:
    """Whether the server closes this websocket within 5 s."""
    try:
        while ws.recv() != "":
            pass
    except websocket.WebSocketTimeoutException:
        return False
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        pass
    return True


def open_connections(pid: int) -> int:
    """TCP connections the process holds a descriptor for (listening sockets not counted)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[9] in inodes and fields[3] != "0A"  # 0A: LISTEN
    return count


class LoginProbe:
    """GET /login again and again in a thread while a flood runs; every answer is kept."""

    def __init__(self, server):
        self.url = server.url + "/login"
        self.answers: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.answers.append(requests.get(self.url, timeout=5).status_code)
            except requests.RequestException as exc:
                self.answers.append(type(exc).__name__)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- holding connections --------------------------------------------------------------------


def test_oversized_polling_posts_leave_no_socket_open_and_login_answers(server):
    attackers = []
    try:
        with LoginProbe(server) as probe:
            for n in range(300):
                raw = Raw(server, f"127.1.{n // 200}.{n % 200 + 1}")
                sid = raw.handshake()
                try:
                    status, headers, _ = raw.request("POST", f"{POLLING}&sid={sid}", b"x" * 70_000)
                except ConnectionError:  # hung up before we read the answer: refused too
                    status, headers = 413, {"connection": "close"}
                assert (status, headers["connection"]) == (413, "close")
                attackers.append(raw)  # kept open, as an attacker would
        assert len(probe.answers) >= 3 and set(probe.answers) == {200}, probe.answers
        assert wait_until(lambda: open_connections(server.proc.pid) <= 3, 5), \
            open_connections(server.proc.pid)
    finally:
        for raw in attackers:
            raw.close()


def test_a_malformed_polling_post_is_refused_and_ends_its_connection_and_session(server):
    address = next(_addresses)
    with Raw(server, address) as raw, Raw(server, address) as again:
        sid = raw.handshake()
        status, headers, _ = raw.request("POST", f"{POLLING}&sid={sid}", b"6")  # NOOP: server-only
        assert (status, headers["connection"]) == (400, "close")
        assert raw.hung_up()
        assert again.request("GET", f"{POLLING}&sid={sid}")[0] == 400  # the session is gone


def test_a_polling_post_that_is_not_utf8_is_refused_and_ends_its_session(server):
    before = len(server.output)
    address = next(_addresses)
    with Raw(server, address) as raw, Raw(server, address) as again:
        sid = raw.handshake()
        status, headers, _ = raw.request("POST", f"{POLLING}&sid={sid}",
                                         b'40/users,{"token": "\xff\xfe"}')
        assert (status, headers["connection"]) == (400, "close")
        assert again.request("GET", f"{POLLING}&sid={sid}")[0] == 400  # the session is gone
    assert "Traceback" not in "".join(server.output[before:])  # Engine.IO never saw it


def test_a_post_that_declares_too_much_is_refused_before_its_body_is_read(server):
    with Raw(server, next(_addresses)) as raw:
        sid = raw.handshake()
        status, headers, _ = raw.request("POST", f"{POLLING}&sid={sid}", length=10**9)
        assert (status, headers["connection"]) == (413, "close")
        assert raw.hung_up()


def test_a_connection_that_does_not_join_users_is_closed_after_the_auth_timeout(server):
    address = next(_addresses)
    with Raw(server, address) as polling:
        sid = polling.handshake()
        idle, joined = ws_open(server, address), ws_join(server, address)
        try:
            assert ws_hung_up(idle)
            status, _, body = polling.request("GET", f"{POLLING}&sid={sid}")
            assert status == 400 or body == b"1", body  # gone, or its last poll gets CLOSE
            joined.send(RESYNC)  # the joined one, as old as the others, is still served
            while not joined.recv().startswith('42/users,["users_snapshot"'):
                pass
        finally:
            idle.shutdown()
            joined.close()


def test_an_address_may_hold_only_a_few_unauthenticated_connections(server):
    address = next(_addresses)
    held = [ws_open(server, address) for _ in range(3)]
    try:
        with Raw(server, address) as raw:
            status, headers, body = raw.request("GET", POLLING)
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "too_many_requests"
        ws_open(server, next(_addresses)).close()  # another address is not affected
    finally:
        for ws in held:
            ws.close()


def test_handshakes_per_address_are_rate_limited(server):
    address = next(_addresses)
    for _ in range(6):
        with Raw(server, address) as raw:
            sid = raw.handshake()
            assert raw.request("POST", f"{POLLING}&sid={sid}", b"1")[0] == 200  # CLOSE: not pending
    with Raw(server, address) as raw:
        status, headers, body = raw.request("GET", POLLING)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "too_many_requests"


def test_a_connection_that_sends_no_request_is_closed_after_the_idle_timeout(server):
    with Raw(server, next(_addresses)) as silent, Raw(server, next(_addresses)) as slow:
        slow.sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head never ends
        assert silent.hung_up() and slow.hung_up()


# -- floods ---------------------------------------------------------------------------------


def test_a_flooding_client_that_rejoins_is_cut_for_good_within_its_budget(server):
    ws = ws_join(server, next(_addresses))
    rejoin = "40/users," + json.dumps({"token": server.token})
    served = flood(ws, [rejoin, RESYNC] * 30)
    assert served is not None, "the connection stayed open"
    snapshots, _ = served
    assert snapshots <= 19  # 20 messages a connection, its first join included


def test_the_message_budget_follows_the_address(server):
    address = next(_addresses)
    served = flood(ws_join(server, address), [RESYNC] * 60)
    assert served is not None and served[0] <= 19
    # A new connection has a fresh budget of its own, but the address has spent 20 of its 30.
    served = flood(ws_join(server, address), [RESYNC] * 60)
    assert served is not None and served[0] <= 9


def test_the_default_namespace_serves_no_one(server):
    address = next(_addresses)
    ws = ws_open(server, address)
    ws.send("40")
    assert ws.recv().startswith("44")  # CONNECT_ERROR: "/" is refused
    served = flood(ws, ['42["resync",{"since":0}]', '42["watch",{}]'] * 30)
    assert served == (0, 0)
    # Cut for its messages, not by the auth timeout (the output arrives through a pipe).
    assert wait_until(
        lambda: f"connection from {address} sent messages too fast" in "".join(server.output), 5)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("USERBOARD_HTTP_IDLE_TIMEOUT", "0"),
    ("USERBOARD_SOCKET_AUTH_TIMEOUT", "soon"),
    ("USERBOARD_SOCKET_AUTH_TIMEOUT", "nan"),
    ("USERBOARD_SOCKET_PENDING_PER_ADDRESS", "-1"),
    ("USERBOARD_SOCKET_HANDSHAKES_PER_ADDRESS", "lots"),
    ("USERBOARD_SOCKET_MESSAGES_PER_CONNECTION", "0/second"),
    ("USERBOARD_SOCKET_MESSAGES_PER_ADDRESS", "10/second;100/minute"),
])
def test_a_bad_limit_is_a_config_error_that_names_it(key, value):
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: value})


def test_the_cli_refuses_a_bad_limit_in_one_line(tmp_path):
    done = ServerProcess(tmp_path, env={"USERBOARD_SOCKET_HANDSHAKES_PER_ADDRESS": "often"}).cli(
        "db", "upgrade")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "USERBOARD_SOCKET_HANDSHAKES_PER_ADDRESS" in done.stderr
