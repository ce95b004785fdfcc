"""The field rules in fields.py are the ones every layer uses: columns, constraints, messages,
forms. (The OpenAPI description is checked in test_openapi.py.)"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import CheckConstraint
from wtforms.validators import Length

from userboard import fields, models, users
from userboard.fields import EMAIL, PASSWORD, ROLE, STATUS, USERNAME
from userboard.web import forms

COLUMNS = models.User.__table__.c


def test_columns_are_as_wide_as_the_rules_allow():
    for name, rule in (("username", USERNAME), ("email", EMAIL), ("role", ROLE), ("status", STATUS)):
        assert COLUMNS[name].type.length == rule.max_length, name
    assert all(len(choice) <= rule.max_length for rule in (ROLE, STATUS) for choice in rule.choices)


@pytest.mark.parametrize(("column", "rule"), [("role", ROLE), ("status", STATUS)])
def test_check_constraints_and_defaults_admit_exactly_the_choices(column, rule):
    checks = [str(c.sqltext) for c in models.User.__table__.constraints
              if isinstance(c, CheckConstraint) and str(c.sqltext).startswith(f"{column} IN")]
    assert len(checks) == 1
    assert re.findall(r"'([^']*)'", checks[0]) == list(rule.choices)
    assert COLUMNS[column].default.arg == rule.default
    assert (models.ROLES, models.STATUSES) == (fields.ROLES, fields.STATUSES)


def message_for(field: str, value: str) -> str:
    with pytest.raises(users.Invalid) as refused:
        users.clean({field: value}, partial=True)
    return refused.value.fields[field]


def test_messages_quote_the_rules():
    # The messages are translated text, so they cannot be formatted from the rules; they must
    # still say what the rules say.
    assert f"{USERNAME.min_length}-{USERNAME.max_length}" in message_for("username", "x")
    assert str(EMAIL.max_length) in message_for("email", "a" * EMAIL.max_length + "@example.com")
    assert f"{PASSWORD.min_length}-{PASSWORD.max_length}" in message_for("password", "short")
    for field, rule in (("role", ROLE), ("status", STATUS)):
        message = message_for(field, "nothing-like-it")
        assert all(choice in message for choice in rule.choices), message


def test_forms_offer_the_choices_default_first_and_bound_the_login():
    for choices, rule in ((forms.ROLE_CHOICES, ROLE), (forms.STATUS_CHOICES, STATUS)):
        values = [choice.value for choice in choices]
        assert sorted(values) == sorted(rule.choices) and values[0] == rule.default
    assert set(forms.LABELS) == set(ROLE.choices + STATUS.choices)
    for name, rule in (("username", USERNAME), ("password", PASSWORD)):
        lengths = [v for v in getattr(forms.LoginForm, name).kwargs["validators"]
                   if isinstance(v, Length)]
        assert [v.max for v in lengths] == [rule.max_length], name


def test_writable_fields_are_the_rules_fields():
    assert users.WRITABLE_FIELDS == tuple(fields.FIELDS)
