"""Open connections waiting for their next message, keyed by (local IP, remote IP, port).

Consecutive messages to one MX from one local IP reuse a connection (RSET in
between) instead of opening a new one: fewer handshakes, and fewer of the
"new connections per minute" a receiver counts. A connection comes back here
after a message unless it is broken or has carried ``connection_maxmessages``;
it is closed (QUIT) once it has been idle for ``connection_maxidletime``
(``DEFAULT_IDLE`` when the capacity row leaves it unlimited: an idle
connection is never kept forever). ``start()`` runs the reaper; ``stop()``
closes everything. The newest connection is reused first, so the oldest
expire when traffic drops.
"""

import collections
import time

import gevent
from gevent.event import AsyncResult

from mailerq_gevent import logs

log = logs.get(__name__)

DEFAULT_IDLE = 5.0      # seconds, when connection_maxidletime is 0 (unlimited)
REAP_EVERY = 0.5


class IdleConnections:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._idle = {}         # key -> [(expires_at, Connection)], newest last
        self._waiting = {}      # key -> deque of AsyncResult: messages waiting for one
        self._greenlet = None

    def __len__(self):
        return sum(len(items) for items in self._idle.values())

    def take(self, localip, ip, port):
        """A usable idle connection to ``ip``:``port`` from ``localip``, or None."""
        items = self._idle.get((localip, ip, port))
        now = self.clock()
        while items:
            expires_at, conn = items.pop()
            if expires_at > now and conn.usable:
                if not items:
                    del self._idle[(localip, ip, port)]
                return conn
            gevent.spawn(conn.close)
        self._idle.pop((localip, ip, port), None)
        return None

    def wait(self, localip, ip, port, timeout):
        """A connection to that server handed over by ``give`` within ``timeout``
        seconds, or None. Waiters are served first come, first served, one
        connection each: a connection given back wakes one message only."""
        key = (localip, ip, port)
        waiter = AsyncResult()
        queue = self._waiting.setdefault(key, collections.deque())
        queue.append(waiter)
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            return waiter.value if waiter.ready() else None
        finally:
            if not waiter.ready():
                waiter.set(None)        # give() skips it from now on
            while queue and queue[0].ready():
                queue.popleft()
            if not queue:
                self._waiting.pop(key, None)

    def give(self, conn, capacity):
        """Keep ``conn`` for its next message (handed straight to a waiting one
        when there is one), or close it; see the module docstring."""
        limit = capacity.connection_maxmessages
        if not conn.usable or (limit and conn.sent >= limit):
            conn.close()
            return False
        queue = self._waiting.get((conn.localip, conn.ip, conn.port))
        while queue:
            waiter = queue.popleft()
            if not waiter.ready():
                waiter.set(conn)
                return True
        idle = capacity.connection_maxidletime / 1000.0 or DEFAULT_IDLE
        self._idle.setdefault((conn.localip, conn.ip, conn.port), []).append(
            (self.clock() + idle, conn))
        return True

    def close_one(self):
        """Close the connection closest to expiry (to make room); False when none is idle."""
        oldest = None
        for key, items in self._idle.items():
            if items and (oldest is None or items[0][0] < oldest[0]):
                oldest = (items[0][0], key)
        if oldest is None:
            return False
        _, conn = self._idle[oldest[1]].pop(0)
        if not self._idle[oldest[1]]:
            del self._idle[oldest[1]]
        conn.close()
        return True

    def reap(self):
        """Close the connections idle past their time; returns how many."""
        now, expired = self.clock(), []
        for key in list(self._idle):
            keep = []
            for expires_at, conn in self._idle[key]:
                if expires_at > now and conn.usable:
                    keep.append((expires_at, conn))
                else:
                    expired.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        for conn in expired:
            conn.close()
        return len(expired)

    def start(self):
        self._greenlet = gevent.spawn(self._run)
        return self

    def _run(self):
        while True:
            gevent.sleep(REAP_EVERY)
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the reaper must outlive a surprise
                log.exception("delivery.reap_failed")

    def stop(self, timeout=5.0):
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
        idle, self._idle = self._idle, {}
        closers = [gevent.spawn(conn.close) for items in idle.values() for _, conn in items]
        gevent.joinall(closers, timeout=timeout)
