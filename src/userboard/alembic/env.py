"""Alembic environment: userboard's metadata, batch mode for SQLite ALTERs."""

from logging.config import fileConfig

from alembic import context

from userboard.config import Settings
from userboard.db import make_engine
from userboard.migrations import include_name
from userboard.models import Base

config = context.config
# Only the `alembic` command has an alembic.ini; userboard itself keeps its own loggers.
if config.config_file_name:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, render_as_batch=True,
                      literal_binds=True, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:  # userboard's own upgrade(), holding the migration lock
        context.configure(connection=given, target_metadata=Base.metadata, render_as_batch=True,
                          include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
