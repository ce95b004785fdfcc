"""The JSON API under /api: bearer token, or a logged-in admin session plus X-CSRFToken."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, g, jsonify, request, session
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from . import auth, users
from .capture import answer_seq, current_seq
from .errors import ApiError
from .extension import get_db
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
            log.warning("refused API request from %s: invalid or revoked token", request.remote_addr)
            raise ApiError("unauthorized", "invalid or revoked token")
        g.admin = found[0]
        return
    found = auth.login_admin(db, session.get("login"))
    if found is None:
        raise ApiError("unauthorized", "log in or send a bearer token")
    g.admin = found[0]
    if request.method not in SAFE_METHODS:
        try:
            validate_csrf(request.headers.get("X-CSRFToken", ""))
        except (ValidationError, CSRFError) as exc:
            raise ApiError("forbidden", f"CSRF check failed: {exc}") from None


def json_body() -> dict:
    """The request's JSON object, or a 400 saying what is wrong with it."""
    if not request.is_json:
        raise ApiError("bad_request", "send a JSON body with Content-Type: application/json")
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError("bad_request", "request body is not valid UTF-8") from None
    except ValueError as exc:
        raise ApiError("bad_request", f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", "expected a JSON object")
    return body


@bp.get("/users")
def list_users():
    db = get_db()
    seq = current_seq(db)
    rows = [u.to_dict() for u in users.list_users(db)]
    return jsonify(seq=seq, users=rows)


@bp.post("/users")
def create_user():
    db = get_db()
    user = users.create_user(db, json_body())
    return jsonify(seq=answer_seq(db), user=user.to_dict()), 201


@bp.get("/users/<int:user_id>")
def get_user(user_id: int):
    return jsonify(user=users.get_user(get_db(), user_id).to_dict())


@bp.patch("/users/<int:user_id>")
def update_user(user_id: int):
    """Change fields; with "version", only if the row is still at that version."""
    db = get_db()
    body = json_body()
    version = body.pop("version", None)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ApiError("bad_request", "version must be an integer", {"version": "must be an integer"})
    user = users.update_user(db, user_id, body, expected_version=version)
    return jsonify(seq=answer_seq(db), user=user.to_dict())


@bp.delete("/users/<int:user_id>")
def delete_user(user_id: int):
    db = get_db()
    users.delete_user(db, user_id)
    return jsonify(seq=answer_seq(db))
