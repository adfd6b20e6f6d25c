"""A throttled backlog: what it costs the daemon in memory, and whether it holds others up.

    .venv/bin/python bench/backlog.py [--backlog 100000] [--others 1000] [--json]

Two measurements, each on a fresh daemon (``python -m mailerq_gevent``,
embedded queue) whose database limits ``throttled.test`` to 60 messages a
minute (a ``capacity`` row) and sends ``throttled.test`` and ``free.test``
(no limit) to the project's sink (tests/smtp_sink.py, in this process):

1. **Memory.** The queue file is filled before the daemon starts: an empty
   one, then ``--backlog`` messages (2 KB) for ``throttled.test``. Once the
   daemon has taken every message and put it back to wait (nothing ready
   left in the outbox), its resident memory (and peak, VmHWM) is read from
   /proc; the difference between the two daemons is what the backlog costs.
   The bar: at most 100 MB for 100,000 waiting messages.
2. **Head-of-line blocking.** ``--ahead`` (10,000) messages for
   ``throttled.test`` are queued in front of ``--others`` (1,000) for
   ``free.test``; the time until the sink holds all of ``free.test`` is
   compared with the same 1,000 queued alone. The bar: the 1,000 go out at
   full speed (the two times close; printed as a ratio).
"""
# bench/ holds queue.py, named like a standard library module: off the path first.
import os  # noqa: I001
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from bench import inject, relay, smtpload  # noqa: E402
from mailerq_gevent.broker import Broker, codec  # noqa: E402
from mailerq_gevent.broker.storage import list_messages  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402

MEMORY_BAR = 100 * 2 ** 20      # bytes for 100,000 waiting messages
LIMITS = ("domain_maxmessages", "domain_maxconnects", "domain_maxconnections",
          "ip_maxmessages", "ip_maxconnects", "ip_maxconnections",
          "connection_maxmessages", "connection_maxidletime")


def rows(sink_port):
    capacity = dict({name: -1 for name in LIMITS}, localip="", domain="throttled.test",
                    domain_maxmessages=60, secure=0)
    dns = [{"domain": domain, "address": "127.0.0.1:%d" % sink_port, "priority": 10}
           for domain in ("throttled.test", "free.test")]
    return {"capacity": [capacity], "dns": dns}


def fill(path, counts):
    """Publish ``[(domain, n)]`` in that order into the queue file ``path``."""
    body = smtpload.message(2048).decode()
    broker = Broker("sqlite:///" + path)
    broker.start(["outbox"])
    try:
        for domain, count in counts:
            message = codec.encode({"envelope": "bench@example.com",
                                    "recipient": "rcpt@" + domain, "mime": body})
            for start in range(0, count, 1000):
                broker.publish_many([("outbox", message)] * min(1000, count - start))
    finally:
        broker.stop(10)


class Daemon:
    """The daemon on a prepared temp dir; no SMTP server, no console."""

    def __init__(self, tmp, sink_port):
        self.tmp = tmp
        relay.seed_database(os.path.join(tmp, "db.sqlite"), rows(sink_port))
        conf = os.path.join(tmp, "mailerq.conf")
        with open(conf, "w") as handle:
            handle.write("database: sqlite:///%s/db.sqlite\nrabbitmq-address: sqlite:///%s/"
                         "queue.sqlite\nrabbitmq-outbox: outbox\nsmtp-port:\nwww-port:\n"
                         "log-level: warning\n" % (tmp, tmp) + "".join(
                             "rabbitmq-%s:\n" % key for key in
                             ("results", "success", "failure", "retry", "dsn")))
        self.log = open(os.path.join(tmp, "output.log"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailerq_gevent", "--config", conf],
                                     cwd=tmp, stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, PYTHONPATH=ROOT))

    def memory(self):
        """(resident, peak) bytes, from /proc."""
        fields = {}
        with open("/proc/%d/status" % self.proc.pid) as status:
            for line in status:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)

    def ready(self):
        """Messages ready in the queue file (not waiting with a delay)."""
        return sum(1 for row in list_messages("%s/queue.sqlite" % self.tmp)
                   if not row.not_before)

    def stop(self):
        return inject.terminate(self.proc)


def settled(daemon, timeout):
    """Wait until nothing is ready in the outbox (every message taken and put back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.ready() == 0:
            gevent.sleep(2.0)       # let the last requeues and acks settle
            return daemon.ready() == 0
        gevent.sleep(0.5)
    return False


def memory_run(backlog, timeout):
    """``(rss, peak, settled)`` of a daemon holding ``backlog`` throttled messages."""
    sink = SmtpSink().start()
    with tempfile.TemporaryDirectory(prefix="bench_backlog_") as tmp:
        fill(os.path.join(tmp, "queue.sqlite"), [("throttled.test", backlog)])
        daemon = Daemon(tmp, sink.port)
        try:
            gevent.sleep(3.0)
            done = settled(daemon, timeout)
            rss, peak = daemon.memory()
        finally:
            daemon.stop()
            sink.stop()
    return rss, peak, done


def hol_run(ahead, others, timeout):
    """Seconds until the sink holds ``others`` free.test messages queued behind ``ahead``."""
    sink = SmtpSink().start()
    with tempfile.TemporaryDirectory(prefix="bench_backlog_") as tmp:
        fill(os.path.join(tmp, "queue.sqlite"), [("throttled.test", ahead), ("free.test", others)])
        started = time.monotonic()
        daemon = Daemon(tmp, sink.port)
        try:
            free = lambda: sum(1 for m in sink.messages if m.recipients == ("rcpt@free.test",))  # noqa: E731
            while free() < others and time.monotonic() - started < timeout:
                gevent.sleep(0.05)
            elapsed = time.monotonic() - started
            throttled = len(sink.messages) - free()
            return elapsed if free() >= others else None, throttled
        finally:
            daemon.stop()
            sink.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100000)
    parser.add_argument("--ahead", type=int, default=10000)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    empty = memory_run(0, args.timeout)
    full = memory_run(args.backlog, args.timeout)
    alone = hol_run(0, args.others, args.timeout)
    behind = hol_run(args.ahead, args.others, args.timeout)
    result = {"empty_rss": empty[0], "empty_peak": empty[1], "backlog_rss": full[0],
              "backlog_peak": full[1], "settled": full[2], "others_alone_s": alone[0],
              "others_behind_s": behind[0], "throttled_sent": behind[1]}
    if args.json:
        print(json.dumps({"settings": vars(args), "result": result}, indent=2))
    else:
        report(args, result)
    return 0 if bars_met(args, result) else 1


def bars_met(args, r):
    extra = max(r["backlog_rss"], r["backlog_peak"]) - r["empty_peak"]
    bar = MEMORY_BAR * args.backlog / 100000
    return r["settled"] and extra <= bar and r["others_behind_s"] is not None


def report(args, r):
    mb = 2 ** 20
    print("memory: empty queue %.1f MB (peak %.1f); %d throttled messages waiting %.1f MB "
          "(peak %.1f)%s" % (r["empty_rss"] / mb, r["empty_peak"] / mb, args.backlog,
                             r["backlog_rss"] / mb, r["backlog_peak"] / mb,
                             "" if r["settled"] else " (NOT SETTLED: the daemon had not "
                             "taken every message in time)"))
    extra = max(r["backlog_rss"], r["backlog_peak"]) - r["empty_peak"]
    bar = MEMORY_BAR * args.backlog / 100000
    print("bar (at most %.0f MB more for %d waiting messages): +%.1f MB, %s" % (
        bar / mb, args.backlog, extra / mb, "met" if extra <= bar and r["settled"]
        else "NOT met"))
    alone, behind = r["others_alone_s"], r["others_behind_s"]
    print("head of line: %d free.test messages took %s s alone and %s s behind %d for a "
          "60/minute domain (%d of those sent meanwhile)%s" % (
              args.others, _secs(alone), _secs(behind), args.ahead, r["throttled_sent"],
              "; ratio %.2f" % (behind / alone) if alone and behind else ""))


def _secs(value):
    return "NOT DONE" if value is None else "%.2f" % value


if __name__ == "__main__":
    sys.exit(main())
