"""RabbitMQ publisher confirms pipelined on one channel (``broker/confirms.py``),
against the real broker: many publishes in flight on one connection, each
caller told of its own confirm; a nack and a broken connection fail only what
they concern, and the publisher's next publish opens a new connection."""

import socket
import uuid

import amqp.exceptions
import gevent
import kombu
import pytest

from mailerq_gevent.broker import Broker, backend, connection
from mailerq_gevent.broker.confirms import PipelinedChannel
from mailerq_gevent.broker.frames import CoalescingWriter
from tests.waiting import wait_until


@pytest.fixture
def queue(rabbit_url):
    """A durable queue of its own, deleted after."""
    name = "test_confirms_%s" % uuid.uuid4().hex[:12]
    arguments = {}
    yield lambda **extra: _declare(rabbit_url, name, arguments, extra)
    with kombu.Connection(rabbit_url) as conn:
        conn.channel().queue_delete(name)


def _declare(url, name, arguments, extra):
    arguments.update(extra)
    with kombu.Connection(url) as conn:
        kombu.Queue(name, durable=True, queue_arguments=arguments)(conn.channel()).declare()
    return name


def _depth(url, name):
    with kombu.Connection(url) as conn:
        return conn.channel().queue_declare(name, passive=True).message_count


def test_many_publishes_are_in_flight_on_one_connection(rabbit_url, queue):
    name = queue()
    channel = PipelinedChannel(backend(rabbit_url))
    confirms = [channel.publish(b'{"n": %d}' % n, None, "", name) for n in range(300)]
    first = channel.conn
    assert channel.in_flight > 1            # written, none waited for
    assert all(confirmed.get(timeout=20) is True for confirmed in confirms)
    assert channel.conn is first and channel.in_flight == 0
    assert _depth(rabbit_url, name) == 300
    channel.reset()


def test_concurrent_publishers_each_get_their_own_confirm(rabbit_url, queue):
    name = queue()
    channel = PipelinedChannel(backend(rabbit_url))
    done = []

    def publisher(number):
        for n in range(20):
            assert channel.publish(b'{"n": %d}' % n, None, "", name).get(timeout=20) is True
        done.append(number)
    gevent.joinall([gevent.spawn(publisher, n) for n in range(25)], raise_error=True)
    assert sorted(done) == list(range(25))
    assert _depth(rabbit_url, name) == 500
    channel.reset()


def test_a_nack_fails_only_the_refused_publish(rabbit_url, queue):
    # a full queue that rejects publishes: RabbitMQ nacks what it cannot take
    name = queue(**{"x-max-length": 2, "x-overflow": "reject-publish"})
    channel = PipelinedChannel(backend(rabbit_url))
    confirms = [channel.publish(b"{}", None, "", name) for _ in range(3)]
    assert [c.get(timeout=20) for c in confirms[:2]] == [True, True]
    with pytest.raises(amqp.exceptions.MessageNacked):
        confirms[2].get(timeout=20)
    assert channel.publish(b"{}", None, "", "").get(timeout=20) is True   # still usable
    channel.reset()


def test_a_broken_connection_fails_what_is_in_flight(rabbit_url, queue):
    name = queue()
    channel = PipelinedChannel(backend(rabbit_url))
    assert channel.publish(b"{}", None, "", name).get(timeout=20) is True
    broken = channel.conn
    in_flight = channel.publish(b"{}", None, "", name)      # no yield: not confirmed yet
    broken.connection.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(connection.ERRORS):
        in_flight.get(timeout=20)
    assert channel.conn is None and channel.in_flight == 0
    assert channel.publish(b"{}", None, "", name).get(timeout=20) is True
    assert channel.conn is not broken
    channel.reset()


def test_the_publisher_retries_on_a_new_connection_after_a_break(rabbit_url):
    broker = Broker(rabbit_url, timeout=10)
    name = "test_confirms_%s" % uuid.uuid4().hex[:12]
    try:
        assert broker.start([name])
        assert broker.publish(name, {"n": 1})
        shared = broker.publisher._single.shared
        shared.conn.connection.sock.shutdown(socket.SHUT_RDWR)
        wait_until(lambda: shared.conn is None)       # the reader saw the break
        assert broker.publish(name, {"n": 2})
        assert broker.publish(name, {"n": 3}, delay=30)    # declarations beside it still work
        wait_until(lambda: broker.depth(name) == 2)
    finally:
        broker.stop(5)
        with kombu.Connection(rabbit_url) as conn:
            for queue_name in (name, name + ".delay.30"):
                conn.channel().queue_delete(queue_name)


class _Transport:
    """What CoalescingWriter writes through: records each write, or fails."""

    def __init__(self, fail=False):
        self.writes, self.fail = [], fail
        self.sock, self.shut = self, False

    def write(self, data):
        if self.fail:
            raise ConnectionResetError("peer gone")
        self.writes.append(bytes(data))

    def shutdown(self, how):
        self.shut = True


def test_the_frames_of_one_loop_turn_leave_in_one_write_in_order():
    transport = _Transport()
    writer = CoalescingWriter(transport)
    buffer = bytearray(b"one")
    writer.write(memoryview(buffer))
    buffer[:] = b"two"                   # py-amqp reuses its buffer: the writer copied
    writer.write(memoryview(buffer))
    writer.write(b"three")
    gevent.sleep(0.01)
    assert transport.writes == [b"onetwothree"]
    writer.write(b"four")
    gevent.sleep(0.01)
    assert transport.writes == [b"onetwothree", b"four"]
    writer.close()


def test_a_failed_write_shuts_the_socket_down_for_the_reader_to_see():
    transport = _Transport(fail=True)
    writer = CoalescingWriter(transport)
    writer.write(b"frame")
    wait_until(lambda: transport.shut)
    writer.close()


def _publish_numbered(broker, name, count):
    """``{"n": 0}`` to ``{"n": count - 1}``, published concurrently."""
    gevent.joinall([gevent.spawn(broker.publish, name, {"n": n}) for n in range(count)],
                   raise_error=True)


def test_consumer_acks_on_rabbitmq_are_coalesced_and_all_arrive(rabbit_url, queue):
    name = queue()
    broker = Broker(rabbit_url, timeout=10)
    try:
        assert broker.start([name])
        _publish_numbered(broker, name, 200)
        seen = []

        def handler(delivery):
            seen.append(delivery.json()["n"])
            gevent.spawn(delivery.ack)
        consumer = broker.consume(name, handler, prefetch=50)
        wait_until(lambda: len(seen) == 200 and consumer.unsettled == 0)
        gevent.sleep(0.1)
        consumer.stop(5)        # an ack that never reached RabbitMQ: its message back in the queue
        assert _depth(rabbit_url, name) == 0
        assert sorted(seen) == list(range(200))
    finally:
        broker.stop(5)


def test_consumer_acks_go_in_few_frames_whatever_the_order_of_settling(rabbit_url, queue):
    """Settled in scrambled order within each turn, the acks still reach
    RabbitMQ (none comes back after the consumer stops) in fewer frames than
    messages (one ``multiple`` ack covers every tag below the oldest unsettled)."""
    name = queue()
    broker = Broker(rabbit_url, timeout=10)
    try:
        assert broker.start([name])
        _publish_numbered(broker, name, 300)
        seen, held = [], []

        def handler(delivery):
            seen.append(delivery.json()["n"])
            held.append(delivery)
            if len(held) == 10:         # settle ten at a time, newest first
                batch = held[::-1]
                del held[:]
                gevent.spawn(lambda: [d.ack() for d in batch])
        consumer = broker.consume(name, handler, prefetch=50)
        wait_until(lambda: len(seen) == 300 and consumer.unsettled == 0)
        acks = consumer._acks
        gevent.sleep(0.1)
        consumer.stop(5)
        assert _depth(rabbit_url, name) == 0 and sorted(seen) == list(range(300))
        assert 0 < acks.frames <= 300 // 10 + 5
    finally:
        broker.stop(5)


def test_a_reject_among_batched_acks_is_not_covered_by_them(rabbit_url, queue):
    """One message rejected back to the queue in the middle of acked ones
    comes back (no ack swallowed it); one dropped is gone; one left
    unsettled while every later one is acked is not covered by their acks:
    it is back in the queue when the consumer stops without settling it."""
    name = queue()
    broker = Broker(rabbit_url, timeout=10)
    try:
        assert broker.start([name])
        _publish_numbered(broker, name, 40)
        seen = []

        def handler(delivery):
            n = delivery.json()["n"]
            seen.append(n)
            if n == 5:
                return                              # never settled
            if n == 20 and seen.count(20) == 1:
                gevent.spawn(delivery.reject, True)  # back to the queue once
            elif n == 30:
                gevent.spawn(delivery.reject)        # dropped
            else:
                gevent.spawn(delivery.ack)
        consumer = broker.consume(name, handler, prefetch=100)
        wait_until(lambda: seen.count(20) == 2 and consumer.unsettled == 1)
        acks = consumer._acks
        gevent.sleep(0.2)
        consumer.stop(0.5)                          # 5 unsettled: back to the queue
        assert sorted(seen) == sorted(list(range(40)) + [20])
        assert acks.frames > 0 and _depth(rabbit_url, name) == 1
        with kombu.Connection(rabbit_url) as conn:
            left = conn.SimpleQueue(name).get(timeout=5)
            assert left.payload == {"n": 5} or b'"n":5' in left.body.replace(b" ", b"")
            left.ack()
    finally:
        broker.stop(5)
