"""Queue throughput and memory: the embedded durable queue beside RabbitMQ.

    .venv/bin/python bench/queue.py [--messages 20000] [--runs 3] [--json]

For each broker: ``--publishers`` greenlets (20) publish ``--messages`` bodies
of ``--size`` bytes (2 KB), each publish durable before it returns (the
embedded queue: committed and fsynced; RabbitMQ: persistent, durable queue,
publisher confirm); then one consumer with prefetch 200 takes and acks them
all (the clock stops once the broker has stopped: on the embedded queue its
acks are then committed).
Figures are messages per second, the median of ``--runs`` runs, each on a
fresh queue. ``--kombu-sqlalchemy`` adds kombu's own SQLAlchemy transport on
SQLite for comparison (slow: it gets fewer messages).

Memory: a child process opens the embedded queue, publishes ``--hold``
(200,000) messages and keeps them; its resident memory before and after is
reported (current and peak, from /proc and getrusage).

    .venv/bin/python bench/queue.py --cpu [--runs 5]

The event loop's CPU time per message published to the embedded queue (the
main thread's, where every greenlet runs; the commits' own thread is left
out), the embedded transport's ``basic_publish`` against kombu's own, in
interleaved runs, one and two messages a commit.
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
from kombu.transport import virtual  # noqa: E402

from mailerq_gevent.broker import Broker, transport  # noqa: E402

RABBIT = "amqp://guest:guest@127.0.0.1:5672//"


def body_of(size):
    message = {"envelope": "bench@example.com", "recipient": "rcpt@example.org", "mime": ""}
    filler = size - len(json.dumps(message))
    message["mime"] = "x" * max(filler, 0)
    return json.dumps(message).encode()


def publish_all(broker, queue, body, count, publishers, per_commit=1):
    share = [count // publishers + (1 if i < count % publishers else 0) for i in range(publishers)]

    def one(n):
        for _ in range(n // per_commit):
            broker.publish_many([(queue, body)] * per_commit)
    started = time.perf_counter()
    gevent.joinall([gevent.spawn(one, n) for n in share], raise_error=True)
    return count / (time.perf_counter() - started)


def consume_all(broker, queue, count):
    """Consume and ack ``count`` messages; the rate counts until the broker has stopped."""
    seen, done = [0], Event()

    def handler(delivery):
        delivery.ack()
        seen[0] += 1
        if seen[0] >= count:
            done.set()
    started = time.perf_counter()
    broker.consume(queue, handler, prefetch=200)
    if not done.wait(300):
        raise SystemExit("consumed only %d of %d" % (seen[0], count))
    broker.stop(5)
    return count / (time.perf_counter() - started)


def one_run(url, args, count, cleanup=False):
    queue = "bench_%s" % uuid.uuid4().hex[:10]
    broker = Broker(url, pool_size=args.publishers)
    if not broker.start([queue]):
        raise SystemExit("cannot reach %s" % url)
    try:
        body = body_of(args.size)
        return publish_all(broker, queue, body, count, args.publishers), \
            consume_all(broker, queue, count)
    finally:
        broker.stop(5)
        if cleanup:
            _delete_queue(url, queue)


def _delete_queue(url, queue):
    import kombu
    with kombu.Connection(url) as conn:
        conn.channel().queue_delete(queue)


def measure(name, make_url, args, count, cleanup=False):
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(make_url(tmp), args, count, cleanup))
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


KOMBU_PUBLISH = {"embedded": transport.Channel.basic_publish,
                 "kombu": virtual.Channel.basic_publish}


def publish_cpu_run(path, args, per_commit):
    """Event-loop CPU microseconds per message over one run of ``--messages``."""
    with tempfile.TemporaryDirectory() as tmp:
        transport.Channel.basic_publish = KOMBU_PUBLISH[path]
        broker = Broker("sqlite:///%s/queue.sqlite" % tmp, pool_size=args.publishers)
        try:
            broker.start(["cpu"])
            before = time.thread_time()
            publish_all(broker, "cpu", body_of(args.size), args.messages, args.publishers,
                        per_commit)
            used = time.thread_time() - before
            if broker.depth("cpu") != args.messages // per_commit * per_commit:
                raise SystemExit("lost messages")
        finally:
            broker.stop(5)
            transport.Channel.basic_publish = KOMBU_PUBLISH["embedded"]
    return used / args.messages * 1e6


def publish_cpu(args):
    """``basic_publish`` of the embedded transport against kombu's, interleaved."""
    rows = []
    for per_commit in (1, 2):
        runs = {"embedded": [], "kombu": []}
        for _ in range(args.runs):
            for path in runs:
                runs[path].append(publish_cpu_run(path, args, per_commit))
        rows.extend({"basic_publish": path, "per_commit": per_commit,
                     "us_per_message": statistics.median(values),
                     "runs": [round(v, 2) for v in values]} for path, values in runs.items())
    return rows


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
    parser.add_argument("--cpu", action="store_true",
                        help="event-loop CPU per published message, embedded vs kombu's publish")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        return memory_child(args.hold, args.size, args.publishers)
    if args.cpu:
        return report_cpu(publish_cpu(args), args)
    rows = [measure("embedded (sqlite)", lambda tmp: "sqlite:///%s/queue.sqlite" % tmp,
                    args, args.messages)]
    if args.rabbitmq and rabbit_reachable():
        rows.append(measure("rabbitmq (confirms)", lambda tmp: args.rabbitmq, args,
                            args.messages, cleanup=True))
    if args.kombu_sqlalchemy:
        rows.append(kombu_sqlalchemy(args))
    held = memory(args) if args.hold else None
    if args.json:
        print(json.dumps({"throughput": rows, "memory": held}, indent=2))
    else:
        report(rows, held, args)


def report_cpu(rows, args):
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("event-loop CPU per message, %d %d-byte messages from %d greenlets, median of %d"
          " interleaved runs" % (args.messages, args.size, args.publishers, args.runs))
    for row in rows:
        print("%-10s basic_publish, %d a commit: %6.2f us  %s" % (
            row["basic_publish"], row["per_commit"], row["us_per_message"], row["runs"]))


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
