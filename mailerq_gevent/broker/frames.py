"""AMQP frames written in as few system calls as possible.

py-amqp writes each method (a publish, an ack) to the socket as soon as it is
made: one ``send`` a message, which on this machine is a quarter of an SMTP
worker's time relaying over RabbitMQ (py-spy). ``coalesce(conn)`` gives a
kombu connection a frame writer that only appends the frames to a buffer; one
writer greenlet sends what has gathered each time it runs, so the publishes
(or acks) of every greenlet that ran in one turn of the event loop leave in
one write, in the order they were made, and nothing waits longer than that
turn. Appending never yields, so the frames of two messages cannot interleave.

A write that fails shuts the socket down: the connection's reader sees it
break and does what it does for a broken connection (fail what is in flight,
reconnect). ``close()`` stops the writer greenlet; what it had not sent is
dropped with the connection.
"""

import socket

import gevent
from amqp.method_framing import frame_writer
from gevent.event import Event


class CoalescingWriter:
    """The ``write`` py-amqp's frame writer calls, for one connection's transport."""

    def __init__(self, transport):
        self.transport = transport
        self._chunks = []
        self._gathered = Event()
        self._greenlet = gevent.spawn(self._run)

    def write(self, data):
        self._chunks.append(bytes(data))    # py-amqp reuses the buffer behind ``data``
        self._gathered.set()

    def close(self):
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)

    def _run(self):
        try:
            while True:
                self._gathered.wait()
                self._gathered.clear()
                chunks, self._chunks = self._chunks, []
                self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except (OSError, AttributeError):   # AttributeError: py-amqp closed the transport
            sock = getattr(self.transport, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def coalesce(conn):
    """Give the connected kombu connection ``conn`` a coalescing frame writer; returns it."""
    amqp_conn = conn.connection
    writer = CoalescingWriter(amqp_conn.transport)
    amqp_conn.frame_writer = frame_writer(amqp_conn, writer)
    return writer
