"""An in-process app (Flask test client, threading mode) for fast property and schema tests."""

from __future__ import annotations

import re

from sqlalchemy import select

from userboard.app import create_app
from userboard.auth import create_token, hash_password
from userboard.extension import app_state
from userboard.migrations import upgrade
from userboard.models import ChangeLog, User

PASSWORD = "in-process-pass"


class InProcess:
    def __init__(self, tmp_path, **config):
        url = f"sqlite:///{tmp_path / 'inproc.db'}"
        upgrade(url)
        self.app = create_app({"DATABASE_URL": url, "SOCKETIO_ASYNC_MODE": "threading",
                               "SECRET_KEY": "in-process", **config})
        self.db = app_state(self.app).database
        with self.db.session() as s:
            admin = User(username="root", email="root@example.com", role="admin",
                         password_hash=hash_password(PASSWORD))
            s.add(admin)
            s.add(User(username="other", email="other@example.com"))
            s.commit()
            self.token = create_token(s, admin)
        self.client = self.app.test_client()
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def state(self):
        """Everything a rejected request must leave alone: users and the change log."""
        with self.db.session() as s:
            users = [u.to_dict() for u in s.scalars(select(User).order_by(User.id))]
            log = s.scalars(select(ChangeLog.seq)).all()
        return users, log

    def login(self):
        """A logged-in browser-like client and its CSRF token."""
        browser = self.app.test_client()
        page = browser.get("/login").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        answer = browser.post("/login", data={"username": "root", "password": PASSWORD,
                                              "csrf_token": csrf})
        assert answer.status_code == 302
        page = browser.get("/").text
        return browser, re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)

    def close(self):
        self.db.engine.dispose()
