"""HTML pages: login, logout, the live dashboard, the edit page, language switch.

Pages are rendered on the server and kept live by the browser client in static/ (a socket on
/users). The dashboard shows one page of a view (views.py) named by its URL, so reload, back and
bookmarks restore it. Every write goes through users.py, exactly like the API and the CLI, and
answers with a redirect back to the view it came from (POST/redirect/GET: reload never re-POSTs).
"""

from __future__ import annotations

import json
import logging
import math
import re
from functools import wraps
from urllib.parse import urlencode, urlsplit

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
from sqlalchemy import exc as sa_exc

from .. import auth, changelog, users, views
from ..capture import current_seq, set_actor
from ..db import unavailable
from ..errors import database_unavailable, internal_error
from ..extension import WRITE_METHODS, app_state, get_db, writes_no_events
from ..i18n import LANGUAGES
from ..throttle import LoginThrottle
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
        "confirm_bulk_delete": _("Delete the %(n)s selected users? This cannot be undone.",
                                 n="{n}"),
        "select_row": _("Select %(name)s", name="{name}"),
        "changed_elsewhere": _("Someone else changed this user just now:"),
        "deleted_elsewhere": _("This user was deleted by someone else. Saving is disabled."),
        "fields": {"username": _("Username"), "email": _("Email"), "role": _("Role"),
                   "status": _("Status")},
    }


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        found = auth.login_admin(get_db(), session.get("login"), app_state().session_timeouts)
        if found is None:
            if session.pop("login", None) is not None:
                flash(_("Your login has ended. Please log in again."), "error")
            return redirect(url_for("web.login"))
        g.admin, g.principal = found
        set_actor(get_db(), "session", g.admin.id, g.admin.username)
        return view(*args, **kwargs)

    return wrapper


def throttle() -> LoginThrottle:
    return app_state().login_throttle


@bp.route("/login", methods=["GET", "POST"])
@writes_no_events
def login():
    """The login form; a throttled attempt gets 429 with Retry-After and the wait in the message."""
    form = LoginForm()
    error, status, headers = None, 200, {}
    if form.validate_on_submit():
        # The address is the client's own behind USERBOARD_PROXY_HOPS proxies (ProxyFix).
        keys = (f"addr:{request.remote_addr}", f"user:{form.username.data.strip().lower()}")
        wait = throttle().wait_seconds(*keys)
        user = None
        if wait > 0:
            log.warning("login throttled for %r from %s", form.username.data.strip()[:64],
                        request.remote_addr)
            seconds = math.ceil(wait)
            error, status = _("Too many failed attempts. Try again in %(n)d seconds.",
                              n=seconds), 429
            headers["Retry-After"] = str(seconds)
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
            session["login"] = auth.start_login(get_db(), user, app_state().session_timeouts)
            if lang:
                session["lang"] = lang
            return redirect(url_for("web.dashboard"))
    return render_template("login.html", form=form, error=error), status, headers


@bp.post("/logout")
@writes_no_events
def logout():
    if CsrfOnlyForm().validate_on_submit():
        ended = auth.end_login(get_db(), session.get("login"))
        if ended is not None:  # cut this login's sockets here; other processes within a tick
            app_state().namespace.cut_principals([ended])
        forget_login()
    return redirect(url_for("web.login"))


@bp.post("/logout-everywhere")
@writes_no_events
@login_required
def logout_everywhere():
    """End every browser login of this admin, this one included (API tokens stay)."""
    if not CsrfOnlyForm().validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        return back_to_view()
    ended = auth.end_logins(get_db(), g.admin.id)
    get_db().commit()
    app_state().namespace.cut_principals(ended)  # other processes: within a tick
    log.info("user %s logged out everywhere (%d logins)", g.admin.id, len(ended))
    forget_login()
    flash(_("You were logged out everywhere."), "success")
    return redirect(url_for("web.login"))


def forget_login() -> None:
    """Empty the session cookie but for the chosen language."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


@bp.get("/language/<code>")
def set_language(code: str):
    if code in LANGUAGES:
        session["lang"] = code
    target = request.args.get("next", "/")
    if urlsplit(target).netloc or not target.startswith("/") or target.startswith("//"):
        target = "/"
    return redirect(target)


# A typed value whose JSON is longer than this is not kept across the redirect: the session is
# a cookie, and browsers keep at most 4 KB of it.
KEPT_INPUT_BYTES = 512
KEPT_FORM = "kept_form"


def view_args() -> dict:
    """The view parameters of this request's URL, to come back to the same view after a write."""
    return {k: v for k, v in request.args.items() if k in views.PARAMS and k != "limit" and v}


def back_to_view():
    return redirect(url_for("web.dashboard", **view_args()))


def dashboard_url(params: dict) -> str:
    return url_for("web.dashboard") + ("?" + urlencode(params) if params else "")


def toggled_sort(view: views.View, field: str) -> dict:
    """The first page sorted by `field`: ascending, or the other way if it is the current sort."""
    order = "asc"
    if view.sort == field:
        order = "asc" if view.descending else "desc"
    return {**view.params(), "sort": field, "order": order}


def keep_form(form, **extra) -> None:
    """Carry a refused form's values (never a password) and errors across the redirect."""
    data, errors = {}, {}
    for field in form:
        if field.type in ("PasswordField", "CSRFTokenField"):
            continue
        value = field.data if isinstance(field.data, str) else ""
        data[field.name] = value if len(json.dumps(value)) <= KEPT_INPUT_BYTES else ""
        if field.errors:
            errors[field.name] = [str(e) for e in field.errors]
    session[KEPT_FORM] = {"form": type(form).__name__, "data": data, "errors": errors, **extra}


def kept_form(form_class, **match) -> tuple | None:
    """The refused form a redirect carried to this page (once) and its extras, or None."""
    kept = session.get(KEPT_FORM)
    if not isinstance(kept, dict) or kept.get("form") != form_class.__name__:
        return None
    if any(kept.get(key) != value for key, value in match.items()):
        return None
    session.pop(KEPT_FORM)
    form = form_class(formdata=None, data=kept.get("data") or {})
    for name, errors in (kept.get("errors") or {}).items():
        if name in form:
            form[name].errors = list(errors)
    return form, kept


@bp.get("/")
@login_required
def dashboard():
    """One page of the view in the URL; the browser then keeps it live."""
    params = request.args.to_dict()
    params.pop("limit", None)  # the page size is fixed
    try:
        view = views.parse_view(params, app_state().cursors)
    except users.UserError as exc:
        flash(_("This address asks for a view that cannot be shown (%(fields)s). Showing all"
                " users instead.", fields=", ".join(sorted(exc.fields))), "error")
        return redirect(url_for("web.dashboard"))
    db = get_db()
    window = views.answer(db, view, app_state().cursors)
    db.rollback()
    kept = kept_form(UserForm)
    base = view.params()
    current = {**base, "after": params["after"]} if params.get("after") else base

    def page(cursor):
        return dashboard_url({**base, "after": cursor}) if cursor else None

    return render_template(
        "dashboard.html", window=window, view=view, view_params=current,
        view_query=urlencode(current), form=kept[0] if kept else UserForm(formdata=None),
        sort_urls={f: dashboard_url(toggled_sort(view, f)) for f in views.SORTS},
        next_url=page(window["next"]), prev_url=page(window["prev"]),
        export_url=url_for("api.export_users", **base), bulk_actions=list(users.BULK_ACTIONS),
    )


def show_errors(form, error: users.UserError) -> None:
    """Put users.py's messages next to the fields they concern; the rest at the top."""
    placed = False
    for name, message in error.fields.items():
        if name in form and name != "csrf_token":
            form[name].errors = [*form[name].errors, _(message)]
            placed = True
    if not placed or isinstance(error, users.StaleVersion):
        flash(_(error.message), "error")


@bp.errorhandler(sa_exc.DBAPIError)
@bp.errorhandler(sa_exc.TimeoutError)
def database_error(exc: Exception):
    """The database could not serve this page or form now (see errors.py): say so."""
    if not unavailable(exc):
        return internal_error(exc)
    return database_unavailable(exc, busy_answer)


def busy_answer():
    """A page: 503 with a message. A form: its message, what was typed, and back (a redirect)."""
    if request.method not in WRITE_METHODS:
        return render_template("unavailable.html"), 503
    message = _("The database is busy. Nothing was changed: please try again in a moment.")
    if request.endpoint == "web.login":
        return render_template("login.html", form=LoginForm(), error=message), 503
    flash(message, "error")
    if request.endpoint == "web.add_user":
        keep_form(UserForm())
    elif request.endpoint == "web.edit_user":
        user_id = request.view_args["user_id"]
        keep_form(EditUserForm(), user_id=user_id)
        return redirect(url_for("web.edit_user", user_id=user_id, **view_args()))
    return back_to_view()


@bp.post("/users")
@login_required
def add_user():
    form = UserForm()
    if not form.validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        keep_form(form)
        return back_to_view()
    try:
        user = users.create_user(get_db(), form.user_data())
    except users.UserError as exc:
        show_errors(form, exc)
        keep_form(form)
        return back_to_view()
    flash(_("User %(name)s added.", name=user.username), "success")
    return back_to_view()


@bp.post("/users/bulk")
@login_required
def bulk_users():
    """One action on the rows selected on the dashboard, in one transaction."""
    if not CsrfOnlyForm().validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        return back_to_view()
    action = request.form.get("action", "")
    selected = request.form.getlist("select")
    if action not in users.BULK_ACTIONS:
        flash(_("Choose an action first."), "error")
        return back_to_view()
    if not selected:
        flash(_("Select at least one user first."), "error")
        return back_to_view()
    if len(selected) > users.BULK_MAX or not all(re.fullmatch("[0-9]{1,19}", v) for v in selected):
        flash(_("That selection cannot be used. Reload the page and try again."), "error")
        return back_to_view()
    ids = [int(value) for value in selected]
    try:
        changed = users.bulk_update(get_db(), action, ids)
    except users.UserError as exc:
        flash(_(exc.message), "error")
    else:
        flash(_("Done: %(changed)d of %(selected)d selected users changed.",
                changed=len(changed), selected=len(set(ids))), "success")
    return back_to_view()


@bp.route("/users/<int:user_id>/edit", methods=["GET", "POST"])
@login_required
def edit_user(user_id: int):
    db = get_db()
    seq = current_seq(db)  # read first: the socket replays everything after it
    try:
        user = users.get_user(db, user_id)
    except users.NotFound:
        flash(_("That user does not exist (any more)."), "error")
        return back_to_view()
    current = user.to_dict()
    back = view_args()
    if request.method == "GET":
        # Read after `seq`: an event both listed here and replayed is shown once (by its seq).
        history = changelog.history(db, "user", user_id, limit=HISTORY_SHOWN)
        return render_edit(current, seq, back, history)
    form = EditUserForm()
    if not form.validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        keep_form(form, user_id=user_id)
        return redirect(url_for("web.edit_user", user_id=user_id, **back))
    version = form.version.data
    try:
        users.update_user(db, user_id, form.user_data(),
                          expected_version=int(version) if version and version.isdigit() else -1,
                          keep_login=g.principal.credential_id)
    except users.UserError as exc:
        show_errors(form, exc)
        keep_form(form, user_id=user_id, stale=isinstance(exc, users.StaleVersion))
        return redirect(url_for("web.edit_user", user_id=user_id, **back))
    flash(_("User %(name)s saved.", name=user.username), "success")
    return back_to_view()


# The edit page lists at most this many of the user's events, newest first (all of them, while
# the change log keeps them: GET /api/users/ID/history).
HISTORY_SHOWN = 50


def history_labels() -> dict:
    """The history's words: the server renders its entries with them, edit.js the live ones."""
    return {
        "kinds": {"session": _("browser session"), "token": _("API token"),
                  "cli": _("command line"), "script": _("script"),
                  "external": _("outside userboard")},
        "unknown": _("unknown"),
        "actor": _("%(name)s (%(kind)s)", name="{name}", kind="{kind}"),
        "events": {"user_added": _("created"), "user_updated": _("changed"),
                   "user_deleted": _("deleted")},
        "fields": {"username": _("Username"), "email": _("Email"), "role": _("Role"),
                   "status": _("Status")},
        "value_labels": {"admin": _("admin"), "user": _("user"), "active": _("active"),
                         "disabled": _("disabled")},
    }


def render_edit(current: dict, seq: int, back: dict, history: list[dict]):
    """The edit form: fresh, or the refused one a redirect carried here; and who changed what.

    After a stale save the page shows the row as it is now and takes its version, so saving
    again is a deliberate overwrite of what was shown.
    """
    page = {"user": current, "seq": seq, "back": back, "history": history,
            "history_max": HISTORY_SHOWN, "labels": history_labels()}
    kept = kept_form(EditUserForm, user_id=current["id"])
    if kept is None:
        form = EditUserForm(data={**current, "version": current["version"]})
        return render_template("edit.html", form=form, stale=None, **page)
    form, extras = kept
    stale = current if extras.get("stale") else None
    if stale:
        form.version.data = str(current["version"])
    return render_template("edit.html", form=form, stale=stale, **page)


@bp.post("/users/<int:user_id>/delete")
@login_required
def delete_user(user_id: int):
    if not CsrfOnlyForm().validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        return back_to_view()
    try:
        users.delete_user(get_db(), user_id)
    except users.UserError as exc:
        flash(_(exc.message), "error")
    else:
        flash(_("User deleted."), "success")
    return back_to_view()
