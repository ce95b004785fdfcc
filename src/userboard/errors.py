"""JSON errors for the API: one shape, `{"error": {"code", "message", "fields"}}`, never a 500
for bad input and never a traceback.

A database that cannot serve a request now (a lock or statement timeout, no pooled connection in
time, a dropped connection) is a 503 with `Retry-After`, not a 500: the request changed nothing
and nobody retries it silently, except a read that lost its connection, which runs once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, current_app, g, jsonify, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from .db import connection_lost, unavailable
from .extension import close_db
from .users import StaleVersion, UserError

log = logging.getLogger(__name__)

STATUS_OF_CODE = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "invalid": 422,
    "internal": 500,
    "unavailable": 503,
}
CODE_OF_STATUS = {status: code for code, status in STATUS_OF_CODE.items()}
# Seconds a client is asked to wait before it tries a request that got a 503 again.
RETRY_AFTER = 1
READ_METHODS = ("GET", "HEAD")


class ApiError(Exception):
    def __init__(self, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or {}


def error_response(code: str, message: str, fields: dict | None = None, **extra):
    body = {"error": {"code": code, "message": message, "fields": fields or {}}, **extra}
    return jsonify(body), STATUS_OF_CODE[code]


def _wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def database_unavailable(exc: BaseException, answer: Callable[[], object]):
    """Answer a request the database could not serve now (`db.unavailable(exc)`).

    A read that lost its connection runs once more on a fresh one (the pool has dropped the
    dead one); otherwise the request's session is closed (its transaction rolls back) and
    `answer()` builds the reply, which gets a Retry-After header if it is a 503.
    """
    if connection_lost(exc) and request.method in READ_METHODS and not g.get("db_retried"):
        g.db_retried = True
        close_db()
        try:
            response = current_app.preprocess_request()
            return current_app.dispatch_request() if response is None else response
        except Exception as again:  # answered like an error of the first run
            return current_app.handle_user_exception(again)
    close_db()
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    log.warning("database unavailable on %s %s: %s: %s", request.method, request.path,
                type(getattr(exc, "orig", None) or exc).__name__, reason[0] if reason else "")
    response = current_app.make_response(answer())
    if response.status_code == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def unavailable_json():
    return error_response(
        "unavailable", "the database cannot complete this request now; try again shortly")


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.code, exc.message, exc.fields)

    @app.errorhandler(UserError)
    def _user_error(exc: UserError):
        # A stale write also gets the row as it is now.
        extra = {"user": exc.current} if isinstance(exc, StaleVersion) else {}
        return error_response(exc.code, exc.message, exc.fields, **extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if not _wants_json():
            return exc
        code = CODE_OF_STATUS.get(exc.code, "bad_request" if exc.code < 500 else "internal")
        message = "request body is too large" if exc.code == 413 else exc.description
        response, status = error_response(code, message)
        if getattr(exc, "valid_methods", None):  # 405 must say what is allowed
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response, status

    @app.errorhandler(sa_exc.DBAPIError)
    @app.errorhandler(sa_exc.TimeoutError)
    def _database_error(exc: Exception):
        if not unavailable(exc):
            return internal_error(exc)
        if _wants_json():
            return database_unavailable(exc, unavailable_json)
        return database_unavailable(exc, lambda: ("Service Unavailable", 503))

    app.register_error_handler(Exception, internal_error)


def internal_error(exc: Exception):
    """A bug: logged with its traceback, answered 500 without one."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    if _wants_json():
        return error_response("internal", "internal error")
    return "Internal Server Error", 500
