"""The users table's triggers: writes made outside userboard become events too. Imports no Flask.

A write through userboard's capture is logged by the capture (coalesced per transaction, with
its actor). Any other write to `users` (psql, sqlite3, another program, raw SQL) is logged by
these triggers, per row and statement, with the same payloads, a seq from the same counter and
the actor `{"kind": "external", "user_id": null, "name": ROLE}` (the database role on
PostgreSQL; null on SQLite, which cannot tell). They also keep `user_totals` and, on SQLite,
the `users_fts` search table, for every writer.

How a trigger tells the capture's writes from the others:
- PostgreSQL: the recording trigger is a deferred constraint trigger, so it runs at COMMIT,
  after the capture has logged its events in the same transaction and set the transaction-local
  `userboard.captured`; it skips such transactions. It wakes the servers with NOTIFY.
- SQLite: the capture inserts a row into `capture_marker` before its first write and deletes it
  before COMMIT. SQLite has one writer at a time, so no other connection ever sees the row:
  the triggers skip writes while it is there.
Outside updates that change a field also move `version` (and `updated_at`, unless the writer set
it), so a client's per-row version check keeps working.

`install(connection)` drops and creates them all: migrations call it whenever they change the
users table (SQLite drops a table's triggers when a migration rebuilds it).
"""

from __future__ import annotations

NOTIFY_CHANNEL = "userboard"
CAPTURED_SETTING = "userboard.captured"
FIELDS = ("username", "email", "role", "status")

# -- SQLite -------------------------------------------------------------------------------------

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"  # UTCDateTime's stored form
_SQLITE_OUTSIDE = "NOT EXISTS (SELECT 1 FROM capture_marker)"
_SQLITE_EXTERNAL = "json_object('kind', 'external', 'user_id', NULL, 'name', NULL)"


def _sqlite_iso(column: str) -> str:
    """A stored timestamp as the API shows it: 'T', six fraction digits, 'Z' (a writer may have
    typed CURRENT_TIMESTAMP, which has no fraction, or a 'T' of its own)."""
    padded = (f"CASE WHEN instr({column}, '.') THEN substr({column} || '000000', 1, 26)"
              f" ELSE {column} || '.000000' END")
    return f"(replace({padded}, ' ', 'T') || 'Z')"


def _sqlite_user(row: str) -> str:
    return (
        f"json_object('id', {row}.id, 'username', {row}.username, 'email', {row}.email,"
        f" 'role', {row}.role, 'status', {row}.status, 'version', {row}.version,"
        f" 'created_at', {_sqlite_iso(row + '.created_at')},"
        f" 'updated_at', {_sqlite_iso(row + '.updated_at')})"
    )


def _sqlite_diff(new: str, old: str) -> str:
    """json_object of the fields that differ between two rows (updated_at included)."""
    merged = "json_object()"
    for field in FIELDS:
        merged = (f"json_patch({merged}, CASE WHEN {new}.{field} IS NOT {old}.{field}"
                  f" THEN json_object('{field}', {new}.{field}) ELSE json_object() END)")
    return (f"json_patch({merged}, CASE WHEN {new}.updated_at IS NOT {old}.updated_at"
            f" THEN json_object('updated_at', {_sqlite_iso(new + '.updated_at')})"
            f" ELSE json_object() END)")


def _sqlite_log(event: str, row_key: str, payload: str, state: str, source: str = "") -> str:
    return f"""
        UPDATE seq_counter SET value = value + 1 WHERE id = 1;
        INSERT INTO change_log (seq, event, entity, row_key, payload, state, committed_at)
        SELECT c.value, '{event}', 'user', {row_key}, {payload}, {state}, {_SQLITE_NOW}
        FROM seq_counter c{source} WHERE c.id = 1{' AND u.id = NEW.id' if source else ''};"""


_CHANGED = " OR ".join(f"NEW.{f} IS NOT OLD.{f}" for f in FIELDS)
_SAME_ID = "NEW.id IS OLD.id"

SQLITE = {
    "user_totals_insert": """AFTER INSERT ON users BEGIN
        UPDATE user_totals SET n = n + 1 WHERE role = NEW.role AND status = NEW.status;
    END""",
    "user_totals_delete": """AFTER DELETE ON users BEGIN
        UPDATE user_totals SET n = n - 1 WHERE role = OLD.role AND status = OLD.status;
    END""",
    "user_totals_update": """AFTER UPDATE OF role, status ON users
        WHEN OLD.role IS NOT NEW.role OR OLD.status IS NOT NEW.status BEGIN
        UPDATE user_totals SET n = n - 1 WHERE role = OLD.role AND status = OLD.status;
        UPDATE user_totals SET n = n + 1 WHERE role = NEW.role AND status = NEW.status;
    END""",
    "users_fts_insert": """AFTER INSERT ON users BEGIN
        INSERT INTO users_fts(rowid, username, email) VALUES (NEW.id, NEW.username, NEW.email);
    END""",
    "users_fts_delete": """AFTER DELETE ON users BEGIN
        INSERT INTO users_fts(users_fts, rowid, username, email)
        VALUES ('delete', OLD.id, OLD.username, OLD.email);
    END""",
    "users_fts_update": """AFTER UPDATE OF username, email ON users BEGIN
        INSERT INTO users_fts(users_fts, rowid, username, email)
        VALUES ('delete', OLD.id, OLD.username, OLD.email);
        INSERT INTO users_fts(rowid, username, email) VALUES (NEW.id, NEW.username, NEW.email);
    END""",
    "users_outside_insert": f"""AFTER INSERT ON users WHEN {_SQLITE_OUTSIDE} BEGIN{_sqlite_log(
        "user_added", "NEW.id",
        f"json_object('seq', c.value, 'user', json({_sqlite_user('NEW')}),"
        f" 'actor', json({_SQLITE_EXTERNAL}))",
        _sqlite_user("NEW"))}
    END""",
    # One trigger for updates: first move version (and updated_at) for the outside write, then
    # log the row as it is now. (The inner UPDATE fires no triggers: recursive_triggers is off.)
    "users_outside_update": f"""AFTER UPDATE ON users
        WHEN {_SQLITE_OUTSIDE} AND {_SAME_ID} AND ({_CHANGED}) BEGIN
        UPDATE users SET version = OLD.version + 1,
            updated_at = CASE WHEN NEW.updated_at IS OLD.updated_at THEN {_SQLITE_NOW}
                              ELSE NEW.updated_at END
        WHERE id = NEW.id AND NEW.version IS OLD.version;{_sqlite_log(
        "user_updated", "u.id",
        f"json_object('seq', c.value, 'id', u.id, 'version', u.version,"
        f" 'changes', json({_sqlite_diff('u', 'OLD')}),"
        f" 'previous', json({_sqlite_diff('OLD', 'u')}),"
        f" 'actor', json({_SQLITE_EXTERNAL}))",
        _sqlite_user("u"), source=", users u")}
    END""",
    # A row renumbered (its id changed): clients drop the old id and add the new one.
    "users_outside_renumber": f"""AFTER UPDATE OF id ON users
        WHEN {_SQLITE_OUTSIDE} AND NEW.id IS NOT OLD.id BEGIN{_sqlite_log(
        "user_deleted", "OLD.id",
        f"json_object('seq', c.value, 'id', OLD.id, 'actor', json({_SQLITE_EXTERNAL}))",
        _sqlite_user("OLD"))}{_sqlite_log(
        "user_added", "NEW.id",
        f"json_object('seq', c.value, 'user', json({_sqlite_user('NEW')}),"
        f" 'actor', json({_SQLITE_EXTERNAL}))",
        _sqlite_user("NEW"))}
    END""",
    "users_outside_delete": f"""AFTER DELETE ON users WHEN {_SQLITE_OUTSIDE} BEGIN{_sqlite_log(
        "user_deleted", "OLD.id",
        f"json_object('seq', c.value, 'id', OLD.id, 'actor', json({_SQLITE_EXTERNAL}))",
        _sqlite_user("OLD"))}
    END""",
}

# -- PostgreSQL ---------------------------------------------------------------------------------

_PG_ISO = "to_char({}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _pg_user(row: str) -> str:
    columns = ("id", "username", "email", "role", "status", "version", "created_at", "updated_at")
    return "userboard_user_json(" + ", ".join(f"{row}.{c}" for c in columns) + ")"

POSTGRESQL_FUNCTIONS = {
    "userboard_totals_added": """RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE user_totals t SET n = t.n + c.k
          FROM (SELECT role, status, count(*) AS k FROM new_rows GROUP BY role, status) c
          WHERE t.role = c.role AND t.status = c.status;
          RETURN NULL;
        END $$""",
    "userboard_totals_removed": """RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE user_totals t SET n = t.n - c.k
          FROM (SELECT role, status, count(*) AS k FROM old_rows GROUP BY role, status) c
          WHERE t.role = c.role AND t.status = c.status;
          RETURN NULL;
        END $$""",
    "userboard_totals_moved": """RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE user_totals SET n = n - 1 WHERE role = OLD.role AND status = OLD.status;
          UPDATE user_totals SET n = n + 1 WHERE role = NEW.role AND status = NEW.status;
          RETURN NULL;
        END $$""",
    "userboard_totals_truncated": """RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE user_totals SET n = 0;
          RETURN NULL;
        END $$""",
    # Takes the columns, not a `users` row: a function of the row type would pin the table.
    "userboard_user_json": f"""(id integer, username text, email text, role text, status text,
          version integer, created_at timestamp, updated_at timestamp)
        RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
        SELECT jsonb_build_object('id', id, 'username', username, 'email', email,
          'role', role, 'status', status, 'version', version,
          'created_at', {_PG_ISO.format('created_at')},
          'updated_at', {_PG_ISO.format('updated_at')})
        $$""",
    "userboard_users_version": """RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.version = OLD.version AND (NEW.username, NEW.email, NEW.role, NEW.status)
             IS DISTINCT FROM (OLD.username, OLD.email, OLD.role, OLD.status) THEN
            NEW.version := OLD.version + 1;
            IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
              NEW.updated_at := clock_timestamp() AT TIME ZONE 'utc';
            END IF;
          END IF;
          RETURN NEW;
        END $$""",
    "userboard_log_outside": f"""(ev text, row_key text, body jsonb, state jsonb)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE s bigint;
        BEGIN
          UPDATE seq_counter SET value = value + 1 WHERE id = 1 RETURNING value INTO s;
          INSERT INTO change_log (seq, event, entity, row_key, payload, state, committed_at)
          VALUES (s, ev, 'user', row_key, (jsonb_build_object('seq', s) || body)::json,
                  state::json, clock_timestamp() AT TIME ZONE 'utc');
          PERFORM pg_notify('{NOTIFY_CHANNEL}', s::text);
        END $$""",
    "userboard_users_outside": f"""RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          state jsonb; changes jsonb := '{{}}'; previous jsonb := '{{}}';
          who jsonb := jsonb_build_object('kind', 'external', 'user_id', NULL, 'name', current_user);
        BEGIN
          IF current_setting('{CAPTURED_SETTING}', true) = 'on' THEN
            RETURN NULL;  -- the capture logged this transaction's changes itself
          END IF;
          IF TG_OP = 'UPDATE' AND (NEW.id, NEW.username, NEW.email, NEW.role, NEW.status)
             IS NOT DISTINCT FROM (OLD.id, OLD.username, OLD.email, OLD.role, OLD.status) THEN
            RETURN NULL;  -- no field a client sees changed (a password, say)
          END IF;
          IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN  -- renumbered
            PERFORM userboard_log_outside('user_deleted', OLD.id::text,
              jsonb_build_object('id', OLD.id, 'actor', who), {_pg_user('OLD')});
            state := {_pg_user('NEW')};
            PERFORM userboard_log_outside('user_added', NEW.id::text,
              jsonb_build_object('user', state, 'actor', who), state);
            RETURN NULL;
          END IF;
          IF TG_OP = 'INSERT' THEN
            state := {_pg_user('NEW')};
            PERFORM userboard_log_outside('user_added', NEW.id::text,
              jsonb_build_object('user', state, 'actor', who), state);
          ELSIF TG_OP = 'UPDATE' THEN
            state := {_pg_user('NEW')};
            SELECT coalesce(jsonb_object_agg(key, n.value), '{{}}'),
                   coalesce(jsonb_object_agg(key, o.value), '{{}}')
              INTO changes, previous
              FROM jsonb_each(state) n
              JOIN jsonb_each({_pg_user('OLD')}) o USING (key)
             WHERE key NOT IN ('id', 'version', 'created_at') AND n.value IS DISTINCT FROM o.value;
            PERFORM userboard_log_outside('user_updated', NEW.id::text,
              jsonb_build_object('id', NEW.id, 'version', NEW.version, 'changes', changes,
                                 'previous', previous, 'actor', who), state);
          ELSE
            PERFORM userboard_log_outside('user_deleted', OLD.id::text,
              jsonb_build_object('id', OLD.id, 'actor', who), {_pg_user('OLD')});
          END IF;
          RETURN NULL;
        END $$""",
    "userboard_users_truncated": f"""RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          s bigint;
          who jsonb := jsonb_build_object('kind', 'external', 'user_id', NULL, 'name', current_user);
        BEGIN
          UPDATE seq_counter SET value = value + 1 WHERE id = 1 RETURNING value INTO s;
          INSERT INTO change_log (seq, event, entity, row_key, payload, state, committed_at)
          VALUES (s, 'users_reset', 'user', '*',
                  jsonb_build_object('seq', s, 'actor', who)::json, NULL,
                  clock_timestamp() AT TIME ZONE 'utc');
          PERFORM pg_notify('{NOTIFY_CHANNEL}', s::text);
          RETURN NULL;
        END $$""",
}

POSTGRESQL_TRIGGERS = {
    "user_totals_insert": """AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION userboard_totals_added()""",
    "user_totals_delete": """AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION userboard_totals_removed()""",
    "user_totals_update": """AFTER UPDATE OF role, status ON users FOR EACH ROW
        WHEN (OLD.role IS DISTINCT FROM NEW.role OR OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION userboard_totals_moved()""",
    "user_totals_truncate": """AFTER TRUNCATE ON users
        FOR EACH STATEMENT EXECUTE FUNCTION userboard_totals_truncated()""",
    "users_version": """BEFORE UPDATE ON users FOR EACH ROW
        EXECUTE FUNCTION userboard_users_version()""",
    "users_outside": """AFTER INSERT OR UPDATE OR DELETE ON users
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION userboard_users_outside()""",
    "users_truncated": """AFTER TRUNCATE ON users
        FOR EACH STATEMENT EXECUTE FUNCTION userboard_users_truncated()""",
}
_CONSTRAINT_TRIGGERS = ("users_outside",)


def install(connection) -> None:
    """(Re)create every trigger on `users` for the connection's database."""
    for statement in statements(connection.dialect.name):
        connection.exec_driver_sql(statement)


def statements(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE] + [
            f"CREATE TRIGGER {name} {body}" for name, body in SQLITE.items()]
    out = [f"DROP TRIGGER IF EXISTS {name} ON users" for name in POSTGRESQL_TRIGGERS]
    out += [f"CREATE OR REPLACE FUNCTION {name}{body}" if body.startswith("(")
            else f"CREATE OR REPLACE FUNCTION {name}() {body}"
            for name, body in POSTGRESQL_FUNCTIONS.items()]
    out += [f"CREATE {'CONSTRAINT ' if name in _CONSTRAINT_TRIGGERS else ''}TRIGGER {name} {body}"
            for name, body in POSTGRESQL_TRIGGERS.items()]
    return out
