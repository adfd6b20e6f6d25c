"""The console's Bottle application and its HTTP(S) server: MailerQ's
management console, served by the daemon itself.

``make_app(context)`` builds a fresh ``bottle.Bottle`` (never Bottle's global
default app) with the routes of ``pages.py`` (HTML), ``api.py`` (JSON),
``tables.py`` (the table editors), ``live.py`` (the SMTP conversations) and
``render.py`` (a mail's HTML, sandboxed), and the static files. The
``Context`` the routes are given, with the absolute paths of the templates
and static files, is ``templates.py``'s. Unknown paths and methods under
``/api/`` answer JSON (404, 405 with ``Allow``), elsewhere an HTML page.

``ConsoleServer`` serves it with ``gevent.pywsgi`` inside the daemon on
``www-ip``:``www-port``, at most ``www-connections`` requests at once (live
streams included; one more waits). With ``www-secure-port`` it serves HTTPS
there (``www-certificate``/``www-privatekey``/``www-ciphers``, or a
self-signed certificate made under ``var/``) and plain HTTP only redirects
to it. Without ``www-auth`` nobody could log in, so the console does not
start (the log says why).
"""

import socket

import bottle
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from mailerq_gevent import logs, netinfo
from mailerq_gevent.console import api, live, pages, render, security, tables
from mailerq_gevent.console.answers import ApiError
from mailerq_gevent.console.request_body import ABANDONED

log = logs.get(__name__)

BACKLOG = 128
ROUTES = (pages, api, tables, live, render)


def make_app(context):
    """A new Bottle app with every console route."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False       # the API encodes its own answers
    app.config["mq.context"] = context
    app.route("/static/<path:path>", "GET", lambda path: _static(context, path))
    for module in ROUTES:
        module.install(app, context)

    def not_found(error):
        """JSON for the API (scripts read it), this app's own error page otherwise."""
        if bottle.request.path.startswith("/api/"):
            return ApiError(error.status_code,
                            "%s: %s" % (error.status_line, bottle.request.path)).answer()
        return app.default_error_handler(error)
    app.error(404)(not_found)
    app.error(405)(not_found)
    return app


def _static(context, path):
    response = bottle.static_file(path, root=context.static)
    if context.conf.www_cache_control:
        response.set_header("Cache-Control", context.conf.www_cache_control)
    return response


class _Handler(WSGIHandler):
    """gevent's handler, without a log line per request (pages poll), closing
    the connection after a request whose body stopped arriving."""

    def log_request(self):
        pass

    def run_application(self):
        super().run_application()
        if self.environ.get(ABANDONED):
            # the answer is sent; gevent would now read the rest of the body to
            # keep the connection: stop reading instead, so the slot is free now
            self.close_connection = True
            try:
                self.socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass            # the client has gone already


class ConsoleServer:
    """``start()`` / ``stop(timeout)`` for the console's listeners."""

    def __init__(self, context, tls_context=None):
        self.context, self.tls_context = context, tls_context
        conf = context.conf
        app = security.secure_headers(make_app(context), cache_control=conf.www_cache_control)
        pool = Pool(conf.www_connections or None)
        self.servers = []
        if conf.www_secure_port and tls_context is not None:
            self.servers.append(_server(conf, conf.www_secure_port, app, pool, tls_context))
            if conf.www_port is not None:
                self.servers.append(_server(conf, conf.www_port, _redirect_to(conf), pool))
        elif conf.www_port is not None:
            self.servers.append(_server(conf, conf.www_port, app, pool))

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


def _server(conf, port, app, pool, tls_context=None):
    """One listener on ``www-ip``:``port``; its requests share the ``pool`` of slots."""
    tls = {"ssl_context": tls_context} if tls_context is not None else {}
    return WSGIServer(netinfo.listen(conf.www_ip, port, BACKLOG), app, spawn=pool,
                      handler_class=_Handler, **tls)


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
