"""The events userboard broadcasts and their wire payloads. Imports no Flask.

Every payload is plain JSON-ready data built before the commit, so publishing after it never has
to touch the database or the ORM.

- `user_added`   {"seq": n, "user": USER}
- `user_updated` {"seq": n, "id": ID, "version": V, "changes": {f: new}, "previous": {f: old}}
- `user_deleted` {"seq": n, "id": ID}
- `users_snapshot` {"seq": S, "users": [USER, ...]} (sent to one client, never logged)
"""

from __future__ import annotations

from dataclasses import dataclass

USER_ADDED = "user_added"
USER_UPDATED = "user_updated"
USER_DELETED = "user_deleted"
USERS_SNAPSHOT = "users_snapshot"

NAMESPACE = "/users"
# Authenticated clients join this room; events go to the room, never to the bare namespace,
# so a socket whose connect handler is still checking credentials receives nothing.
ROOM = "admins"


@dataclass(frozen=True)
class Event:
    """One committed change: `name` is the Socket.IO event, `data` its payload (with `seq`)."""

    name: str
    data: dict

    @property
    def seq(self) -> int:
        return self.data["seq"]

    @property
    def user_id(self) -> int:
        return self.data["user"]["id"] if self.name == USER_ADDED else self.data["id"]


def user_added(seq: int, user: dict) -> Event:
    return Event(USER_ADDED, {"seq": seq, "user": user})


def user_updated(seq: int, user_id: int, version: int, changes: dict, previous: dict) -> Event:
    return Event(
        USER_UPDATED,
        {"seq": seq, "id": user_id, "version": version, "changes": changes, "previous": previous},
    )


def user_deleted(seq: int, user_id: int) -> Event:
    return Event(USER_DELETED, {"seq": seq, "id": user_id})
