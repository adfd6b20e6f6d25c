"""Per-minute delivery counters and their flusher, into MailerQ's ``deliveries_*`` tables.

``Stats.count(kind, localip, domain, remoteip)`` adds one success, failure or
retry to the current minute's counters, in memory: for ``deliveries_total``
per local IP, for ``deliveries_domain`` per (local IP, domain) and for
``deliveries_ip`` per (local IP, remote IP). An empty domain or remote IP (a
DNS failure has no remote IP) is left out of its table; an unknown local IP
is counted as ``""``. IPs are kept in canonical form, domains in lower case.

``flush()`` adds the counters to the tables in one transaction: per table one
SELECT of the rows of the minutes concerned, then an UPDATE adding to the
oldest row of each key (``id``, so that duplicate rows are never counted
twice) and an INSERT of the keys that have none. The same SQL runs on SQLite,
PostgreSQL and MariaDB. Two instances inserting the same new key at the same
moment make two rows; a chart sums the rows of a minute, so nothing is lost.

A failed flush (the database down) puts its counts back and the next flush
tries again: a transaction is all or nothing, so a count is written once (the
one exception being a commit whose answer the network lost). Memory stays
bounded: counts older than ``max_age`` seconds (a day by default) are dropped
with a warning when a flush fails.

``start()`` runs ``flush`` every ``interval`` seconds in a greenlet;
``stop(timeout)`` stops it and flushes one last time.
"""

import time
from collections import defaultdict
from datetime import datetime, timezone

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from sqlalchemy import bindparam, select

from mailerq_gevent import logs
from mailerq_gevent.db import engine as db_engine
from mailerq_gevent.db import tables
from mailerq_gevent.names import canonical_domain, canonical_ip

log = logs.get(__name__)

KINDS = {"success": 0, "failure": 1, "retry": 2}
COUNTERS = ("success", "failures", "retries")
# table -> the column that is its key besides ``localip`` (None: localip only)
TABLES = ((tables.deliveries_total, None), (tables.deliveries_domain, "domain"),
          (tables.deliveries_ip, "remoteip"))


class Stats:
    """In-memory per-minute counters written to the ``deliveries_*`` tables.

    ``source``: the ``database`` URL, an Engine, or a callable returning one
    (made at the first flush, not here). ``clock``: wall time in seconds.
    """

    def __init__(self, source, *, interval=10.0, clock=time.time, max_age=86400,
                 flush_timeout=30.0):
        self.interval, self.max_age, self.flush_timeout = interval, max_age, flush_timeout
        self._source, self._engine, self._clock = source, None, clock
        self._pending = _new_counts()
        self._lock = Semaphore()
        self._stopping = Event()
        self._greenlet = None

    def count(self, kind, localip, domain="", remoteip=""):
        """One ``kind`` (success, failure, retry) for the current minute."""
        column = KINDS.get(kind)
        if column is None:
            raise ValueError("unknown delivery outcome %r" % (kind,))
        minute = int(self._clock()) // 60 * 60
        ip = canonical_ip(localip) or (localip or "")
        keys = [(0, minute, ip, None)]
        if domain:
            keys.append((1, minute, ip, canonical_domain(domain)))
        if remoteip:
            keys.append((2, minute, ip, canonical_ip(remoteip) or remoteip))
        for key in keys:
            self._pending[key][column] += 1

    def pending(self):
        """``{(table name, minute, localip, key): [success, failures, retries]}``
        not written yet (a copy, for tests and the console)."""
        return {(TABLES[key[0]][0].name,) + key[1:]: list(counts)
                for key, counts in self._pending.items()}

    def flush(self):
        """Write the pending counts; True when written (or none), False when
        the database failed (the counts are kept for the next flush)."""
        with self._lock:
            counts, self._pending = self._pending, _new_counts()
            if not counts:
                return True
            try:
                with gevent.Timeout(self.flush_timeout):
                    self._write(counts)
            except BaseException as error:  # noqa: BLE001 - even a kill keeps the counts
                self._keep(counts, error)
                if not isinstance(error, (Exception, gevent.Timeout)):
                    raise
                return False
            log.debug("stats.flushed", keys=len(counts))
            return True

    @property
    def running(self):
        return self._greenlet is not None and not self._greenlet.dead

    def start(self):
        """Spawn the flush greenlet (no-op when it runs already)."""
        if not self.running:
            self._stopping.clear()
            self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout=5.0):
        """Stop the greenlet (waiting up to ``timeout`` for a flush in flight),
        flush what is left within ``timeout``, and close the engine we made."""
        self._stopping.set()
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.join(timeout)
            greenlet.kill(block=True, timeout=1.0)
        with gevent.Timeout(timeout, False):
            self.flush()
        if self._engine is not None and self._engine is not self._source:
            self._engine.dispose()
            self._engine = None

    def _run(self):
        while not self._stopping.wait(self.interval):
            self.flush()

    def _write(self, counts):
        engine = self._get_engine()
        with engine.begin() as conn:
            for index, (table, key_column) in enumerate(TABLES):
                mine = {key[1:]: value for key, value in counts.items() if key[0] == index}
                if mine:
                    _write_table(conn, table, key_column, mine)

    def _keep(self, counts, error):
        """Put the counts of a failed flush back, dropping those too old."""
        oldest = int(self._clock()) - self.max_age
        dropped = 0
        for key, values in counts.items():
            if key[1] < oldest:
                dropped += sum(values)
                continue
            kept = self._pending[key]
            for column, value in enumerate(values):
                kept[column] += value
        name, detail = db_engine.describe_error(error)
        log.error("stats.flush_failed", error=name, detail=detail, keys=len(counts))
        if dropped:
            log.warning("stats.dropped", counts=dropped, older_than=self.max_age)

    def _get_engine(self):
        if self._engine is None:
            self._engine = db_engine.from_source(self._source)
        return self._engine


def _new_counts():
    return defaultdict(lambda: [0, 0, 0])


def minute_time(minute):
    """The ``time`` column value (a naive UTC datetime) of a minute in UNIX seconds."""
    return datetime.fromtimestamp(minute, timezone.utc).replace(tzinfo=None)


def _write_table(conn, table, key_column, counts):
    """Add ``{(minute, localip, key): [s, f, r]}`` to ``table``'s rows."""
    existing = _existing_rows(conn, table, key_column, {key[0] for key in counts})
    updates, inserts = [], []
    for (minute, localip, key), values in counts.items():
        added = dict(zip(("add_" + name for name in COUNTERS), values))
        row_id = existing.get((minute, localip, key))
        if row_id is not None:
            updates.append(dict(added, row_id=row_id))
        else:
            row = dict(zip(COUNTERS, values), time=minute_time(minute), localip=localip)
            if key_column:
                row[key_column] = key
            inserts.append(row)
    if updates:
        conn.execute(table.update().where(table.c.id == bindparam("row_id")).values(
            {name: table.c[name] + bindparam("add_" + name) for name in COUNTERS}), updates)
    if inserts:
        conn.execute(table.insert(), inserts)


def _existing_rows(conn, table, key_column, minutes):
    """``{(minute, localip, key): id}`` of the oldest row of each key in ``minutes``."""
    key = table.c[key_column] if key_column else None
    columns = [table.c.id, table.c.time, table.c.localip] + ([key] if key is not None else [])
    query = select(*columns).where(table.c.time.in_([minute_time(m) for m in minutes]))
    found = {}
    for row in conn.execute(query.order_by(table.c.id)):
        stamp = int(row.time.replace(tzinfo=timezone.utc).timestamp())
        found.setdefault((stamp, row.localip, row[3] if key is not None else None), row.id)
    return found
