"""Make docs/screenshot.png: two dashboard tabs side by side, one English, one Simplified Chinese.

Starts its own `userboard serve` on a temporary SQLite database, logs in two browser contexts
(Debian's chromium through Playwright), changes users in one and captures both; the Chinese tab
holds another view (sorted by username), which the changes enter at their sorted place. For the
Chinese tab, install a CJK font first (apt-get install fonts-wqy-zenhei).

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS, Tab  # noqa: E402
from tests.helpers import ServerProcess  # noqa: E402

PEOPLE = [
    ("mei.lin", "mei.lin@example.com", "admin"),
    ("oskar", "oskar@example.com", "user"),
    ("priya_r", "priya@example.com", "user"),
    ("tomasz", "tomasz@example.com", "user"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        server = ServerProcess(Path(workdir))
        server.setup_admin()
        server.start()
        try:
            api = server.api()
            ids = []
            for name, email, role in PEOPLE:
                answer = api.post(server.url + "/api/users",
                                  json={"username": name, "email": email, "role": role})
                ids.append(answer.json()["user"]["id"])
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                     args=CHROMIUM_ARGS)
                left = Tab(browser, server, locale="en-US")
                right = Tab(browser, server, locale="zh-CN")
                right.open("/?sort=username")
                for tab in (left, right):
                    tab.page.set_viewport_size({"width": 760, "height": 900})
                # Changes made in the left tab show up live on the right.
                left.page.fill("#add-user input[name=username]", "new_hire")
                left.page.fill("#add-user input[name=email]", "new.hire@example.com")
                left.page.click("#add-user button[type=submit]")
                api.patch(f"{server.url}/api/users/{ids[2]}", json={"status": "disabled"})
                right.page.locator('td[data-field="username"]', has_text="new_hire").wait_for()
                right.page.wait_for_timeout(300)
                shots = [tab.page.screenshot() for tab in (left, right)]
                board = browser.new_page(viewport={"width": 1540, "height": 920})
                images = "".join(
                    f'<img src="data:image/png;base64,{base64.b64encode(s).decode()}">'
                    for s in shots
                )
                board.set_content(
                    "<body style='margin:0;background:#c9ced6;display:flex;gap:10px;"
                    f"padding:10px'>{images}</body>"
                )
                board.screenshot(path=args.out)
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
