"""Every UI message has a Simplified Chinese translation; pages follow Accept-Language."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

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
