"""Live views against a real `userboard serve` and real Socket.IO clients (issue 11, "done when" #1).

A seeded random run interleaves adds, edits (sort keys and filter fields), deletes, bulk actions
and view changes (connect with a view, `watch`, next / previous pages, `resync`) for four
clients holding different views. At every quiescent point (each client's view at the API's
current seq, told by a view message or a heartbeat) each client's window and total equal
`GET /api/users` for the same view, which equals a hand-written SQL query on the database.
"""

from __future__ import annotations

import random
import time
from datetime import datetime

import pytest
from sqlalchemy import create_engine, text

from userboard import views

from .helpers import ServerProcess, new_postgres_database, seed_admin
from .viewclient import ViewClient, sort_key, wait_all

SEED = 20261125
SECRET = "live-views-secret"
CURSORS = views.Cursors(SECRET)  # the server's: the test can name any page's start as a cursor
# Each quiescent point waits for a heartbeat (every 2 s) unless every view changed.
ROUNDS = {"sqlite": 16, "postgresql": 9}
QS = ("an", "AN", "ann", "n_", "_", ".", "a-n", "bo", "BO", "bob", "xample", "b.test", "e.t", "n0",
      "zz")
PREFIXES = ("ann", "Ann", "anna", "an_n", "an.n", "a-n", "bob", "BOB", "bo_", "zed")


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request, tmp_path):
    """A server on a fresh database, and a plain engine on the same database for direct SQL."""
    env = {"USERBOARD_SECRET_KEY": SECRET}
    if request.param == "sqlite":
        yield from _serve(tmp_path, env, None)
    else:
        with new_postgres_database("userboard_live_views", migrated=True) as url:
            yield from _serve(tmp_path, {**env, "USERBOARD_DATABASE_URL": url}, url)


def _serve(tmp_path, env, url):
    server = ServerProcess(tmp_path, env=env)
    seed_admin(server)
    server.start()
    direct = create_engine(url or f"sqlite:///{tmp_path / server.database_file}")
    try:
        yield server, direct
    finally:
        server.stop()
        direct.dispose()


# -- the view as a hand-written SQL query ------------------------------------------------------


def _iso(value) -> str:
    if isinstance(value, str):  # SQLite keeps "YYYY-MM-DD HH:MM:SS.ffffff"
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _stored(sort: str, value, dialect: str):
    """A key's value as the column stores it."""
    if sort not in ("created_at", "updated_at"):
        return value
    moment = datetime.fromisoformat(value.replace("Z", ""))
    return moment.isoformat(sep=" ", timespec="microseconds") if dialect == "sqlite" else moment


def direct_sql(engine, params: dict, start: tuple | None) -> dict:
    """{"users", "total", "more"} by SQL written here, sharing nothing with userboard.views."""
    dialect = engine.dialect.name
    where, binds = ["1 = 1"], {}
    for field in ("role", "status"):
        if params.get(field):
            where.append(f"{field} = :{field}")
            binds[field] = params[field]
    if params.get("q"):
        find = "instr({}, lower(:q)) > 0" if dialect == "sqlite" else "strpos({}, lower(:q)) > 0"
        where.append(f"({find.format('lower(username)')} OR {find.format('lower(email)')})")
        binds["q"] = params["q"]
    sort = params.get("sort") or "id"
    column = f'{sort} COLLATE "C"' if dialect == "postgresql" and sort in ("username", "email") else sort
    direction = "DESC" if params.get("order") == "desc" else "ASC"
    with engine.connect() as conn:
        total = conn.execute(text(f"SELECT count(*) FROM users WHERE {' AND '.join(where)}"),
                             binds).scalar_one()
        if start is not None:
            where.append(f"({column}, id) {'<' if direction == 'DESC' else '>'} (:start_value, :start_id)")
            binds.update(start_value=_stored(sort, start[0], dialect), start_id=start[1])
        limit = params["limit"]
        found = conn.execute(text(
            "SELECT id, username, email, role, status, version, created_at, updated_at FROM users"
            f" WHERE {' AND '.join(where)} ORDER BY {column} {direction}, id {direction}"
            " LIMIT :limit"), {**binds, "limit": limit + 1}).mappings().all()
    users = [{**row, "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"])}
             for row in found]
    return {"users": users[:limit], "total": total, "more": len(users) > limit}


# -- one client's view, as the test knows it ------------------------------------------------------


class Watcher:
    """A client, the parameters of its view and where its page starts (None: the first page)."""

    def __init__(self, client: ViewClient, params: dict):
        self.client, self.params, self.start = client, params, None

    def api_query(self) -> dict:
        query = {k: v for k, v in self.params.items() if v is not None}
        if self.start is not None:
            view = views.View(sort=self.params["sort"], order=self.params["order"])
            query["after"] = CURSORS.make(view, views.AFTER, self.start)
        return query


def random_params(rnd: random.Random) -> dict:
    return {"q": rnd.choice((None, None, None, None, *QS)),
            "role": rnd.choice((None, None, None, "admin", "user")),
            "status": rnd.choice((None, None, None, "active", "disabled")),
            "sort": rnd.choice(views.SORTS), "order": rnd.choice(("asc", "desc")),
            "limit": rnd.randint(1, 6)}


class Run:
    """The seeded run: the server, its clients, the writes and the checks."""

    def __init__(self, server, direct, seed: int):
        self.server, self.direct = server, direct
        self.rnd = random.Random(seed)
        self.http = server.api()
        self.root = self.get("/api/users", q="root")["users"][0]["id"]
        self.watchers: list[Watcher] = []
        self.steps: list[str] = []  # what happened, printed when a check fails
        self.checks = 0

    def get(self, path: str, **query) -> dict:
        answer = self.http.get(self.server.url + path, params=query)
        assert answer.status_code == 200, answer.text[:300]
        return answer.json()

    def send(self, method: str, path: str, body=None) -> None:
        answer = self.http.request(method, self.server.url + path, json=body)
        # 409: a name clash or the last-admin rule; 404: a row deleted meanwhile. Both change nothing.
        assert answer.status_code in (200, 201, 404, 409), answer.text[:300]
        self.steps.append(f"{method} {path} {body} -> {answer.status_code}")

    def ids(self) -> list[int]:
        with self.direct.connect() as conn:
            return [i for (i,) in conn.execute(text("SELECT id FROM users ORDER BY id"))
                    if i != self.root]

    # -- writes -----------------------------------------------------------------------------

    def name(self) -> str:
        middle = self.rnd.choice(("", "0", "_", "x", "."))
        return f"{self.rnd.choice(PREFIXES)}{middle}{self.rnd.randrange(60)}"

    def add(self) -> None:
        name = self.name()
        body = {"username": name, "email": f"{name}@{self.rnd.choice(('example.test', 'b.test'))}",
                "role": self.rnd.choice(("admin", "user", "user")),
                "status": self.rnd.choice(("active", "active", "disabled"))}
        self.send("POST", "/api/users", body)

    def edit(self) -> None:
        ids = self.ids()
        if not ids:
            return self.add()
        body = {}
        while not body:
            if self.rnd.random() < 0.4:
                body["username"] = self.name()
            if self.rnd.random() < 0.3:
                body["email"] = f"{self.name()}@{self.rnd.choice(('a.test', 'example.test'))}"
            if self.rnd.random() < 0.4:
                body["role"] = self.rnd.choice(("admin", "user"))
            if self.rnd.random() < 0.4:
                body["status"] = self.rnd.choice(("active", "disabled"))
        self.send("PATCH", f"/api/users/{self.rnd.choice(ids)}", body)

    def remove(self) -> None:
        ids = self.ids()
        if ids:
            self.send("DELETE", f"/api/users/{self.rnd.choice(ids)}")

    def bulk(self) -> None:
        ids = self.ids()
        if ids:
            action = self.rnd.choice(("disable", "enable", "make-admin", "make-user", "delete"))
            chosen = self.rnd.sample(ids, min(len(ids), self.rnd.randint(1, 8)))
            self.send("POST", "/api/users/bulk", {"action": action, "ids": chosen})

    # -- views ------------------------------------------------------------------------------

    def connect(self, with_view: bool) -> None:
        params = random_params(self.rnd)
        query = {k: v for k, v in params.items() if v is not None}
        client = ViewClient(self.server.url, self.server.token, query if with_view else None)
        client.connect()
        watcher = Watcher(client, params)
        self.watchers.append(watcher)
        if with_view:
            assert client.wait_for(lambda r: r.number == 1), "no users_view after connect"
            self.steps.append(f"connect {len(self.watchers)} with {query}")
        else:
            self.watch(watcher, params, None)

    def watch(self, watcher: Watcher, params: dict, page: str | None) -> None:
        """A new view, or the next / previous page of the one held."""
        query = {k: v for k, v in params.items() if v is not None}
        held = watcher.client.snapshot()
        if page is not None:
            query["after"] = held[page]
        ack = watcher.client.call("watch", query)
        assert "error" not in ack, ack
        assert watcher.client.wait_for(lambda r: r.number == ack["view"]), "no users_view after watch"
        watcher.params = params
        if page == "next":
            watcher.start = tuple(CURSORS.read(query["after"], params["sort"], params["order"])[1])
        elif page == "prev":
            watcher.start = self.start_before(watcher)
        else:
            watcher.start = None
        self.steps.append(f"client {self.watchers.index(watcher) + 1} watch {query} (page {page})")

    def start_before(self, watcher: Watcher) -> tuple | None:
        """The start a "prev" page was anchored to: the row before its first row, if any."""
        shown = watcher.client.snapshot()
        if shown["prev"] is None:
            return None
        if not shown["users"]:  # an empty page keeps the start it was anchored to
            return tuple(CURSORS.read(shown["prev"], watcher.params["sort"],
                                      watcher.params["order"])[1])
        first = sort_key(watcher.params, shown["users"][0])
        everything = direct_sql(self.direct, {**watcher.params, "limit": 10**6}, None)["users"]
        keys = [sort_key(watcher.params, row) for row in everything]
        return keys[keys.index(first) - 1]

    def change_view(self) -> None:
        watcher = self.rnd.choice(self.watchers)
        held = watcher.client.snapshot()
        pages = [p for p in ("next", "prev") if held[p] is not None]
        if pages and self.rnd.random() < 0.5:
            page = self.rnd.choice(pages)
            params = {**random_params(self.rnd), "sort": watcher.params["sort"],
                      "order": watcher.params["order"]}
            if self.rnd.random() < 0.7:  # mostly the same filters: a real pager
                params = watcher.params
            self.watch(watcher, params, page)
        else:
            self.watch(watcher, random_params(self.rnd), None)

    def resync(self) -> None:
        watcher = self.rnd.choice(self.watchers)
        number = watcher.client.snapshot()["view"]
        ack = watcher.client.call("resync", {"view": number})
        assert ack.get("view") == number, ack
        self.steps.append(f"client {self.watchers.index(watcher) + 1} resync")

    # -- the check --------------------------------------------------------------------------

    def check(self) -> None:
        """At a quiescent point: client window == API answer == direct SQL, for every client."""
        self.checks += 1
        seq = self.get("/api/users", limit="1")["seq"]
        late = wait_all([w.client for w in self.watchers], seq)
        assert not late, f"clients never reached seq {seq}: {[w.snapshot() for w in late]}"
        for number, watcher in enumerate(self.watchers, start=1):
            where = f"client {number}, view {watcher.params} from {watcher.start}, after:\n" + \
                "\n".join(self.steps[-12:])
            held = watcher.client.snapshot()
            answer = self.get("/api/users", **watcher.api_query())
            assert answer["seq"] == seq == held["seq"], where
            assert held["users"] == answer["users"], where
            assert held["total"] == answer["total"], where
            assert held["prev"] == answer["prev"], where
            # Known issues (tests/test_views.py: test_next_is_null_once_the_rows_after_the_window_
            # leave, test_a_pass_that_changes_only_next_tells_the_client): a client's `next` may
            # be null where the API has one, or the reverse. Two cursors must still agree.
            if held["next"] is not None and answer["next"] is not None:
                assert held["next"] == answer["next"], where
            sql = direct_sql(self.direct, watcher.params, watcher.start)
            assert answer["users"] == sql["users"], where
            assert answer["total"] == sql["total"], where
            assert (answer["next"] is not None) == sql["more"], where
            assert watcher.client.table_events_after_first_view() == [], where

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.client.close()


def test_clients_views_equal_the_api_and_sql_through_random_writes_and_view_changes(live):
    server, direct = live
    run = Run(server, direct, seed=SEED)
    try:
        for _ in range(30):
            run.add()
        for with_view in (True, False, True, False):
            run.connect(with_view)
        run.check()
        writes = (run.add, run.add, run.edit, run.edit, run.edit, run.remove, run.bulk)
        for _ in range(ROUNDS[direct.dialect.name]):
            for _ in range(run.rnd.randint(2, 8)):
                roll = run.rnd.random()
                if roll < 0.2:
                    run.change_view()
                elif roll < 0.25:
                    run.resync()
                else:
                    run.rnd.choice(writes)()
            run.check()
        assert run.checks == ROUNDS[direct.dialect.name] + 1
        # Not vacuous: the views followed changes, not only heartbeats.
        changed = sum(name == "users_view_changed" for w in run.watchers for name, _ in w.client.log)
        assert changed >= ROUNDS[direct.dialect.name]
    finally:
        run.close()


# -- bad views on the wire ---------------------------------------------------------------------

BAD_VIEWS = [
    ({"sort": "nope"}, "sort"),
    ({"limit": "0"}, "limit"),
    ({"limit": "10000"}, "limit"),
    ({"after": "forged.cursor"}, "after"),
    ({"q": "x" * 10240}, "q"),
    ({"sort": "email", "after": CURSORS.make(views.View(sort="username"), views.AFTER, ("a", 1))},
     "after"),
]


@pytest.mark.parametrize("params, field", [p for p in BAD_VIEWS if len(str(p)) < 8000]
                         + [({"q": "x" * 5000}, "q")])
def test_the_api_answers_bad_view_parameters_with_400(server, params, field):
    answer = server.api().get(server.url + "/api/users", params=params)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["code"] == "bad_request"
    assert field in answer.json()["error"]["fields"]


def test_a_bad_watch_gets_an_error_ack_and_the_old_view_stays(server):
    client = ViewClient(server.url, server.token, {"limit": "2"}).connect()
    try:
        assert client.wait_for(lambda r: r.number == 1)
        for params, field in BAD_VIEWS:
            ack = client.call("watch", params)
            assert ack["error"]["code"] == "bad_request" and field in ack["error"]["fields"], ack
        assert client.call("watch", {"limit": "3"})["view"] == 2  # still served
        assert client.snapshot()["view"] == 2
    finally:
        client.close()


def test_a_watch_with_a_lone_surrogate_closes_the_connection(server):
    """A lone surrogate escape is malformed JSON (docs/protocol.md): the packet is refused
    before any handler and the connection closed; the server goes on serving."""
    client = ViewClient(server.url, server.token, {"limit": "2"}).connect()
    try:
        client.sio.emit("watch", {"q": "a\ud800"}, namespace="/users")
        deadline = time.monotonic() + 5
        while client.sio.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.sio.connected
    finally:
        client.close()
    again = ViewClient(server.url, server.token, {"limit": "2"}).connect()
    try:
        assert again.wait_for(lambda r: r.seq >= 0, 5)
    finally:
        again.close()


def test_a_query_string_of_10_kb_is_refused_before_the_app(server):
    """gevent's pywsgi refuses a request line over 8 KB (414), so such a `q` never reaches
    parse_view; over the socket it does, and gets the 400 above."""
    answer = server.api().get(server.url + "/api/users", params={"q": "x" * 10240})
    assert answer.status_code == 414
