"""Flask-WTF forms: CSRF on every POST. Field rules live in fields.py and users.py, not here.

The forms only carry what was typed; `users.py` validates it and its field messages are put
next to the fields (see `show_errors`). Choices and the login form's bounds are read from the
rules in fields.py.
"""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from ..fields import PASSWORD, ROLE, STATUS, USERNAME, FieldRule

# Labels only: which values exist is the rules' business (tests/test_fields.py checks the keys).
LABELS = {
    "admin": _l("admin"), "user": _l("user"), "active": _l("active"), "disabled": _l("disabled"),
}


def choices_of(rule: FieldRule) -> list[SelectChoice]:
    """The rule's choices with their labels, its default first (so a new user gets it)."""
    ordered = sorted(rule.choices, key=lambda value: value != rule.default)
    return [SelectChoice(value, LABELS[value]) for value in ordered]


ROLE_CHOICES = choices_of(ROLE)
STATUS_CHOICES = choices_of(STATUS)


class LoginForm(FlaskForm):
    # No name or password longer than the rules allow can exist, so none is worth checking.
    username = StringField(
        _l("Username"), validators=[InputRequired(), Length(max=USERNAME.max_length)],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        _l("Password"), validators=[InputRequired(), Length(max=PASSWORD.max_length)],
        render_kw={"autocomplete": "current-password"},
    )


class UserForm(FlaskForm):
    username = StringField(_l("Username"))
    email = StringField(_l("Email"))
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, validate_choice=False)
    status = SelectField(_l("Status"), choices=STATUS_CHOICES, validate_choice=False)
    password = PasswordField(
        _l("Password (admins only, optional)"), render_kw={"autocomplete": "new-password"}
    )

    def user_data(self) -> dict:
        """What was submitted, for users.py; an empty password means 'no password'."""
        data = {k: self[k].data or "" for k in ("username", "email", "role", "status")}
        if self.password.data:
            data["password"] = self.password.data
        return data


class EditUserForm(UserForm):
    version = HiddenField()
    password = PasswordField(
        _l("New password (leave empty to keep)"), render_kw={"autocomplete": "new-password"}
    )


class CsrfOnlyForm(FlaskForm):
    """Just the CSRF token: logout and delete are POSTs no other site can trigger."""
