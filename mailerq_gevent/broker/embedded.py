"""The embedded durable queue as one object: ``EmbeddedQueue``.

This is what ``rabbitmq-address: sqlite:///var/queue.sqlite`` (or
``memory://``, the same in memory, for tests) means. The daemon builds one and
hands it to its ``Broker``, which gives it to the kombu transport
(``transport.py``, through the transport option ``embedded_queue``) and to the
publisher as its strategy (what RabbitMQ does otherwise: see
``connection.RabbitMQ``). It owns:

* its ``Store`` (``storage.py``: the file, durable commits, FIFO reads);
* its ``Delays`` (``delays.py``: the timer of the delayed messages);
* the commit notices: after a commit the consumers of the queues it reached
  wake at once (``arrival``), without polling;
* the exchanges and bindings kombu declares on it (``kombu_state``).

An SMTP worker process (``smtp-threads`` above 1) writes into the daemon's
file with a queue of its own made ``writer_only``: it takes no lock, never
reads, and calls ``on_commit(due)`` after each commit; the daemon passes that
notice to its own queue's ``committed_elsewhere``, whose consumers then read
what arrived (and whose timer learns of a delayed message due then).
"""

import collections
import time

import kombu
from gevent.event import Event
from kombu.transport import virtual

from mailerq_gevent.broker import transport
from mailerq_gevent.broker.delays import Delays
from mailerq_gevent.broker.storage import Store

NOT_BEFORE = transport.NOT_BEFORE


class EmbeddedQueue:
    """See the module docstring. ``url`` is ``sqlite:///<path>`` or ``memory://``."""

    pipelined_confirms = False  # its one channel serves every single publish at once
    amqp_frames = False         # kombu's in-process channel: no frames to coalesce
    transaction_slots = 32      # transactional publishers at least (each a cheap connection)
    retry_broken = False        # a failure is the file's: trying again would fail alike

    def __init__(self, url="memory://", writer_only=False, on_commit=None):
        self.url = url
        path = store_path(url)
        self.writer_only, self._notify = writer_only and path is not None, on_commit
        self.store = Store(path, writer_only=self.writer_only, on_commit=self._committed)
        self.delays = None if self.writer_only else Delays(self.store, self._ready)
        self.kombu_state = virtual.BrokerState()
        self._consumed = collections.Counter()  # queue -> consumers (commits to others wake none)
        self._arrived = Event()

    def __repr__(self):
        return "<EmbeddedQueue %s%s>" % (self.url, " writer-only" if self.writer_only else "")

    def open(self):
        """Open the file (ours alone unless writer-only); raises StoreError."""
        self.store.open()
        if self.delays is not None:
            self.delays.start()
        return self

    def close(self):
        if self.delays is not None:
            self.delays.stop()
        self.store.close()

    def connect(self, confirm=True):
        """A kombu Connection to this queue (publishes are durable when they return)."""
        return kombu.Connection(self.url, transport=transport.Transport,
                                transport_options={transport.OPTION: self})

    def delayed(self, publisher, slot, queue, seconds, headers):
        """``(exchange, routing key, headers)`` of a publish to ``queue`` held
        back ``seconds``: the store keeps it until then (a header says when)."""
        held = dict(headers or {}, **{NOT_BEFORE: time.time() + seconds})
        return publisher.exchange, queue, held

    # -- commit notices and wake-ups ----------------------------------------

    def committed_elsewhere(self, due=None):
        """Another process committed to our file: wake the consumers (and the
        timer, for a delayed message due at ``due``)."""
        if self.delays is not None:
            self.delays.schedule(due)
            self.wake_consumers()

    def arrival(self):
        """An event set at the next commit or requeue. Take it *before* reading."""
        return self._arrived

    def wake_consumers(self):
        """Wake whoever waits in ``arrival()`` (new messages, or room under a prefetch)."""
        arrived, self._arrived = self._arrived, Event()
        arrived.set()

    def requeue(self, message_id):
        """A delivered, unacked message back in front of its queue."""
        if self.store.requeue(message_id):
            self.wake_consumers()

    def consuming(self, queue):
        self._consumed[queue] += 1

    def not_consuming(self, queue):
        self._consumed[queue] -= 1
        if self._consumed[queue] <= 0:
            del self._consumed[queue]

    def _committed(self, queues, due):
        if self.writer_only:
            if self._notify is not None:
                self._notify(due)
            return
        self.delays.schedule(due)
        if any(queue in self._consumed for queue in queues):
            self.wake_consumers()

    def _ready(self, queues):
        self.wake_consumers()


def store_path(url):
    """``sqlite:///var/q.sqlite`` -> ``var/q.sqlite``; ``memory://`` -> None."""
    url = url or "memory://"
    if url.startswith("memory://"):
        return None
    if not url.startswith("sqlite:///"):
        raise ValueError("not an embedded queue URL: %r" % url)
    return url[len("sqlite:///"):]
