"""kombu connections for ``rabbitmq-address``: RabbitMQ or the embedded queue.

``amqp://`` and ``amqps://`` go to RabbitMQ through py-amqp with publisher
confirms on (every ``basic_publish`` waits for the broker's ack, so a publish
that returns is on disk in a durable queue). ``sqlite:///path`` is the
embedded durable queue and ``memory://`` the same thing in memory (tests);
both use ``embedded.Transport``.
"""

import socket

import amqp.exceptions
import kombu
import kombu.exceptions

from mailerq_gevent.broker import embedded, store
from mailerq_gevent.config_values import redact_url

CONNECT_TIMEOUT = 10.0

# What a broken connection or a refusing broker raises; the caller answers
# 451 / requeues rather than losing anything.
ERRORS = (OSError, socket.timeout, amqp.exceptions.AMQPError,
          kombu.exceptions.KombuError, store.StoreError, ConnectionError)


def is_embedded(url):
    return url.startswith(("sqlite:", "memory:"))


def connect(url, confirm=True):
    """A new kombu Connection for ``url``, connected (one attempt, no retry loop)."""
    if is_embedded(url):
        conn = kombu.Connection(url, transport=embedded.Transport)
    else:
        conn = kombu.Connection(url, connect_timeout=CONNECT_TIMEOUT, heartbeat=0,
                                transport_options={"confirm_publish": confirm})
    try:
        conn.ensure_connection(max_retries=0)
    except BaseException:
        conn.release()
        raise
    return conn


def describe(url):
    """The URL without its password, for logs and errors."""
    return redact_url(url)
