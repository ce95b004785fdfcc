"""Views stay exact: parameters, windows, cursors, totals, CSV and the live engine, in-process.

Every answer is checked against a naive Python evaluation over all rows (tests/viewclient.py),
on SQLite and PostgreSQL, for many random views (Hypothesis, fixed seed). The live engine is
driven by a state machine that interleaves writes and view changes and checks, after every
pass, that each subscription and each client replaying its messages holds `views.answer()`.
"""

from __future__ import annotations

import copy
import csv
import io
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, event, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from userboard import csv_export, views
from userboard.capture import current_seq, install_capture
from userboard.db import make_engine, make_session_factory
from userboard.models import User, user_dict
from userboard.users import BadRequest, LastAdmin, UserError, bulk_update, create_user, update_user
from userboard.viewengine import ViewEngine

from .helpers import migrated_sqlite, new_postgres_database
from .viewclient import ViewReplica, ascii_lower, ordered, reference, sort_key

SECRET = "test-views-secret"
SORTS = views.SORTS


class Database:
    """A migrated database (triggers, FTS / pg_trgm, user_totals) with capturing sessions."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine)
        install_capture(self.sessions)
        self.dialect = self.engine.dialect.name
        self.lower = ascii_lower if self.dialect == "sqlite" else DatabaseLower(self.engine)

    def rows(self) -> list[dict]:
        with self.sessions() as session:
            return [user_dict(u) for u in session.scalars(select(User))]

    def reset(self) -> None:
        """Empty the users and the change log (triggers keep user_totals and the FTS table)."""
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("TRUNCATE users, api_tokens, login_sessions, change_log"
                                  " RESTART IDENTITY"))
            else:
                for table in ("api_tokens", "login_sessions", "users", "change_log"):
                    conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("UPDATE seq_counter SET value = 0"))

    def close(self) -> None:
        self.engine.dispose()


class DatabaseLower:
    """PostgreSQL's own lower(): the documented meaning of "case-insensitive" there."""

    def __init__(self, engine):
        self.engine = engine
        self.known: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        if value not in self.known:
            with self.engine.connect() as conn:
                self.known[value] = conn.execute(text("SELECT lower(:v)"), {"v": value}).scalar_one()
        return self.known[value]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A fresh migrated database per test."""
    if request.param == "sqlite":
        db = Database(migrated_sqlite(tmp_path / "views.db"))
        yield db
        db.close()
        return
    with new_postgres_database("userboard_views", migrated=True) as url:
        db = Database(url)
        yield db
        db.close()


# -- parameters -------------------------------------------------------------------------------

CURSORS = views.Cursors(SECRET)


def cursor(direction: str, key: tuple, sort: str = "id", order: str = "asc") -> str:
    return CURSORS.make(views.View(sort=sort, order=order), direction, key)


def forged() -> str:
    """A real cursor whose key was changed after signing."""
    token = cursor(views.AFTER, (5, 5))
    body, _, signature = token.partition(".")
    other = cursor(views.AFTER, (6, 6)).partition(".")[0]
    assert other != body
    return other + "." + signature


def known_issue(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


@pytest.mark.parametrize("params, field", [
    ({"sort": "name"}, "sort"),
    ({"sort": "password_hash"}, "sort"),
    ({"sort": ["id"]}, "sort"),
    ({"order": "up"}, "order"),
    ({"limit": "0"}, "limit"),
    ({"limit": 0}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"limit": "10000"}, "limit"),
    ({"limit": "abc"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": " 5"}, "limit"),
    ({"limit": "\u0665"}, "limit"),  # an Arabic-Indic five: a digit to str.isdigit, not to us
    ({"limit": True}, "limit"),
    ({"limit": 5.0}, "limit"),
    ({"role": "root"}, "role"),
    ({"status": "gone"}, "status"),
    ({"after": "not-a-cursor"}, "after"),
    ({"after": forged()}, "after"),
    ({"after": views.Cursors("another-secret").make(views.View(), views.AFTER, (1, 1))}, "after"),
    ({"after": cursor(views.AFTER, ("ann", 1), "username"), "sort": "email"}, "after"),
    ({"after": cursor(views.AFTER, ("ann", 1), "username"), "sort": "username",
      "order": "desc"}, "after"),
    ({"after": cursor(views.AFTER, (3, 3))}, None),  # valid: the control case
    ({"after": 17}, "after"),
    ({"q": "x" * 10240}, "q"),
    ({"q": "x" * (views.Q_MAX + 1)}, "q"),
    ({"q": "x" * views.Q_MAX}, None),
    ({"q": "a\x00b"}, "q"),
    ({"q": "a\nb"}, "q"),
    ({"q": "\x1b[2J"}, "q"),
    ({"q": "a\x7fb"}, "q"),
    ({"q": ["ann"]}, "q"),
    ({"q": {"$ne": ""}}, "q"),
    ({"nope": "1"}, "nope"),
    ({"q": "ann", "offset": "50"}, "offset"),
    pytest.param({"q": "\ud800"}, "q", id="lone-surrogate"),
    pytest.param({"q": "a\x85b"}, "q", id="c1-control"),
    pytest.param({"q": "x" + " " * 10240}, "q", id="padded-10kb"),
])
def test_parse_view_refuses_bad_parameters_with_the_field(params, field):
    if field is None:
        views.parse_view(params, CURSORS)
        return
    with pytest.raises(BadRequest) as caught:
        views.parse_view(params, CURSORS)
    assert field in caught.value.fields, caught.value.fields


@pytest.mark.parametrize("params", [["q"], "q=ann", None, 7])
def test_parse_view_refuses_what_is_not_an_object(params):
    with pytest.raises(BadRequest):
        views.parse_view(params, CURSORS)


# -- a population that makes views hard ------------------------------------------------------

# Prefixes that collide, differ only in case, carry LIKE wildcards and backslashes, sort next to
# each other in byte order, start like a spreadsheet formula, or hold non-ASCII letters.
PREFIXES = ("ann", "Ann", "ANNA", "anne", "an_n", "an%n", "a\\n", "annA", "bob", "Bob", "bo",
            "zed", "=cmd", "-x", "+y", "@z", "Zoë", "ZOË", "zoe", "%", "_")
SUFFIXES = ("", "", "0", "00", "1", "_", "-", ".", "A", "a", "%", "\\", "ë")
DOMAINS = ("example.test", "EXAMPLE.test", "ann.example", "b_o.test", "c%d.test", "exämple.test")
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
TIMES = tuple(BASE_TIME + timedelta(seconds=s) for s in (0, 0.5, 1, 3600))


def new_user(rnd: random.Random, taken: set[str], **fields) -> User | None:
    """A random user whose username and email are free (compared lower-cased), or None."""
    name = rnd.choice(PREFIXES) + rnd.choice(SUFFIXES)
    if rnd.random() < 0.4:
        name += str(rnd.randrange(30))
    local = rnd.choice((name, name.upper(), rnd.choice(PREFIXES))) + rnd.choice(SUFFIXES)
    email = f"{local}@{rnd.choice(DOMAINS)}"
    if name.lower() in taken or email.lower() in taken:
        return None
    taken.update((name.lower(), email.lower()))
    values = {"username": name, "email": email, "role": rnd.choice(("admin", "user", "user")),
              "status": rnd.choice(("active", "active", "disabled")),
              "created_at": rnd.choice(TIMES)}
    return User(**{**values, **fields})


def populate(db: Database, count: int, seed: int) -> None:
    """`count` users, many with equal created_at; groups with equal updated_at (bulk updates)."""
    rnd = random.Random(seed)
    taken: set[str] = set()
    with db.sessions() as session:
        made = []
        while len(made) < count:
            user = new_user(rnd, taken)
            if user is not None:
                made.append(user)
        session.add_all(made)
        session.commit()
        ids = [u.id for u in made]
        for status in ("disabled", "active", "disabled"):
            group = rnd.sample(ids, len(ids) // 5)
            session.execute(update(User).where(User.id.in_(group)).values(status=status))
            session.commit()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def population(request, tmp_path_factory):
    """Three hundred users that stay put for the module's read-only tests."""
    if request.param == "sqlite":
        db = Database(migrated_sqlite(tmp_path_factory.mktemp("views") / "population.db"))
        populate(db, 300, seed=11)
        yield db
        db.close()
        return
    with new_postgres_database("userboard_views", migrated=True) as url:
        db = Database(url)
        populate(db, 300, seed=11)
        yield db
        db.close()


def q_candidates(rows: list[dict], seed: int) -> list[str]:
    """Searches: pieces of real names and emails (1 to 8 characters, case changed), wildcards."""
    rnd = random.Random(seed)
    found = ["%", "_", "\\", "%n", "n_", "a\\n", "%%", "a%", "ë", "Ë", "zoë", "ZOË", "@",
             "example", "EXAMPLE.TEST", "nothing-matches", '"', 'a"b', "an n", "xä"]
    for _ in range(150):
        text_value = rnd.choice(rows)[rnd.choice(("username", "email"))]
        size = rnd.randint(1, 8)
        at = rnd.randrange(max(1, len(text_value) - size + 1))
        piece = text_value[at:at + size]
        found.append(rnd.choice((piece, piece.upper(), piece.swapcase())))
    return [q for q in found if q.strip()]


def view_params(qs: list[str], max_limit: int = 30):
    return st.fixed_dictionaries({
        "q": st.none() | st.sampled_from(qs),
        "role": st.sampled_from((None, "admin", "user")),
        "status": st.sampled_from((None, "active", "disabled")),
        "sort": st.sampled_from(SORTS),
        "order": st.sampled_from(("asc", "desc")),
        "limit": st.integers(1, max_limit),
    })


def extreme_key(sort: str, last: bool) -> tuple:
    """A key before (or past) every row of `sort`'s order."""
    if sort == "id":
        return (10**9, 10**9) if last else (0, 0)
    if sort in ("created_at", "updated_at"):
        return ("9999-12-31T00:00:00.000000Z", 0) if last else ("0001-01-01T00:00:00.000000Z", 0)
    return ("\U0010ffff", 0) if last else ("", 0)


def expected_answer(rows, params, direction, key, lower) -> tuple[dict, tuple | None]:
    """The reference answer for a cursor, and the start key it anchors to."""
    limit = params["limit"]
    if direction in (None, views.AFTER):
        start = key
    else:
        everything = ordered(rows, params, lower)
        keys = [sort_key(params, r) for r in everything]
        desc = params["order"] == "desc"
        inclusive = direction == views.BEFORE_OR_AT

        def before(k):
            if k == key:
                return inclusive
            return k > key if desc else k < key

        ahead = [k for k in keys if before(k)]
        start = ahead[-(limit + 1)] if len(ahead) > limit else None
    return reference(rows, params, start, lower, limit), start


def read_cursor(token: str | None, params: dict):
    if token is None:
        return None
    direction, key = CURSORS.read(token, params["sort"], params["order"])
    return direction, tuple(key)


def check_cursors(answer: dict, expected: dict, start: tuple | None, params: dict) -> None:
    rows = expected["users"]
    want_next = (views.AFTER, sort_key(params, rows[-1])) if expected["more"] else None
    if start is None:
        want_prev = None
    elif rows:
        want_prev = (views.BEFORE, sort_key(params, rows[0]))
    else:
        want_prev = (views.BEFORE_OR_AT, start)
    assert read_cursor(answer["next"], params) == want_next
    assert read_cursor(answer["prev"], params) == want_prev


def test_random_views_equal_a_python_evaluation_of_every_row(population):
    """users, total, next and prev of views.answer() equal the naive evaluation; so does
    views.matches() (the live engine's predicate) for every row."""
    db = population
    rows = db.rows()
    qs = q_candidates(rows, seed=12)
    where = st.one_of(
        st.none(),
        st.tuples(st.sampled_from((views.AFTER, views.BEFORE, views.BEFORE_OR_AT)),
                  st.integers(0, len(rows) - 1) | st.sampled_from(("first", "last"))),
    )

    @settings(max_examples=250, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(params=view_params(qs), where=where)
    def check(params, where):
        direction, key = None, None
        if where is not None:
            direction, pick = where
            if isinstance(pick, int):
                key = sort_key(params, rows[pick])
            else:
                key = extreme_key(params["sort"], pick == "last")
        query = {k: v for k, v in params.items() if v is not None}
        if direction is not None:
            query["after"] = CURSORS.make(views.View(sort=params["sort"], order=params["order"]),
                                          direction, key)
        view = views.parse_view(query, CURSORS)
        expected, start = expected_answer(rows, params, direction, key, db.lower)
        with db.sessions() as session:
            answer = views.answer(session, view, CURSORS)
        assert answer["users"] == expected["users"]
        assert answer["total"] == expected["total"]
        check_cursors(answer, expected, start, params)
        engine_view = views.View(q=view.q, role=view.role, status=view.status)
        for row in rows:
            assert views.matches(engine_view, row, db.dialect) == (
                row in ordered([row], params, db.lower)), (params, row)

    check()


def test_paging_next_visits_every_row_once_in_order_and_prev_walks_back(population):
    db = population
    rows = db.rows()
    qs = q_candidates(rows, seed=13)

    @settings(max_examples=40, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(params=view_params(qs, max_limit=40))
    def walk(params):
        query = {k: v for k, v in params.items() if v is not None}
        everything = ordered(rows, params, db.lower)
        pages = []
        with db.sessions() as session:
            answer = views.answer(session, views.parse_view(query, CURSORS), CURSORS)
            pages.append(answer)
            while answer["next"] is not None:
                assert len(pages) <= len(everything), "next never ends"
                answer = views.answer(
                    session, views.parse_view({**query, "after": answer["next"]}, CURSORS), CURSORS)
                pages.append(answer)
            assert [u for page in pages for u in page["users"]] == everything
            assert {page["total"] for page in pages} == {len(everything)}
            assert pages[0]["prev"] is None
            back = pages[-1]
            for page in reversed(pages[:-1]):
                back = views.answer(
                    session, views.parse_view({**query, "after": back["prev"]}, CURSORS), CURSORS)
                assert back["users"] == page["users"]
            assert back["prev"] is None

    walk()


def expected_csv_cell(value) -> str:
    cell = "" if value is None else str(value)
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def test_csv_export_equals_the_view_and_neutralises_formulas(population):
    db = population
    rows = db.rows()
    qs = q_candidates(rows, seed=14)

    @settings(max_examples=40, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(params=view_params(qs), batch=st.sampled_from((1, 7, 1000)))
    def export(params, batch):
        query = {k: v for k, v in params.items() if v not in (None, params["limit"])}
        view = views.parse_view(query, CURSORS)
        with db.sessions() as session:
            original = csv_export.BATCH
            csv_export.BATCH = batch  # small batches: many keyset steps over equal sort values
            try:
                body = "".join(csv_export.rows(session, view))
            finally:
                csv_export.BATCH = original
        got = list(csv.reader(io.StringIO(body, newline="")))
        assert got[0] == list(csv_export.COLUMNS)
        want = [[expected_csv_cell(u[c]) for c in csv_export.COLUMNS]
                for u in ordered(rows, params, db.lower)]
        assert got[1:] == want

    export()
    assert any(u["username"][:1] in "=-+@" for u in rows)  # the formula cases were there


# -- totals kept by triggers -------------------------------------------------------------------


def real_totals(conn) -> dict:
    got = {(r, s): 0 for r in ("admin", "user") for s in ("active", "disabled")}
    for role, status, n in conn.execute(text(
            "SELECT role, status, count(*) FROM users GROUP BY role, status")):
        got[(role, status)] = n
    return got


def kept_totals(conn) -> dict:
    return {(r, s): n for r, s, n in conn.execute(text("SELECT role, status, n FROM user_totals"))}


def raw_insert(conn, rnd, taken, dialect) -> None:
    user = None
    while user is None:
        user = new_user(rnd, taken)
    conn.execute(text(
        "INSERT INTO users (username, email, role, status, version, created_at, updated_at)"
        " VALUES (:u, :e, :r, :s, 1, :t, :t)"),
        {"u": user.username, "e": user.email, "r": user.role, "s": user.status,
         "t": BASE_TIME.replace(tzinfo=None) if dialect == "sqlite" else BASE_TIME})


def test_user_totals_equal_real_counts_after_any_kind_of_write(database):
    """ORM, ORM bulk statements, users.bulk_update, raw SQL and (PostgreSQL) TRUNCATE."""
    db = database
    rnd = random.Random(21)
    taken: set[str] = set()
    roles = ("admin", "user")
    statuses = ("active", "disabled")
    for step in range(120):
        ids = [u["id"] for u in db.rows()]
        kind = rnd.choice(("orm-add", "orm-add", "orm-edit", "orm-delete", "bulk-update",
                           "bulk-delete", "users-bulk", "raw-insert", "raw-update", "raw-delete",
                           "truncate"))
        with db.sessions() as session:
            if kind == "orm-add" or not ids:
                session.add_all([u for u in (new_user(rnd, taken) for _ in range(rnd.randint(1, 4)))
                                 if u is not None])
            elif kind == "orm-edit":
                user = session.get(User, rnd.choice(ids))
                user.role, user.status = rnd.choice(roles), rnd.choice(statuses)
            elif kind == "orm-delete":
                session.delete(session.get(User, rnd.choice(ids)))
            elif kind == "bulk-update":
                session.execute(update(User).where(User.id.in_(rnd.sample(ids, min(5, len(ids)))))
                                .values(role=rnd.choice(roles), status=rnd.choice(statuses)))
            elif kind == "bulk-delete":
                session.execute(delete(User).where(User.id.in_(rnd.sample(ids, min(3, len(ids))))))
            elif kind == "users-bulk":
                try:
                    bulk_update(session, rnd.choice(list(("disable", "enable", "make-admin",
                                                          "make-user", "delete"))),
                                rnd.sample(ids, min(4, len(ids))))
                except LastAdmin:
                    pass
            elif kind == "raw-insert":
                raw_insert(session.connection(), rnd, taken, db.dialect)
            elif kind == "raw-update":
                session.execute(text("UPDATE users SET role = :r, status = :s WHERE id % 3 = :m"),
                                {"r": rnd.choice(roles), "s": rnd.choice(statuses),
                                 "m": rnd.randrange(3)})
            elif kind == "raw-delete":
                session.execute(text("DELETE FROM users WHERE id = :i"), {"i": rnd.choice(ids)})
            elif kind == "truncate" and db.dialect == "postgresql":
                session.execute(text("TRUNCATE users CASCADE"))
            if rnd.random() < 0.1:
                session.rollback()  # a rolled-back write moves no total
            else:
                session.commit()
        with db.engine.connect() as conn:
            assert kept_totals(conn) == real_totals(conn), (step, kind)
        with db.sessions() as session:
            real = real_totals(session.connection())
            for role in (None, *roles):
                for status in (None, *statuses):
                    view = views.View(role=role, status=status)
                    want = sum(n for (r, s), n in real.items()
                               if role in (None, r) and status in (None, s))
                    assert views.count(session, view) == want


@known_issue("KNOWN LIMIT: SQLite's REPLACE conflict resolution deletes the old row without "
             "firing DELETE triggers (recursive_triggers is off), so user_totals counts it twice "
             "(docs/deployment.md: do not use INSERT OR REPLACE on users)")
def test_user_totals_survive_sqlite_insert_or_replace(tmp_path):
    db = Database(migrated_sqlite(tmp_path / "replace.db"))
    try:
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, username, email, role, status, version, created_at,"
                " updated_at) VALUES (1, 'ann', 'ann@example.test', 'user', 'active', 1,"
                " '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000')"))
            conn.execute(text(
                "INSERT OR REPLACE INTO users (id, username, email, role, status, version,"
                " created_at, updated_at) VALUES (1, 'bob', 'bob@example.test', 'admin',"
                " 'disabled', 2, '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000')"))
        with db.engine.connect() as conn:
            assert kept_totals(conn) == real_totals(conn)
    finally:
        db.close()


# -- the live engine ---------------------------------------------------------------------------

ENGINE_PREFIXES = ("ann", "Ann", "anna", "an_n", "an%n", "a\\n", "bob", "BOB", "bo", "zed")
ENGINE_QS = ("an", "AN", "ann", "n_", "%", "_", "\\", "b", "bob", "xample", "e.t", "zz", "a\\n")
ENGINE_SIDS = ("s1", "s2", "s3", "s4")

names = st.tuples(st.sampled_from(ENGINE_PREFIXES), st.sampled_from(("", "0", "1", "_", "A", "b")),
                  st.integers(0, 40)).map(lambda t: f"{t[0]}{t[1]}{t[2]}")
times = st.sampled_from(TIMES)
roles = st.sampled_from(("admin", "user"))
statuses = st.sampled_from(("active", "disabled"))
engine_views = st.fixed_dictionaries({
    "q": st.none() | st.sampled_from(ENGINE_QS),
    "role": st.none() | roles,
    "status": st.none() | statuses,
    "sort": st.sampled_from(SORTS),
    "order": st.sampled_from(("asc", "desc")),
    "limit": st.integers(1, 5),
})


class Recorder:
    """The engine's `send`: every message per socket, copied as it would be serialised."""

    def __init__(self):
        self.messages: dict[str, list[tuple[str, dict]]] = {}
        self.replicas: dict[str, ViewReplica] = {}

    def __call__(self, sid: str, name: str, payload: dict) -> None:
        payload = copy.deepcopy(payload)
        self.messages.setdefault(sid, []).append((name, payload))
        self.replicas.setdefault(sid, ViewReplica()).apply(name, payload)


def view_params_of(view: views.View) -> dict:
    return {"q": view.q, "role": view.role, "status": view.status, "sort": view.sort,
            "order": view.order}


def assert_engine_exact(db: Database, engine: ViewEngine, recorder: Recorder,
                        known: dict | None = None) -> None:
    """Every subscription, and every client replaying its messages, holds views.answer().

    `known`, if given, keeps each answer by database state and view, for a caller whose every
    write is captured: then no change commits without a new seq, so an equal seq and equal rows
    are the same database, and views.answer() (a read) would answer the same again.
    """
    rows = db.rows()
    with db.sessions() as session:
        state = (current_seq(session), repr(sorted(rows, key=lambda row: row["id"])))
        for sid, sub in engine.subscriptions.items():
            answer = None if known is None else known.get((state, sub.view))
            if answer is None:
                answer = views.answer(session, sub.view, engine.cursors)
                if known is not None:
                    known[(state, sub.view)] = answer
            assert (sub.rows, sub.total) == (answer["users"], answer["total"]), sid
            replica = recorder.replicas[sid]
            assert replica.number == sub.number
            assert (replica.rows, replica.total) == (answer["users"], answer["total"]), sid
            assert replica.prev == answer["prev"], sid
            engine_next = engine.cursors.next_and_prev(sub.view, sub.rows, sub.has_more)[0]
            assert replica.next == engine_next == answer["next"], sid
            want = reference(rows, view_params_of(sub.view), sub.view.start, db.lower,
                             sub.view.limit)
            assert (answer["users"], answer["total"]) == (want["users"], want["total"]), sid


class EngineMachine(RuleBasedStateMachine):
    """Writes of every kind and view changes, then an engine pass; the views must stay exact."""

    db: Database  # set by the test

    def __init__(self):
        super().__init__()
        self.db.reset()
        self.recorder = Recorder()
        self.engine = ViewEngine(self.db.sessions, views.Cursors(SECRET), self.recorder)
        self.answers: dict = {}  # for assert_engine_exact: every write here is captured

    def ids(self) -> list[int]:
        with self.db.sessions() as session:
            return list(session.scalars(select(User.id).order_by(User.id)))

    def pick(self, data, count: int = 1) -> list[int]:
        ids = self.ids()
        if not ids:
            return []
        return data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=count, unique=True))

    def write(self, change) -> None:
        """Run `change(session)` and commit; a clash on a unique name rolls back, as in the app."""
        with self.db.sessions() as session:
            try:
                change(session)
                session.commit()
            except (IntegrityError, UserError):  # a name clash, the last-admin rule
                session.rollback()

    @initialize(count=st.integers(3, 25), data=st.data())
    def seed(self, count, data):
        def add(session):
            taken = set()
            for _ in range(count):
                name = data.draw(names)
                if name.lower() in taken:
                    continue
                taken.add(name.lower())
                session.add(User(username=name, email=f"{name}@example.test", role=data.draw(roles),
                                 status=data.draw(statuses), created_at=data.draw(times)))

        self.write(add)
        for sid in ENGINE_SIDS[:data.draw(st.integers(2, 4))]:
            self.watch_as(sid, data.draw(engine_views), None)

    def watch_as(self, sid: str, params: dict, after: str | None) -> None:
        query = {k: v for k, v in params.items() if v is not None}
        if after is not None:
            query["after"] = after
        view = views.parse_view(query, self.engine.cursors)
        with self.db.sessions() as session:
            self.engine.subscribe(session, sid, view)
            answer = views.answer(session, view, self.engine.cursors)
        replica = self.recorder.replicas[sid]
        assert (replica.rows, replica.total, replica.next, replica.prev) == (
            answer["users"], answer["total"], answer["next"], answer["prev"])

    @rule(name=names, role=roles, status=statuses, created=times)
    def add(self, name, role, status, created):
        self.write(lambda s: s.add(User(username=name, email=f"{name}@example.test", role=role,
                                        status=status, created_at=created)))

    @rule(data=st.data(), name=st.none() | names, domain=st.sampled_from(("a.test", "b.test")),
          role=st.none() | roles, status=st.none() | statuses, stamp=st.none() | times)
    def edit(self, data, name, domain, role, status, stamp):
        """Sort keys (username, email, updated_at set to a shared value) and filter fields."""
        ids = self.pick(data)

        def change(session):
            for user in session.scalars(select(User).where(User.id.in_(ids))):
                if name is not None:
                    user.username, user.email = name, f"{name}@{domain}"
                if role is not None:
                    user.role = role
                if status is not None:
                    user.status = status
                if stamp is not None and session.is_modified(user):
                    # only beside a data change: an updated_at-only update is no event (see
                    # test_a_write_that_changes_only_updated_at_moves_the_row_in_views)
                    user.updated_at = stamp

        self.write(change)

    @rule(data=st.data())
    def remove(self, data):
        ids = self.pick(data, 3)

        def change(session):
            for user in session.scalars(select(User).where(User.id.in_(ids))):
                session.delete(user)

        self.write(change)

    @rule(data=st.data(), action=st.sampled_from(list(("disable", "enable", "make-admin",
                                                       "make-user", "delete"))))
    def bulk_action(self, data, action):
        ids = self.pick(data, 6)
        if ids:
            self.write(lambda s: bulk_update(s, action, ids))

    @rule(data=st.data(), status=statuses, role=st.none() | roles)
    def orm_bulk_update(self, data, status, role):
        """One statement, one shared updated_at: ties for the updated_at sort."""
        ids = self.pick(data, 8)
        values = {"status": status} if role is None else {"status": status, "role": role}
        # Only rows that change: a row set to what it holds gets a new updated_at and no event
        # (the known issue above).
        changes = [getattr(User, k) != v for k, v in values.items()]
        self.write(lambda s: s.execute(update(User).where(User.id.in_(ids), or_(*changes))
                                       .values(**values)))

    @rule(data=st.data())
    def orm_bulk_delete(self, data):
        ids = self.pick(data, 4)
        self.write(lambda s: s.execute(delete(User).where(User.id.in_(ids))))

    @rule(data=st.data(), name=names)
    def one_transaction_many_changes(self, data, name):
        """Added then changed, changed twice, changed then deleted: coalesced events."""
        ids = self.pick(data, 2)

        def change(session):
            user = User(username=name, email=f"{name}@x.test", created_at=BASE_TIME)
            session.add(user)
            session.flush()
            user.status = "disabled"
            for i in ids:
                other = session.get(User, i)
                other.role = "admin" if other.role == "user" else "user"
                session.flush()
                other.username = other.username + "x"
            if ids and data.draw(st.booleans()):
                session.delete(session.get(User, ids[0]))

        self.write(change)

    @rule(sid=st.sampled_from(ENGINE_SIDS), params=engine_views,
          page=st.sampled_from((None, "next", "prev")))
    def watch(self, sid, params, page):
        """A new view, or the same sort's next / previous page."""
        replica = self.recorder.replicas.get(sid)
        after = None
        if page is not None and replica is not None and getattr(replica, page):
            after = getattr(replica, page)
            current = self.engine.subscriptions[sid].view
            params = {**params, "sort": current.sort, "order": current.order}
        self.watch_as(sid, params, after)

    @precondition(lambda self: self.engine.subscriptions)
    @rule(data=st.data())
    def resync(self, data):
        sid = data.draw(st.sampled_from(sorted(self.engine.subscriptions)))
        with self.db.sessions() as session:
            self.engine.resend(session, sid)

    @rule()
    def engine_pass(self):
        self.engine.process()
        self.engine.heartbeat()
        assert_engine_exact(self.db, self.engine, self.recorder, self.answers)

    @invariant()
    def every_client_follows_the_protocol(self):
        """Within one view, changes come in increasing seq order, never twice for one seq."""
        for sid, messages in self.recorder.messages.items():
            number = self.recorder.replicas[sid].number
            seqs = [p["seq"] for name, p in messages
                    if name == "users_view_changed" and p["view"] == number]
            assert seqs == sorted(set(seqs)), f"{sid}: view messages out of seq order"

    def teardown(self):
        if self.engine.subscriptions:
            self.engine.process()
            self.engine.heartbeat()
            assert_engine_exact(self.db, self.engine, self.recorder, self.answers)


# No shrinking: each step commits to a real database, and shrinking a long failing run took
# over five minutes here. A failure prints every step, which replays it.
ENGINE_SETTINGS = settings(max_examples=30, stateful_step_count=60, derandomize=True,
                           deadline=None, database=None,
                           phases=[Phase.explicit, Phase.reuse, Phase.generate],
                           suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.filter_too_much])


def test_engine_keeps_every_view_exact_through_random_writes(database):
    machine = type("Machine", (EngineMachine,), {"db": database})
    run_state_machine_as_test(machine, settings=ENGINE_SETTINGS)


# -- targeted engine cases -----------------------------------------------------------------------


def add_users(db: Database, *specs: dict) -> list[int]:
    with db.sessions() as session:
        made = [User(**{"email": f"{s['username']}@example.test", **s}) for s in specs]
        session.add_all(made)
        session.commit()
        return [u.id for u in made]


def watching(db: Database, **params) -> tuple[ViewEngine, Recorder]:
    recorder = Recorder()
    engine = ViewEngine(db.sessions, views.Cursors(SECRET), recorder)
    with db.sessions() as session:
        engine.subscribe(session, "s1", views.parse_view(params, engine.cursors))
    return engine, recorder


def test_next_is_null_once_the_rows_after_the_window_leave(database):
    ids = add_users(database, *({"username": f"u{i}"} for i in range(3)))
    engine, recorder = watching(database, limit="2")
    assert recorder.replicas["s1"].next is not None
    with database.sessions() as session:
        session.delete(session.get(User, ids[2]))
        session.commit()
    engine.process()
    assert_engine_exact(database, engine, recorder)


@pytest.mark.parametrize("how", [
    "password",
    pytest.param("bulk-same-value", marks=known_issue(
        "KNOWN LIMIT: an ORM bulk UPDATE (your own code) setting a value the row already holds "
        "moves updated_at through the column's onupdate but is no event, so views sorted by "
        "updated_at keep that row where it was")),
])
def test_a_write_that_changes_only_updated_at_moves_the_row_in_views(database, how):
    ids = add_users(database, *({"username": f"u{i}"} for i in range(3)))
    engine, recorder = watching(database, sort="updated_at", limit="5")
    with database.sessions() as session:
        if how == "password":
            update_user(session, ids[0], {"password": "a-new-password"})
        else:
            session.execute(update(User).where(User.id == ids[0]).values(status="active"))
            session.commit()
    engine.process()
    engine.heartbeat()
    assert_engine_exact(database, engine, recorder)


@pytest.mark.parametrize("email, q", [("aİb@example.test", "ib"), ("xaΣ@example.test", "aσ")])
def test_the_engine_folds_case_like_the_database(database, email, q, request):
    engine, recorder = watching(database, q=q)
    with database.sessions() as session:
        create_user(session, {"username": "unicode", "email": email})
    engine.process()
    assert_engine_exact(database, engine, recorder)


def test_no_heartbeat_claims_a_seq_before_its_change_is_sent(database):
    add_users(database, {"username": "ann"})
    engine, recorder = watching(database, limit="5")
    # Wherever the pass could yield to other greenlets (each database round trip, under gevent),
    # let the server's heartbeat run, as it may in production.
    event.listen(database.engine, "rollback", lambda _conn: engine.heartbeat())
    add_users(database, {"username": "bob"})
    engine.process()
    claimed = -1
    for name, payload in recorder.messages["s1"]:
        if name == "heartbeat":
            claimed = max(claimed, payload["seq"])
        elif name == "users_view_changed":
            assert payload["seq"] > claimed, "a heartbeat claimed this seq before it was sent"


def test_a_view_behind_the_pruned_change_log_is_read_again_and_stays_exact(tmp_path):
    db = Database(migrated_sqlite(tmp_path / "pruned.db"))
    try:
        small = make_session_factory(db.engine)
        install_capture(small, retention=5, min_age=0)
        db.sessions = small
        add_users(db, *({"username": f"u{i}", "status": "disabled"} for i in range(4)))
        engine, recorder = watching(db, status="active", limit="3", sort="username")
        for i in range(30):
            add_users(db, {"username": f"n{i:02}", "status": "active" if i % 3 else "disabled"})
        engine.process()
        engine.heartbeat()
        assert_engine_exact(db, engine, recorder)
        assert recorder.replicas["s1"].total == 20
    finally:
        db.close()


def test_a_pass_that_changes_only_next_tells_the_client(database):
    ids = add_users(database, *({"username": f"u{i}"} for i in range(4)))
    recorder = Recorder()
    engine = ViewEngine(database.sessions, views.Cursors(SECRET), recorder)
    page_two = cursor(views.AFTER, (ids[1], ids[1]))
    with database.sessions() as session:
        engine.subscribe(session, "s1", views.parse_view({"limit": "2", "after": page_two},
                                                         engine.cursors))
    assert recorder.replicas["s1"].next is None  # [u2, u3] is the last page
    with database.sessions() as session:  # two commits, one pass
        session.delete(session.get(User, ids[0]))
        session.commit()
        session.add(User(username="u4", email="u4@example.test"))
        session.commit()
    engine.process()
    assert_engine_exact(database, engine, recorder)
