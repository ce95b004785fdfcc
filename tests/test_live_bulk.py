"""ORM bulk INSERT from a script reaches a real server's socket clients as user_added events."""

from __future__ import annotations

from sqlalchemy import insert

from userboard.bootstrap import open_database
from userboard.models import User

from .helpers import LiveClient


def test_bulk_insert_by_a_script_reaches_a_socket_client_in_order(server):
    client = LiveClient(server.url, auth={"token": server.token}).connect()
    try:
        assert client.wait_for(lambda c: c.snapshots())
        start = client.snapshots()[0]["seq"]
        names = [f"bulk{i:02}" for i in range(25)]
        database = open_database(server.env["USERBOARD_DATABASE_URL"])  # no queue: the relay
        try:
            with database.session() as session:
                session.execute(insert(User), [
                    {"username": n, "email": f"{n}@example.com"} for n in names])
                session.commit()
        finally:
            database.close()
        assert client.wait_for_seq(start + len(names))
        changes = client.changes()
        assert [d["seq"] for _, d in changes] == list(range(start + 1, start + len(names) + 1))
        assert {n for n, _ in changes} == {"user_added"}
        assert [d["user"]["username"] for _, d in changes] == names
        listed = {u["username"]: u for u in server.api().get(server.url + "/api/users").json()["users"]}
        assert [listed[n] for n in names] == [d["user"] for _, d in changes]
    finally:
        client.close()
