"""The outgoing connections of one delivery engine, and everything counted about them.

``acquire(job, target)`` gives a message a connection to the target server
(local IP, remote IP, port): an idle one when there is one (the newest), one
handed over by a message that is done with it, or a new one. It returns the
open ``sender.Connection``, a ``Throttled(delay, reason)`` when a limit says
the message must go back to the queue for a while, or the ``Result`` of a
connection that could not be opened. ``release(conn, reusable)`` takes it
back: to a message waiting for that server, to the idle cache (for
``connection_maxidletime``, ``DEFAULT_IDLE`` when unlimited), or closed (QUIT)
once it is broken, has carried ``connection_maxmessages``, or the caller says
it is not reusable.

From opening to closing, each connection holds, and gives back at close:
its slot of the throttles' concurrent connections (``domain_maxconnections``
per (local IP, domain), ``ip_maxconnections`` per (local IP, remote IP)), its
share of the daemon's ``smtp-connections-out`` (``ConnectionBudget``; an idle
connection is closed to make room for a new one), and its place in the count
of connections open to its server. A new connection also takes a token of
``domain_maxconnects`` / ``ip_maxconnects`` (per minute).

Waiting, never long, and never blocking other domains:

* past ``SOFT_CONNECTIONS`` open to one server, a new one is opened at most
  every ``SOFT_WAIT`` seconds; meanwhile a message waits for one to be handed
  over (reuse costs far less than a handshake, and receivers limit how many
  they take; a slow server still gets more in time, so the table's limits
  stay the only hard ones); the waiters wake in turn, one every
  ``SOFT_WAIT``, to open the next (``IdleConnections.wait(in_turn=True)``);
* when the limits allow no new connection, up to ``MAX_SLOT_WAITERS``
  messages per (local IP, domain) wait up to ``SLOT_WAIT`` seconds for one,
  looking again every ``SLOT_POLL`` seconds (a close frees a slot without
  handing anything over); the others, and those that waited in vain, go back
  to the queue for ``BUSY_DELAY`` seconds.

Everything runs in one gevent hub: no locks. ``clock`` is monotonic and
injectable, so the limits can be tested without waiting.
"""

import time

import gevent

from mailerq_gevent.delivery import routing
from mailerq_gevent.delivery.idle import IdleConnections

DEFAULT_IDLE = 5.0      # seconds kept idle when connection_maxidletime is 0 (unlimited)
SLOT_WAIT = 2.0         # seconds a message may wait here for a connection slot
SLOT_POLL = 0.1         # seconds between looks for a free slot
MAX_SLOT_WAITERS = 8    # per (local IP, domain): beyond them, back to the queue
BUSY_DELAY = 5.0        # requeue delay when no connection slot came free in time
SOFT_CONNECTIONS = 20   # open to one server before a message first waits for one to come back
SOFT_WAIT = 0.25        # past them, one more connection at most this often


class Throttled:
    """The message must wait ``delay`` seconds (``reason`` for the log)."""

    __slots__ = ("delay", "reason")

    def __init__(self, delay, reason):
        self.delay, self.reason = delay, reason

    def __repr__(self):
        return "<Throttled %.2fs %s>" % (self.delay, self.reason)


class _Lease:
    """What one connection holds from opening to closing, and the capacity
    of the message using it now."""

    __slots__ = ("slot", "server", "capacity")

    def __init__(self, slot, server, capacity):
        self.slot, self.server, self.capacity = slot, server, capacity


class ConnectionPool:
    """``connect(ip, port, localip=, ehlo_name=, secure=)`` makes an unopened
    ``sender.Connection``; ``hostname`` is the EHLO name where ``mtanames``
    has none; ``budget`` a ``connections.ConnectionBudget``."""

    def __init__(self, throttles, budget, connect, hostname, clock=time.monotonic):
        self.throttles, self.budget, self.connect, self.hostname = (
            throttles, budget, connect, hostname)
        self.clock = clock
        self._idle = IdleConnections(self._close, clock)
        self._leases = {}       # Connection -> _Lease, from opening to closing
        self._per_server = {}   # server -> connections open (or opening) to it
        self._opened_at = {}    # server -> when the last connection to it was opened
        self._waiters = {}      # (localip, domain) -> messages waiting for a slot

    @property
    def open_count(self):
        """Outgoing connections open now: busy, idle or being opened."""
        return sum(self._per_server.values())

    @property
    def idle_count(self):
        return len(self._idle)

    def start(self):
        self._idle.start()
        return self

    def stop(self, timeout=5.0):
        """Stop the reaper and close the idle connections."""
        self._idle.stop(timeout)

    # -- acquire and release ---------------------------------------------------------

    def acquire(self, job, target):
        """A Connection, Throttled or the Result of a failed opening (module docstring)."""
        server, deadline = (job.localip, target.ip, target.port), None
        while True:
            conn = self._idle.take(server)
            if conn is None and self._crowded(server):
                conn = self._idle.wait(server, SOFT_WAIT, in_turn=True)
                if conn is None:
                    continue
            if conn is None:
                lease = self._reserve(job, target, server)
                if lease is not None:
                    return self._open(job, target, lease)
                deadline = deadline or self._slot_deadline(job)
                if deadline is None or self.clock() >= deadline:
                    return Throttled(BUSY_DELAY, "connections")
                conn = self._wait_for_slot(job, server)
            if conn is not None:
                return self._lend(conn, job)

    def release(self, conn, reusable=True):
        """Take ``conn`` back after a message (see the module docstring)."""
        lease = self._leases.get(conn)
        if lease is None:
            return
        limit = lease.capacity.connection_maxmessages
        if not reusable or not conn.usable or (limit and conn.sent >= limit):
            self._close(conn, quit=reusable)
            return
        idle = lease.capacity.connection_maxidletime / 1000.0 or DEFAULT_IDLE
        self._idle.give(conn, lease.server, idle)

    def _lend(self, conn, job):
        self._leases[conn].capacity = job.capacity
        return conn

    # -- opening ---------------------------------------------------------------------

    def _crowded(self, server):
        return (self._per_server.get(server, 0) >= SOFT_CONNECTIONS and
                self.clock() - self._opened_at.get(server, 0.0) < SOFT_WAIT)

    def _reserve(self, job, target, server):
        """A Lease of a throttle slot and an outbound share, or None (neither taken)."""
        slot = self.throttles.open_connection(job.localip, job.domain, target.ip, job.capacity)
        if slot is None:
            return None
        if not self.budget.try_outbound() and not (
                self._idle.close_one() and self.budget.try_outbound()):
            slot.release()
            return None
        self._per_server[server] = self._per_server.get(server, 0) + 1
        self._opened_at[server] = self.clock()
        return _Lease(slot, server, job.capacity)

    def _open(self, job, target, lease):
        wait = self.throttles.admit_connect(job.localip, job.domain, target.ip, job.capacity)
        if wait > 0:
            self._give_back(lease)
            return Throttled(wait, "connects")
        conn = self.connect(target.ip, target.port, localip=job.localip,
                            ehlo_name=routing.ehlo_name(job.settings, job.localip, self.hostname),
                            secure=job.capacity.secure)
        self._leases[conn] = lease
        failed = conn.open()
        if failed is not None:
            self._close(conn, quit=False)       # closed already: only the lease is left
            return failed
        return conn

    def _slot_deadline(self, job):
        """Until when this message may wait for a slot, or None when enough wait."""
        if self._waiters.get((job.localip, job.domain), 0) >= MAX_SLOT_WAITERS:
            return None
        return self.clock() + SLOT_WAIT

    def _wait_for_slot(self, job, server):
        pair = (job.localip, job.domain)
        self._waiters[pair] = self._waiters.get(pair, 0) + 1
        try:
            return self._idle.wait(server, SLOT_POLL)
        finally:
            self._waiters[pair] -= 1
            if not self._waiters[pair]:
                del self._waiters[pair]

    # -- closing ---------------------------------------------------------------------

    def _close(self, conn, wait=True, quit=True):
        """Give back what ``conn`` holds, then close it (QUIT when ``quit``);
        ``wait`` False: the closing runs in a greenlet, which is returned."""
        lease = self._leases.pop(conn, None)
        if lease is not None:
            self._give_back(lease)
        if not wait:
            return gevent.spawn(conn.close, quit)
        conn.close(quit)
        return None

    def _give_back(self, lease):
        lease.slot.release()
        self.budget.release_outbound()
        server = lease.server
        self._per_server[server] -= 1
        if not self._per_server[server]:
            del self._per_server[server]
            self._opened_at.pop(server, None)
