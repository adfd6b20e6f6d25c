"""Connection budgets: ``smtp-connections`` (all), ``smtp-connections-in`` and ``-out``.

As MailerQ counts them: inbound and outbound connections each have their
own limit, and together the total one, so neither side can take all the
room: with 100 / 50 / 75, at least 25 inbound connections are always
possible. ``0`` means unlimited. Neither side waits here: a full server
answers 421 to a new client (``smtpd/server.py``), and the delivery pool
(``delivery/pool.py``, the only user of the outbound side) closes an idle
connection to make room, or lets the message wait its turn.
"""

from gevent.lock import BoundedSemaphore


class _Limit:
    def __init__(self, size):
        self._semaphore = BoundedSemaphore(size) if size else None

    def acquire(self):
        return self._semaphore is None or self._semaphore.acquire(blocking=False)

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
        """Take an inbound share now if there is one; True when taken."""
        return self._take(self._in)

    def release_inbound(self):
        self._total.release()
        self._in.release()

    def try_outbound(self):
        """Take an outbound share now if there is one; True when taken."""
        return self._take(self._out)

    def release_outbound(self):
        self._total.release()
        self._out.release()

    def _take(self, side):
        """A share of ``side`` and one of the total, or neither."""
        if not side.acquire():
            return False
        if not self._total.acquire():
            side.release()
            return False
        return True
