"""The embedded durable queue as a kombu transport (kombu's virtual transport API).

``kombu.Connection("sqlite:///var/queue.sqlite", transport=Transport)`` behaves
like a RabbitMQ connection to the rest of the code: publish, consume with
prefetch, ack, reject with or without requeue. The storage, durability and
wake-ups are ``store.Store``'s; this module maps kombu's calls onto it:

* ``basic_publish`` -> ``Store.put`` (returns when committed). A header
  ``x-not-before`` (epoch seconds) makes the message a delayed one.
  ``Channel.store_all`` stores what a publish of each message and a
  ``tx_commit`` would, without kombu's message dicts (the publisher's path).
* the delivery tag of a message is its row id; ``ack`` deletes the row,
  ``reject(requeue=True)`` and channel close put it back in front.
* ``drain_events`` waits on the store's arrival event instead of kombu's
  polling loop.
* exchanges and bindings (``rabbitmq-exchange``) are kept per store, so every
  connection of the process sees the same ones. They are not persisted: the
  broker layer declares them at start, as it does on RabbitMQ.

``memory://`` uses the same code on an in-memory SQLite database (tests).
"""

import functools
import itertools
import socket
import time
from queue import Empty
from time import monotonic

import orjson
from kombu.transport import virtual

from mailerq_gevent.broker import codec
from mailerq_gevent.broker import store as stores

NOT_BEFORE = "x-not-before"


class QoS(virtual.QoS):
    """Prefetch accounting; acks and rejects go straight to the store."""

    def ack(self, delivery_tag):
        if self._settle(delivery_tag):
            self.channel.store.ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if not self._settle(delivery_tag):
            return
        if requeue:
            self.channel.store.requeue(delivery_tag)
        else:
            self.channel.store.ack(delivery_tag)

    def _settle(self, delivery_tag):
        """Forget the tag; a consumer that was held back by prefetch is woken."""
        full = self.prefetch_count and len(self._delivered) >= self.prefetch_count
        if self._delivered.pop(delivery_tag, None) is None:
            return False
        if full:
            self.channel.store.wake_consumers()
        return True

    def restore_unacked(self):
        while self._delivered:
            tag, _ = self._delivered.popitem()
            self.channel.store.requeue(tag)
        return []


class Channel(virtual.Channel):
    """A virtual channel on the store; ``tx_select`` makes its publishes
    wait for ``tx_commit``, which stores them in one SQLite transaction."""

    QoS = QoS
    body_encoding = None        # bodies are stored as they are, no base64
    _tx = None                  # the publishes of an open transaction
    _tags = itertools.count(1)

    def _next_delivery_tag(self):
        # kombu makes a uuid4 per publish; the tag a consumer sees is the row id
        # (``_get``), so a counter is enough here and much cheaper
        return next(self._tags)

    @property
    def store(self):
        return self.connection.store

    def basic_consume(self, queue, *args, **kwargs):
        super().basic_consume(queue, *args, **kwargs)
        self.store.consumed[queue] += 1     # its commits wake consumers; others need not

    def basic_cancel(self, consumer_tag):      # also what close() does for each consumer
        queue = self._tag_to_queue.get(consumer_tag) if consumer_tag in self._consumers else None
        super().basic_cancel(consumer_tag)
        if queue is not None:
            self._unconsume(queue)

    def _unconsume(self, queue):
        store = self.connection.store
        if store is not None:
            store.consumed[queue] -= 1
            if store.consumed[queue] <= 0:
                del store.consumed[queue]

    def tx_select(self):
        self._tx = []

    def tx_commit(self):
        rows, self._tx = self._tx, []
        if rows:
            self.store.put_many(rows)

    def tx_rollback(self):
        self._tx = []

    def store_all(self, items, exchange=""):
        """Store ``(queue, body bytes, delay seconds, headers)`` items in one
        transaction; returns once committed. The rows are those ``basic_publish``
        of each item (to ``queue`` through ``exchange``, where every queue is
        bound under its own name) and ``tx_commit`` would store."""
        now = time.time()
        self.store.put_many([
            (queue, envelope(exchange, queue, headers), body,
             now + delay if delay and delay > 0 else 0.0)
            for queue, body, delay, headers in items])

    def _put(self, queue, message, **kwargs):
        not_before = float((message.get("headers") or {}).pop(NOT_BEFORE, 0) or 0)
        body = message.pop("body")
        row = (queue, orjson.dumps(message).decode(), body, not_before)
        if self._tx is None:
            self.store.put(*row)
        else:
            self._tx.append(row)

    def _get(self, queue, timeout=None):
        item = self.store.get(queue)
        if item is None:
            raise Empty()
        message_id, envelope, body, redelivered = item
        message = orjson.loads(envelope)
        message["body"] = body
        properties = message["properties"]
        properties["delivery_tag"] = message_id
        properties["delivery_info"]["redelivered"] = redelivered
        return message

    def _size(self, queue):
        return self.store.size(queue)

    def _purge(self, queue):
        return self.store.purge(queue)

    def _delete(self, queue, *args, **kwargs):
        self.store.purge(queue)


def envelope(exchange, queue, headers=None):
    """The stored JSON of a message's kombu fields (``_put`` keeps all but the
    body); the delivery tag is the row id, set when it is read (``_get``)."""
    if not headers:
        return _plain_envelope(exchange, queue)
    return orjson.dumps(_envelope(exchange, queue, headers)).decode()


@functools.lru_cache(maxsize=1024)
def _plain_envelope(exchange, queue):
    return orjson.dumps(_envelope(exchange, queue, {})).decode()


def _envelope(exchange, queue, headers):
    return {"content-encoding": codec.CONTENT_ENCODING, "content-type": codec.CONTENT_TYPE,
            "headers": headers, "properties": {
                "delivery_mode": 2, "delivery_info": {"exchange": exchange, "routing_key": queue},
                "priority": 0, "body_encoding": None, "delivery_tag": 0}}


class Transport(virtual.Transport):
    Channel = Channel
    can_parse_url = True            # we read the path from the URL ourselves
    polling_interval = None
    driver_type = driver_name = "sqlite"
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic"]))

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.store = stores.acquire(store_path(client.hostname))
        self.state = _shared_state(self.store)

    def close_connection(self, connection):
        super().close_connection(connection)
        if self.store is not None:
            stores.release(self.store)
            self.store = None

    def drain_events(self, connection, timeout=None):
        """Deliver one message, waiting (without polling) for one to arrive."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            arrived = self.store.arrival()
            try:
                return self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                pass
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                raise socket.timeout()
            arrived.wait(remaining)

    @property
    def default_connection_params(self):
        return {"hostname": ""}


def store_path(url):
    """``sqlite:///var/q.sqlite`` -> ``var/q.sqlite``; ``memory://`` -> None."""
    url = url or "memory://"
    if url.startswith("memory://"):
        return None
    if not url.startswith("sqlite:///"):
        raise ValueError("not an embedded queue URL: %r" % url)
    return url[len("sqlite:///"):]


def _shared_state(store):
    state = getattr(store, "kombu_state", None)
    if state is None:
        state = store.kombu_state = virtual.BrokerState()
    return state
