"""Security on every response and every socket handshake.

- Headers: a Content-Security-Policy with no inline script, no framing, no sniffing.
- The session cookie: HttpOnly, SameSite=Lax, and Secure when the request came over https
  (USERBOARD_SECURE_COOKIES=auto; or always/never). Behind a TLS proxy, "came over https" is what
  the proxy says, once USERBOARD_PROXY_HOPS trusts it (ProxyFix, wired in app.py).
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


def own_origin(environ) -> str:
    """The origin this request's own pages have.

    Behind proxies, ProxyFix (USERBOARD_PROXY_HOPS) has already put the client's scheme and host
    into the environ; X-Forwarded-* headers are never read here, so that what is trusted from
    them is decided in one place.
    """
    return f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"


def origin_checker(allowed: tuple[str, ...]):
    """For Socket.IO's cors_allowed_origins: own origin or a listed one; never '*'."""
    listed = {o.rstrip("/") for o in allowed}

    def check(origin, environ) -> bool:
        if origin is None:  # not a browser (scripts, the CLI's clients): nothing to hijack
            return True
        own = own_origin(environ)
        if origin in listed or origin == own:
            return True
        # The server's own origin in the log shows a missing USERBOARD_PROXY_HOPS (http://...).
        log.warning("refused socket handshake from origin %r (%s); this server's own origin is %r",
                    origin[:200], environ.get("REMOTE_ADDR"), own[:200])
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
