"""The in-memory snapshot of the configuration tables, and its reloader.

``Settings`` is one frozen value built from the rows of ``capacity``,
``flood_responses``, ``dkim_keys``, ``dkim_patterns``, ``locals``,
``delegates``, ``paused``, ``mtanames`` and ``dns`` (``db.load`` builds it
and validates the rows). Its lookups are pure dictionary work: nothing on the
delivery or SMTP path ever queries the database.

``Reloader`` owns the current snapshot. It loads a new one every
``database-ttl`` seconds (and when ``reload_now()`` is called by the console
or the cluster) and swaps it in with one assignment. A unit of work reads
``reloader.current`` once and keeps that copy. A failed load keeps the last
good snapshot; before the first good one, ``current`` is ``Settings.empty()``
(no limits, nothing paused, nothing local, no DKIM keys).

Matching rules: domains case-insensitive (trailing dot ignored), IP addresses
compared in canonical form (``ipaddress``; an IPv4-mapped IPv6 address is its
IPv4 address), patterns as ``patterns`` says.
"""

import time
from dataclasses import dataclass, field, fields
from types import MappingProxyType

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from sqlalchemy.exc import SQLAlchemyError

from mailerq_gevent import logs
from mailerq_gevent.db import engine as db_engine
from mailerq_gevent.names import canonical_domain, canonical_ip
from mailerq_gevent.patterns import PatternSet

log = logs.get(__name__)

_EMPTY = MappingProxyType({})


def _empty_map():
    return _EMPTY


@dataclass(frozen=True)
class Capacity:
    """Delivery limits for one (local IP, domain) pair; 0 means unlimited.

    Rates are per minute; ``connection_maxidletime`` is in milliseconds;
    ``secure`` requires STARTTLS: the message is not sent in the clear."""

    domain_maxmessages: int = 0
    domain_maxconnects: int = 0
    domain_maxconnections: int = 0
    ip_maxmessages: int = 0
    ip_maxconnects: int = 0
    ip_maxconnections: int = 0
    connection_maxmessages: int = 0
    connection_maxidletime: int = 0
    secure: bool = False


UNLIMITED = Capacity()
CAPACITY_FIELDS = tuple(f.name for f in fields(Capacity))


@dataclass(frozen=True)
class FloodRule:
    """A matched ``flood_responses`` row: use ``capacity`` for ``duration`` seconds."""

    id: int
    pattern: str
    type: str
    duration: int
    capacity: Capacity


@dataclass(frozen=True)
class DkimKey:
    """A ``dkim_keys`` row. ``privatekey`` (PEM text) is left out of ``repr``."""

    id: int
    domain: str
    selector: str
    privatekey: str = field(repr=False)
    algorithm: str = "rsa-sha256"   # or ed25519-sha256, rsa-sha1
    expire: int = 0                 # seconds a signature is valid; 0: no x= tag


@dataclass(frozen=True)
class DnsTarget:
    """Where a ``dns`` override sends a domain's mail; ``port`` None means 25."""

    host: str
    port: int | None
    priority: int


@dataclass(frozen=True)
class FloodRow:
    """A validated ``flood_responses`` row, its limits still raw (-1 = fall back)."""

    id: int
    pattern: object          # patterns.Pattern
    duration: int
    values: tuple            # raw limits in CAPACITY_FIELDS order


def resolve_capacity(chain):
    """A Capacity from raw rows, most specific first: per column the first
    value that is not -1 wins; NULL and 0 are unlimited; none at all is 0."""
    resolved = [0] * len(CAPACITY_FIELDS)
    for index in range(len(CAPACITY_FIELDS)):
        for values in chain:
            value = values[index]
            if value is None or value >= 0:
                resolved[index] = value or 0
                break
    resolved[-1] = resolved[-1] > 0
    return Capacity(*resolved)


@dataclass(frozen=True, repr=False, eq=False)
class Settings:
    """The frozen snapshot. Build it with ``db.load.build_snapshot`` (from rows)
    or ``db.load.load_snapshot`` (from the database); the ``*_rows`` fields are
    the validated rows, keyed for the lookups below."""

    generation: int = 0
    loaded_at: float = 0.0
    loaded: bool = False
    # (ip|"", domain|"") -> raw limits in CAPACITY_FIELDS order (-1 = fall back)
    capacity_rows: MappingProxyType = field(default_factory=_empty_map)
    flood_rows: tuple = ()                   # FloodRow, by id
    local_patterns: PatternSet = field(default_factory=PatternSet)
    dkim_key_rows: MappingProxyType = field(default_factory=_empty_map)     # id -> DkimKey
    dkim_domain_rows: MappingProxyType = field(default_factory=_empty_map)  # domain -> keys
    dkim_pattern_rows: tuple = ()            # (Pattern, key id), by id
    paused_rows: frozenset = frozenset()     # (ip|"", target|"")
    delegate_rows: MappingProxyType = field(default_factory=_empty_map)  # (ip|"", target) -> ip
    mtaname_rows: MappingProxyType = field(default_factory=_empty_map)   # ip -> hostname
    dns_rows: MappingProxyType = field(default_factory=_empty_map)       # domain -> DnsTargets

    @classmethod
    def empty(cls):
        """The snapshot used before the first successful load."""
        return cls()

    def __repr__(self):
        return "<Settings generation=%d loaded=%s %s>" % (
            self.generation, self.loaded,
            " ".join("%s=%d" % item for item in self.counts().items()))

    def counts(self):
        """Rows per table in this snapshot (for logs and the console)."""
        return {"capacity": len(self.capacity_rows), "flood_responses": len(self.flood_rows),
                "dkim_keys": len(self.dkim_key_rows),
                "dkim_patterns": len(self.dkim_pattern_rows),
                "locals": len(self.local_patterns), "delegates": len(self.delegate_rows),
                "paused": len(self.paused_rows), "mtanames": len(self.mtaname_rows),
                "dns": sum(len(targets) for targets in self.dns_rows.values())}

    def capacity(self, localip, domain):
        """The limits for mail from ``localip`` to ``domain`` (MailerQ's
        rule: the most specific row wins; -1 falls back per column)."""
        return resolve_capacity(self._capacity_chain(localip, domain))

    def _capacity_chain(self, localip, domain):
        ip, name = canonical_ip(localip) or "", canonical_domain(domain)
        keys = dict.fromkeys(((ip, name), ("", name), (ip, ""), ("", "")))
        return [self.capacity_rows[key] for key in keys if key in self.capacity_rows]

    def flood_response(self, reply_text, localip="", domain=""):
        """The first ``flood_responses`` row (by id) matching ``reply_text``,
        its -1 columns filled from the normal capacity of (localip, domain)."""
        for row in self.flood_rows:
            if row.pattern.matches(reply_text):
                chain = [row.values] + self._capacity_chain(localip, domain)
                return FloodRule(row.id, row.pattern.text, row.pattern.type,
                                 row.duration, resolve_capacity(chain))
        return None

    def is_local(self, address):
        """Whether ``address`` matches a ``locals`` row."""
        return self.local_patterns.matches(address)

    def dkim_keys_for(self, from_address):
        """The keys of every ``dkim_patterns`` row matching ``from_address``,
        in pattern id order, each key once."""
        ids = dict.fromkeys(key for pattern, key in self.dkim_pattern_rows
                            if pattern.matches(from_address))
        return tuple(self.dkim_key_rows[key] for key in ids)

    def dkim_keys_for_domain(self, domain):
        """The keys whose ``domain`` column is ``domain``, by id."""
        return self.dkim_domain_rows.get(canonical_domain(domain), ())

    def is_paused(self, localip, domain, remote_ip=None):
        """Whether deliveries from ``localip`` to ``domain`` (at ``remote_ip``)
        are on hold; an empty column of a ``paused`` row matches all."""
        if not self.paused_rows:
            return False
        ips = {canonical_ip(localip) or "", ""}
        targets = {canonical_domain(domain), canonical_ip(remote_ip) or "", ""}
        return any((ip, target) in self.paused_rows for ip in ips for target in targets)

    def delegate(self, localip, domain, remote_ip=None):
        """The ``newip`` of the most specific ``delegates`` row, or None:
        own IP + domain, own IP + remote IP, any IP + domain, any IP + remote IP."""
        ip = canonical_ip(localip) or ""
        name, remote = canonical_domain(domain), canonical_ip(remote_ip) or ""
        for key in ((ip, name), (ip, remote), ("", name), ("", remote)):
            if key[1] and key in self.delegate_rows:
                return self.delegate_rows[key]
        return None

    def mtaname(self, ip):
        """The EHLO name for local ``ip`` from ``mtanames``, or None."""
        return self.mtaname_rows.get(canonical_ip(ip))

    def dns_override(self, domain):
        """The ``dns`` rows for ``domain`` as DnsTargets by priority, or ()."""
        return self.dns_rows.get(canonical_domain(domain), ())


class LoadTimeout(Exception):
    """The database did not answer a whole load within the reloader's timeout."""


class Reloader:
    """Owns ``current``: loads a snapshot every ``ttl_seconds`` and on demand.

    ``source`` is the config's ``database`` URL, an Engine, or a callable
    returning an Engine; the engine is made at the first load, not here.
    ``load(engine, now=, generation=)`` reads a snapshot from it
    (``db.load.load_snapshot``).
    ``prepare(engine)``, when given, runs before loads until it has succeeded
    once (e.g. ``schema.ensure_schema``, so a database that was down at start
    gets its tables when it comes up). Until a load has succeeded the greenlet
    retries sooner: after ``first_retry`` seconds, doubling up to
    ``ttl_seconds``. Each load (with ``prepare``) is bounded by
    ``load_timeout`` seconds. ``clock`` gives ``loaded_at`` (wall time).
    """

    def __init__(self, source, ttl_seconds, load, *, prepare=None, first_retry=5.0,
                 load_timeout=30.0, clock=time.time):
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0")
        self.ttl = float(ttl_seconds)
        self.first_retry = min(float(first_retry), self.ttl)
        self.load_timeout = float(load_timeout)
        self._source, self._engine, self._clock = source, None, clock
        self._load_snapshot, self._prepare = load, prepare
        self._current = Settings.empty()
        self._retry = self.first_retry
        self._next_due = 0.0
        self._lock = Semaphore()
        self._stopping = Event()
        self._greenlet = None
        self._subscribers = []

    @property
    def current(self):
        """The snapshot to use now (read it once per unit of work)."""
        return self._current

    @property
    def running(self):
        return self._greenlet is not None and not self._greenlet.dead

    def subscribe(self, callback):
        """Call ``callback(snapshot)`` after each successful load."""
        self._subscribers.append(callback)

    def start(self):
        """Spawn the reload greenlet (no-op when it runs already)."""
        if not self.running:
            self._stopping.clear()
            self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout=5.0):
        """Stop the greenlet: wait up to ``timeout`` for a load in flight, then kill."""
        self._stopping.set()
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.join(timeout)
            greenlet.kill(block=True, timeout=1.0)
        if self._engine is not None and self._engine is not self._source:
            self._engine.dispose()

    def reload_now(self):
        """Load a new snapshot now and swap it in; False (and the last good
        snapshot kept) when the load failed. Loads never overlap."""
        with self._lock:
            try:
                return self._reload()
            finally:
                self._schedule_next()

    def _run(self):
        while not self._stopping.is_set():
            delay = self._next_due - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
            else:
                self.reload_now()

    def _schedule_next(self):
        if self._current.loaded:
            delay = self.ttl
        else:
            delay, self._retry = self._retry, min(self._retry * 2, self.ttl)
        self._next_due = time.monotonic() + delay

    def _reload(self):
        started = time.monotonic()
        try:
            snapshot = self._load(self._current.generation + 1)
        except Exception as error:  # noqa: BLE001 - any failure keeps the last snapshot
            self._log_failure(error)
            return False
        self._current = snapshot
        log.info("settings.reloaded", generation=snapshot.generation,
                 ms=round((time.monotonic() - started) * 1000, 1),
                 rows=sum(snapshot.counts().values()))
        self._notify(snapshot)
        return True

    def _load(self, generation):
        timeout = gevent.Timeout(self.load_timeout)
        timeout.start()
        try:
            engine = self._get_engine()
            if self._prepare is not None:
                self._prepare(engine)
                self._prepare = None
            return self._load_snapshot(engine, now=self._clock(), generation=generation)
        except gevent.Timeout as expired:
            if expired is not timeout:
                raise
            raise LoadTimeout("no complete answer within %gs" % self.load_timeout) from None
        finally:
            timeout.close()

    def _get_engine(self):
        if self._engine is None:
            self._engine = db_engine.from_source(self._source)
        return self._engine

    def _log_failure(self, error):
        name, detail = db_engine.describe_error(error)
        fields_ = dict(error=name, detail=detail, generation=self._current.generation)
        if isinstance(error, (SQLAlchemyError, OSError, LoadTimeout)):
            log.error("settings.reload_failed", **fields_)
        else:
            log.exception("settings.reload_failed", **fields_)

    def _notify(self, snapshot):
        for callback in tuple(self._subscribers):
            try:
                callback(snapshot)
            except Exception:  # noqa: BLE001 - a subscriber never breaks reloading
                log.exception("settings.subscriber_failed", callback=getattr(
                    callback, "__qualname__", repr(callback)))

