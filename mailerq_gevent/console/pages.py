"""The console's HTML pages that are not a feature of their own: login,
logout, and the overview shell (its data comes from ``api.py``).

Login checks ``www-auth`` (a scheme of ``authn/``, as for SMTP AUTH), behind the
per-address and per-user throttle; every failure shows the same message.
A successful login starts a new session (new id, new CSRF token).
"""

import bottle

from mailerq_gevent import logs
from mailerq_gevent.console.templates import template

log = logs.get(__name__)

LOGIN_FAILED = "Wrong user name or password, or too many attempts. Try again later."


def install(app, context):
    guard = context.guard

    @app.get("/login")
    def login_form():
        return template(context, "login", error="")

    @app.post("/login")
    def login():
        request = bottle.request
        if guard.cross_site(request):
            bottle.response.status = 403
            return template(context, "login", error="Cross-site login refused.")
        user = (request.forms.getunicode("user") or "").strip()
        password = request.forms.getunicode("password") or ""
        address = request.remote_addr or ""
        if not _accepted(context, address, user, password):
            bottle.response.status = 401
            return template(context, "login", error=LOGIN_FAILED)
        old = guard.identify(request)[1]
        if old is not None:
            context.sessions.end(old.id)
        session = context.sessions.start(user)
        guard.set_cookie(bottle.response, session)
        log.info("console.login", user=user, client=address)
        return _see_other("/")

    @app.post("/logout")
    @guard.require("page")
    def logout():
        session = bottle.request.environ["mq.session"]
        if session is not None:
            context.sessions.end(session.id)
        guard.clear_cookie(bottle.response)
        return _see_other("/login")

    @app.get("/")
    @guard.require("page")
    def overview():
        return template(context, "overview", title="Overview")


def _see_other(path):
    bottle.response.status = 303
    bottle.response.set_header("Location", path)
    return ""


def _accepted(context, address, user, password):
    throttle = context.throttle
    if not user or not password or context.authenticator is None:
        return False
    if throttle.blocked(address, user):
        log.warning("console.login_throttled", client=address, user=user[:64])
        return False
    if context.authenticator.check(user, password):
        throttle.succeeded(address, user)
        return True
    throttle.failed(address, user)
    return False
