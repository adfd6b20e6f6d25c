"""RabbitMQ publisher confirms, many in flight on one channel.

After ``confirm.select`` (a RabbitMQ extension) the broker numbers the
messages published on a channel from 1 and answers each with ``basic.ack``
or ``basic.nack`` carrying that number, or one number with ``multiple`` for
every message up to it; RabbitMQ sends those after its fsync, for many
messages at once. ``PipelinedChannel`` is one connection in that mode shared
by every greenlet of a process: ``publish`` hands a message to the
connection's coalescing writer (``frames.coalesce``: the publishes of one
turn of the event loop leave in one write), files an ``AsyncResult`` under
its number and returns it; one reader greenlet drains the connection and
settles the results. A caller waits for its own confirm
only, so a thousand transactions in flight cost one connection and no
round trip each (py-amqp's own confirm mode waits for each publish's ack
before the next can be written).

A broken connection (write or read) fails every publish in flight with the
error and is closed; the next ``publish`` opens a new one. A nack fails its
own publishes (``MessageNacked``). Methods that wait for a reply (``queue.declare``) are not for this channel,
whose reading is the reader's: the publisher sends them on another.
"""

import amqp.exceptions
import gevent
from amqp import spec
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from mailerq_gevent.broker import codec, connection, frames

_PUBLISH_ARGS = "Bssbb"     # ticket, exchange, routing key, mandatory, immediate


class PipelinedChannel:
    """One confirm-mode channel to ``backend`` (made on first use), for any number of greenlets."""

    pipelined = True

    def __init__(self, backend):
        self.backend = backend
        self.conn = self._channel = self._reader = self._writer = None
        self._pending = {}          # delivery tag -> AsyncResult, in increasing tag order
        self._tag = 0
        self._writing = Semaphore()

    @property
    def in_flight(self):
        return len(self._pending)

    def publish(self, body, headers, exchange, routing_key):
        """Write a persistent message; returns the AsyncResult its confirm sets
        (True, or the nack's / the broken connection's exception)."""
        with self._writing:
            if self.conn is None:
                self._open()
            conn, channel = self.conn, self._channel
            message = channel.prepare_message(body, 0, codec.CONTENT_TYPE,
                                              codec.CONTENT_ENCODING, headers or {},
                                              {"delivery_mode": 2})
            self._tag += 1
            confirmed = self._pending[self._tag] = AsyncResult()
            try:
                # what basic_publish sends, without its per-publish poll of the
                # socket for a connection.blocked notice: the reader reads.
                # Into the writer's buffer: this does not yield
                channel.send_method(spec.Basic.Publish, _PUBLISH_ARGS,
                                    (0, exchange, routing_key, False, False), message)
            except BaseException as exc:
                self._fail(conn, exc)
                raise
        return confirmed

    def reset(self):
        """Close the connection; what is in flight fails (the caller may publish again)."""
        if self.conn is not None:
            self._fail(self.conn, ConnectionError("the publishing connection was closed"))

    # -- inside ---------------------------------------------------------------

    def _open(self):
        conn = connection.connect(self.backend, confirm=False)
        writer = frames.coalesce(conn)
        try:
            channel = conn.channel()
            channel.confirm_select()
        except BaseException:
            _quietly(conn.release)
            writer.close()
            raise
        channel.events["basic_ack"].add(self._acked)
        channel.events["basic_nack"].add(self._nacked)
        self.conn, self._channel, self._writer, self._tag = conn, channel, writer, 0
        self._reader = gevent.spawn(self._read, conn)

    def _read(self, conn):
        try:
            while conn is self.conn:
                conn.drain_events()
        except BaseException as exc:  # noqa: BLE001 - GreenletExit included: fail what waits
            self._fail(conn, exc)

    def _acked(self, tag, multiple):
        for confirmed in self._settled(tag, multiple):
            confirmed.set(True)

    def _nacked(self, tag, multiple):
        for confirmed in self._settled(tag, multiple):
            confirmed.set_exception(amqp.exceptions.MessageNacked())

    def _settled(self, tag, multiple):
        pending = self._pending
        if not multiple:
            found = pending.pop(tag, None)
            return [found] if found is not None else []
        settled = []
        while pending:
            first = next(iter(pending))
            if first > tag:
                break
            settled.append(pending.pop(first))
        return settled

    def _fail(self, conn, exc):
        """``conn`` broke (or is being closed): fail all in flight, close it."""
        if conn is not self.conn:
            return
        pending, self._pending = self._pending, {}
        reader, self._reader = self._reader, None
        writer, self._writer = self._writer, None
        self.conn = self._channel = None
        if not isinstance(exc, connection.ERRORS):
            exc = ConnectionError("publishing connection lost: %s" % exc.__class__.__name__)
        for confirmed in pending.values():
            confirmed.set_exception(exc)
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        _quietly(conn.release)          # its close goes out through the writer, then that stops
        if writer is not None:
            writer.close()


def _quietly(function):
    try:
        function()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail too
        pass
