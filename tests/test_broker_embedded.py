"""The embedded durable queue (broker/embedded.py, storage.py, delays.py): crash
safety with a real ``kill -9``, redelivery, FIFO, delayed messages, grouped
commits, one process per file, writer-only processes and their commit notices."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest

from mailerq_gevent.broker import Broker, storage
from mailerq_gevent.broker.embedded import EmbeddedQueue
from mailerq_gevent.broker.storage import Store, StoreError, list_messages
from mailerq_gevent.broker.transport import envelope
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
CHILD = str(ROOT / "tests" / "queue_child.py")


@pytest.fixture
def queue_url(tmp_path):
    return "sqlite:///%s" % (tmp_path / "queue.sqlite")


@pytest.fixture
def broker(queue_url):
    brokers = []

    def make(url=queue_url, backend=None):
        brokers.append(Broker(url, backend=backend))
        brokers[-1].start(["q"])
        return brokers[-1]
    yield make
    for each in brokers:
        each.stop(5)


def collect(broker, queue, count, timeout=10, ack=True):
    """Consume ``count`` messages, return their bodies' ``n`` in arrival order."""
    seen, done = [], gevent.event.Event()

    def handler(delivery):
        seen.append(delivery.json()["n"])
        if ack:
            delivery.ack()
        if len(seen) >= count:
            done.set()
    consumer = broker.consume(queue, handler)
    assert done.wait(timeout), "got only %d of %d messages" % (len(seen), count)
    consumer.stop(5 if ack else 0.1)
    return seen


class Child:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, *args], stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.lines = []

    def read_until(self, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            assert time.monotonic() < deadline, "child said only %r" % self.lines[-5:]
            line = self.proc.stdout.readline()
            assert line, "child exited %s" % self.proc.poll()
            self.lines.append(line.strip())

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.lines.extend(line.strip() for line in self.proc.stdout.read().splitlines())
        self.proc.stdout.close()


def test_every_returned_publish_survives_kill_9(queue_url, broker):
    child = Child("publish", queue_url, "q", "20000")
    child.read_until(lambda lines: len(lines) >= 3000)
    child.kill9()        # in the middle of publishing
    confirmed = {int(line) for line in child.lines if line.isdigit()}
    assert 3000 <= len(confirmed) < 20000, "the kill came too late to test anything"
    mine = broker()
    depth = mine.depth("q")
    assert depth >= len(confirmed)
    stored = collect(mine, "q", depth)
    assert confirmed <= set(stored)
    assert len(set(stored)) == len(stored)


def test_delivered_but_unacked_is_delivered_again_after_kill_9(queue_url, broker):
    first = broker()
    for number in range(50):
        first.publish("q", {"n": number})
    first.stop(5)
    child = Child("take", queue_url, "q", "30")
    child.read_until(lambda lines: len([x for x in lines if x.isdigit()]) >= 30)
    child.kill9()
    assert [int(line) for line in child.lines if line.isdigit()] == list(range(30))
    assert collect(broker(), "q", 50) == list(range(50))


def test_fifo_per_queue(broker):
    mine = broker()
    for number in range(300):
        mine.publish("q" if number % 2 else "other", {"n": number})
    assert collect(mine, "q", 150) == list(range(1, 300, 2))
    assert collect(mine, "other", 150) == list(range(0, 300, 2))


def test_rejected_message_comes_back_first(broker):
    mine = broker()
    for number in range(5):
        mine.publish("q", {"n": number})
    seen, rejected = [], []

    def handler(delivery):
        number = delivery.json()["n"]
        seen.append((number, delivery.redelivered))
        if number == 2 and not rejected:
            rejected.append(number)
            delivery.reject(requeue=True)
        else:
            delivery.ack()
    consumer = mine.consume("q", handler)
    wait_until(lambda: len(seen) >= 6)
    consumer.stop(5)
    assert seen == [(0, False), (1, False), (2, False), (2, True), (3, False), (4, False)]


def test_unacked_messages_return_when_the_consumer_stops(broker):
    mine = broker()
    for number in range(10):
        mine.publish("q", {"n": number})
    assert collect(mine, "q", 10, ack=False) == list(range(10))
    assert collect(mine, "q", 10) == list(range(10))
    assert mine.depth("q") == 0


def test_delayed_messages_wait_their_turn(broker):
    mine = broker()
    started = time.monotonic()
    mine.publish("q", {"n": 1}, delay=1.0)
    mine.publish("q", {"n": 2}, delay=0.3)
    mine.publish("q", {"n": 3})
    arrivals = []

    def handler(delivery):
        arrivals.append((delivery.json()["n"], time.monotonic() - started))
        delivery.ack()
    consumer = mine.consume("q", handler)
    wait_until(lambda: len(arrivals) >= 3)
    consumer.stop(5)
    assert [n for n, _ in arrivals] == [3, 2, 1]
    assert arrivals[1][1] >= 0.3 and arrivals[2][1] >= 1.0


def test_delayed_messages_survive_a_restart(queue_url, broker):
    first = broker()
    first.publish("q", {"n": 7}, delay=0.5)
    assert first.publisher.depth("q") == 0
    first.stop(5)
    assert collect(broker(), "q", 1) == [7]


def test_concurrent_publishers_are_grouped_into_few_commits(queue_url, broker):
    queue = EmbeddedQueue(queue_url)
    mine = broker(backend=queue)
    commits = []
    queue.store.before_commit = lambda ready, delayed, acks: commits.append(len(ready))
    greenlets = [gevent.spawn(lambda g=g: [mine.publish("q", {"n": g * 100 + i})
                                            for i in range(100)]) for g in range(20)]
    gevent.joinall(greenlets, raise_error=True)
    assert sum(commits) == 2000
    assert len(commits) < 2000 / 5, "commits were not grouped: %d" % len(commits)
    assert sorted(collect(mine, "q", 2000)) == list(range(2000))


def test_a_batch_larger_than_one_statement_is_stored_and_acked_whole(queue_url, broker):
    """Rows go in as multi-row INSERTs and acks as DELETE ... IN, CHUNK at a
    time: a commit of more than a CHUNK of each keeps every message, in order."""
    mine = broker()
    count = storage.CHUNK * 2 + 17
    mine.publisher.publish_many([("q", {"n": n}) for n in range(count)])
    mine.publisher.publish_many([("q", {"n": count + n}, 60) for n in range(storage.CHUNK + 3)])
    assert collect(mine, "q", count) == list(range(count))
    mine.stop(5)
    path = queue_url[len("sqlite:///"):]
    rows = list(list_messages(path))
    assert [row for row in rows if not row.not_before] == []
    delayed = [row for row in rows if row.not_before]
    assert len(delayed) == storage.CHUNK + 3
    ids = sorted(row.id for row in delayed)
    assert ids == list(range(ids[0], ids[0] + storage.CHUNK + 3))
    broker().publish("q", {"n": -1})            # the next id taken follows the last one
    assert [row.id for row in list_messages(path, "q") if not row.not_before] == [ids[-1] + 1]


def test_a_second_process_cannot_open_the_same_file(queue_url, broker, tmp_path):
    broker()
    code = ("from mailerq_gevent.broker import Broker, BrokerError\n"
            "try:\n    Broker(%r).start(['q'])\nexcept BrokerError as e:\n"
            "    print(e)\n" % queue_url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "in use by another process" in out.stdout


def test_memory_url_behaves_the_same(broker):
    mine = broker("memory://test_memory_url/")
    mine.publish("q", {"n": 1}, delay=0.2)
    mine.publish("q", {"n": 2})
    assert collect(mine, "q", 2) == [2, 1]


def test_acks_are_committed(queue_url, broker):
    mine = broker()
    for number in range(20):
        mine.publish("q", {"n": number})
    collect(mine, "q", 20)
    mine.stop(5)
    assert list(list_messages(queue_url[len("sqlite:///"):])) == []


def test_the_file_shrinks_once_a_backlog_drains(queue_url, broker, monkeypatch):
    monkeypatch.setattr(storage, "RECLAIM_EVERY", 0.05)
    mine = broker()
    path = queue_url[len("sqlite:///"):]

    def pages():        # the file's size (in pages) once the WAL is checkpointed into it
        import sqlite3
        with sqlite3.connect(path) as conn:
            return conn.execute("PRAGMA page_count").fetchone()[0]
    for group in range(20):
        gevent.joinall([gevent.spawn(mine.publish, "q", {"n": group * 100 + i, "pad": "x" * 4000})
                        for i in range(100)])
    full = pages()
    assert full > 400
    collect(mine, "q", 2000)
    deadline = time.monotonic() + 20
    while pages() > full / 4:
        assert time.monotonic() < deadline, "still %d of %d pages" % (pages(), full)
        mine.publish("wake", {"n": 0})      # the writer reclaims when it has been busy
        gevent.sleep(0.05)


# -- SMTP workers writing into the daemon's file (a writer-only EmbeddedQueue) ----

def test_a_writer_only_queue_and_the_owner_share_one_id_sequence(queue_url):
    owner = EmbeddedQueue(queue_url).open()
    notices = []
    writer = EmbeddedQueue(queue_url, writer_only=True, on_commit=notices.append).open()
    try:
        owner.store.put_many([("q", "{}", b"owner-1", 0.0)])
        writer.store.put_many([("q", "{}", b"writer-1", 0.0)])
        first = owner.store.get("q")
        second = owner.store.get("q")
        assert [first[2], second[2]] == [b"owner-1", b"writer-1"]
        owner.store.ack(second[0])          # the highest id is deleted...
        owner.store.put_many([("elsewhere", "{}", b"the ack rides on this commit", 0.0)])
        writer.store.put_many([("q", "{}", b"writer-2", 0.0)])
        third = owner.store.get("q")        # ...and the next row still gets a higher one
        assert third[2] == b"writer-2" and third[0] > second[0] > first[0]
        writer.store.put_many([("q", "{}", b"later", time.time() + 3600)])
        assert notices[:2] == [None, None] and notices[2] > time.time() + 3000
    finally:
        writer.close()
        owner.close()


def test_the_owner_wakes_only_when_told_of_a_writers_commit(queue_url):
    owner = EmbeddedQueue(queue_url).open()
    writer = EmbeddedQueue(queue_url, writer_only=True).open()
    try:
        arrival = owner.arrival()
        writer.store.put_many([("q", "{}", b"from a worker", 0.0)])
        assert not arrival.is_set()     # another process's commit is not seen by itself
        owner.committed_elsewhere()
        assert arrival.is_set()
        assert owner.store.get("q")[2] == b"from a worker"
    finally:
        writer.close()
        owner.close()


def test_a_writers_delayed_message_reaches_the_owners_timer(queue_url, broker):
    owner = EmbeddedQueue(queue_url)
    mine = broker(backend=owner)
    got = []
    mine.consume("q", lambda delivery: (got.append(delivery.body), delivery.ack()))
    writer = EmbeddedQueue(queue_url, writer_only=True, on_commit=owner.committed_elsewhere)
    writer.open()
    try:
        writer.store.put_many([("q", envelope("", "q"), b"soon", time.time() + 0.3)])
        wait_until(lambda: got == [b"soon"])
    finally:
        writer.close()


def test_a_writer_only_store_takes_no_lock_and_the_owner_still_does(tmp_path):
    path = str(tmp_path / "queue.sqlite")
    owner = Store(path).open()
    writers = [Store(path, writer_only=True).open() for _ in range(2)]
    try:
        with pytest.raises(StoreError, match="in use by another process"):
            Store(path).open()
    finally:
        for each in writers + [owner]:
            each.close()


def test_commits_wake_consumers_only_of_the_queues_they_reach(queue_url, broker):
    owner = EmbeddedQueue(queue_url)
    b = broker(backend=owner)
    b.publisher.declare("other")
    got = []
    consumer = b.consume("q", lambda delivery: (got.append(delivery.body), delivery.ack()))
    b.publish("q", b'{"n": 0}')
    wait_until(lambda: got == [b'{"n": 0}'])      # the consumer is there
    arrival = owner.arrival()
    b.publish("other", b"{}")           # nobody consumes it: nobody is woken
    assert not arrival.is_set()
    b.publish("q", b'{"n": 1}')
    wait_until(lambda: got == [b'{"n": 0}', b'{"n": 1}'])
    consumer.stop(5)
    arrival = owner.arrival()
    b.publish("q", b'{"n": 2}')         # its consumer is gone: nobody is woken
    assert not arrival.is_set()


def test_list_messages_streams_ready_then_delayed_in_order(queue_url, broker):
    mine = broker()
    mine.publish("q", {"n": 1}, delay=600)
    mine.publish("q", {"n": 2}, delay=300)
    mine.publish("q", {"n": 3})
    mine.publish("other", {"n": 4})
    mine.publish("q", {"n": 5})
    path = queue_url[len("sqlite:///"):]
    listing = list_messages(path, "q")
    assert not isinstance(listing, list)        # a generator: rows are streamed
    rows = list(listing)
    assert [json.loads(row.body)["n"] for row in rows] == [3, 5, 2, 1]
    assert [bool(row.not_before) for row in rows] == [False, False, True, True]
    assert {row.queue for row in list_messages(path)} == {"q", "other"}
    with pytest.raises(StoreError):
        list(list_messages(str(Path(path).parent / "missing.sqlite")))
