"""The console's JSON API for the overview and for scripts.

    GET  /api/stats?range=hour|day   deliveries per bucket, totals, top domains / local IPs
    GET  /api/status                 queue depths, open connections, settings generation
    POST /api/reload                 load the settings from the database now
    POST /api/inject                 MailerQ message JSON (one object or a list) -> outbox
    GET  /api/cluster                the instances in ``ips``, with links to their consoles

(Pausing is ``POST /api/tables/paused``, in ``tables.py``.) Every route needs
a session or the ``www-api-token`` bearer token (``Guard.require("api")``,
which also checks CSRF and origin on POST for cookie sessions). Answers are
JSON (``answers.py``); errors are ``{"error": text}`` with 400, 404, 408, 413
or 503. Times are UNIX seconds.

Inject validates every message before publishing any (``envelope``,
``recipient`` and ``mime`` strings, addresses without spaces or control
characters), then publishes them all or none (``publish_many``): 202 means
they are durable in the outbox. The body is read up to ``INJECT_LIMIT``
bytes (more: 413) within ``request_body.READ_TIMEOUT`` seconds (else 408).

Cluster links: each ``ips`` row names its instance by host name, not by
console URL. This instance links to ``www-url`` (else the URL the browser
used); another one is assumed to serve its console with this console's
scheme and port, so the link is ``<scheme>://<hostname>[:<port>]/``.
"""

import re
import socket
import time
from datetime import timezone

import bottle
import gevent
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from mailerq_gevent import config, logs
from mailerq_gevent import message as queued_message
from mailerq_gevent.broker import BrokerError, codec
from mailerq_gevent.console import charts, request_body
from mailerq_gevent.console.answers import ApiError, json_route
from mailerq_gevent.db import tables

log = logs.get(__name__)

INJECT_LIMIT = 25 * 1024 * 1024
MAX_MESSAGES = 10000
DB_TIMEOUT = 10.0
DEPTH_BUDGET = 5.0          # seconds for all queue depths together
QUEUE_KEYS = tuple(key[len("rabbitmq-"):] for key in config.QUEUE_KEYS)
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?\Z")


def install(app, context):
    require = context.guard.require("api")
    routes = (("/api/stats", "GET", stats), ("/api/status", "GET", status),
              ("/api/reload", "POST", reload), ("/api/inject", "POST", inject),
              ("/api/cluster", "GET", cluster))
    for path, method, handler in routes:
        app.route(path, method, require(_route(handler, context)))


def _route(handler, context):
    """The route calling ``handler(context)`` -> value or (status, value), as JSON."""
    def callback():
        return handler(context)
    callback.__name__ = handler.__name__
    return json_route(callback)


# -- statistics and status ---------------------------------------------------------

def stats(context):
    range_name = bottle.request.query.get("range") or "hour"
    if range_name not in charts.RANGES:
        raise ApiError(400, "range must be one of: %s" % ", ".join(charts.RANGES))
    return _database(context, charts.statistics, range_name, time.time())


def status(context):
    snapshot = context.reloader.current if context.reloader is not None else None
    return {"hostname": _own_hostname(context.conf), "time": time.time(),
            "queues": _queue_depths(context), "connections": _connections(context),
            "settings": _settings_info(snapshot)}


def _queue_depths(context):
    """One row per queue key; ``depth`` None when disabled or unavailable."""
    deadline, known, rows = time.monotonic() + DEPTH_BUDGET, {}, []
    for key in QUEUE_KEYS:
        name = context.conf.queue(key)
        if not name:
            rows.append({"key": key, "name": "", "depth": None, "state": "disabled"})
            continue
        if name not in known:
            known[name] = _depth(context.broker, name, deadline)
        rows.append({"key": key, "name": name, "depth": known[name],
                     "state": "ok" if known[name] is not None else "unavailable"})
    return rows


def _depth(broker, name, deadline):
    if broker is None or time.monotonic() > deadline:
        return None
    try:
        return int(broker.depth(name))
    except BrokerError as error:
        log.warning("console.depth_failed", queue=name, detail=str(error)[:200])
        return None


def _connections(context):
    """``context.status()`` ({"inbound": n, "outbound": n, "idle": n}) or None."""
    if context.status is None:
        return None
    try:
        return dict(context.status())
    except Exception:  # noqa: BLE001 - the overview shows "-" rather than failing
        log.exception("console.status_failed")
        return None


def _settings_info(snapshot):
    if snapshot is None:
        return {"generation": 0, "loaded": False, "loaded_at": None}
    return {"generation": snapshot.generation, "loaded": snapshot.loaded,
            "loaded_at": snapshot.loaded_at or None}


def reload(context):
    if context.reloader is None:
        raise ApiError(503, "no settings reloader")
    done = context.reloader.reload_now()
    info = _settings_info(context.reloader.current)
    log.info("console.reload", user=bottle.request.environ.get("mq.user"), ok=bool(done),
             generation=info["generation"])
    if done is False:
        raise ApiError(503, "the database could not be read; the last settings are kept",
                       **info)
    return dict(info, reloaded=True)


def _database(context, function, *args):
    """``function(engine, *args)`` within DB_TIMEOUT; a database failure is a 503."""
    if context.database is None:
        raise ApiError(503, "no database")
    try:
        with gevent.Timeout(DB_TIMEOUT, ApiError(503, "the database did not answer in time")):
            return function(context.database, *args)
    except SQLAlchemyError as error:
        log.error("console.database_failed", error=error.__class__.__name__,
                  detail=str(error).splitlines()[0][:200])
        raise ApiError(503, "the database is unavailable") from None


# -- inject ----------------------------------------------------------------------------

def inject(context):
    outbox = context.conf.queue("outbox")
    if not outbox or context.broker is None:
        raise ApiError(503, "the outbox queue is disabled")
    messages = _messages(request_body.read_json(INJECT_LIMIT))
    items = [(outbox, codec.encode(message)) for message in messages]
    try:
        queued = context.broker.publish_many(items)
    except BrokerError as error:
        log.error("console.inject_failed", count=len(items), detail=str(error)[:200])
        raise ApiError(503, "the queue is unavailable; nothing was queued") from None
    log.info("console.injected", count=queued, queue=outbox,
             user=bottle.request.environ.get("mq.user"))
    return 202, {"queued": queued}


def _messages(value):
    """One message object or a non-empty list of them, each checked."""
    if isinstance(value, dict):
        return [_checked(value, "")]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "expected a message object or a non-empty list of them")
    if len(value) > MAX_MESSAGES:
        raise ApiError(413, "at most %d messages per request" % MAX_MESSAGES)
    return [_checked(message, "message %d: " % index) for index, message in enumerate(value)]


def _checked(data, where):
    """``data`` as a Message if it can be queued (``message.check``; unknown
    properties pass through), with a fresh queue id unless it has one."""
    try:
        checked = queued_message.check(data)
    except queued_message.BadValue as error:
        raise ApiError(400, where + str(error)) from None
    if not checked.id:
        checked["id"] = queued_message.new_id()
    return checked


# -- cluster -------------------------------------------------------------------------

def cluster(context):
    rows = _database(context, _ips_rows)
    me = socket.gethostname()
    instances = {me: _instance(me, True)}
    for row in rows:
        hostname = row.hostname or ""
        entry = instances.setdefault(hostname, _instance(hostname, False))
        entry["ips"].append(row.ip or "")
        if row.updated is not None:
            updated = row.updated.replace(tzinfo=timezone.utc).timestamp()
            entry["updated"] = max(entry["updated"] or 0, updated)
    for entry in instances.values():
        entry["url"] = _console_url(context, entry)
    ordered = sorted(instances.values(), key=lambda entry: (not entry["self"], entry["hostname"]))
    return {"instances": ordered}


def _ips_rows(engine):
    table = tables.ips
    query = select(table.c.ip, table.c.hostname, table.c.updated).order_by(
        table.c.hostname, table.c.ip)
    with engine.connect() as conn:
        return conn.execute(query).fetchall()


def _instance(hostname, own):
    return {"hostname": hostname, "self": own, "ips": [], "updated": None, "url": None}


def _console_url(context, entry):
    """A link to the instance's console (see the module docstring), or None."""
    parts = bottle.request.urlparts
    if entry["self"]:
        return context.conf.www_url or "%s://%s/" % (parts.scheme, parts.netloc)
    if not _HOSTNAME.match(entry["hostname"]):
        return None
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme)
    suffix = ":%d" % port if port and port != default else ""
    return "%s://%s%s/" % (parts.scheme, entry["hostname"], suffix)


def _own_hostname(conf):
    return conf.www_host or socket.gethostname()
