"""Durable publishing, shared by every greenlet of the daemon.

``Publisher.publish(queue, body)`` returns only when the message is durable:
on RabbitMQ a persistent message in a durable queue, confirmed by the broker
(publisher confirms); on the embedded queue committed to disk. Anything else
raises ``BrokerError``, and the caller says 451 or requeues: it never assumes.

A py-amqp connection waits for one confirm at a time, so concurrency comes
from a pool of connections (``size``); a publish takes one, uses it and gives
it back. The embedded queue's channel may be used by any number of greenlets
at once (each waits for its own commit), so there all share one connection
and the ``Store``'s writer groups their publishes into one commit.
A connection that failed is thrown away and the publish is tried once more on
a fresh one (the broker may have restarted); a confirm timeout or a nack is
not retried.
"""

import time

import amqp.exceptions
import gevent
import kombu
from gevent.queue import Empty, Queue

from mailerq_gevent import logs
from mailerq_gevent.broker import codec, connection, embedded, topology

log = logs.get(__name__)

DEFAULT_TIMEOUT = 30.0


class BrokerError(Exception):
    """The queue did not take the message (down, refused, timed out)."""


class Publisher:
    def __init__(self, url, exchange="", size=8, timeout=DEFAULT_TIMEOUT):
        self.url, self.exchange, self.size, self.timeout = url, exchange, size, timeout
        self.embedded = connection.is_embedded(url)
        self._idle = Queue()
        self._slots = []
        self._declared = {}         # queue name -> time.monotonic() of its declaration
        self._closed = False

    def publish(self, queue, body, delay=0.0, headers=None):
        """Publish ``body`` (bytes or a dict, JSON-encoded) to ``queue``; durable on return.

        ``delay`` holds the message back that many seconds. An empty ``queue``
        name means the queue is disabled: nothing is published, returns False.
        """
        if not queue:
            return False
        if isinstance(body, dict):
            body = codec.encode(body)
        slot = self._take()
        try:
            self._publish_retrying(slot, queue, body, delay, headers)
        finally:
            self._give(slot)
        return True

    def declare(self, queue):
        """Declare ``queue`` (and the exchange) now; raises BrokerError."""
        slot = self._take()
        try:
            with self._deadline("declare %s" % queue):
                self._declare(slot, queue)
        except connection.ERRORS as exc:
            self._discard(slot)
            raise BrokerError("cannot declare %s: %s" % (queue, _reason(exc))) from exc
        finally:
            self._give(slot)

    def depth(self, queue):
        """Messages ready in ``queue``; raises BrokerError."""
        slot = self._take()
        try:
            with self._deadline("depth of %s" % queue):
                declared = topology.queue(queue, self.exchange)(slot.channel()).queue_declare(
                    passive=True)
            return declared.message_count
        except connection.ERRORS as exc:
            self._discard(slot)
            raise BrokerError("cannot read the depth of %s: %s" % (queue, _reason(exc))) from exc
        finally:
            self._give(slot)

    def close(self):
        self._closed = True
        for slot in self._slots:
            slot.reset()
        self._slots = []

    # -- inside ---------------------------------------------------------------

    def _publish_retrying(self, slot, queue, body, delay, headers):
        for attempt in (1, 2):
            fresh = slot.conn is None or self.embedded
            try:
                with self._deadline("publish to %s" % queue):
                    return self._send(slot, queue, body, delay, headers)
            except BrokerError:
                self._discard(slot)
                raise
            except connection.ERRORS as exc:
                self._discard(slot)
                self._declared.clear()
                if fresh or attempt == 2 or _is_refusal(exc):
                    raise BrokerError("%s did not take the message: %s" % (
                        connection.describe(self.url), _reason(exc))) from exc
                log.warning("broker.publish_retry", queue=queue, error=exc.__class__.__name__)

    def _send(self, slot, queue, body, delay, headers):
        exchange, routing_key = self.exchange, queue
        if delay and delay > 0:
            if self.embedded:
                headers = dict(headers or {}, **{embedded.NOT_BEFORE: time.time() + delay})
            else:
                exchange, routing_key = "", self._declare_delay(slot, queue, delay)
        if queue not in self._declared:
            self._declare(slot, queue)
        slot.producer().publish(
            body, exchange=exchange, routing_key=routing_key, headers=headers,
            content_type=codec.CONTENT_TYPE, content_encoding=codec.CONTENT_ENCODING,
            delivery_mode=2, retry=False)

    def _declare(self, slot, queue):
        topology.queue(queue, self.exchange)(slot.channel()).declare()
        self._declared[queue] = time.monotonic()

    def _declare_delay(self, slot, queue, delay):
        seconds = topology.delay_seconds(delay)
        holding = topology.delay_queue(queue, seconds, self.exchange)
        last = self._declared.get(holding.name)
        if last is None or time.monotonic() - last > topology.redeclare_after(seconds):
            holding(slot.channel()).declare()
            self._declared[holding.name] = time.monotonic()
        return holding.name

    def _deadline(self, what):
        return gevent.Timeout(self.timeout, BrokerError(
            "%s: no answer from %s within %gs" % (what, connection.describe(self.url),
                                                  self.timeout)))

    def _take(self):
        if self._closed:
            raise BrokerError("the publisher is closed")
        if self.embedded:
            if not self._slots:
                self._slots.append(_Slot(self.url))
            return self._slots[0]
        try:
            return self._idle.get_nowait()
        except Empty:
            pass
        if len(self._slots) < self.size:
            self._slots.append(_Slot(self.url))
            return self._slots[-1]
        try:
            return self._idle.get(timeout=self.timeout)
        except Empty:
            raise BrokerError("all %d broker connections stayed busy for %gs" % (
                self.size, self.timeout)) from None

    def _give(self, slot):
        if not self._closed and not self.embedded:
            self._idle.put(slot)

    def _discard(self, slot):
        """Throw away a RabbitMQ connection that failed (the embedded one is shared)."""
        if not self.embedded:
            slot.reset()


class _Slot:
    """One connection of the pool with its channel and producer, made on first use."""

    def __init__(self, url):
        self.url = url
        self.conn = self._channel = self._producer = None

    def channel(self):
        if self.conn is None:
            conn = connection.connect(self.url)
            try:
                self._channel = conn.channel()
            except BaseException:
                _quietly(conn.release)
                raise
            self.conn, self._producer = conn, kombu.Producer(self._channel)
        return self._channel

    def producer(self):
        self.channel()
        return self._producer

    def reset(self):
        conn, self.conn, self._channel, self._producer = self.conn, None, None, None
        if conn is not None:
            _quietly(conn.release)


def _quietly(function):
    try:
        function()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail too
        pass


def _is_refusal(exc):
    """A nack or a channel error: the broker answered no, retrying won't help."""
    return isinstance(exc, (amqp.exceptions.MessageNacked, amqp.exceptions.ChannelError))


def _reason(exc):
    return "%s: %s" % (exc.__class__.__name__, exc) if str(exc) else exc.__class__.__name__
