"""Durable publishing, shared by every greenlet of the daemon.

``Publisher.publish(queue, body)`` returns only when the message is durable:
on RabbitMQ a persistent message in a durable queue, confirmed by the broker
(publisher confirms); on the embedded queue committed to disk. Anything else
raises ``BrokerError``, and the caller says 451 or requeues: it never assumes.

``publish_many(items)`` publishes several messages (one per recipient of an
SMTP transaction) all or nothing: in one AMQP transaction (``tx.select`` /
``tx.commit``, whose commit-ok RabbitMQ sends once the messages are on disk)
or, on the embedded queue, in one SQLite transaction.

Every publish goes through kombu's channel API (``prepare_message``,
``basic_publish``, ``tx_commit``) on a connection of the backend
(``connection.RabbitMQ`` or ``embedded.EmbeddedQueue``, the strategy): the
backend says how a delay is expressed and how connections are shared. Single
publishes all share one channel: on RabbitMQ a ``confirms.PipelinedChannel``
(many publishes in flight, each caller waiting for its own confirm; methods
that wait for a reply, the declarations, go over a control connection beside
it), on the embedded queue its channel, which any number of greenlets may
use at once (each waits for its own commit; the store's writer groups them
into one commit). Transactions take a connection each from a pool
(``size``). A connection that failed is thrown away and the publish is tried
once more on a fresh one (the broker may have restarted); a confirm timeout
or a nack is not retried.
"""

import time

import amqp.exceptions
import gevent
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue

from mailerq_gevent import logs
from mailerq_gevent.broker import codec, connection, topology
from mailerq_gevent.broker.confirms import PipelinedChannel

log = logs.get(__name__)

DEFAULT_TIMEOUT = 30.0


class BrokerError(Exception):
    """The queue did not take the message (down, refused, timed out)."""

    def __str__(self):
        if len(self.args) == 3:         # (what, broker, seconds): a timeout, worded when shown
            return "%s: no answer from %s within %gs" % self.args
        return super().__str__()


class Publisher:
    def __init__(self, backend, exchange="", size=8, timeout=DEFAULT_TIMEOUT):
        self.backend, self.exchange, self.timeout = backend, exchange, timeout
        self.name = connection.describe(backend.url)
        single = PipelinedChannel(backend) if backend.pipelined_confirms else _Slot(backend, False)
        self._single = _Pool(backend, 1, timeout, transactional=False, shared=single)
        self._tx = _Pool(backend, max(size, backend.transaction_slots), timeout,
                         transactional=True)
        self._control = _Slot(backend, transactional=False)    # beside a pipelined channel
        self._controlling = Semaphore()
        self._declared = {}         # queue name -> time.monotonic() of its declaration

    def publish(self, queue, body, delay=0.0, headers=None):
        """Publish ``body`` (bytes or a dict, JSON-encoded) to ``queue``; durable on return.

        ``delay`` holds the message back that many seconds. An empty ``queue``
        name means the queue is disabled: nothing is published, returns False.
        """
        return self.publish_many([(queue, body, delay, headers)]) == 1

    def publish_many(self, items):
        """Publish ``(queue, body[, delay[, headers]])`` items all or nothing;
        returns how many were published (items for a disabled queue are skipped)."""
        items = [_item(*item) for item in items if item[0]]
        if not items:
            return 0
        pool = self._single if len(items) == 1 else self._tx
        self._with_retry(pool, ("publish to %s", items[0][0]),
                         lambda slot: self._send_all(slot, items, pool.transactional))
        return len(items)

    def declare(self, queue):
        """Declare ``queue`` (and the exchange) now; raises BrokerError."""
        self._with_retry(self._single, "declare %s" % queue,
                         lambda slot: self._declare(slot, queue), retry=False)

    def depth(self, queue):
        """Messages ready in ``queue``; raises BrokerError."""
        def depth(slot):
            declared = self._replying(slot, lambda channel: topology.queue(
                queue, self.exchange)(channel).queue_declare(passive=True))
            return declared.message_count
        return self._with_retry(self._single, "depth of %s" % queue, depth, retry=False)

    def close(self):
        self._single.close()
        self._tx.close()
        self._control.reset()

    # -- inside ---------------------------------------------------------------

    def _with_retry(self, pool, what, action, retry=True):
        """Run ``action(slot)`` on a pooled connection within the timeout; a
        broken connection is replaced and, if ``retry``, the action run once more.
        ``what`` (text, or ``(format, argument)``) names it in errors only."""
        for attempt in (1, 2):
            slot = pool.take()
            fresh = slot.conn is None or not self.backend.retry_broken
            timeout = gevent.Timeout(self.timeout)
            timeout.start()
            try:
                return action(slot)
            except gevent.Timeout as exc:
                pool.discard(slot)
                if exc is not timeout:
                    raise
                raise BrokerError(_what(what), self.name, self.timeout) from None
            except BrokerError:
                pool.discard(slot)
                raise
            except amqp.exceptions.MessageNacked:
                raise BrokerError("%s: the broker refused it (nack)" % _what(what)) from None
            except connection.ERRORS as exc:
                pool.discard(slot)
                self._declared.clear()
                if not retry or fresh or attempt == 2 or _is_refusal(exc):
                    raise BrokerError("%s: %s" % (_what(what), _reason(exc))) from exc
                log.warning("broker.publish_retry", what=_what(what),
                            error=exc.__class__.__name__)
            finally:
                timeout.close()
                pool.give(slot)

    def _send_all(self, slot, items, transactional):
        confirms = [self._send(slot, *item) for item in items]
        if transactional:
            slot.channel().tx_commit()
        for confirmed in confirms:
            if confirmed is not None:
                confirmed.get()         # the broker's ack; its nack or a lost connection raises

    def _send(self, slot, queue, body, delay, headers):
        exchange, routing_key = self.exchange, queue
        if delay and delay > 0:
            exchange, routing_key, headers = self.backend.delayed(self, slot, queue, delay,
                                                                  headers)
        self._ensure_declared(slot, queue)
        return slot.publish(body, headers, exchange, routing_key)

    def _ensure_declared(self, slot, queue):
        if queue not in self._declared:
            self._declare(slot, queue)

    def _declare(self, slot, queue):
        self._replying(slot, lambda channel: topology.queue(queue, self.exchange)(
            channel).declare())
        self._declared[queue] = time.monotonic()

    def _replying(self, slot, action):
        """``action(channel)`` on a channel where a method may wait for its reply:
        ``slot``'s own, or beside a pipelined channel (whose reader does all
        its reading) the control connection, one caller at a time."""
        if not slot.pipelined:
            return action(slot.channel())
        with self._controlling:
            try:
                return action(self._control.channel())
            except BaseException:
                self._control.reset()
                raise

    def holding_queue(self, slot, queue, delay):
        """The name of the RabbitMQ queue that holds messages for ``queue``
        during ``delay`` seconds (rounded up), declared when needed."""
        seconds = topology.delay_seconds(delay)
        holding = topology.delay_queue(queue, seconds, self.exchange)
        last = self._declared.get(holding.name)
        if last is None or time.monotonic() - last > topology.redeclare_after(seconds):
            self._replying(slot, lambda channel: holding(channel).declare())
            self._declared[holding.name] = time.monotonic()
        return holding.name


def _what(what):
    return what[0] % what[1] if isinstance(what, tuple) else what


def _item(queue, body, delay=0.0, headers=None):
    """``(queue, body bytes, delay, headers)``: a dict body is JSON-encoded here,
    once, not again when a broken connection makes the publish run twice."""
    return queue, codec.encode(body) if isinstance(body, dict) else body, delay, headers


class _Pool:
    """Connections to take and give back; ``shared``: the one slot for all callers."""

    def __init__(self, backend, size, timeout, transactional, shared=None):
        self.backend, self.size, self.timeout = backend, size, timeout
        self.transactional, self.shared = transactional, shared
        self._idle = Queue()
        self._slots = [shared] if shared is not None else []
        self._closed = False

    def take(self):
        if self._closed:
            raise BrokerError("the publisher is closed")
        if self.shared is not None:
            return self.shared
        try:
            return self._idle.get_nowait()
        except Empty:
            pass
        if len(self._slots) < self.size:
            self._slots.append(_Slot(self.backend, self.transactional))
            return self._slots[-1]
        try:
            return self._idle.get(timeout=self.timeout)
        except Empty:
            raise BrokerError("all %d broker connections stayed busy for %gs" % (
                self.size, self.timeout)) from None

    def give(self, slot):
        if not self._closed and self.shared is None:
            self._idle.put(slot)

    def discard(self, slot):
        """Throw away a connection that failed (not the shared one: others use it;
        a pipelined channel closes itself when it breaks)."""
        if self.shared is None:
            slot.reset()

    def close(self):
        self._closed = True
        for slot in self._slots:
            slot.reset()
        self._slots = []


class _Slot:
    """One connection with its channel, made on first use."""

    pipelined = False

    def __init__(self, backend, transactional):
        self.backend, self.transactional = backend, transactional
        self.conn = self._channel = None

    def channel(self):
        if self.conn is None:
            conn = connection.connect(self.backend, confirm=not self.transactional)
            try:
                self._channel = conn.channel()
                if self.transactional:
                    self._channel.tx_select()
            except BaseException:
                _quietly(conn.release)
                raise
            self.conn = conn
        return self._channel

    def publish(self, body, headers, exchange, routing_key):
        """Publish a persistent message; returns None (durable on return, or on commit).

        kombu's channel API, not its Producer: the body is encoded already and
        nothing of the Producer's generality (serializers, retries) is wanted here."""
        channel = self.channel()
        channel.basic_publish(
            channel.prepare_message(body, 0, codec.CONTENT_TYPE, codec.CONTENT_ENCODING,
                                    headers or {}, {"delivery_mode": 2}),
            exchange=exchange, routing_key=routing_key)

    def reset(self):
        """Close the connection; an uncommitted transaction dies with it."""
        conn, self.conn, self._channel = self.conn, None, None
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
