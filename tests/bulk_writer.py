"""A script that adds many users at once through the capture layer, in a few transactions of ORM
bulk INSERTs (`python -m tests.bulk_writer URL PREFIX ROWS [ROWS ...]`, one transaction per
ROWS), as an import job using userboard would. It publishes nothing itself: without a message
queue the servers relay its events from the change log."""

from __future__ import annotations

import sys

from sqlalchemy import insert

from userboard.bootstrap import open_database
from userboard.models import User


def main() -> None:
    url, prefix, *sizes = sys.argv[1:]
    database = open_database(url, actor="bulk-writer")
    try:
        done = 0
        with database.session() as session:
            for size in map(int, sizes):
                names = [f"{prefix}{i:06}" for i in range(done, done + size)]
                session.execute(insert(User), [{"username": n, "email": f"{n}@example.com"}
                                               for n in names])
                session.commit()
                done += size
    finally:
        database.close()


if __name__ == "__main__":
    main()
