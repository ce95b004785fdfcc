"""The events userboard broadcasts and their wire payloads. Imports no Flask and names no model.

A captured model has an entity name (`User` is "user"); its events are named after it. Every
payload is plain JSON-ready data built before the commit, so publishing after it never has to
touch the database or the ORM.

- `ENTITY_added`   {"seq": n, "ENTITY": ROW, "actor": ACTOR}
- `ENTITY_updated` {"seq": n, "id": KEY, "version": V, "changes": {f: new}, "previous": {f: old},
                    "actor": ACTOR}  ("version" only for models with a version column)
- `ENTITY_deleted` {"seq": n, "id": KEY, "actor": ACTOR}

ACTOR is {"kind": K, "user_id": ID or null, "name": N}: who made the change.

For users that is `user_added` {"seq", "user"}, `user_updated` and `user_deleted`, plus
`users_snapshot` {"seq": S, "users": [USER, ...]} (sent to one client, never logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADDED, UPDATED, DELETED = "added", "updated", "deleted"

USERS_SNAPSHOT = "users_snapshot"

NAMESPACE = "/users"
# Authenticated clients join this room; events go to the room, never to the bare namespace,
# so a socket whose connect handler is still checking credentials receives nothing.
ROOM = "admins"


@dataclass(frozen=True)
class Event:
    """One committed change: `name` is the Socket.IO event, `data` its payload (with `seq`).

    `entity` and `key` say which row it is about (the change log stores them beside it).
    """

    name: str
    data: dict
    entity: str
    key: Any

    @property
    def seq(self) -> int:
        return self.data["seq"]


def actor(kind: str, user_id: int | None, name: str | None) -> dict:
    """Who made a change: kind session | token | cli | script | external."""
    return {"kind": kind, "user_id": user_id, "name": name}


def added(entity: str, seq: int, key: Any, row: dict, by: dict) -> Event:
    return Event(f"{entity}_{ADDED}", {"seq": seq, entity: row, "actor": by}, entity, key)


def updated(
    entity: str, seq: int, key: Any, version: int | None, changes: dict, previous: dict, by: dict
) -> Event:
    data: dict = {"seq": seq, "id": key}
    if version is not None:
        data["version"] = version
    data.update(changes=changes, previous=previous, actor=by)
    return Event(f"{entity}_{UPDATED}", data, entity, key)


def deleted(entity: str, seq: int, key: Any, by: dict) -> Event:
    return Event(f"{entity}_{DELETED}", {"seq": seq, "id": key, "actor": by}, entity, key)


def with_seq(event: Event, seq: int) -> Event:
    """The same event numbered `seq`."""
    return Event(event.name, {**event.data, "seq": seq}, event.entity, event.key)
