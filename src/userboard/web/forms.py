"""Flask-WTF forms: CSRF on every POST. Field rules live in users.py, not here."""

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired, Length


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=256)])


class LogoutForm(FlaskForm):
    """Only the CSRF token: logging out is a POST so no other site can trigger it."""
