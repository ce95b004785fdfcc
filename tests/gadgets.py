"""A second captured model that exists only in the test suite, to prove capture names no model.

It differs from User where capture could be tempted to assume: a text primary key (`code`),
a version column with another name (`revision`), its own metadata, and its own serializer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from userboard.capture import tracked
from userboard.db import UTCDateTime, utcnow
from userboard.models import iso


class GadgetBase(DeclarativeBase):
    metadata = MetaData()


def gadget_dict(row) -> dict:
    return {"code": row.code, "name": row.name, "color": row.color, "revision": row.revision,
            "updated_at": iso(row.updated_at)}


@tracked("gadget", changes=("name", "color"), serialize=gadget_dict)
class Gadget(GadgetBase):
    __tablename__ = "gadgets"

    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    color: Mapped[str] = mapped_column(String(20), default="grey")
    secret: Mapped[str | None] = mapped_column(String(40), default=None)  # not serialized
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": revision}
