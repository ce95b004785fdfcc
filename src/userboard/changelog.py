"""The capture layer's own tables: the commit-ordered seq counter and the change log. No Flask.

They name no model: a change-log row says which entity (`"user"`, ...) and which row (its primary
key, as text) an event is about, so any model that opts in to capture shares them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, event, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, UTCDateTime, iso, utcnow
from .events import ADDED


class ChangeLog(Base):
    """One row per published event, written in the transaction of the change it describes."""

    __tablename__ = "change_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    row_key: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    # The serialized row after the change (before it, for a delete): what a live view needs to
    # place the row without reading the table. Never sent to clients as such.
    state: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_change_log_entity_row_key", "entity", "row_key"),)


class SeqCounter(Base):
    """A single row holding the last seq handed out.

    Updating it inside the writing transaction locks it until commit, which is what makes seq
    follow commit order across processes (an auto-increment id does not).
    """

    __tablename__ = "seq_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


class CaptureMarker(Base):
    """Holds a row only inside a capturing transaction on SQLite (see userboard.triggers).

    SQLite runs one writer at a time, so no other connection ever sees that row; the users
    table's triggers log a write only when there is none: the capture logs its own writes.
    """

    __tablename__ = "capture_marker"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


@event.listens_for(SeqCounter.__table__, "after_create")
def _insert_counter_row(target, connection, **_kw):
    # create_all() (tests, scripts) gets the row too; the Alembic migration inserts it itself.
    connection.execute(insert(target).values(id=1, value=0))


def history(session, entity: str, key, limit: int | None = None) -> list[dict]:
    """The retained events of one row, newest first: each event's payload (with its seq and
    actor), its name under "event" and when it committed under "committed_at".

    A row's history starts at its latest add: SQLite may give a new row the key of a deleted
    one, whose events are not the new row's.
    """
    this_row = (ChangeLog.entity == entity, ChangeLog.row_key == str(key))
    born = (select(func.max(ChangeLog.seq))
            .where(*this_row, ChangeLog.event == f"{entity}_{ADDED}").scalar_subquery())
    rows = session.execute(
        select(ChangeLog.event, ChangeLog.committed_at, ChangeLog.payload)
        .where(*this_row, ChangeLog.seq >= func.coalesce(born, 0))
        .order_by(ChangeLog.seq.desc())
        .limit(limit)
    ).all()
    return [{"event": row.event, "committed_at": iso(row.committed_at), **row.payload}
            for row in rows]
