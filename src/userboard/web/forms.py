"""Flask-WTF forms: CSRF on every POST. Field rules live in users.py, not here.

The forms only carry what was typed; `users.py` validates it and its field messages are put
next to the fields (see `show_errors`).
"""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

ROLE_CHOICES = [SelectChoice("user", _l("user")), SelectChoice("admin", _l("admin"))]
STATUS_CHOICES = [SelectChoice("active", _l("active")), SelectChoice("disabled", _l("disabled"))]


class LoginForm(FlaskForm):
    username = StringField(
        _l("Username"), validators=[InputRequired(), Length(max=64)],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        _l("Password"), validators=[InputRequired(), Length(max=256)],
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
