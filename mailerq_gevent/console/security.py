"""What every console request goes through: who is asking, may they change
anything, and the headers every answer carries (OWASP's session management,
CSRF prevention and HTTP headers cheat sheets).

* ``Guard.identify(request)``: the session from the cookie, or the API
  bearer token (``www-api-token``) for scripts;
* ``Guard.require(kind)``: a route decorator; ``page`` sends a browser without
  a session to the login page, ``api`` answers 401 (JSON, ``answers.py``).
  For every method that changes something (POST, PUT, PATCH, DELETE) it also
  refuses (403) cross-site requests (``Sec-Fetch-Site`` other than
  same-origin/none, or an ``Origin`` that is not this console's) and a
  missing or wrong CSRF token (``X-CSRF-Token`` header or ``csrf`` form
  field). A bearer-token request carries no cookie, so it needs no CSRF token;
* ``secure_headers(app, ...)``: a WSGI wrapper adding a strict
  Content-Security-Policy (no inline script, ``frame-ancestors 'none'``),
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy`` and, on pages,
  ``Cache-Control: no-store`` to every response, errors included.
"""

import functools
import hmac

import bottle

from mailerq_gevent.console.answers import ApiError

COOKIE = "mq_session"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; frame-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class Guard:
    def __init__(self, sessions, api_token="", secure=False):
        self.sessions, self.api_token, self.secure = sessions, api_token, secure

    # -- who ---------------------------------------------------------------------

    def identify(self, request):
        """``(user, session or None, by_token)``, or ``(None, None, False)``."""
        header = request.get_header("Authorization", "")
        if header.startswith("Bearer ") and self.api_token:
            if hmac.compare_digest(header[7:].strip().encode(), self.api_token.encode()):
                return "api-token", None, True
            return None, None, False
        session = self.sessions.get(request.get_cookie(COOKIE))
        return (session.user, session, False) if session else (None, None, False)

    def set_cookie(self, response, session):
        response.set_cookie(COOKIE, session.id, path="/", httponly=True, samesite="strict",
                            secure=self.secure)

    def clear_cookie(self, response):
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=self.secure)

    # -- may they ------------------------------------------------------------------

    def require(self, kind):
        """Decorator for a route: a logged-in user (and for changes, CSRF + same origin)."""
        def decorate(callback):
            @functools.wraps(callback)
            def wrapper(*args, **kwargs):
                request = bottle.request
                user, session, by_token = self.identify(request)
                if user is None:
                    return _unauthenticated(kind, request)
                if request.method in UNSAFE and not by_token:
                    problem = self.cross_site(request) or _bad_csrf(request, session)
                    if problem:
                        return _refuse(kind, 403, problem)
                request.environ["mq.user"], request.environ["mq.session"] = user, session
                return callback(*args, **kwargs)
            return wrapper
        return decorate

    def cross_site(self, request):
        """Why the request is cross-site, or None."""
        site = request.get_header("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            return "cross-site request refused"
        origin = request.get_header("Origin")
        if origin and origin != own_origin(request):
            return "cross-origin request refused"
        return None


def own_origin(request):
    parts = request.urlparts
    return "%s://%s" % (parts.scheme, parts.netloc)


def _bad_csrf(request, session):
    token = request.get_header("X-CSRF-Token") or request.forms.get("csrf")
    return None if session.csrf_matches(token) else "missing or wrong CSRF token"


def _unauthenticated(kind, request):
    if kind == "page":
        bottle.response.status = 303
        bottle.response.set_header("Location", "/login")
        return ""
    return _refuse(kind, 401, "login required")


def _refuse(kind, status, text):
    if kind == "api":
        return ApiError(status, text).answer()
    bottle.response.status = status
    bottle.response.content_type = "text/plain; charset=utf-8"
    return text


def secure_headers(app, static_prefix="/static/", cache_control=""):
    """Wrap the WSGI ``app`` so that every answer carries the security headers."""
    def wrapped(environ, start_response):
        static = environ.get("PATH_INFO", "").startswith(static_prefix)

        def start(status, headers, exc_info=None):
            names = {name.lower() for name, _ in headers}
            extra = [("X-Content-Type-Options", "nosniff"),
                     ("Referrer-Policy", "same-origin"),
                     ("X-Frame-Options", "DENY")]
            if "content-security-policy" not in names:
                extra.append(("Content-Security-Policy", CSP))
            if "cache-control" not in names:
                extra.append(("Cache-Control", cache_control if static and cache_control
                              else "no-store"))
            return start_response(status, headers + extra, exc_info)
        return app(environ, start)
    return wrapped
