"""HTML pages: login, logout and the dashboard (rendered on the server, kept live by the socket)."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, g, redirect, render_template, session, url_for

from .. import auth, users
from ..app import db_session
from ..capture import current_seq
from .forms import LoginForm, LogoutForm

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.admin = auth.active_admin(db_session(), session.get("user_id"))
        if g.admin is None:
            session.pop("user_id", None)
            return redirect(url_for("web.login"))
        return view(*args, **kwargs)

    return wrapper


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        user = auth.authenticate(db_session(), form.username.data, form.password.data)
        if user is not None:
            session.clear()
            session["user_id"] = user.id
            return redirect(url_for("web.dashboard"))
        error = "Wrong username or password."
    return render_template("login.html", form=form, error=error), 200 if error is None else 401


@bp.post("/logout")
def logout():
    form = LogoutForm()
    if form.validate_on_submit():
        session.clear()
    return redirect(url_for("web.login"))


@bp.get("/")
@login_required
def dashboard():
    db = db_session()
    seq = current_seq(db)
    rows = [u.to_dict() for u in users.list_users(db)]
    return render_template("dashboard.html", users=rows, seq=seq, logout_form=LogoutForm())
