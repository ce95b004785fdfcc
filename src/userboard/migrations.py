"""Bring a database to the latest schema with Alembic. Imports no Flask.

The migration scripts live in the repository's top-level `alembic/` folder (the package is
installed in editable mode, as the README says), next to `alembic.ini` for the `alembic` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(f"alembic.ini not found at {ini}; install userboard with pip -e")
    config = Config(str(ini))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
