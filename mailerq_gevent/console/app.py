"""The console's Bottle application and its HTTP(S) server (SPEC §9, seed 003).

``make_app(context)`` builds a fresh ``bottle.Bottle`` (never Bottle's global
default app) whose templates and static files come from absolute paths:
``views/`` and ``static/`` beside the package, or under ``www-dir``. The
routes live in ``pages.py`` (HTML), ``api.py`` (JSON), ``live.py`` (the SMTP
conversations) and ``render.py`` (a mail's HTML, sandboxed).

``ConsoleServer`` serves it with ``gevent.pywsgi`` inside the daemon on
``www-ip``:``www-port``, at most ``www-connections`` requests at once (live
streams included; one more waits). With ``www-secure-port`` it serves HTTPS
there (``www-certificate``/``www-privatekey``/``www-ciphers``, or a
self-signed certificate made under ``var/``) and plain HTTP only redirects
to it. Without ``www-auth`` nobody could log in, so the console does not
start (the log says why).
"""

import json
import os
from dataclasses import dataclass, field

import bottle
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from mailerq_gevent import logs, netinfo
from mailerq_gevent.console import security
from mailerq_gevent.console.sessions import LoginThrottle, Sessions

log = logs.get(__name__)

BACKLOG = 128
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Context:
    """What the routes use; built by ``app.App`` from the daemon's parts."""

    conf: object
    database: object = None             # SQLAlchemy engine
    reloader: object = None             # settings.Reloader
    broker: object = None
    authenticator: object = None
    recorder: object = None             # console.live.Recorder
    budget: object = None
    status: object = None               # callable: {"inbound": n, "outbound": n, "idle": n}
    secure: bool = False
    sessions: Sessions = field(default_factory=Sessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    guard: object = None
    views: str = ""
    static: str = ""

    def __post_init__(self):
        base = os.path.abspath(self.conf.www_dir) if self.conf.www_dir else PACKAGE_ROOT
        self.views = self.views or os.path.join(base, "views")
        self.static = self.static or os.path.join(base, "static")
        self.guard = self.guard or security.Guard(self.sessions, self.conf.www_api_token,
                                                  secure=self.secure)

    def settings(self):
        return self.reloader.current


def make_app(context):
    """A new Bottle app with every console route."""
    from mailerq_gevent.console import api, live, pages, render, tables
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False       # the API encodes its own answers
    app.config["mq.context"] = context
    app.route("/static/<path:path>", "GET", lambda path: _static(context, path))
    for module in (pages, api, tables, live, render):
        module.install(app, context)

    def not_found(error):
        """JSON for the API (scripts read it), this app's own error page otherwise."""
        if bottle.request.path.startswith("/api/"):
            bottle.response.content_type = "application/json"
            return json.dumps({"error": "%s: %s" % (error.status_line, bottle.request.path)})
        return app.default_error_handler(error)
    app.error(404)(not_found)
    app.error(405)(not_found)
    return app


def _static(context, path):
    response = bottle.static_file(path, root=context.static)
    if context.conf.www_cache_control:
        response.set_header("Cache-Control", context.conf.www_cache_control)
    return response


def template(context, name, **values):
    """Render ``views/<name>.tpl`` (auto-escaped ``{{ }}``) with the common values."""
    request = bottle.request
    session = request.environ.get("mq.session")
    values.setdefault("user", request.environ.get("mq.user"))
    values.setdefault("csrf", session.csrf if session else "")
    values.setdefault("title", "MailerQ-gevent")
    return bottle.template(name, template_lookup=[context.views], **values)


class _Handler(WSGIHandler):
    def log_request(self):
        pass        # requests are not logged line by line (pages poll)


class ConsoleServer:
    """``start()`` / ``stop(timeout)`` for the console's listeners."""

    def __init__(self, context, tls_context=None):
        self.context, self.tls_context = context, tls_context
        conf = context.conf
        app = security.secure_headers(make_app(context),
                                      cache_control=conf.www_cache_control)
        pool = Pool(conf.www_connections or None)
        self.servers = []
        if conf.www_secure_port and tls_context is not None:
            self.servers.append(WSGIServer(netinfo.listen(conf.www_ip, conf.www_secure_port, BACKLOG), app,
                                           spawn=pool, handler_class=_Handler,
                                           ssl_context=tls_context))
            if conf.www_port is not None:
                self.servers.append(WSGIServer(netinfo.listen(conf.www_ip, conf.www_port, BACKLOG),
                                               _redirect_to(conf), spawn=pool,
                                               handler_class=_Handler))
        elif conf.www_port is not None:
            self.servers.append(WSGIServer(netinfo.listen(conf.www_ip, conf.www_port, BACKLOG), app,
                                           spawn=pool, handler_class=_Handler))

    @property
    def addresses(self):
        return [server.address for server in self.servers]

    def start(self):
        for server in self.servers:
            server.start()
            log.info("console.listening", address=server.address[0], port=server.address[1],
                     tls=server.ssl_enabled)
        return self

    def stop(self, timeout=5.0):
        for server in self.servers:
            server.stop(timeout=min(timeout, 5.0))


def _redirect_to(conf):
    """A WSGI app that sends every plain-HTTP request to the HTTPS port."""
    def app(environ, start_response):
        host = _host_of(environ.get("HTTP_HOST") or conf.www_host or "localhost")
        target = "https://%s:%d%s" % (host, conf.www_secure_port,
                                      environ.get("PATH_INFO", "/") or "/")
        start_response("301 Moved Permanently", [("Location", target),
                                                  ("Content-Length", "0")])
        return [b""]
    return app


def _host_of(header):
    """The host of a Host header without its port: ``name``, ``1.2.3.4``, ``[::1]``."""
    if header.startswith("["):
        return header[:header.find("]") + 1] or header
    return header.partition(":")[0]
