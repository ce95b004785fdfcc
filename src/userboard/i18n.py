"""UI languages: English and Simplified Chinese, chosen from Accept-Language or the page switch.

Catalogs are written as .po files in `translations/` (Simplified Chinese in `zh_Hans_CN`, the
name Babel gives "zh_CN"); the .mo files gettext reads are compiled
from them when the app starts (and whenever a .po is newer), so only the source is committed.
"""

from __future__ import annotations

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


def compile_catalogs(folder: Path = TRANSLATIONS) -> None:
    """Compile each messages.po to messages.mo when the .mo is missing or older."""
    for po_path in folder.glob("*/LC_MESSAGES/messages.po"):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as f:
            catalog = read_po(f)
        tmp = mo_path.with_suffix(".mo.tmp")
        with tmp.open("wb") as f:
            write_mo(f, catalog)
        tmp.replace(mo_path)


def init_app(app: Flask) -> None:
    compile_catalogs()
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.jinja_env.globals["current_language"] = select_language
