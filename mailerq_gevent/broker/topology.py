"""Queue and exchange declarations, the same on RabbitMQ and the embedded queue.

Every queue is durable. With ``rabbitmq-exchange`` empty, messages go through
the default exchange with the queue name as routing key (MailerQ's default);
with an exchange set, it is a durable direct exchange and each queue is bound
to it under its own name.

Delays (retries, ``nextattempt``): the embedded queue holds delayed messages
itself (``embedded.NOT_BEFORE``). RabbitMQ has no per-message delay, so a
delayed message goes to ``<queue>.delay.<seconds>``, a durable queue whose
``x-message-ttl`` is the delay and whose dead-letter route is the real queue:
when the time is up RabbitMQ moves it back. Delays are rounded up (to the
second under a minute, to 10 s under an hour, to the minute beyond) so only a
few such queues exist; each expires (``x-expires``) once unused for twice its
delay plus a minute, and publishers redeclare it well before that.
"""

import math

import kombu


def exchange(name):
    return kombu.Exchange(name, type="direct", durable=True) if name else kombu.Exchange("")


def queue(name, exchange_name=""):
    """The durable queue ``name``, bound under its own name when an exchange is set."""
    return kombu.Queue(name, exchange=exchange(exchange_name), routing_key=name,
                       durable=True, auto_delete=False)


def delay_seconds(delay):
    """Round a delay up to the granularity of the delay queues."""
    if delay <= 60:
        return max(1, math.ceil(delay))
    step = 10 if delay <= 3600 else 60
    return int(math.ceil(delay / step) * step)


def delay_queue(name, seconds, exchange_name=""):
    """The RabbitMQ queue that holds messages for ``name`` during ``seconds``."""
    ttl = int(seconds * 1000)
    return kombu.Queue(
        "%s.delay.%d" % (name, seconds), exchange=kombu.Exchange(""),
        routing_key="%s.delay.%d" % (name, seconds), durable=True, auto_delete=False,
        queue_arguments={
            "x-message-ttl": ttl,
            "x-dead-letter-exchange": exchange_name,
            "x-dead-letter-routing-key": name,
            "x-expires": expiry_ms(seconds),
        })


def expiry_ms(seconds):
    return int((2 * seconds + 60) * 1000)


def redeclare_after(seconds):
    """Seconds after which a publisher declares a delay queue again (keeps it alive)."""
    return seconds + 30
