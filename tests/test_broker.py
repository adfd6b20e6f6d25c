"""The queue layer as the daemon uses it, the same on every broker: the embedded
queue, memory:// and a real RabbitMQ (publisher confirms, delay queues)."""

import time
import uuid

import gevent
import kombu
import pytest
from gevent.event import Event
from kombu.transport import virtual

from mailerq_gevent.broker import Broker, BrokerError, backend, codec, topology
from mailerq_gevent.broker import consumer as consumer_module
from mailerq_gevent.broker.embedded import EmbeddedQueue
from mailerq_gevent.broker.storage import list_messages
from tests.waiting import wait_until


@pytest.fixture(params=["sqlite", "memory", "rabbitmq"])
def broker(request, tmp_path):
    if request.param == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "queue.sqlite")
    elif request.param == "memory":
        url = "memory://%s/" % uuid.uuid4().hex
    else:
        url = request.getfixturevalue("rabbit_url")
    chosen = backend(url)
    made = Broker(url, pool_size=4, timeout=10, backend=chosen)
    made.queue = "test_%s" % uuid.uuid4().hex[:12]
    made.test_backend = chosen          # the embedded queue's store takes a fault hook
    assert made.start([made.queue])
    yield made
    made.stop(5)
    if request.param == "rabbitmq":
        _delete_queues(url, made.queue)


def _delete_queues(url, prefix):
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        for name in [prefix] + ["%s.delay.%d" % (prefix, s) for s in (1, 2)]:
            try:
                channel.queue_delete(name)
            except Exception:  # noqa: BLE001 - it may not exist
                channel = conn.channel()


def test_publish_consume_ack(broker):
    for number in range(20):
        assert broker.publish(broker.queue, {"n": number, "mime": "Subject: é\r\n\r\nhi"})
    wait_until(lambda: broker.depth(broker.queue) == 20)
    seen = []

    def handler(delivery):
        seen.append(delivery.json())
        delivery.ack()
    broker.consume(broker.queue, handler, prefetch=5)
    wait_until(lambda: len(seen) == 20)
    assert [m["n"] for m in seen] == list(range(20))
    assert seen[0]["mime"] == "Subject: é\r\n\r\nhi"
    wait_until(lambda: broker.depth(broker.queue) == 0)


def test_prefetch_bounds_unsettled_messages(broker):
    for number in range(10):
        broker.publish(broker.queue, {"n": number})
    held = []
    consumer = broker.consume(broker.queue, held.append, prefetch=3)
    wait_until(lambda: len(held) == 3)
    gevent.sleep(0.3)
    assert len(held) == 3 and consumer.unsettled == 3
    for delivery in held[:]:
        delivery.ack()
    wait_until(lambda: len(held) == 6)
    consumer.stop(0.1)


def test_requeue_with_delay_and_new_body(broker):
    broker.publish(broker.queue, {"n": 1, "results": []})
    arrivals = []

    def handler(delivery):
        message = delivery.json()
        arrivals.append((message, time.monotonic()))
        if len(message["results"]) == 0:
            message["results"].append({"state": "retry"})
            delivery.requeue(delay=1.0, body=message)
        else:
            delivery.ack()
    broker.consume(broker.queue, handler)
    wait_until(lambda: len(arrivals) == 2)
    (first, at_first), (second, at_second) = arrivals
    assert second["results"] == [{"state": "retry"}]
    assert at_second - at_first >= 0.9
    wait_until(lambda: broker.depth(broker.queue) == 0)


def test_a_failing_handler_never_drops_the_message(broker, monkeypatch):
    monkeypatch.setattr(consumer_module, "ERROR_DELAY", 0.5)
    broker.publish(broker.queue, {"n": 1})
    calls = []

    def handler(delivery):
        calls.append(delivery.json()["n"])
        if len(calls) == 1:
            raise RuntimeError("surprise")
        delivery.ack()
    broker.consume(broker.queue, handler)
    wait_until(lambda: len(calls) == 2)
    assert calls == [1, 1]


def test_reject_without_requeue_drops(broker):
    broker.publish(broker.queue, {"n": 1})
    got = Event()

    def handler(delivery):
        delivery.reject()
        got.set()
    broker.consume(broker.queue, handler)
    assert got.wait(10)
    wait_until(lambda: broker.depth(broker.queue) == 0)


def test_a_disabled_queue_publishes_nothing(broker):
    assert broker.publish("", {"n": 1}) is False


def test_many_greenlets_publish_at_once(broker):
    greenlets = [gevent.spawn(lambda g=g: [broker.publish(broker.queue, {"n": g * 10 + i})
                                            for i in range(10)]) for g in range(20)]
    gevent.joinall(greenlets, raise_error=True)
    wait_until(lambda: broker.depth(broker.queue) == 200)


def test_stop_waits_for_unsettled_deliveries(broker):
    broker.publish(broker.queue, {"n": 1})
    settled = []

    def handler(delivery):
        def work():
            gevent.sleep(0.3)
            delivery.ack()
            settled.append(1)
        gevent.spawn(work)
    consumer = broker.consume(broker.queue, handler)
    wait_until(lambda: consumer.unsettled == 1)
    consumer.stop(10)
    assert settled == [1]
    assert broker.depth(broker.queue) == 0


def test_unreachable_rabbitmq_is_a_broker_error_not_a_hang():
    broker = Broker("amqp://guest:guest@127.0.0.1:1//", timeout=5)
    started = time.monotonic()
    assert broker.start(["q"]) is False
    with pytest.raises(BrokerError):
        broker.publish("q", {"n": 1})
    assert time.monotonic() - started < 30
    broker.stop(1)


def test_delay_queues_round_up():
    assert topology.delay_seconds(0.2) == 1
    assert topology.delay_seconds(59.5) == 60
    assert topology.delay_seconds(601) == 610
    assert topology.delay_seconds(3601) == 3660
    held = topology.delay_queue("outbox", 600, "")
    assert held.name == "outbox.delay.600"
    assert held.queue_arguments["x-message-ttl"] == 600000
    assert held.queue_arguments["x-dead-letter-routing-key"] == "outbox"
    assert held.queue_arguments["x-expires"] > 2 * 600000


def test_publish_many_is_all_or_nothing(broker, request):
    other = broker.queue + "_b"
    assert broker.publish_many([(broker.queue, {"n": 1}), (other, {"n": 2}),
                                ("", {"n": 3})]) == 2
    wait_until(lambda: broker.depth(broker.queue) == 1 and broker.depth(other) == 1)
    # the second message cannot be stored: the first must not be either
    refusing = broker.queue + "_refusing"
    embedded = isinstance(broker.test_backend, EmbeddedQueue)
    if embedded:
        def failing(ready, delayed, acks):
            if ready:
                raise OSError("disk full")
        request.getfixturevalue("monkeypatch").setattr(
            broker.test_backend.store, "before_commit", failing)
    else:   # a queue declared with other arguments makes RabbitMQ refuse the declaration
        with kombu.Connection(broker.url) as conn:
            kombu.Queue(refusing, durable=False, auto_delete=True)(conn.channel()).declare()
    with pytest.raises(BrokerError):
        broker.publish_many([(broker.queue, {"n": 4}), (refusing, {"n": 5})])
    if embedded:
        request.getfixturevalue("monkeypatch").undo()
    assert broker.depth(broker.queue) == 1
    if not embedded:
        _delete_queues(broker.url, other)
        _delete_queues(broker.url, refusing)


@pytest.mark.parametrize("exchange", ["", "mq"])
def test_embedded_publish_stores_what_kombu_would(tmp_path, exchange):
    """The embedded transport's ``basic_publish`` stores a message as the
    publisher prepares it without kombu's per-message work: a row must be the
    one kombu's own ``basic_publish`` makes, but for the tag (the row id
    replaces it when read)."""
    import json
    path = tmp_path / "queue.sqlite"
    url = "sqlite:///%s" % path
    queue = EmbeddedQueue(url)
    made = Broker(url, exchange=exchange, backend=queue)
    assert made.start(["inbox"])
    try:
        assert made.publish_many([("inbox", {"n": 1}, 0.0, {"x-tag": "a"}), ("inbox", b'{"n":2}')])
        with queue.connect() as conn:
            channel = conn.channel()
            for n, headers in ((3, {"x-tag": "a"}), (4, None)):
                message = channel.prepare_message(
                    b'{"n":%d}' % n, 0, codec.CONTENT_TYPE, codec.CONTENT_ENCODING,
                    headers or {}, {"delivery_mode": 2})
                # kombu's own publish, not the embedded channel's quicker one
                virtual.Channel.basic_publish(channel, message, exchange, "inbox")
    finally:
        made.stop(5)
    rows = list(list_messages(str(path)))
    envelopes = [json.loads(row.envelope) for row in rows]
    for envelope in envelopes:
        del envelope["properties"]["delivery_tag"]
    assert [json.loads(row.body)["n"] for row in rows] == [1, 2, 3, 4]
    assert envelopes[0] == envelopes[2] and envelopes[1] == envelopes[3]
    assert envelopes[0]["headers"] == {"x-tag": "a"}
    assert envelopes[1]["properties"]["delivery_info"] == {"exchange": exchange,
                                                          "routing_key": "inbox"}
