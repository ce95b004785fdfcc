"""Views, the CSV export, bulk actions and live views on the socket, in process."""

from __future__ import annotations

import csv
import io

from sqlalchemy import insert, select

from userboard.changelog import ChangeLog
from userboard.models import User
from userboard.realtime import SNAPSHOT_MAX


def seed(site, names, **values):
    with site.database.session() as s:
        s.execute(insert(User), [{"username": n, "email": f"{n}@example.com", **values}
                                 for n in names])
        s.commit()
        return {u.username: u.id for u in s.scalars(select(User).where(User.username.in_(names)))}


def get(site, path, **params):
    return site.client.get(path, headers=site.headers, query_string=params)


def test_pages_walk_every_row_once_and_back(fresh_site):
    seed(fresh_site, [f"walk{i:03}" for i in range(23)])
    seen, pages, after = [], [], None
    while True:
        page = get(fresh_site, "/api/users", sort="username", order="desc", limit=5,
                   **({"after": after} if after else {})).get_json()
        pages.append(page)
        seen += [u["username"] for u in page["users"]]
        assert page["total"] == 25  # and root, other
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 25
    back = get(fresh_site, "/api/users", sort="username", order="desc", limit=5,
               after=pages[2]["prev"]).get_json()
    assert back["users"] == pages[1]["users"]
    assert pages[0]["prev"] is None


def test_bulk_action_is_one_transaction_with_consecutive_seqs(fresh_site):
    ids = seed(fresh_site, ["b1", "b2", "b3"])
    before = fresh_site.latest_seq()
    answer = fresh_site.client.post("/api/users/bulk", headers=fresh_site.headers,
                                    json={"action": "disable", "ids": list(ids.values())})
    assert answer.status_code == 200
    assert sorted(answer.get_json()["changed"]) == sorted(ids.values())
    assert answer.get_json()["seq"] == before + 3
    with fresh_site.database.session() as s:
        logged = s.execute(select(ChangeLog.event, ChangeLog.row_key)
                           .where(ChangeLog.seq > before).order_by(ChangeLog.seq)).all()
    assert [e for e, _ in logged] == ["user_updated"] * 3
    assert sorted(int(k) for _, k in logged) == sorted(ids.values())


def test_bulk_action_refusals_change_nothing(fresh_site):
    ids = seed(fresh_site, ["c1", "c2"])
    root = fresh_site.users()[0]["id"]
    state = fresh_site.state()
    cases = [
        ({"action": "disable", "ids": [root, *ids.values()]}, 409),  # root is the only admin
        ({"action": "delete", "ids": [ids["c1"], 999999]}, 404),
        ({"action": "explode", "ids": [ids["c1"]]}, 400),
        ({"action": "disable", "ids": []}, 400),
        ({"action": "disable", "ids": ["1"]}, 400),
        ({"action": "disable", "ids": list(range(1, 1003))}, 400),
    ]
    for body, status in cases:
        answer = fresh_site.client.post("/api/users/bulk", headers=fresh_site.headers, json=body)
        assert answer.status_code == status, (body, answer.get_json())
        assert fresh_site.state() == state


def test_csv_export_equals_the_view_and_neutralises_formulas(fresh_site):
    seed(fresh_site, ["=cmd", "+sum", "-neg", "@at", "plain"])
    with fresh_site.database.session() as s:  # a formula-like email, only possible by SQL
        s.execute(User.__table__.update().where(User.username == "plain")
                  .values(email="=HYPERLINK(1)@example.com"))
        s.commit()
    listed = get(fresh_site, "/api/users", sort="email", order="desc").get_json()["users"]
    answer = get(fresh_site, "/api/users.csv", sort="email", order="desc")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))
    assert rows[0] == ["id", "username", "email", "role", "status", "version", "created_at",
                       "updated_at"]
    assert [int(r[0]) for r in rows[1:]] == [u["id"] for u in listed]
    cells = {r[1]: r[2] for r in rows[1:]}
    assert set(cells) >= {"'=cmd", "'+sum", "'-neg", "'@at", "plain"}
    assert cells["plain"] == "'=HYPERLINK(1)@example.com"
    assert get(fresh_site, "/api/users.csv", limit=5).status_code == 400


def test_a_big_table_gets_users_too_large_instead_of_a_snapshot(fresh_site):
    seed(fresh_site, [f"big{i:05}" for i in range(SNAPSHOT_MAX)])
    socket = fresh_site.socket(auth={"token": fresh_site.token})
    try:
        name, payload = socket.received()[0]
        assert name == "users_too_large"
        assert payload == {"seq": fresh_site.latest_seq(), "total": SNAPSHOT_MAX + 2,
                           "max": SNAPSHOT_MAX}
    finally:
        socket.close()


def test_a_view_socket_gets_its_window_and_follows_changes(fresh_site):
    ids = seed(fresh_site, ["ann1", "ann2", "bob"])
    view = {"q": "ANN", "sort": "username", "order": "desc", "limit": "1"}
    socket = fresh_site.socket(auth={"token": fresh_site.token, "view": view})
    try:
        (name, first), = socket.received()
        assert name == "users_view"
        assert [u["username"] for u in first["users"]] == ["ann2"]
        assert first["total"] == 2 and first["next"] and first["prev"] is None
        fresh_site.client.patch(f"/api/users/{ids['ann2']}", headers=fresh_site.headers,
                                json={"username": "zed", "email": "zed@example.com"})  # leaves
        fresh_site.flush()
        fresh_site.app_state.views.process()
        name, changed = socket.received()[-1]
        assert name == "users_view_changed"
        assert changed["ids"] == [ids["ann1"]] and changed["total"] == 1 and changed["next"] is None
        assert [u["username"] for u in changed["users"]] == ["ann1"]
        assert not socket.changes()  # a view socket gets no whole-table events
        ack = socket.emit("watch", {"sort": "nope"}, namespace="/users", callback=True)
        assert ack["error"]["fields"] == {"sort": "must be one of id, username, email, "
                                                   "created_at, updated_at"}
        ack = socket.emit("watch", {"q": "bob"}, namespace="/users", callback=True)
        assert ack["view"] == 2
        name, second = socket.received()[-1]
        assert name == "users_view" and second["view"] == 2
        assert [u["id"] for u in second["users"]] == [ids["bob"]]
    finally:
        socket.close()


def test_a_bad_view_at_connect_is_refused(fresh_site):
    socket = fresh_site.socket(auth={"token": fresh_site.token, "view": {"limit": "0"}})
    assert not socket.connected_to_users
    assert socket.connect_error["data"]["code"] == "bad_request"
    assert socket.connect_error["data"]["fields"] == {"limit": "must be a whole number from 1 to 200"}


def test_history_says_who_changed_a_user_newest_first_and_outlives_it(fresh_site):
    api = fresh_site.client
    made = api.post("/api/users", headers=fresh_site.headers,
                    json={"username": "hist", "email": "hist@example.com"}).get_json()
    user_id = made["user"]["id"]
    browser, csrf = fresh_site.login()
    assert browser.patch(f"/api/users/{user_id}", json={"role": "admin"},
                         headers={"X-CSRFToken": csrf}).status_code == 200
    assert api.delete(f"/api/users/{user_id}", headers=fresh_site.headers).status_code == 200
    events = api.get(f"/api/users/{user_id}/history", headers=fresh_site.headers).get_json()["events"]
    root = fresh_site.users()[0]["id"]
    assert [(e["event"], e["actor"]) for e in events] == [
        ("user_deleted", {"kind": "token", "user_id": root, "name": "root"}),
        ("user_updated", {"kind": "session", "user_id": root, "name": "root"}),
        ("user_added", {"kind": "token", "user_id": root, "name": "root"}),
    ]
    assert [e["seq"] for e in events] == [made["seq"] + 2, made["seq"] + 1, made["seq"]]
    assert events[1]["changes"]["role"] == "admin" and events[2]["user"]["username"] == "hist"
    assert all(e["committed_at"].endswith("Z") for e in events)
    assert api.get("/api/users/999999/history", headers=fresh_site.headers).status_code == 404


def test_a_new_user_with_a_deleted_users_id_has_only_its_own_history(fresh_site):
    api, headers = fresh_site.client, fresh_site.headers
    old = api.post("/api/users", headers=headers,
                   json={"username": "old", "email": "old@example.com"}).get_json()["user"]
    assert api.patch(f"/api/users/{old['id']}", headers=headers, json={"role": "admin"}).status_code == 200
    assert api.delete(f"/api/users/{old['id']}", headers=headers).status_code == 200
    new = api.post("/api/users", headers=headers,
                   json={"username": "new", "email": "new@example.com"}).get_json()
    assert new["user"]["id"] == old["id"]  # SQLite reuses the largest rowid once it is deleted
    events = api.get(f"/api/users/{old['id']}/history", headers=headers).get_json()["events"]
    assert [(e["event"], e["seq"]) for e in events] == [("user_added", new["seq"])]
