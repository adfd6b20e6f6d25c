"""``make_engine(url)``: the config's ``database`` URL -> an SQLAlchemy Engine.

Schemes (the databases MailerQ supports): ``sqlite:///path`` (SQLAlchemy's
rule: three slashes then the path, so ``sqlite:///var/db.sqlite`` is relative to the working directory
and ``sqlite:////abs/db.sqlite`` absolute), ``postgresql://`` or
``postgres://``, ``mysql://`` or ``mariadb://``. A ``+driver`` in the URL is
replaced by ours, because only these drivers are cooperative under gevent:

- PostgreSQL: psycopg2, made cooperative once with ``psycogreen``;
- MySQL/MariaDB: PyMySQL (pure Python, so its sockets are monkeypatched),
  ``charset=utf8mb4``;
- SQLite: the standard ``sqlite3``, WAL journal, a short busy timeout. SQLite
  calls run on the event loop's thread and block it while they wait for a
  lock, so the busy timeout is kept short (``SQLITE_BUSY_TIMEOUT``).

Connections: a ``NullPool``. As in MailerQ, no connection is kept open to the
database between reloads; the daemon touches the database once every
``database-ttl`` seconds (plus console edits and the per-minute statistics),
so opening a connection per use costs nothing that matters, never holds a
server slot, and never hands out a connection the server closed meanwhile
(which is what ``pool_pre_ping`` would otherwise be for).

Every connect is bounded by ``connect_timeout`` seconds (a ``gevent.Timeout``:
libpq ignores its own ``connect_timeout`` in the asynchronous mode psycogreen
uses, and PyMySQL waits for the server's greeting without one), so an
unreachable or silent server fails fast with ``OperationalError``.
"""

import os

import gevent
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool, StaticPool

from mailerq_gevent import logs
from mailerq_gevent.config_values import redact_url

log = logs.get(__name__)

CONNECT_TIMEOUT = 5.0
SQLITE_BUSY_TIMEOUT = 5.0
_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql", "sqlite": "sqlite"}
_psycopg_patched = False


def make_engine(url, connect_timeout=CONNECT_TIMEOUT):
    """An Engine for ``url`` (see the module docstring); raises ValueError for
    an unsupported scheme. Creates an SQLite file's directory if missing."""
    parsed = make_url(url)
    backend = parsed.drivername.split("+")[0].lower()
    if backend not in _DRIVERS:
        raise ValueError("unsupported database scheme %r" % backend)
    parsed = parsed.set(drivername=_DRIVERS[backend])
    if backend == "sqlite":
        engine = _sqlite_engine(parsed)
    else:
        engine = _server_engine(parsed, connect_timeout)
    log.debug("db.engine", url=redact_url(str(url)), dialect=engine.dialect.name)
    return engine


def from_source(source):
    """An Engine from a ``database`` URL, an Engine, or a callable returning one
    (what the reloader and the statistics take, so tests can hand in theirs)."""
    if isinstance(source, str):
        return make_engine(source)
    if isinstance(source, Engine):
        return source
    return source()


def describe_error(error):
    """``(class name, one short line)`` for a log line; never holds a password."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    detail = redact_url(lines[0].strip() if lines else "")
    return type(original).__name__, detail[:200]


def _server_engine(parsed, connect_timeout):
    if parsed.drivername.startswith("postgresql"):
        _make_psycopg_cooperative()
        connect_args = {"connect_timeout": max(1, int(connect_timeout))}
    else:
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        connect_args = {"connect_timeout": connect_timeout}
    engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    event.listen(engine, "do_connect", _bounded_connect(connect_timeout))
    return engine


def _bounded_connect(seconds):
    """A ``do_connect`` hook: the driver's connect, within ``seconds``."""
    def connect(dialect, conn_rec, cargs, cparams):
        dbapi = dialect.loaded_dbapi
        failure = dbapi.OperationalError("no answer from the server within %gs" % seconds)
        with gevent.Timeout(seconds, failure):
            return dialect.connect(*cargs, **cparams)
    return connect


def _sqlite_engine(parsed):
    path = parsed.database or ""
    if path in ("", ":memory:"):
        # One shared in-memory database (for tests and tools): it lives as
        # long as its single connection, so that one is kept.
        engine = create_engine(parsed, poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(parsed, poolclass=NullPool,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, connection_record):
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=%d" % int(SQLITE_BUSY_TIMEOUT * 1000))
    finally:
        cursor.close()


def _make_psycopg_cooperative():
    """Install psycogreen's gevent wait callback into psycopg2 (once)."""
    global _psycopg_patched
    if not _psycopg_patched:
        from psycogreen.gevent import patch_psycopg
        patch_psycopg()
        _psycopg_patched = True

