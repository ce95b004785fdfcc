"""The build step pyproject.toml cannot declare: files the wheel carries that are not committed.

- The Socket.IO browser client (web/static/vendor/). When the source tree does not have it yet,
  `npm ci` fetches the version package-lock.json pins (and checks its integrity), and the npm
  postinstall script, scripts/copy-vendor.mjs, copies it into the source tree, where an editable
  install serves it; the wheel gets a copy. Only building needs Node.js; installing the wheel
  does not.
- The gettext catalogs. Each .po is compiled into the wheel as a .mo (the .po stay out of it),
  so the installed package is only ever read. An editable install gets no .mo: the app
  compiles the .po into a cache folder when it starts (userboard.i18n.catalog_folder).

Everything else is in pyproject.toml.
"""

import shutil
import subprocess
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
VENDOR = "web/static/vendor"
BROWSER_CLIENT = ROOT / "src/userboard" / VENDOR / "socket.io.esm.min.js"


class BuildPyWithAssets(build_py):
    """build_py, plus the browser client and the compiled catalogs."""

    def run(self):
        if not BROWSER_CLIENT.exists():
            fetch_browser_client()
        super().run()
        if not self.editable_mode:
            package = Path(self.get_package_dir("userboard"))
            target = Path(self.build_lib) / "userboard"
            self.copy_tree(str(package / VENDOR), str(target / VENDOR))
            compile_catalogs(package / "translations", target / "translations")


def compile_catalogs(sources: Path, target: Path):
    """Compile each sources/LANG/LC_MESSAGES/messages.po to target/LANG/LC_MESSAGES/messages.mo."""
    for po_path in sources.glob("*/LC_MESSAGES/messages.po"):
        mo_path = (target / po_path.relative_to(sources)).with_suffix(".mo")
        mo_path.parent.mkdir(parents=True, exist_ok=True)
        with po_path.open("rb") as po, mo_path.open("wb") as mo:
            write_mo(mo, read_po(po))


def fetch_browser_client():
    """Run `npm ci` in the source tree; its postinstall copies the client into the package."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"{BROWSER_CLIENT.relative_to(ROOT)} is missing and npm is not on the "
                         "PATH: install Node.js with npm to build userboard (or run `npm ci`)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
    if not BROWSER_CLIENT.exists():
        raise SystemExit(f"`npm ci` did not produce {BROWSER_CLIENT.relative_to(ROOT)}")


setup(cmdclass={"build_py": BuildPyWithAssets})
