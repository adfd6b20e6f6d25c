"""The pool's idle connections, keyed by server (local IP, remote IP, port), and their hand-over.

Part of ``pool.py``, which alone uses it: a connection comes here between
messages and leaves with the next message to that server, or goes straight
to a message already waiting for one (first come, first served, one
connection each). The newest connection is reused first, so the oldest
expire when traffic drops. Every connection this cache lets go (expired,
broken, closed to make room, at ``stop``) goes through the pool's ``close``,
which gives back what it holds. ``start()`` runs the reaper, which closes
the connections idle past their time every ``REAP_EVERY`` seconds.
"""

import collections
import time

import gevent
from gevent.event import AsyncResult

from mailerq_gevent import logs

log = logs.get(__name__)

REAP_EVERY = 0.5


class IdleConnections:
    """``close(conn, wait)``: the pool's closing (``wait`` False: in the background)."""

    def __init__(self, close, clock=time.monotonic):
        self._close, self.clock = close, clock
        self._idle = {}         # server -> [(expires_at, Connection)], newest last
        self._waiting = {}      # server -> deque of AsyncResult: messages waiting for one
        self._greenlet = None

    def __len__(self):
        return sum(len(items) for items in self._idle.values())

    def take(self, server):
        """A usable idle connection to ``server``, or None."""
        items = self._idle.get(server)
        now = self.clock()
        while items:
            expires_at, conn = items.pop()
            if expires_at > now and conn.usable:
                if not items:
                    del self._idle[server]
                return conn
            self._close(conn, wait=False)
        self._idle.pop(server, None)
        return None

    def wait(self, server, timeout):
        """A connection to ``server`` handed over by ``give`` within ``timeout``
        seconds, or None. A connection given back wakes one waiter only."""
        waiter = AsyncResult()
        queue = self._waiting.setdefault(server, collections.deque())
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
                self._waiting.pop(server, None)

    def give(self, conn, server, idle_seconds):
        """Hand ``conn`` to a message waiting for ``server``, else keep it for
        ``idle_seconds``."""
        queue = self._waiting.get(server)
        while queue:
            waiter = queue.popleft()
            if not waiter.ready():
                waiter.set(conn)
                return
        self._idle.setdefault(server, []).append((self.clock() + idle_seconds, conn))

    def close_one(self):
        """Close the connection closest to expiry (to make room); False when none is idle."""
        oldest = None
        for server, items in self._idle.items():
            if items and (oldest is None or items[0][0] < oldest[0]):
                oldest = (items[0][0], server)
        if oldest is None:
            return False
        _, conn = self._idle[oldest[1]].pop(0)
        if not self._idle[oldest[1]]:
            del self._idle[oldest[1]]
        self._close(conn, wait=True)
        return True

    def reap(self):
        """Close the connections idle past their time; returns how many."""
        now, expired = self.clock(), []
        for server in list(self._idle):
            keep = []
            for expires_at, conn in self._idle[server]:
                if expires_at > now and conn.usable:
                    keep.append((expires_at, conn))
                else:
                    expired.append(conn)
            if keep:
                self._idle[server] = keep
            else:
                del self._idle[server]
        for conn in expired:
            self._close(conn, wait=True)
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
        """Stop the reaper; close every idle connection, waiting up to ``timeout``."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
        idle, self._idle = self._idle, {}
        closers = [self._close(conn, wait=False) for items in idle.values() for _, conn in items]
        gevent.joinall([closer for closer in closers if closer is not None], timeout=timeout)
