"""A view's users as CSV, streamed: constant memory at a million rows. Imports no Flask.

Cells that a spreadsheet would run as a formula (starting with =, +, -, @, a tab or a carriage
return) get a leading apostrophe, the OWASP advice against CSV injection.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

from sqlalchemy.orm import Session

from .db import read_snapshot
from .views import View, iter_rows

COLUMNS = ("id", "username", "email", "role", "status", "version", "created_at", "updated_at")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 1000


def neutralise(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def rows(session: Session, view: View) -> Iterator[str]:
    """The header, then one chunk of CSV text per batch of rows, all from one snapshot."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    with read_snapshot(session):
        pending = 0
        for user in iter_rows(session, view, BATCH):
            writer.writerow([neutralise(user[c]) for c in COLUMNS])
            pending += 1
            if pending == BATCH:
                yield _take(buffer)
                pending = 0
                time.sleep(0)  # under gevent: let other greenlets run between batches
        yield _take(buffer)


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
