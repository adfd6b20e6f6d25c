"""Consuming a queue: prefetch, explicit ack / reject / requeue-with-delay.

A ``Consumer`` owns one connection and one greenlet that drains it, calling
``handler(delivery)`` for every message. The handler must be quick (hand the
work to a pool); the work then settles the ``Delivery`` exactly once:

* ``ack()`` when the outcome is safely published elsewhere;
* ``reject(requeue=True)`` to give it back at once, ``reject()`` to drop it;
* ``requeue(delay, body=None)`` to try again later, possibly with a new body
  (the retry schedule): the new copy is published durably first, then the
  original is acked, so a crash in between duplicates, never loses.

At most ``prefetch`` messages are unsettled at a time. On RabbitMQ the acks
of one turn of the event loop leave in one write (``frames.coalesce``), and
as few frames as the order of settling allows (``_Acks``: one ack with
``multiple`` for every tag below the oldest still unsettled, one each above
it); a reject leaves at once, before any ack that could cover it. A handler that raises
leaves the message requeued with ``ERROR_DELAY``: a surprise never drops mail
and a poison message does not spin. When the connection breaks the consumer
reconnects with backoff; the broker gives the unacked messages to the next
consumer, and settling a delivery of the old connection does nothing.
``stop(timeout)`` stops taking messages, waits for the unsettled ones, then
closes (what is still unsettled goes back to the queue).
"""

import heapq
import socket

import gevent
import kombu
from gevent.event import Event
from gevent.lock import Semaphore

from mailerq_gevent import logs
from mailerq_gevent.broker import codec, connection, frames, topology
from mailerq_gevent.broker.publisher import BrokerError

log = logs.get(__name__)

ERROR_DELAY = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


class _Stop(BaseException):
    """Raised into the draining greenlet by ``stop`` (not an Exception: no handler eats it)."""


class Delivery:
    """One message handed to the handler; settle it once."""

    __slots__ = ("consumer", "message", "generation", "settled")

    def __init__(self, consumer, message, generation):
        self.consumer, self.message, self.generation = consumer, message, generation
        self.settled = False

    @property
    def queue(self):
        return self.consumer.queue

    @property
    def body(self):
        body = self.message.body
        return body.encode("utf-8") if isinstance(body, str) else body

    @property
    def size(self):
        """The body's length as it came (no copy made)."""
        return len(self.message.body)

    @property
    def headers(self):
        return self.message.headers or {}

    @property
    def redelivered(self):
        return bool(self.message.delivery_info.get("redelivered"))

    def json(self):
        """The body as the message dict; raises codec.CodecError."""
        return codec.decode(self.body)

    def ack(self):
        self._settle(True)

    def reject(self, requeue=False):
        self._settle(False, requeue)

    def requeue(self, delay=0.0, body=None):
        """Back to the queue after ``delay`` seconds, as ``body`` if given; raises BrokerError."""
        if delay <= 0 and body is None:
            return self.reject(requeue=True)
        try:
            self.consumer.publisher.publish(self.queue, body if body is not None else self.body,
                                            delay=delay, headers=self.headers or None)
        except BrokerError:
            self.reject(requeue=True)
            raise
        self.ack()

    def _settle(self, ack, requeue=False):
        if self.settled:
            return
        self.settled = True
        self.consumer._settle(self, ack, requeue)


class _Acks:
    """The acks of one AMQP channel, gathered through one turn of the event
    loop and sent at its end (a hub callback) in as few frames as the order
    of settling allows. Tags are the channel's delivery tags, which grow.

    ``delivered(tag)`` when a message comes; ``rejected(tag)`` when it is
    settled otherwise (the reject itself is sent by the caller, at once);
    ``ack(tag)``. At the end of the turn every acked tag below the oldest
    tag still unsettled goes in one ``basic.ack(multiple=True)`` (it covers
    no message left to settle: there is none below that one, and a rejected
    one is gone already, its frame sent first), each above it in its own."""

    def __init__(self, channel, on_error):
        self.channel, self.on_error = channel, on_error
        self._unsettled = set()
        self._oldest = []           # heap of tags, some settled since (skipped lazily)
        self._acked = []
        self._callback = None
        self.frames = 0             # ack frames sent (the tests look)

    def delivered(self, tag):
        self._unsettled.add(tag)
        heapq.heappush(self._oldest, tag)

    def rejected(self, tag):
        self._unsettled.discard(tag)

    def ack(self, tag):
        self._unsettled.discard(tag)
        self._acked.append(tag)
        if self._callback is None:
            self._callback = gevent.get_hub().loop.run_callback(self.flush)

    def flush(self):
        """Send the gathered acks (in the hub at the end of the turn, or at close)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        acked, self._acked = self._acked, []
        if not acked:
            return
        oldest = self._oldest
        while oldest and oldest[0] not in self._unsettled:
            heapq.heappop(oldest)
        if oldest:
            covered = [tag for tag in acked if tag < oldest[0]]
            single = [tag for tag in acked if tag > oldest[0]]
        else:
            covered, single = acked, ()
        try:
            if covered:
                self.channel.basic_ack(max(covered), multiple=True)
                self.frames += 1
            for tag in single:
                self.channel.basic_ack(tag)
                self.frames += 1
        except Exception as exc:  # noqa: BLE001 - in the hub: the connection broke; it redelivers
            self.on_error(exc)


class Consumer:
    def __init__(self, backend, queue, handler, publisher, prefetch=100, exchange=""):
        self.backend, self.queue, self.handler = backend, queue, handler
        self.publisher, self.prefetch, self.exchange = publisher, prefetch, exchange
        self.unsettled = 0
        self._generation = 0
        self._write_lock = Semaphore()
        self._drained = Event()
        self._drained.set()
        self._stopping = False
        self._greenlet = None
        self._conn = self._writer = self._acks = None

    def start(self):
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self, timeout=30.0):
        """Stop taking messages, wait up to ``timeout`` for unsettled ones, close."""
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(_Stop, block=False)
            self._drained.wait(timeout)
            self._greenlet.kill(block=True, timeout=5)
        self._close()

    # -- the draining greenlet -----------------------------------------------

    def _run(self):
        try:
            self._consume_until_stopped()
        except _Stop:
            pass
        # stay alive (connection open) until stop() has waited for the unsettled
        self._drained.wait()

    def _consume_until_stopped(self):
        backoff = BACKOFF_FIRST
        while not self._stopping:
            try:
                self._session()
                backoff = BACKOFF_FIRST
            except connection.ERRORS as exc:
                self._lost(exc, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _session(self):
        self._conn = connection.connect(self.backend, confirm=False)
        channel = self._conn.channel()
        if self.backend.amqp_frames:        # the acks of one loop turn in one write
            self._writer = frames.coalesce(self._conn)
            self._acks = _Acks(channel, self._ack_failed)
        consumer = kombu.Consumer(channel, [topology.queue(self.queue, self.exchange)],
                                  on_message=self._on_message, prefetch_count=self.prefetch)
        consumer.consume()
        log.info("broker.consuming", queue=self.queue, prefetch=self.prefetch)
        while not self._stopping:
            try:
                self._conn.drain_events(timeout=5.0)
            except socket.timeout:
                continue

    def _lost(self, exc, backoff):
        log.error("broker.consumer_lost", queue=self.queue, error=exc.__class__.__name__,
                  detail=str(exc)[:200], retry_in=backoff)
        self._close()
        gevent.sleep(backoff)

    def _close(self):
        acks, self._acks = self._acks, None
        if acks is not None:
            acks.flush()            # before the connection's Close, in the same stream
        conn, self._conn = self._conn, None
        writer, self._writer = self._writer, None
        self._generation += 1
        self.unsettled = 0
        self._drained.set()
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
                pass
        if writer is not None:
            writer.close()

    def _on_message(self, message):
        delivery = Delivery(self, message, self._generation)
        if self._acks is not None:
            self._acks.delivered(message.delivery_tag)
        self.unsettled += 1
        self._drained.clear()
        try:
            self.handler(delivery)
        except Exception:  # noqa: BLE001 - never drop mail on a surprise
            log.exception("broker.handler_failed", queue=self.queue)
            if not delivery.settled:
                try:
                    delivery.requeue(ERROR_DELAY)
                except BrokerError as exc:
                    log.error("broker.requeue_failed", queue=self.queue, detail=str(exc)[:200])

    def _settle(self, delivery, ack, requeue):
        if delivery.generation != self._generation:
            return              # its connection is gone; the broker redelivers it
        message, acks = delivery.message, self._acks
        try:
            if acks is not None and ack:
                acks.ack(message.delivery_tag)      # sent at the end of this turn
            else:
                if acks is not None:
                    acks.rejected(message.delivery_tag)
                with self._write_lock:
                    message.ack() if ack else message.reject(requeue=requeue)
        except connection.ERRORS as exc:
            self._ack_failed(exc)
        finally:
            self.unsettled -= 1
            if self.unsettled <= 0:
                self._drained.set()

    def _ack_failed(self, exc):
        log.warning("broker.settle_failed", queue=self.queue, error=exc.__class__.__name__)

