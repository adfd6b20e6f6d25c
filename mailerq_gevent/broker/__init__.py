"""The queues of MailerQ's message JSON, through kombu only: RabbitMQ or the embedded durable queue.

``Broker`` is what the rest of the daemon holds: ``publish`` (durable when it
returns, else ``BrokerError``), ``consume`` (a ``Consumer`` calling a handler
with each ``Delivery``), ``depth``. Which broker it is comes from the URL
(``rabbitmq-address``) through its backend (``backend(url)``: RabbitMQ or an
``EmbeddedQueue``); no caller can tell them apart.

    publisher.py   pooled, confirmed publishing; delays
    consumer.py    prefetch, ack / reject / requeue-with-delay, reconnects
    topology.py    durable queues, the exchange, RabbitMQ delay queues
    connection.py  the backends: RabbitMQ, or the embedded queue
    embedded.py    the embedded queue: its store, delays and commit notices
    transport.py   its kombu transport
    storage.py     its SQLite storage: group commit, FIFO reads, redelivery
    delays.py      the timer of its delayed messages
    sqlfile.py     its file: settings, tables, transactions
    codec.py       the message JSON
"""

import gevent

from mailerq_gevent import logs
from mailerq_gevent.broker import connection
from mailerq_gevent.broker.connection import backend
from mailerq_gevent.broker.consumer import Consumer, Delivery
from mailerq_gevent.broker.publisher import BrokerError, Publisher

__all__ = ["Broker", "BrokerError", "Consumer", "Delivery", "backend"]

log = logs.get(__name__)


class Broker:
    """The queues at ``url``, through ``backend`` (made from the URL when not given).

    ``start`` opens the backend and ``stop`` closes it.
    """

    def __init__(self, url, exchange="", pool_size=8, timeout=30.0, backend=None):
        self.url, self.exchange = url, exchange
        self._backend = backend or connection.backend(url)
        self.publisher = Publisher(self._backend, exchange, size=pool_size, timeout=timeout)
        self._consumers = []

    @classmethod
    def from_config(cls, conf, backend=None):
        return cls(conf.rabbitmq_address, conf.rabbitmq_exchange, backend=backend)

    def start(self, queues):
        """Open the backend, declare ``queues`` (empty names skipped).

        The embedded queue must open (its file is ours alone), else BrokerError.
        An unreachable RabbitMQ is logged and not fatal: publishing answers 451
        and consumers keep reconnecting until it is back.
        """
        try:
            self._backend.open()
        except connection.ERRORS as exc:
            raise BrokerError(str(exc)) from exc
        for name in filter(None, dict.fromkeys(queues)):
            try:
                self.publisher.declare(name)
            except BrokerError as exc:
                log.error("broker.declare_failed", queue=name, detail=str(exc)[:300])
                return False
        log.info("broker.ready", url=connection.describe(self.url))
        return True

    def publish(self, queue, body, delay=0.0, headers=None):
        """See ``Publisher.publish``: durable on return, or BrokerError."""
        return self.publisher.publish(queue, body, delay=delay, headers=headers)

    def publish_many(self, items):
        """See ``Publisher.publish_many``: ``(queue, body)`` items, all or nothing."""
        return self.publisher.publish_many(items)

    def consume(self, queue, handler, prefetch=100):
        """Start consuming ``queue`` with ``handler(delivery)``; returns the Consumer."""
        consumer = Consumer(self._backend, queue, handler, self.publisher,
                            prefetch=prefetch, exchange=self.exchange).start()
        self._consumers.append(consumer)
        return consumer

    def depth(self, queue):
        return self.publisher.depth(queue)

    def stop(self, timeout=30.0):
        """Stop the consumers (all at once, each waiting for its unsettled
        messages up to ``timeout``), then the publisher, then the backend."""
        gevent.joinall([gevent.spawn(consumer.stop, timeout) for consumer in self._consumers])
        self._consumers = []
        self.publisher.close()
        self._backend.close()
