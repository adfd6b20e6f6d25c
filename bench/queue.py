"""Queue throughput and memory: the embedded durable queue beside RabbitMQ.

    .venv/bin/python bench/queue.py [--messages 20000] [--runs 3] [--json]

For each broker: ``--publishers`` greenlets (20) publish ``--messages`` bodies
of ``--size`` bytes (2 KB), each publish durable before it returns (the
embedded queue: committed and fsynced; RabbitMQ: persistent, durable queue,
publisher confirm); then one consumer with prefetch 200 takes and acks them
all (on the embedded queue the clock stops only once the acks are committed).
Figures are messages per second, the median of ``--runs`` runs, each on a
fresh queue. ``--kombu-sqlalchemy`` adds kombu's own SQLAlchemy transport on
SQLite for comparison (slow: it gets fewer messages).

Memory: a child process opens the embedded queue, publishes ``--hold``
(200,000) messages and keeps them; its resident memory before and after is
reported (current and peak, from /proc and getrusage).
"""

# This file is named like the standard library's ``queue``: take its folder off
# the import path before anything imports ``queue``, gevent included.
import os  # noqa: I001
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from mailerq_gevent.broker import Broker, store  # noqa: E402

RABBIT = "amqp://guest:guest@127.0.0.1:5672//"


def body_of(size):
    message = {"envelope": "bench@example.com", "recipient": "rcpt@example.org", "mime": ""}
    filler = size - len(json.dumps(message))
    message["mime"] = "x" * max(filler, 0)
    return json.dumps(message).encode()


def publish_all(broker, queue, body, count, publishers):
    share = [count // publishers + (1 if i < count % publishers else 0) for i in range(publishers)]

    def one(n):
        for _ in range(n):
            broker.publish(queue, body)
    started = time.perf_counter()
    gevent.joinall([gevent.spawn(one, n) for n in share], raise_error=True)
    return count / (time.perf_counter() - started)


def consume_all(broker, queue, count):
    seen, done = [0], Event()

    def handler(delivery):
        delivery.ack()
        seen[0] += 1
        if seen[0] >= count:
            done.set()
    started = time.perf_counter()
    consumer = broker.consume(queue, handler, prefetch=200)
    if not done.wait(300):
        raise SystemExit("consumed only %d of %d" % (seen[0], count))
    if broker.embedded:
        for entry in list(store._open.values()):
            entry[0].sync()
    elapsed = time.perf_counter() - started
    consumer.stop(5)
    return count / elapsed


def one_run(url, args, count):
    queue = "bench_%s" % uuid.uuid4().hex[:10]
    broker = Broker(url, pool_size=args.publishers)
    if not broker.start([queue]):
        raise SystemExit("cannot reach %s" % url)
    try:
        body = body_of(args.size)
        return publish_all(broker, queue, body, count, args.publishers), \
            consume_all(broker, queue, count)
    finally:
        if not broker.embedded:
            _delete_queue(url, queue)
        broker.stop(5)


def _delete_queue(url, queue):
    import kombu
    with kombu.Connection(url) as conn:
        conn.channel().queue_delete(queue)


def measure(name, make_url, args, count):
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(make_url(tmp), args, count))
    return {
        "broker": name, "messages": count, "runs": args.runs,
        "publish_per_s": statistics.median(r[0] for r in runs),
        "consume_ack_per_s": statistics.median(r[1] for r in runs),
        "publish_runs": [round(r[0]) for r in runs],
        "consume_runs": [round(r[1]) for r in runs],
    }


def kombu_sqlalchemy(args):
    """kombu's own SQLAlchemy transport on SQLite: the baseline the issue names."""
    import kombu
    count = max(args.messages // 10, 500)
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            with kombu.Connection("sqla+sqlite:///%s/kombu.sqlite" % tmp) as conn:
                runs.append(_kombu_run(conn, count, body_of(args.size), args.publishers))
    return {"broker": "kombu sqlalchemy (sqlite)", "messages": count, "runs": args.runs,
            "publish_per_s": statistics.median(r[0] for r in runs),
            "consume_ack_per_s": statistics.median(r[1] for r in runs),
            "publish_runs": [round(r[0]) for r in runs],
            "consume_runs": [round(r[1]) for r in runs]}


def _kombu_run(conn, count, body, publishers):
    import kombu
    queue = kombu.Queue("bench", routing_key="bench", durable=True)
    producers = [conn.clone().Producer() for _ in range(publishers)]
    queue(producers[0].channel).declare()
    share = count // publishers

    def one(producer):
        for _ in range(share):
            producer.publish(body, routing_key="bench", content_type="application/json",
                             content_encoding="utf-8")
    started = time.perf_counter()
    gevent.joinall([gevent.spawn(one, p) for p in producers], raise_error=True)
    published = share * publishers
    publish_rate = published / (time.perf_counter() - started)
    got = [0]

    def handler(_body, message):
        message.ack()
        got[0] += 1
    started = time.perf_counter()
    with conn.Consumer([queue], callbacks=[handler], prefetch_count=200):
        while got[0] < published:
            conn.drain_events(timeout=10)
    return publish_rate, published / (time.perf_counter() - started)


def memory_child(count, size, publishers):
    """Run in a child: publish ``count`` messages and report resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker("sqlite:///%s/queue.sqlite" % tmp)
        broker.start(["hold"])
        body = body_of(size)
        broker.publish("hold", body)
        before, peak_before = _rss(), _peak()
        publish_all(broker, "hold", body, count - 1, publishers)
        depth = broker.depth("hold")
        after, peak_after = _rss(), _peak()
        disk = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
        broker.stop(5)
    print(json.dumps({"held": depth, "rss_before_mb": before, "rss_after_mb": after,
                      "rss_added_mb": after - before, "peak_added_mb": peak_after - peak_before,
                      "disk_mb": disk / 2 ** 20}))


def _rss():
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(args):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child",
                          "--hold", str(args.hold), "--size", str(args.size)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rabbit_reachable():
    import socket
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--publishers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", type=int, default=200000,
                        help="messages held for the memory figure (0: skip)")
    parser.add_argument("--rabbitmq", default=RABBIT, help="AMQP URL ('' to skip)")
    parser.add_argument("--kombu-sqlalchemy", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        return memory_child(args.hold, args.size, args.publishers)
    rows = [measure("embedded (sqlite)", lambda tmp: "sqlite:///%s/queue.sqlite" % tmp,
                    args, args.messages)]
    if args.rabbitmq and rabbit_reachable():
        rows.append(measure("rabbitmq (confirms)", lambda tmp: args.rabbitmq, args,
                            args.messages))
    if args.kombu_sqlalchemy:
        rows.append(kombu_sqlalchemy(args))
    held = memory(args) if args.hold else None
    if args.json:
        print(json.dumps({"throughput": rows, "memory": held}, indent=2))
    else:
        report(rows, held, args)


def report(rows, held, args):
    print("%d-byte messages, %d publishing greenlets, durable; median of %d runs" % (
        args.size, args.publishers, args.runs))
    print("%-28s %10s %16s %s" % ("broker", "publish/s", "consume+ack/s", "runs (pub | con)"))
    for row in rows:
        print("%-28s %10.0f %16.0f %s | %s" % (
            row["broker"], row["publish_per_s"], row["consume_ack_per_s"],
            row["publish_runs"], row["consume_runs"]))
    if held:
        print("embedded queue holding %d messages: resident memory +%.1f MB "
              "(peak +%.1f MB), %.0f MB on disk" % (
                  held["held"], held["rss_added_mb"], held["peak_added_mb"], held["disk_mb"]))


if __name__ == "__main__":
    main()
