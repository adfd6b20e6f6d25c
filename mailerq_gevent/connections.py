"""Connection budgets: ``smtp-connections`` (all), ``-in`` and ``-out`` (seed 002).

Inbound and outbound connections each have their own limit, and together
the total one, so neither side can take all the room: with 100 / 50 / 75,
at least 25 inbound connections are always possible. ``0`` means unlimited.
Inbound takes a slot without waiting (a full server says 421); outbound may
wait for one (a sender waits its turn).
"""

from gevent.lock import BoundedSemaphore


class _Limit:
    def __init__(self, size):
        self._semaphore = BoundedSemaphore(size) if size else None

    def acquire(self, blocking=True, timeout=None):
        return self._semaphore is None or self._semaphore.acquire(blocking, timeout)

    def release(self):
        if self._semaphore is not None:
            self._semaphore.release()


class ConnectionBudget:
    def __init__(self, total=0, inbound=0, outbound=0):
        self._total, self._in, self._out = _Limit(total), _Limit(inbound), _Limit(outbound)

    @classmethod
    def from_config(cls, conf):
        return cls(conf.smtp_connections, conf.smtp_connections_in, conf.smtp_connections_out)

    def try_inbound(self):
        """Take an inbound slot now if there is one; True when taken."""
        return self._take(self._in, blocking=False)

    def release_inbound(self):
        self._total.release()
        self._in.release()

    def acquire_outbound(self, timeout=None):
        """Wait up to ``timeout`` for an outbound slot; True when taken."""
        return self._take(self._out, timeout=timeout)

    def _take(self, side, blocking=True, timeout=None):
        """A slot of ``side`` and one of the total, or neither."""
        if not side.acquire(blocking, timeout):
            return False
        if not self._total.acquire(blocking, timeout):
            side.release()
            return False
        return True

    def release_outbound(self):
        self._total.release()
        self._out.release()
