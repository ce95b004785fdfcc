"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json.

Written by hand next to api.py and kept true by tests/test_openapi.py, which checks every
/api route against it and lets Schemathesis call the API as described. The field limits are
not written here: they come from the rules in fields.py, which users.py enforces.
"""

from __future__ import annotations

from . import fields, users, views
from .fields import ROLES, STATUSES


def string_schema(rule: fields.FieldRule, **extra) -> dict:
    """The JSON Schema of a string field that follows `rule`."""
    schema = {"type": "string", **extra}
    if rule.min_length:
        schema["minLength"] = rule.min_length
    if rule.max_length is not None:
        schema["maxLength"] = rule.max_length
    if rule.pattern is not None:
        schema["pattern"] = f"^{rule.pattern}$"
    return schema


USERNAME = string_schema(fields.USERNAME)
EMAIL = string_schema(fields.EMAIL, format="email")
PASSWORD = string_schema(fields.PASSWORD)

USER = {
    "type": "object",
    "required": ["id", "username", "email", "role", "status", "version", "created_at", "updated_at"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "username": {"type": "string"},
        "email": {"type": "string"},
        "role": {"enum": list(ROLES)},
        "status": {"enum": list(STATUSES)},
        "version": {"type": "integer", "minimum": 1},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "additionalProperties": False,
            "properties": {
                "code": {"enum": ["bad_request", "unauthorized", "forbidden", "not_found",
                                  "method_not_allowed", "conflict", "too_large",
                                  "unsupported_media_type", "invalid", "internal",
                                  "unavailable"]},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "user": {"$ref": "#/components/schemas/User"},
    },
}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _error("malformed JSON, wrong types or unknown fields"),
    "401": _error("no or bad credentials"),
    "403": _error("a session write without a valid X-CSRFToken"),
    "413": _error("body over 64 KB"),
}
# Any operation, when the database cannot answer now; a write then changed nothing.
UNAVAILABLE = {
    **_error("the database cannot do it now (a write waited past the lock timeout, or the "
             "connection was lost): nothing changed; try again after Retry-After seconds"),
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
}
USER_ID = {"name": "user_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
SEQ_USER = {"type": "object", "required": ["seq", "user"], "additionalProperties": False,
            "properties": {"seq": {"type": "integer", "minimum": 0},
                           "user": {"$ref": "#/components/schemas/User"}}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


CURSOR = {"type": ["string", "null"]}
VIEW_PARAMETERS = [
    _query("q", {"type": "string", "maxLength": views.Q_MAX, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"},
           "case-insensitive substring of username or email"),
    _query("role", {"enum": ["", *ROLES]}, "only this role (empty: any)"),
    _query("status", {"enum": ["", *STATUSES]}, "only this status (empty: any)"),
    _query("sort", {"enum": ["", *views.SORTS]}, "sort field (id breaks ties); default id"),
    _query("order", {"enum": ["", *views.ORDERS]}, "default asc"),
]
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": views.LIMIT_MAX},
               f"page size; without it up to {views.API_LIMIT} users")
AFTER = _query("after", {"type": "string"}, "a cursor from next or prev of an earlier answer")
PAGE = {
    "type": "object", "required": ["seq", "users", "total", "next", "prev"],
    "additionalProperties": False,
    "properties": {"seq": {"type": "integer", "minimum": 0},
                   "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
                   "total": {"type": "integer", "minimum": 0},
                   "next": CURSOR, "prev": CURSOR},
}
ACTOR = {
    "type": "object", "required": ["kind", "user_id", "name"], "additionalProperties": False,
    "properties": {"kind": {"enum": ["session", "token", "cli", "script", "external"]},
                   "user_id": {"type": ["integer", "null"]},
                   "name": {"type": ["string", "null"]}},
}
HISTORY_EVENT = {
    "type": "object", "required": ["seq", "event", "actor", "committed_at"],
    "properties": {"seq": {"type": "integer", "minimum": 1},
                   "event": {"enum": ["user_added", "user_updated", "user_deleted"]},
                   "actor": ACTOR,
                   "committed_at": {"type": "string", "format": "date-time"}},
}
BULK = {
    "type": "object", "required": ["action", "ids"], "additionalProperties": False,
    "properties": {"action": {"enum": list(users.BULK_ACTIONS)},
                   "ids": {"type": "array", "minItems": 1, "maxItems": users.BULK_MAX,
                           "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}},
}


def spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "userboard API",
            "version": "1",
            "description": "Users, live: every committed write is also pushed as a Socket.IO "
                           "event on /users (see docs/protocol.md).",
        },
        "components": {
            "schemas": {
                "User": USER,
                "Error": ERROR,
                "NewUser": {
                    "type": "object", "required": ["username", "email"],
                    "additionalProperties": False,
                    "properties": {"username": USERNAME, "email": EMAIL,
                                   "role": {"enum": list(ROLES)},
                                   "status": {"enum": list(STATUSES)}, "password": PASSWORD},
                },
                "UserChanges": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"username": USERNAME, "email": EMAIL,
                                   "role": {"enum": list(ROLES)},
                                   "status": {"enum": list(STATUSES)}, "password": PASSWORD,
                                   "version": {"type": "integer", "minimum": 1}},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "a token from `userboard token create USERNAME`"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session",
                            "description": "a logged-in admin's cookie; writes also need "
                                           "the X-CSRFToken header"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/users": {
                "get": {
                    "operationId": "listUsers",
                    "summary": "One page of a view (search, filters, sort, keyset cursor), its "
                               "total and the seq it reflects",
                    "parameters": VIEW_PARAMETERS + [LIMIT, AFTER],
                    "responses": {
                        "200": _ok("the page", PAGE),
                        "400": _error("a bad view parameter (named under fields)"),
                        "401": ERRORS["401"],
                        "503": UNAVAILABLE,
                    },
                },
                "post": {
                    "operationId": "createUser",
                    "summary": "Create a user",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/NewUser"}}}},
                    "responses": {
                        "201": _ok("created; seq is its user_added event's", SEQ_USER),
                        **ERRORS,
                        "503": UNAVAILABLE,
                        "409": _error("username or email already in use"),
                        "422": _error("a field breaks a rule (messages under fields)"),
                    },
                },
            },
            "/api/users.csv": {
                "get": {
                    "operationId": "exportUsers",
                    "summary": "Every user of a view as CSV (formula-like cells neutralised)",
                    "parameters": VIEW_PARAMETERS,
                    "responses": {
                        "200": {"description": "CSV with a header row",
                                "content": {"text/csv": {"schema": {"type": "string"}}}},
                        "400": _error("a bad view parameter"),
                        "401": ERRORS["401"],
                        "503": UNAVAILABLE,
                    },
                },
            },
            "/api/users/bulk": {
                "post": {
                    "operationId": "bulkUpdateUsers",
                    "summary": "One action on up to 1,000 users, in one transaction",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": BULK}}},
                    "responses": {
                        "200": _ok("done; seq is the last event's", {
                            "type": "object", "required": ["seq", "changed"],
                            "additionalProperties": False,
                            "properties": {"seq": {"type": "integer", "minimum": 0},
                                           "changed": {"type": "array",
                                                       "items": {"type": "integer"}}}}),
                        **ERRORS,
                        "503": UNAVAILABLE,
                        "404": _error("an unknown id (nothing changed)"),
                        "409": _error("the batch would leave no active admin"),
                    },
                },
            },
            "/api/users/{user_id}/history": {
                "parameters": [USER_ID],
                "get": {
                    "operationId": "userHistory",
                    "summary": "The user's retained events, newest first, with who made each",
                    "responses": {
                        "200": _ok("the events", {
                            "type": "object", "required": ["events"], "additionalProperties": False,
                            "properties": {"events": {"type": "array", "items": HISTORY_EVENT}}}),
                        "401": ERRORS["401"],
                        "503": UNAVAILABLE,
                        "404": _error("no such user, and no retained events of one"),
                    },
                },
            },
            "/api/users/{user_id}": {
                "parameters": [USER_ID],
                "get": {
                    "operationId": "getUser",
                    "summary": "One user",
                    "responses": {
                        "200": _ok("the user", {
                            "type": "object", "required": ["user"], "additionalProperties": False,
                            "properties": {"user": {"$ref": "#/components/schemas/User"}}}),
                        "401": ERRORS["401"],
                        "503": UNAVAILABLE,
                        "404": _error("no such user"),
                    },
                },
                "patch": {
                    "operationId": "updateUser",
                    "summary": "Change fields; with version, only if the row is still at it",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/UserChanges"}}}},
                    "responses": {
                        "200": _ok("changed (or unchanged: then seq is the current one)", SEQ_USER),
                        **ERRORS,
                        "503": UNAVAILABLE,
                        "404": _error("no such user"),
                        "409": _error("taken name or email, a stale version (current row under "
                                      "user), or the last active admin"),
                        "422": _error("a field breaks a rule"),
                    },
                },
                "delete": {
                    "operationId": "deleteUser",
                    "summary": "Delete a user",
                    "responses": {
                        "200": _ok("deleted; seq is its user_deleted event's", {
                            "type": "object", "required": ["seq"], "additionalProperties": False,
                            "properties": {"seq": {"type": "integer", "minimum": 0}}}),
                        "401": ERRORS["401"],
                        "503": UNAVAILABLE,
                        "403": ERRORS["403"],
                        "404": _error("no such user"),
                        "409": _error("the last active admin"),
                    },
                },
            },
            "/api/logout-everywhere": {
                "post": {
                    "operationId": "logoutEverywhere",
                    "summary": "End every browser login of the caller's admin, the calling one "
                               "included; their sockets are cut within a second. API tokens "
                               "stay (revoke them with `userboard token revoke`)",
                    "responses": {
                        "200": _ok("the logins ended", {
                            "type": "object", "required": ["logins_ended"],
                            "additionalProperties": False,
                            "properties": {"logins_ended": {"type": "integer", "minimum": 0}}}),
                        "401": ERRORS["401"],
                        "403": ERRORS["403"],
                    },
                },
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1",
                                          "content": {"application/json": {}}}},
                },
            },
        },
    }
