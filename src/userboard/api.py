"""The JSON API under /api: bearer token, or a logged-in admin session plus X-CSRFToken."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, jsonify, request, session, stream_with_context
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from . import auth, changelog, csv_export, strictjson, users, views
from .capture import answer_seq, set_actor
from .errors import ApiError
from .extension import app_state, get_db, writes_no_events
from .openapi import spec

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this API (public: it holds no data)."""
    return jsonify(spec())


@bp.before_request
def require_admin():
    """Admit a valid bearer token, or an admin session (with a CSRF token for writes)."""
    if request.endpoint == "api.openapi":
        return None
    db = get_db()
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError("unauthorized", "use 'Authorization: Bearer TOKEN'")
        found = auth.token_admin(db, token.strip())
        if found is None:
            log.warning("refused API request from %s: invalid, revoked or expired token",
                        request.remote_addr)
            raise ApiError("unauthorized", "invalid, revoked or expired token")
        g.admin, g.principal = found
        set_actor(db, "token", g.admin.id, g.admin.username)
        return
    found = auth.login_admin(db, session.get("login"), app_state().session_timeouts)
    if found is None:
        raise ApiError("unauthorized", "log in or send a bearer token")
    g.admin, g.principal = found
    set_actor(db, "session", g.admin.id, g.admin.username)
    if request.method not in SAFE_METHODS:
        try:
            validate_csrf(request.headers.get("X-CSRFToken", ""))
        except (ValidationError, CSRFError) as exc:
            raise ApiError("forbidden", f"CSRF check failed: {exc}") from None


@bp.before_request
def refuse_malformed_json():
    """Parse a JSON body before the route runs, so that a malformed one gets 400 on every
    route, those that read no body (DELETE) included."""
    if request.is_json and (request.content_length or request.headers.get("Transfer-Encoding")):
        parsed_json()


def parsed_json():
    """The request's JSON body, parsed once by `strictjson`; 400 saying what is wrong."""
    if "json_body" not in g:
        try:
            g.json_body = strictjson.loads(request.get_data(cache=False))
        except strictjson.JSONError as exc:
            raise ApiError("bad_request", f"malformed JSON: {exc}") from None
    return g.json_body


def json_body() -> dict:
    """The request's JSON object, or a 400 saying what is wrong with it."""
    if not request.is_json:
        raise ApiError("bad_request", "send a JSON body with Content-Type: application/json")
    body = parsed_json()
    if not isinstance(body, dict):
        raise ApiError("bad_request", "expected a JSON object")
    return body


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, parsing with `strictjson` (so `request.get_json()` is depth-limited too)."""

    def loads(self, s, **kwargs):
        return strictjson.loads(s)


def requested_view(default_limit: int) -> views.View:
    """The view the query string asks for (400 for bad parameters; a repeated one counts once)."""
    return views.parse_view(request.args.to_dict(), app_state().cursors, default_limit)


@bp.get("/users")
def list_users():
    """One page of a view (see docs/protocol.md, "Views"), with its total and cursors."""
    view = requested_view(views.API_LIMIT)
    return jsonify(views.answer(get_db(), view, app_state().cursors))


@bp.get("/users.csv")
def export_users():
    """Every user of a view as CSV, streamed from one snapshot in keyset batches."""
    view = requested_view(views.API_LIMIT)
    if view.start is not None or view.before is not None or "limit" in request.args:
        raise ApiError("bad_request", "the export takes no limit or after",
                       {"after": "not for the export"})
    db = get_db()
    name = "users.csv"
    response = Response(stream_with_context(csv_export.rows(db, view)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.post("/users/bulk")
def bulk_update():
    """One action on many users, in one transaction."""
    db = get_db()
    body = json_body()
    unknown = sorted(set(body) - {"action", "ids"})
    if unknown:
        raise ApiError("bad_request", "unknown field(s): " + ", ".join(unknown)[:200])
    changed = users.bulk_update(db, body.get("action"), body.get("ids"))
    return jsonify(seq=answer_seq(db), changed=changed)


@bp.post("/users")
def create_user():
    db = get_db()
    user = users.create_user(db, json_body())
    return jsonify(seq=answer_seq(db), user=user.to_dict()), 201


@bp.get("/users/<int:user_id>")
def get_user(user_id: int):
    return jsonify(user=users.get_user(get_db(), user_id).to_dict())


@bp.get("/users/<int:user_id>/history")
def user_history(user_id: int):
    """Who changed this user and how: the retained events, newest first (also once deleted)."""
    db = get_db()
    events = changelog.history(db, "user", user_id)
    if not events:
        users.get_user(db, user_id)  # 404 for a user that never was (or whose log is gone)
    return jsonify(events=events)


@bp.patch("/users/<int:user_id>")
def update_user(user_id: int):
    """Change fields; with "version", only if the row is still at that version."""
    db = get_db()
    body = json_body()
    version = body.pop("version", None)
    if isinstance(version, float) and version.is_integer():  # JSON has one number type
        version = int(version)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ApiError("bad_request", "version must be an integer", {"version": "must be an integer"})
    keep = g.principal.credential_id if g.principal.kind == "session" else None
    user = users.update_user(db, user_id, body, expected_version=version, keep_login=keep)
    return jsonify(seq=answer_seq(db), user=user.to_dict())


@bp.delete("/users/<int:user_id>")
def delete_user(user_id: int):
    db = get_db()
    users.delete_user(db, user_id)
    return jsonify(seq=answer_seq(db))


@bp.post("/logout-everywhere")
@writes_no_events
def logout_everywhere():
    """End every browser login of the caller's admin (the calling one too); tokens stay."""
    db = get_db()
    ended = auth.end_logins(db, g.admin.id)
    db.commit()
    app_state().namespace.cut_principals(ended)  # other processes: at their next check
    log.info("user %s logged out everywhere (%d logins)", g.admin.id, len(ended))
    return jsonify(logins_ended=len(ended))
