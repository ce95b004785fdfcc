"""docs/deployment.md's nginx configuration, for real: Debian's nginx with TLS in front of two
servers (USERBOARD_PROXY_HOPS=1) on one PostgreSQL database and one Redis.

The configuration is read from the docs (after the `<!-- nginx-config -->` marker) and only its
ports, certificate and key are substituted, so the docs cannot drift from what is tested. nginx
runs unprivileged with a prefix of its own and a certificate made here by openssl. Clients come
from two loopback addresses, 127.0.0.1 and 127.0.0.2, as two different hosts would.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import websocket
from requests.adapters import HTTPAdapter

from .helpers import (
    ADMIN_PASSWORD,
    LiveClient,
    ServerProcess,
    free_port,
    need,
    new_postgres_database,
    wait_until,
)
from .inprocess import csrf_of
from .test_scale import start_pair

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # /usr/sbin is not on every PATH
MARKER = "<!-- nginx-config -->"


def documented_config() -> str:
    """The nginx configuration block that docs/deployment.md shows after the marker."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    after = text[text.index(MARKER) + len(MARKER):]
    match = re.match(r"\s*```nginx\n(.*?)\n```", after, re.S)
    assert match, "docs/deployment.md: no ```nginx block right after the marker"
    return match.group(1)


def substitute(config: str, replacements: dict[str, str]) -> str:
    """Replace each documented value once; a value the docs no longer show fails the test."""
    for documented, actual in replacements.items():
        assert config.count(documented) == 1, f"docs/deployment.md: {documented!r} not shown once"
        config = config.replace(documented, actual)
    return config


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


class NginxProcess:
    """nginx in the foreground, with a prefix directory of its own for logs, pid and temp files."""

    def __init__(self, directory: Path, site_config: str, port: int):
        self.directory, self.port = directory, port
        temp = "\n".join(f"    {kind}_temp_path {directory / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root, nginx would switch its workers to an unprivileged user who cannot enter
        # pytest's private temporary directory: keep them root (elsewhere nginx runs as the caller).
        user = "user root;\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"{user}worker_processes 1;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n{site_config}\n}}\n"
        )
        self.popen = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"),
             "-e", str(directory / "error.log"), "-g", f"daemon off; pid {directory / 'nginx.pid'};"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._accepts():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("nginx did not start:\n" + self.error_log())
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(10)


@dataclass
class Deployment:
    url: str  # https://127.0.0.1:PORT, through nginx
    cert: str
    servers: list[ServerProcess]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, redis_url):
    """nginx (TLS, the documented configuration) in front of two servers on PostgreSQL + Redis."""
    need(Path(NGINX).exists(), "nginx is not installed (apt-get install nginx)")
    need(shutil.which("openssl") is not None, "openssl is not installed")
    directory = tmp_path_factory.mktemp("nginx")
    cert, key = make_certificate(directory)
    with new_postgres_database("userboard_nginx") as database_url:
        servers = start_pair(directory, database_url, redis_url, USERBOARD_PROXY_HOPS="1")
        nginx = None
        try:
            port = free_port()
            config = substitute(documented_config(), {
                "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
                "server 127.0.0.1:5001;": f"server 127.0.0.1:{servers[0].port};",
                "server 127.0.0.1:5002;": f"server 127.0.0.1:{servers[1].port};",
                "/etc/ssl/certs/users.example.com.pem": str(cert),
                "/etc/ssl/private/users.example.com.key": str(key),
            })
            nginx = NginxProcess(directory, config, port)
            yield Deployment(f"https://127.0.0.1:{port}", str(cert), servers)
        finally:
            if nginx is not None:
                nginx.stop()
            for server in servers:
                server.stop()


class FromAddress(HTTPAdapter):
    """Connect from a given local address (any of 127.0.0.0/8 is this host on Linux)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser(deployment: Deployment, address: str = "127.0.0.1") -> requests.Session:
    """An https client of the proxy, from `address`, that trusts the test's certificate."""
    http = requests.Session()
    http.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment wins over `verify`
    http.verify = deployment.cert
    http.mount("https://", FromAddress(address))
    return http


def post_login(http: requests.Session, base: str, username: str, password: str, **headers):
    """The login form as a browser submits it; the answer (a redirect if it worked) is returned."""
    csrf = csrf_of(http.get(base + "/login", headers=headers).text)
    return http.post(base + "/login", allow_redirects=False, headers=headers,
                     data={"username": username, "password": password, "csrf_token": csrf})


def test_login_over_https_sets_a_secure_session_cookie(deployment):
    http = browser(deployment)
    answer = post_login(http, deployment.url, "root", ADMIN_PASSWORD)
    assert answer.status_code == 302, answer.text[:300]
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("session=") and "; Secure" in cookie and "HttpOnly" in cookie
    page = http.get(deployment.url + "/")
    assert page.status_code == 200 and 'id="users"' in page.text


def test_the_live_socket_over_wss_gets_changes_made_through_either_server(deployment):
    http = browser(deployment)
    assert post_login(http, deployment.url, "root", ADMIN_PASSWORD).status_code == 302
    # The login cookie and the certificate go along; the websocket sends the page's own Origin.
    client = LiveClient(deployment.url, http_session=http).connect()
    try:
        assert client.wait_for(lambda c: c.snapshots())
        for n, server in enumerate(deployment.servers):  # nginx picked one; the other relays
            added = server.api().post(server.url + "/api/users",
                                      json={"username": f"via_{n}", "email": f"via{n}@example.com"})
            assert added.status_code == 201, added.text
        assert client.wait_for(lambda c: {d["user"]["username"] for n, d in c.changes()
                                          if n == "user_added"} >= {"via_0", "via_1"})
    finally:
        client.close()


def test_the_throttle_is_keyed_on_the_client_address_and_shared_by_both_servers(deployment):
    attacker = browser(deployment, "127.0.0.2")
    for n in range(5):  # a new name each time: only the address key counts; a forged
        # X-Forwarded-For is kept by nginx, but the servers read the value nginx added
        failed = post_login(attacker, deployment.url, f"nobody_{n}", "guess",
                            **{"X-Forwarded-For": f"10.9.9.{n}"})
        assert failed.status_code == 401, failed.text[:300]
    throttled = post_login(attacker, deployment.url, "nobody_5", "guess")
    assert throttled.status_code == 429
    wait = int(throttled.headers["Retry-After"])
    assert wait >= 1 and f"Try again in {wait} seconds" in throttled.text
    # Each server, asked directly as nginx would ask it for 127.0.0.2, knows of the failures.
    for server in deployment.servers:
        answer = post_login(requests.Session(), server.url, "nobody_6", "guess",
                            **{"X-Forwarded-For": "127.0.0.2"})
        assert answer.status_code == 429 and "Retry-After" in answer.headers
    # Another client address is not slowed down by them.
    assert post_login(browser(deployment), deployment.url, "root", ADMIN_PASSWORD).status_code == 302
    # The servers' output arrives through a pipe.
    assert wait_until(lambda: "failed login for 'nobody_0' from 127.0.0.2" in "".join(
        line for server in deployment.servers for line in server.output), 5), \
        "the log does not show the client's own address"


def test_a_foreign_origin_is_refused_by_http_and_websocket_handshakes(deployment):
    def polling(origin):
        return requests.get(deployment.url + "/socket.io/?EIO=4&transport=polling",
                            headers={"Origin": origin}, verify=deployment.cert).status_code

    assert polling("https://evil.example") == 400
    assert polling(deployment.url.replace("https", "http")) == 400  # not the page's scheme
    assert polling(deployment.url) == 200
    url = deployment.url.replace("https", "wss") + "/socket.io/?EIO=4&transport=websocket"
    tls = {"ca_certs": deployment.cert}
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, origin="https://evil.example", sslopt=tls, timeout=5)
    assert refused.value.status_code == 400
    ws = websocket.create_connection(url, origin=deployment.url, sslopt=tls, timeout=5)
    try:
        assert ws.recv().startswith("0{")
    finally:
        ws.close()
