"""JSON errors for the API: one shape, `{"error": {"code", "message", "fields"}}`, never a 500
for bad input and never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

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
}
CODE_OF_STATUS = {status: code for code, status in STATUS_OF_CODE.items()}


class ApiError(Exception):
    def __init__(self, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or {}


def error_response(code: str, message: str, fields: dict | None = None, **extra):
    body = {"error": {"code": code, "message": message, "fields": fields or {}}, **extra}
    return jsonify(body), STATUS_OF_CODE[code]


def _wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


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

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return error_response("internal", "internal error")
        return "Internal Server Error", 500
