"""When the embedded queue's delayed messages fall due: a timer, no polling.

A delayed message (a retry, a ``nextattempt`` in the future) waits in the
store's ``delayed`` table. ``Delays`` keeps the earliest due time in memory
and one greenlet sleeps until then; it then has the store move what is due
to the ready messages (``Store.promote_due``, one transaction) and calls
``on_ready(queues)`` so their consumers wake. It learns of later messages
from ``schedule(due)``: after the owner's own commits and after a commit by
another process writing to the file (an SMTP worker's notice). On start it
reads the earliest due time from the file, so delays survive a restart.
"""

import time

import gevent
from gevent.event import Event

from mailerq_gevent import logs

log = logs.get(__name__)

RETRY_AFTER = 1.0       # seconds before trying again when moving due messages failed


class Delays:
    def __init__(self, store, on_ready):
        self.store, self.on_ready = store, on_ready
        self._next_due = None
        self._changed = Event()
        self._greenlet = None

    def start(self):
        self._next_due = self.store.earliest_due()
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def schedule(self, due):
        """A message is due at ``due`` (epoch seconds; None: nothing new)."""
        if due is not None and (self._next_due is None or due < self._next_due):
            self._next_due = due
            self._changed.set()

    def _run(self):
        while True:
            self._changed.clear()
            due = self._next_due
            wait = None if due is None else max(0.0, due - time.time())
            if wait is None or wait > 0:
                self._changed.wait(wait)
                continue
            try:
                self._promote()
            except Exception as exc:  # noqa: BLE001 - retry later, keep the timer alive
                log.error("queue.promote_failed", error=exc.__class__.__name__,
                          detail=str(exc)[:200])
                gevent.sleep(RETRY_AFTER)

    def _promote(self):
        queues = self.store.promote_due(time.time())
        if queues:
            self.on_ready(queues)
        self._next_due = self.store.earliest_due()
