"""UI languages: English and Simplified Chinese, chosen from Accept-Language or the page switch.

Catalogs are written as .po files in `translations/` (Simplified Chinese in `zh_Hans_CN`, the
name Babel gives "zh_CN"). Only they are committed; the .mo files gettext reads are compiled
from them, at build time into the wheel, or at start-up into a cache folder for a source
checkout (see `catalog_folder`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, request, session
from flask_babel import Babel

LANGUAGES = {"en": "English", "zh_CN": "简体中文"}
TRANSLATIONS = Path(__file__).parent / "translations"


def select_language() -> str:
    """The page's language code: the switch's choice, else the browser's Accept-Language."""
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    best = request.accept_languages.best_match(["en", "zh_CN", "zh"], default="en")
    return "zh_CN" if best.startswith("zh") else "en"


def select_locale() -> str:
    # Babel reads "zh_CN" as zh_Hans_CN, hence the catalog folder's name.
    return select_language()


def catalog_folder(sources: Path = TRANSLATIONS) -> Path:
    """The folder of compiled catalogs to read. Never writes into the package.

    A wheel carries the .mo files, compiled when it was built (setup.py), and no .po: they are
    read where they are, so a read-only install works. A source checkout has the .po files
    only: they are compiled into a per-user cache folder named after their content, so an
    edited .po gets a new folder and nothing read is ever stale.
    """
    po_paths = sorted(sources.glob("*/LC_MESSAGES/messages.po"))
    if not po_paths:
        return sources
    digest = hashlib.sha256()
    for po_path in po_paths:
        digest.update(po_path.relative_to(sources).as_posix().encode() + b"\0")
        digest.update(po_path.read_bytes())
    folder = _cache_home() / "userboard" / f"catalogs-{digest.hexdigest()[:16]}"
    for po_path in po_paths:
        mo_path = folder / po_path.relative_to(sources).with_suffix(".mo")
        if not mo_path.exists():
            compile_catalog(po_path, mo_path)
    return folder


def compile_catalog(po_path: Path, mo_path: Path) -> None:
    """Compile a .po file to `mo_path` through a unique temporary file and an atomic rename, so
    processes that start together never race on one file nor read a half-written catalog."""
    with po_path.open("rb") as f:
        catalog = read_po(f)
    mo_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=mo_path.parent, prefix=f".{mo_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_mo(f, catalog)
        os.replace(tmp, mo_path)
    except BaseException:
        os.unlink(tmp)
        raise


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def init_app(app: Flask) -> None:
    if "BABEL_TRANSLATION_DIRECTORIES" not in app.config:
        app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(catalog_folder())
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.jinja_env.globals["current_language"] = select_language
