"""Security on every response and every socket handshake.

- Headers: a Content-Security-Policy with no inline script, no framing, no sniffing.
- The session cookie: HttpOnly, SameSite=Lax, and Secure when the request came over https
  (USERBOARD_SECURE_COOKIES=auto; or always/never).
- Cross-site WebSocket hijacking: the Socket.IO handshake (polling and websocket alike) is
  refused unless its Origin is the server's own or one listed in USERBOARD_ALLOWED_ORIGINS.
"""

from __future__ import annotations

import logging

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def own_origins(environ) -> set[str]:
    """The origins this request's own pages have (also as seen through a proxy)."""
    host = environ.get("HTTP_HOST", "")
    origins = {f"{environ.get('wsgi.url_scheme', 'http')}://{host}"}
    forwarded_host = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
    forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip()
    if forwarded_proto:
        origins.add(f"{forwarded_proto}://{forwarded_host}")
    return origins


def origin_checker(allowed: tuple[str, ...]):
    """For Socket.IO's cors_allowed_origins: own origin or a listed one; never '*'."""
    listed = {o.rstrip("/") for o in allowed}

    def check(origin, environ) -> bool:
        if origin is None:  # not a browser (scripts, the CLI's clients): nothing to hijack
            return True
        if origin in listed or origin in own_origins(environ):
            return True
        log.warning("refused socket handshake from origin %r (%s)", origin[:200],
                    environ.get("REMOTE_ADDR"))
        return False

    return check


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with Secure decided per request when set to auto."""

    def get_cookie_secure(self, app: Flask) -> bool:
        mode = app.config.get("SECURE_COOKIES", "auto")
        if mode == "auto":
            return request.is_secure
        return mode == "true"


def init_app(app: Flask) -> None:
    app.session_interface = SessionCookies()

    @app.after_request
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response
