"""Every UI message has a Simplified Chinese translation; pages follow Accept-Language."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from babel.support import Translations

from userboard.i18n import catalog_folder, compile_catalog

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "src/userboard/translations/zh_Hans_CN/LC_MESSAGES/messages.po"


def test_every_message_is_translated():
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    keywords = {"_": None, "gettext": None, "_l": None, "N_": None}
    found = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / "src/userboard", method_map=method_map, keywords=keywords
        )
    }
    with CATALOG.open("rb") as f:
        catalog = read_po(f)
    translated = {m.id for m in catalog if m.id and m.string}
    assert found, "no messages extracted"
    assert sorted(found - translated) == []


def test_accept_language_picks_the_page_language(client):
    zh = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    en = client.get("/login", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="zh-CN">' in zh.text and "登录" in zh.text
    assert '<html lang="en">' in en.text and "Log in" in en.text


def test_language_switch_is_remembered_and_redirects_only_locally(client):
    answer = client.get("/language/zh_CN?next=//evil.example/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert "登录" in client.get("/login", headers={"Accept-Language": "en"}).text


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def _translate(folder: Path, message: str) -> str:
    return Translations.load(str(folder), ["zh_Hans_CN"]).gettext(message)


def test_a_source_checkout_compiles_its_catalogs_into_the_cache_not_the_package(
        tmp_path, monkeypatch):
    sources = tmp_path / "translations"
    shutil.copytree(CATALOG.parents[2], sources)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = _listing(sources)
    folder = catalog_folder(sources)
    assert folder.is_relative_to(tmp_path / "cache")
    assert _translate(folder, "Log in") == "登录"
    assert _listing(sources) == before
    po_path = sources / "zh_Hans_CN/LC_MESSAGES/messages.po"
    po_path.write_text(po_path.read_text().replace('msgstr "登录"', 'msgstr "登入"', 1))
    edited = catalog_folder(sources)
    assert edited != folder and _translate(edited, "Log in") == "登入"


def test_an_installed_package_reads_its_compiled_catalogs_in_place(tmp_path):
    mo_path = tmp_path / "zh_Hans_CN/LC_MESSAGES/messages.mo"
    compile_catalog(CATALOG, mo_path)
    assert catalog_folder(tmp_path) == tmp_path
    assert _translate(tmp_path, "Log in") == "登录"


def test_compiling_one_catalog_at_once_from_many_threads_leaves_one_whole_file(tmp_path):
    mo_path = tmp_path / "zh_Hans_CN/LC_MESSAGES/messages.mo"
    start = threading.Barrier(8)
    errors = []

    def compile_together():
        start.wait()
        try:
            compile_catalog(CATALOG, mo_path)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=compile_together) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in mo_path.parent.iterdir()] == ["messages.mo"]
    assert _translate(tmp_path, "Log in") == "登录"
