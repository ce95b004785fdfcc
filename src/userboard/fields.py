"""The rules of a user's writable fields, in one table. Imports nothing of userboard.

users.py enforces these rules; models.py sizes its columns by them; openapi.py describes them;
the web forms take their choices and input bounds from them. Change a rule here and every one of
those follows. (The messages in users.py quote the numbers for translators;
tests/test_fields.py fails when a message and its rule disagree.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldRule:
    """What a value of one field may be; lengths count characters after trimming."""

    min_length: int = 0
    max_length: int | None = None
    chars: str | None = None  # a regex character class body every character must match
    choices: tuple[str, ...] = ()
    default: str | None = None

    @property
    def pattern(self) -> str | None:
        """The regex a whole value must match (without anchors), when the rule has `chars`."""
        if self.chars is None:
            return None
        return f"[{self.chars}]{{{self.min_length},{self.max_length}}}"


USERNAME = FieldRule(min_length=3, max_length=32, chars="A-Za-z0-9_.-")
EMAIL = FieldRule(max_length=254)
# max_length of a choice field is its column's width.
ROLE = FieldRule(max_length=16, choices=("admin", "user"), default="user")
STATUS = FieldRule(max_length=16, choices=("active", "disabled"), default="active")
PASSWORD = FieldRule(min_length=8, max_length=256)

FIELDS = {"username": USERNAME, "email": EMAIL, "role": ROLE, "status": STATUS, "password": PASSWORD}
ROLES, STATUSES = ROLE.choices, STATUS.choices
