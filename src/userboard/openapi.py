"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json.

Written by hand next to api.py and kept true by tests/test_openapi.py, which checks every
/api route against it and lets Schemathesis call the API as described. The field limits are
not written here: they come from the rules in fields.py, which users.py enforces.
"""

from __future__ import annotations

from . import fields
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
                                  "unsupported_media_type", "invalid", "internal"]},
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
USER_ID = {"name": "user_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
SEQ_USER = {"type": "object", "required": ["seq", "user"], "additionalProperties": False,
            "properties": {"seq": {"type": "integer", "minimum": 0},
                           "user": {"$ref": "#/components/schemas/User"}}}


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
                    "summary": "All users, ordered by id, and the seq they reflect",
                    "responses": {
                        "200": _ok("the users", {
                            "type": "object", "required": ["seq", "users"],
                            "additionalProperties": False,
                            "properties": {"seq": {"type": "integer", "minimum": 0},
                                           "users": {"type": "array",
                                                     "items": {"$ref": "#/components/schemas/User"}}}}),
                        "401": ERRORS["401"],
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
                        "409": _error("username or email already in use"),
                        "422": _error("a field breaks a rule (messages under fields)"),
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
                        "403": ERRORS["403"],
                        "404": _error("no such user"),
                        "409": _error("the last active admin"),
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
