"""The `userboard` command: serve, migrate, create admins, manage tokens and passwords, change
users.

This module is the process entry point, and so the only place that monkey-patches with gevent,
before anything imports socket, ssl, threading, redis or psycopg. Never import it from library
code or tests: run it as a command.
"""

from gevent import monkey

monkey.patch_all()

import getpass  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from .bench.common import SECTION_NAMES  # noqa: E402
from .config import ConfigError, Settings, log_format_from_env  # noqa: E402


class CliError(click.ClickException):
    """A one-line message on stderr and exit status 1."""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _open_db(settings: Settings):
    """Migrate, then open the database with capture (and the queue, if configured)."""
    from .bootstrap import cli_actor, open_database

    _migrate(settings.database_url)
    return open_database(settings.database_url, settings.message_queue,
                         settings.change_log_size, settings.channel, actor=cli_actor(),
                         min_age=settings.change_log_min_age)


def _migrate(url: str) -> None:
    from .migrations import upgrade

    try:
        upgrade(url)
    except Exception as exc:  # a bad URL, an unreachable server: one line, not a traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot migrate the database: {first_line}") from None


@click.group()
@click.version_option(package_name="userboard", message="userboard %(version)s")
def cli():
    """userboard: a users dashboard whose open tabs stay in sync by push on commit."""
    from .logs import configure

    try:
        configure(log_format_from_env())
    except ConfigError as exc:
        raise CliError(str(exc)) from None


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535))
def serve(host: str, port: int):
    """Migrate the database, then serve HTTP and WebSocket with gevent."""
    from .server import run_server

    settings = _settings()
    _migrate(settings.database_url)
    try:
        run_server(settings, host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@cli.group()
def db():
    """Database schema."""


@db.command("upgrade")
def db_upgrade():
    """Migrate the database to the latest schema."""
    _migrate(_settings().database_url)
    click.echo("database is at the latest schema")


@cli.command("create-admin")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password as one line from stdin.")
def create_admin(username: str, email: str, password_stdin: bool):
    """Create an active admin who can log in."""
    from . import users

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat password: "):
            raise CliError("the passwords do not match")
    database = _open_db(_settings())
    try:
        with database.session() as session:
            user = users.create_user(
                session,
                {"username": username, "email": email, "role": "admin", "status": "active",
                 "password": password},
            )
            click.echo(f"created admin {user.username} (id {user.id})")
    except users.UserError as exc:
        raise CliError(_one_line(exc)) from None
    finally:
        database.close()


@cli.group()
def token():
    """API tokens."""


@token.command("create")
@click.argument("username")
@click.option("--label", help="What the token is for (shown by `token list`).")
@click.option("--expires", "days", metavar="DAYS", help="Expire after DAYS days (default: never).")
def token_create(username: str, label: str | None, days: str | None):
    """Print a new API token for an active admin (only its hash is stored)."""
    from datetime import timedelta

    from . import auth

    expires_in = None
    if days is not None:
        if not (days.isascii() and days.isdigit() and 1 <= int(days) <= MAX_TOKEN_DAYS):
            raise CliError(f"--expires takes a whole number of days from 1 to {MAX_TOKEN_DAYS},"
                           f" not {days!r}")
        expires_in = timedelta(days=int(days))
    try:
        label = auth.check_label(label)
    except ValueError as exc:
        raise CliError(f"--label: {exc}") from None
    database = _open_db(_settings())
    try:
        with database.session() as session:
            user = _find_user(session, username)
            if user is None or not user.is_active_admin:
                raise CliError(f"no active admin named {username!r}")
            click.echo(auth.create_token(session, user, label=label, expires_in=expires_in))
    finally:
        database.close()


MAX_TOKEN_DAYS = 36_500


@token.command("list")
@click.argument("username", required=False)
@click.option("--json", "as_json", is_flag=True, help="A JSON array instead of a table.")
def token_list(username: str | None, as_json: bool):
    """List API tokens (all, or one user's): never the token itself."""
    import json

    from . import auth

    database = _open_db(_settings())
    try:
        with database.session() as session:
            user_id = _user_named(session, username).id if username else None
            tokens = auth.list_tokens(session, user_id)
    finally:
        database.close()
    if as_json:
        click.echo(json.dumps(tokens, indent=1))
        return
    columns = ("id", "username", "label", "created_at", "expires_at", "last_used_at")
    # Times to the second in the table (the JSON has them whole).
    rows = [["-" if t[c] is None else t[c][:19] + "Z" if c.endswith("_at") else str(t[c])
             for c in columns] for t in tokens]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@token.command("revoke")
@click.argument("token_id", metavar="ID")
def token_revoke(token_id: str):
    """Revoke a token: it gets 401 and its sockets are cut within a second."""
    from . import auth

    if not (token_id.isascii() and token_id.isdigit() and int(token_id) < 2**63):
        raise CliError(f"no token with id {token_id!r}")
    database = _open_db(_settings())
    try:
        with database.session() as session:
            revoked = auth.revoke_token(session, int(token_id))
    finally:
        database.close()
    if revoked is None:
        raise CliError(f"no token with id {token_id}")
    label = f" ({revoked['label']})" if revoked["label"] else ""
    click.echo(f"revoked token {revoked['id']}{label} of {revoked['username']}")


def _find_user(session, username: str):
    """The user with this name (any case), or None."""
    from sqlalchemy import func, select

    from .models import User

    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def _user_named(session, username: str):
    """The user with this name (any case), or a one-line error."""
    user = _find_user(session, username)
    if user is None:
        raise CliError(f"no user named {username!r}")
    return user


@cli.command()
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password as one line from stdin.")
def passwd(username: str, password_stdin: bool):
    """Set a user's password (how to recover the first admin); ends their browser logins."""
    from . import users

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True,
                                err=True)
    database = _open_db(_settings())
    try:
        with database.session() as session:
            user = _user_named(session, username)
            users.update_user(session, user.id, {"password": password})
            click.echo(f"password of {user.username} changed; their browser logins ended")
    except users.UserError as exc:
        raise CliError(_one_line(exc)) from None
    finally:
        database.close()


@cli.group("users")
def users_group():
    """List and change users (events reach every open dashboard)."""


@users_group.command("list")
def users_list():
    """Print one user per line."""
    from . import users

    database = _open_db(_settings())
    try:
        with database.session() as session:
            for u in users.list_users(session):
                click.echo(f"{u.id}\t{u.username}\t{u.email}\t{u.role}\t{u.status}")
    finally:
        database.close()


@users_group.command("add")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--role")
@click.option("--status")
def users_add(username, email, role, status):
    """Add a user."""
    data = {"username": username, "email": email, "role": role, "status": status}
    _write(lambda users, s: users.create_user(s, {k: v for k, v in data.items() if v is not None}))


@users_group.command("set")
@click.argument("user_id", type=int)
@click.argument("assignments", nargs=-1, required=True, metavar="FIELD=VALUE...")
def users_set(user_id, assignments):
    """Change fields of a user, e.g. `userboard users set 3 role=admin status=active`."""
    data = {}
    for item in assignments:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise CliError(f"expected FIELD=VALUE, got {item!r}")
        data[field] = value
    _write(lambda users, s: users.update_user(s, user_id, data))


@users_group.command("delete")
@click.argument("user_id", type=int)
def users_delete(user_id):
    """Delete a user."""
    _write(lambda users, s: users.delete_user(s, user_id))


@cli.command()
@click.option("--quick", is_flag=True, help="A smaller run (under a minute), for smoke tests.")
@click.option("--clients", type=click.IntRange(1, 20_000), help="Clients for latency/fan-out.")
@click.option("--section", "sections", multiple=True, metavar="NAME",
              type=click.Choice(SECTION_NAMES),
              help="Run only this section (repeatable); default: all.")
@click.option("--users", type=click.IntRange(1_000, 10_000_000),
              help="Users seeded for the views section (default 1,000,000; --quick 20,000).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write all results.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG plot.")
def bench(quick, clients, sections, users, json_path, plot_path):
    """Measure latency, fan-out, connections, write cost and views beside their baselines."""
    import json

    from .bench import report, runner

    if plot_path and sections and not {"latency", "poller"} <= set(sections):
        raise CliError("--plot needs the latency and poller sections")
    try:
        results = runner.run(quick=quick, clients=clients, sections=sections, users=users)
    except RuntimeError as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    click.echo(f"userboard bench{' --quick' if quick else ''}: {results['seconds']} s on "
               f"{results['machine']['cpu']} ({results['machine']['cores']} cores)")
    click.echo(report.format_table(results["summary"]))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    if plot_path:
        report.plot(results, plot_path)


def _write(action) -> None:
    from . import users
    from .capture import answer_seq

    database = _open_db(_settings())
    try:
        with database.session() as session:
            result = action(users, session)
            seq = answer_seq(session)
            if result is not None:
                click.echo(f"{result.id}\t{result.username}\t{result.email}\t{result.role}"
                           f"\t{result.status}\tseq={seq}")
            else:
                click.echo(f"seq={seq}")
    except users.UserError as exc:
        raise CliError(_one_line(exc)) from None
    finally:
        database.close()


def _one_line(exc) -> str:
    if exc.fields:
        return "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
    return exc.message


def main() -> None:
    cli(prog_name="userboard")


if __name__ == "__main__":
    main()
