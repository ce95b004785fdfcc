"""userboard: a users-table admin dashboard whose open tabs stay in sync by push on commit.

This package file stays empty of imports on purpose: the `userboard` command must be able to
monkey-patch with gevent before anything touches sockets (see cli.py). The app factory lives in
`userboard.app`, the Flask-free change capture in `userboard.capture`.
"""

__version__ = "0.1.0"
