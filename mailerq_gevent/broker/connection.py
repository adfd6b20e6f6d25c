"""Where ``rabbitmq-address`` points: RabbitMQ or the embedded queue, as one interface.

``backend(url)`` gives the object the broker layer works through, one of:

* ``RabbitMQ`` for ``amqp://`` and ``amqps://``: kombu over py-amqp with
  publisher confirms on (a publish returns once the broker has acked it, so it
  is on disk in a durable queue; ``confirms.PipelinedChannel`` keeps many in
  flight on one channel);
* ``embedded.EmbeddedQueue`` for ``sqlite:///path`` (and ``memory://``, the
  same in memory, for tests).

Both have ``open()``, ``close()``, ``connect(confirm)`` (a new kombu
Connection), ``delayed(...)`` (how a publish is held back), and
``committed_elsewhere(due)`` (another process published into it); and three
facts the publisher and consumers size their connections by
(``pipelined_confirms``, ``amqp_frames``, ``transaction_slots``,
``retry_broken``).
"""

import socket

import amqp.exceptions
import kombu
import kombu.exceptions

from mailerq_gevent.broker.embedded import EmbeddedQueue
from mailerq_gevent.broker.storage import StoreError
from mailerq_gevent.config_values import redact_url

CONNECT_TIMEOUT = 10.0

# What a broken connection or a refusing broker raises; the caller answers
# 451 / requeues rather than losing anything.
ERRORS = (OSError, socket.timeout, amqp.exceptions.AMQPError,
          kombu.exceptions.KombuError, StoreError, ConnectionError)


def backend(url, writer_only=False, on_commit=None):
    """The backend for ``url``. ``writer_only`` and ``on_commit(due)`` concern
    the embedded queue only: a process that writes into a file another one
    owns, telling it after each commit (RabbitMQ tells its consumers itself)."""
    if url.startswith(("sqlite:", "memory:")):
        return EmbeddedQueue(url, writer_only=writer_only, on_commit=on_commit)
    return RabbitMQ(url)


class RabbitMQ:
    """A RabbitMQ broker at ``url``."""

    pipelined_confirms = True   # single publishes: one confirms.PipelinedChannel
    amqp_frames = True          # py-amqp's frames on a socket: frames.coalesce applies
    transaction_slots = 0       # no more transactional connections than the pool size
    retry_broken = True         # a broken connection may be a restarted broker: try once more

    def __init__(self, url):
        self.url = url

    def __repr__(self):
        return "<RabbitMQ %s>" % describe(self.url)

    def open(self):
        """Nothing to open: connections are made on use (an unreachable broker is not fatal)."""
        return self

    def close(self):
        pass

    def connect(self, confirm=True):
        return kombu.Connection(self.url, connect_timeout=CONNECT_TIMEOUT, heartbeat=0,
                                transport_options={"confirm_publish": confirm})

    def delayed(self, publisher, slot, queue, seconds, headers):
        """``(exchange, routing key, headers)`` of a publish to ``queue`` held
        back ``seconds``: through a holding queue (``topology.delay_queue``)."""
        return "", publisher.holding_queue(slot, queue, seconds), headers

    def committed_elsewhere(self, due=None):
        """Nothing to do: RabbitMQ tells its consumers of every publish itself."""


def connect(target, confirm=True):
    """A new kombu Connection to the backend ``target``, connected (one attempt, no retry loop)."""
    conn = target.connect(confirm)
    try:
        conn.ensure_connection(max_retries=0)
    except BaseException:
        conn.release()
        raise
    return conn


def describe(url):
    """The URL without its password, for logs and errors."""
    return redact_url(url)
