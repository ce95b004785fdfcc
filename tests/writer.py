"""A writer process for the scale-out tests: N user adds through the capture layer, as a script
using userboard would do it (`python -m tests.writer URL QUEUE CHANNEL PREFIX N`)."""

from __future__ import annotations

import sys

from userboard import users
from userboard.bootstrap import open_database


def main() -> None:
    url, queue, channel, prefix, count = sys.argv[1:6]
    database = open_database(url, message_queue=queue or None, channel=channel)
    try:
        with database.session() as session:
            for i in range(int(count)):
                name = f"{prefix}{i:03}"
                users.create_user(session, {"username": name, "email": f"{name}@example.com"})
    finally:
        database.close()


if __name__ == "__main__":
    main()
