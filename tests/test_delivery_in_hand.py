"""The delivery engine takes no further message while the bodies it holds pass
``IN_HAND_BYTES`` (a real embedded queue and a slow real SMTP sink)."""

import gevent
import pytest

from mailerq_gevent.broker import codec
from mailerq_gevent.delivery import engine as engine_module
from tests.delivery_support import MIME, World
from tests.smtp_sink import SmtpSink
from tests.waiting import wait_until

BIG = MIME + b"x" * 20000 + b"\r\n"


def most_in_hand(tmp_path, limit, count=6):
    """Deliver ``count`` big messages through a sink that takes 0.2 s over each
    DATA; the most senders busy at once."""
    world = World(tmp_path, sink=SmtpSink(data_delay=0.2).start())
    world.engine.in_hand.limit = limit
    for _ in range(count):
        world.inject(mime=BIG)
    busy = []

    def look():
        while True:
            busy.append(len(world.engine.senders))
            gevent.sleep(0.01)
    watch = gevent.spawn(look)
    world.start()
    try:
        wait_until(lambda: len(world.sink.messages) == count, timeout=30)
        wait_until(lambda: world.engine.in_hand.used == 0, timeout=10)    # all given back
    finally:
        watch.kill()
        world.stop()
    return max(busy)


@pytest.mark.parametrize("fit, most", [(2.5, 2), (1000, 6)])
def test_no_message_is_taken_while_the_bodies_in_hand_pass_the_limit(tmp_path, fit, most):
    size = len(codec.encode({"envelope": "sender@origin.test", "recipient": "rcpt@example.test",
                             "mime": BIG.decode()}))
    assert most_in_hand(tmp_path, int(size * fit)) == most


def test_a_message_bigger_than_the_limit_alone_still_goes(tmp_path):
    assert most_in_hand(tmp_path, 10, count=3) == 1


def test_the_default_limit_is_tens_of_megabytes():
    assert 16 * 2 ** 20 <= engine_module.IN_HAND_BYTES <= 64 * 2 ** 20
