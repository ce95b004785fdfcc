"""HTML pages: login, logout, the live dashboard, the edit page, language switch.

Pages are rendered on the server and kept live by the browser client in static/ (a socket on
/users). Every write goes through users.py, exactly like the API and the CLI.
"""

from __future__ import annotations

import logging
from functools import wraps
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _

from .. import auth, users
from ..capture import current_seq, set_actor
from ..extension import app_state, get_db
from ..i18n import LANGUAGES
from .forms import CsrfOnlyForm, EditUserForm, LoginForm, UserForm

log = logging.getLogger(__name__)

bp = Blueprint(
    "web", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)


@bp.app_context_processor
def _template_helpers():
    return {"client_strings": client_strings}


def client_strings() -> dict:
    """Translated text the browser client needs (it never builds UI text itself)."""
    return {
        "connection": {"connected": _("connected"), "reconnecting": _("reconnecting"),
                       "offline": _("offline")},
        "labels": {"role": {"admin": _("admin"), "user": _("user")},
                   "status": {"active": _("active"), "disabled": _("disabled")}},
        "confirm_delete": _("Delete user %(name)s? This cannot be undone.", name="{name}"),
        "changed_elsewhere": _("Someone else changed this user just now:"),
        "deleted_elsewhere": _("This user was deleted by someone else. Saving is disabled."),
        "fields": {"username": _("Username"), "email": _("Email"), "role": _("Role"),
                   "status": _("Status")},
    }


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        found = auth.login_admin(get_db(), session.get("login"))
        if found is None:
            session.pop("login", None)
            return redirect(url_for("web.login"))
        g.admin = found[0]
        set_actor(get_db(), "session", g.admin.id, g.admin.username)
        return view(*args, **kwargs)

    return wrapper


def throttle() -> auth.LoginThrottle:
    return app_state().login_throttle


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    error, status = None, 200
    if form.validate_on_submit():
        keys = (f"addr:{request.remote_addr}", f"user:{form.username.data.strip().lower()}")
        wait = throttle().wait_seconds(*keys)
        user = None
        if wait > 0:
            log.warning("login throttled for %r from %s", form.username.data.strip()[:64],
                        request.remote_addr)
            error, status = _("Too many failed attempts. Try again in %(n)d seconds.",
                              n=int(wait) + 1), 429
        else:
            user = auth.authenticate(get_db(), form.username.data.strip(), form.password.data)
            if user is None:
                throttle().failed(*keys)
                log.warning("failed login for %r from %s", form.username.data.strip()[:64],
                            request.remote_addr)
                error, status = _("Wrong username or password."), 401
        if user is not None:
            throttle().succeeded(*keys)
            lang = session.get("lang")
            session.clear()
            session["login"] = auth.start_login(get_db(), user)
            if lang:
                session["lang"] = lang
            return redirect(url_for("web.dashboard"))
    return render_template("login.html", form=form, error=error), status


@bp.post("/logout")
def logout():
    if CsrfOnlyForm().validate_on_submit():
        ended = auth.end_login(get_db(), session.get("login"))
        if ended is not None:  # cut this login's sockets here; other processes within a tick
            app_state().namespace.cut_principal(ended)
        lang = session.get("lang")
        session.clear()
        if lang:
            session["lang"] = lang
    return redirect(url_for("web.login"))


@bp.get("/language/<code>")
def set_language(code: str):
    if code in LANGUAGES:
        session["lang"] = code
    target = request.args.get("next", "/")
    if urlsplit(target).netloc or not target.startswith("/") or target.startswith("//"):
        target = "/"
    return redirect(target)


def render_dashboard(form: UserForm, status: int = 200):
    db = get_db()
    seq = current_seq(db)
    rows = [u.to_dict() for u in users.list_users(db)]
    db.rollback()
    return render_template("dashboard.html", users=rows, seq=seq, form=form,
                           csrf_form=CsrfOnlyForm()), status


@bp.get("/")
@login_required
def dashboard():
    return render_dashboard(UserForm(formdata=None))


def show_errors(form, error: users.UserError) -> None:
    """Put users.py's messages next to the fields they concern; the rest at the top."""
    placed = False
    for name, message in error.fields.items():
        if name in form and name != "csrf_token":
            form[name].errors = [*form[name].errors, _(message)]
            placed = True
    if not placed or isinstance(error, users.StaleVersion):
        flash(_(error.message), "error")


@bp.post("/users")
@login_required
def add_user():
    form = UserForm()
    if not form.validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        return render_dashboard(form, 400)
    try:
        user = users.create_user(get_db(), form.user_data())
    except users.UserError as exc:
        show_errors(form, exc)
        return render_dashboard(form, 422 if exc.code != "conflict" else 409)
    flash(_("User %(name)s added.", name=user.username), "success")
    return redirect(url_for("web.dashboard"))


@bp.route("/users/<int:user_id>/edit", methods=["GET", "POST"])
@login_required
def edit_user(user_id: int):
    db = get_db()
    seq = current_seq(db)  # read first: the socket replays everything after it
    try:
        user = users.get_user(db, user_id)
    except users.NotFound:
        flash(_("That user does not exist (any more)."), "error")
        return redirect(url_for("web.dashboard"))
    current = user.to_dict()
    if request.method == "GET":
        form = EditUserForm(data={**current, "version": current["version"]})
        return render_template("edit.html", form=form, user=current, stale=None, seq=seq)
    form = EditUserForm()
    status = 400
    if form.validate_on_submit():
        version = form.version.data
        try:
            users.update_user(db, user_id, form.user_data(),
                              expected_version=int(version) if version and version.isdigit() else -1)
        except users.StaleVersion as exc:
            show_errors(form, exc)
            stale = exc.current
            form.version.data = str(stale["version"])  # a second save is a deliberate overwrite
            return render_template("edit.html", form=form, user=stale, stale=stale, seq=seq), 409
        except users.UserError as exc:
            show_errors(form, exc)
            status = 422 if exc.code != "conflict" else 409
        else:
            flash(_("User %(name)s saved.", name=user.username), "success")
            return redirect(url_for("web.dashboard"))
    else:
        flash(_("The form expired. Please try again."), "error")
    return render_template("edit.html", form=form, user=current, stale=None, seq=seq), status


@bp.post("/users/<int:user_id>/delete")
@login_required
def delete_user(user_id: int):
    if not CsrfOnlyForm().validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        return redirect(url_for("web.dashboard"))
    try:
        users.delete_user(get_db(), user_id)
    except users.UserError as exc:
        flash(_(exc.message), "error")
    else:
        flash(_("User deleted."), "success")
    return redirect(url_for("web.dashboard"))
