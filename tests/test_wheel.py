"""The wheel runs anywhere Python runs: built once from a copy of the source tree (which must
fetch the Socket.IO browser client itself), installed into a fresh venv with no Node.js on the
PATH, and served from a folder outside the source tree, where Chromium logs in and sees a change
made by the installed CLI without a reload. The installed package is never written to."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from userboard.bench.processes import ChildProcess, free_port

from .browser import Tab
from .helpers import need

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "dist", "*.egg-info",
                                    "__pycache__", ".*_cache", "vendor", "*.mo", "*.db")
INSTALLED_FILES = (
    "userboard/alembic/env.py",
    "userboard/alembic/versions/0001_initial.py",
    "userboard/translations/zh_Hans_CN/LC_MESSAGES/messages.mo",
    "userboard/web/static/vendor/socket.io.esm.min.js",
)


def clean_env(**extra) -> dict:
    """This process's environment without what points into the source tree or at a database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("USERBOARD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    need(shutil.which("npm") is not None, "building the wheel needs npm (apt-get install npm)")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist",
         source], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [built] = (work / "dist").glob("userboard-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed, and the environment to run it in: no Node.js."""
    work = tmp_path_factory.mktemp("installed")
    venv.create(work / "venv", with_pip=False)
    (work / "bin-without-node").mkdir()
    path = os.pathsep.join([str(work / "venv/bin"), str(work / "bin-without-node")])
    assert shutil.which("node", path=path) is None and shutil.which("npm", path=path) is None
    # Bytecode goes to a folder of its own (compiled once, by the first process), so that the
    # package folder stays exactly as pip left it; --no-compile keeps the install short.
    env = clean_env(PATH=path, PYTHONPYCACHEPREFIX=str(work / "pycache"),
                    XDG_CACHE_HOME=str(work / "cache"),
                    USERBOARD_DATABASE_URL=f"sqlite:///{work / 'run' / 'userboard.db'}")
    # Dependencies come from the index pip is configured with (and its cache), at the versions
    # the rest of the suite runs with.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", work / "venv/bin/python", "install", "-q",
         "--no-compile", "-c", ROOT / "constraints.txt", wheel],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    package = Path(subprocess.run(
        [work / "venv/bin/python", "-c", "import userboard; print(userboard.__file__)"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()).parent
    assert package.is_relative_to(work / "venv")
    (work / "run").mkdir()
    return {"bin": work / "venv/bin", "env": env, "cwd": work / "run", "package": package,
            "cache": work / "cache"}


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def test_the_wheel_carries_migrations_catalogs_and_the_browser_client(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(INSTALLED_FILES) <= names
    assert not any(name.endswith(".po") for name in names)
    assert any(name.endswith("/licenses/LICENSE") for name in names)


def test_the_installed_command_prints_its_version(installed, wheel):
    done = subprocess.run([installed["bin"] / "userboard", "--version"], env=installed["env"],
                          cwd=installed["cwd"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"userboard {wheel.name.split('-')[1]}\n"


def test_the_installed_wheel_serves_a_live_dashboard_without_node(installed, chromium):
    before = listing(installed["package"])
    port = free_port()
    server = ChildProcess([installed["bin"] / "userboard", "serve", "--port", str(port)],
                          env=installed["env"], cwd=installed["cwd"])
    try:
        [password] = re.findall(r"with password: (\S+)", "".join(server.lines))
        url = f"http://127.0.0.1:{port}"
        chinese = requests.get(url + "/login", headers={"Accept-Language": "zh-CN"}, timeout=10)
        assert "登录" in chinese.text  # the catalog compiled into the wheel
        tab = Tab(chromium, SimpleNamespace(url=url), login=False)
        tab.login("admin", password)  # waits for the socket: the wheel's browser client
        tab.mark_no_reload()
        added = subprocess.run(
            [installed["bin"] / "userboard", "users", "add", "carol", "--email",
             "carol@example.com"], env=installed["env"], cwd=installed["cwd"],
            capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        tab.page.wait_for_selector('table#users td[data-field="username"]:text-is("carol")')
        assert tab.was_not_reloaded() and tab.errors == []
        tab.close()
    finally:
        server.stop()
    assert listing(installed["package"]) == before
    assert not installed["cache"].exists()
