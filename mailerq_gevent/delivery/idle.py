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
TURN_LIMIT = 30.0       # seconds at most a waiter ``in_turn`` waits, should its turn be lost


class IdleConnections:
    """``close(conn, wait)``: the pool's closing (``wait`` False: in the background)."""

    def __init__(self, close, clock=time.monotonic):
        self._close, self.clock = close, clock
        self._idle = {}         # server -> [(expires_at, Connection)], newest last
        self._waiting = {}      # server -> deque of AsyncResult: messages waiting for one
        self._in_turn = {}      # server -> deque of those of them woken in turn
        self._turns = {}        # server -> the loop timer that wakes the first in turn
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

    def wait(self, server, timeout, in_turn=False):
        """A connection to ``server`` handed over by ``give`` within ``timeout``
        seconds, or None. A connection given back wakes one waiter only.

        ``in_turn``: ``timeout`` is the line's, not each waiter's: every
        ``timeout`` seconds the first waiter in turn still waiting gets None,
        so however many wait, one wakes per ``timeout`` (hundreds of messages
        waiting for a server's connections no longer all wake to find that
        only one of them may open another)."""
        waiter = AsyncResult()
        queue = self._waiting.setdefault(server, collections.deque())
        queue.append(waiter)
        if in_turn:
            self._join_turns(server, waiter, timeout)
        try:
            return waiter.get(timeout=TURN_LIMIT if in_turn else timeout)
        except gevent.Timeout:
            return waiter.value if waiter.ready() else None
        finally:
            if not waiter.ready():
                waiter.set(None)        # give() skips it from now on
            while queue and queue[0].ready():
                queue.popleft()
            if not queue and self._waiting.get(server) is queue:
                del self._waiting[server]       # (a line woken in turn may have a newer one)
            if in_turn:
                self._leave_turns(server)

    def _join_turns(self, server, waiter, every):
        line = self._in_turn.get(server)
        if line is None:
            line = self._in_turn[server] = collections.deque()
            timer = self._turns[server] = gevent.get_hub().loop.timer(every, every)
            timer.start(self._next_turn, server)
        line.append(waiter)

    def _next_turn(self, server):
        """In the hub, every ``every`` seconds: the first still waiting gets None."""
        line = self._in_turn.get(server, ())
        while line:
            waiter = line.popleft()
            if not waiter.ready():
                waiter.set(None)
                break
        self._leave_turns(server)

    def _leave_turns(self, server):
        line = self._in_turn.get(server)
        while line and line[0].ready():
            line.popleft()
        if line is not None and not line:
            del self._in_turn[server]
            self._turns.pop(server).close()

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
        for server in list(self._in_turn):
            for waiter in self._in_turn[server]:
                if not waiter.ready():
                    waiter.set(None)
            self._leave_turns(server)
        idle, self._idle = self._idle, {}
        closers = [self._close(conn, wait=False) for items in idle.values() for _, conn in items]
        gevent.joinall([closer for closer in closers if closer is not None], timeout=timeout)
