"""Throttle accuracy: a domain limited to N messages a minute gets N a minute, within 1%.

    .venv/bin/python bench/throttle.py [--minutes 3] [--rate 600] [--connections 5] [--json]

The daemon (``python -m mailerq_gevent``, embedded queue) starts with a
seeded database: a ``capacity`` row for ``throttled.test``
(``domain_maxmessages`` ``--rate``, ``domain_maxconnections``
``--connections``, the other limits -1) and a ``dns`` row sending that domain
to the project's sink (tests/smtp_sink.py, in this process under gevent: it
stamps each message's arrival and counts the connections open at once;
Postfix's smtp-sink can do neither). ``--messages`` (default ``--rate`` x
(``--minutes`` + 1), more than the run can deliver, so the domain never runs
dry) go in over SMTP from ``--sessions`` smtplib sessions, to
``rcptN@throttled.test``, at the start.

From the first arrival, each minute of ``--minutes`` is counted. Printed:
each minute's count and its deviation from ``--rate`` in %, the count per
10 seconds (where a shortfall or a burst happened), the most connections the
sink saw open at once against the limit, and the bar: every minute within
``--rate`` ± 1% and never more than ``--connections`` connections. A bar not
met, SMTP errors while publishing, or a daemon that did not stop cleanly make
the exit status 1.
"""
# bench/ holds queue.py, named like the standard library module that gevent
# imports: take this folder off the import path before gevent is imported; then
# patch, before anything opens a socket.
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
import smtplib  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from bench import inject, relay, smtpload  # noqa: E402
from mailerq_gevent.db.tables import CAPACITY_COLUMNS  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402

DOMAIN = "throttled.test"
TOLERANCE = 0.01            # the bar: each minute within 1% of the rate
BIN = 10                    # seconds per bin of the finer count
FIRST_ARRIVAL = 60.0        # seconds to wait for the first message at the sink


class Stamps(list):
    """Keeps the arrival time of each message the sink keeps, not the message."""

    def append(self, _received):
        super().append(time.monotonic())


def seed_rows(args, sink_port):
    limits = {name: -1 for name in CAPACITY_COLUMNS + ("secure",)}
    limits.update(domain_maxmessages=args.rate, domain_maxconnections=args.connections)
    return {"capacity": [dict(limits, localip=None, domain=DOMAIN)],
            "dns": [{"domain": DOMAIN, "address": "127.0.0.1:%d" % sink_port, "priority": 10}]}


def publish(port, count, sessions, size):
    """``count`` messages to ``rcptN@throttled.test`` over ``sessions`` smtplib
    sessions (greenlets); returns the tally: accepted, errors, samples."""
    data, numbers = smtpload.message(size), iter(range(count))
    tally = {"accepted": 0, "errors": 0, "samples": []}

    def session():
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for n in numbers:
                try:
                    client.sendmail(smtpload.SENDER.decode(), ["rcpt%d@%s" % (n, DOMAIN)], data)
                    tally["accepted"] += 1
                except smtplib.SMTPException as exc:
                    tally["errors"] += 1
                    tally["samples"] = (tally["samples"] + [str(exc)[:200]])[:3]

    gevent.joinall([gevent.spawn(session) for _ in range(sessions)], raise_error=True)
    return tally


def run(args):
    """One run: sink, seeded daemon, publish, watch ``--minutes``; the figures."""
    sink = SmtpSink()
    sink.messages = Stamps()
    sink.start()
    settings = ["log-level: %s" % args.log_level]
    daemon = relay.RelayDaemon("daemon", None, settings, seed_rows(args, sink.port))
    try:
        try:
            port = daemon.start()
            started = time.monotonic()
            tally = publish(port, args.messages, args.sessions, args.size)
            tally["publish_seconds"] = time.monotonic() - started
            first = wait_first(sink.messages)
            if first is not None:
                gevent.sleep(max(0.0, first + args.minutes * 60 + 0.5 - time.monotonic()))
        finally:
            ended = daemon.stop()
    finally:
        daemon.cleanup()
        sink.stop()
    return figures(args, list(sink.messages), first, sink.max_open, tally, ended)


def wait_first(stamps):
    deadline = time.monotonic() + FIRST_ARRIVAL
    while not stamps and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return stamps[0] if stamps else None


def figures(args, stamps, first, max_open, tally, ended):
    window = args.minutes * 60
    offsets = [t - first for t in stamps] if first is not None else []
    minutes = [sum(1 for t in offsets if m * 60 <= t < (m + 1) * 60) for m in range(args.minutes)]
    bins = [sum(1 for t in offsets if b * BIN <= t < (b + 1) * BIN) for b in range(window // BIN)]
    deviations = [(count - args.rate) * 100.0 / args.rate for count in minutes]
    accurate = first is not None and all(abs(d) <= TOLERANCE * 100 + 1e-9 for d in deviations)
    return {"rate": args.rate, "connections": args.connections, "minutes": minutes,
            "deviation_pct": deviations, "per_10s": bins, "max_open": max_open,
            "delivered_in_window": sum(minutes), "arrived_total": len(stamps),
            "published": tally["accepted"], "publish_errors": tally["errors"],
            "publish_error_samples": tally["samples"],
            "publish_seconds": tally["publish_seconds"], "server_ended": ended,
            "met": accurate and max_open <= args.connections}


def report(args, r):
    print("throttle: %s at %d/min, at most %d connections; %d messages published in %.1f s "
          "(%d errors) over %d sessions; daemon on its embedded queue, log-level %s" % (
              DOMAIN, args.rate, args.connections, r["published"], r["publish_seconds"],
              r["publish_errors"], args.sessions, args.log_level))
    if not r["minutes"] or r["arrived_total"] == 0:
        print("NOTHING ARRIVED AT THE SINK within %.0f s of publishing" % FIRST_ARRIVAL)
    print("%-8s %9s %10s" % ("minute", "messages", "vs %d" % args.rate))
    for n, (count, dev) in enumerate(zip(r["minutes"], r["deviation_pct"]), 1):
        flag = "" if abs(dev) <= TOLERANCE * 100 + 1e-9 else "  OUTSIDE ±%g%%" % (TOLERANCE * 100)
        print("%-8d %9d %+9.2f%%%s" % (n, count, dev, flag))
    print("per %d s: %s" % (BIN, " ".join(str(b) for b in r["per_10s"])))
    print("max concurrent connections at the sink: %d (limit %d)%s" % (
        r["max_open"], args.connections,
        "" if r["max_open"] <= args.connections else ": OVER THE LIMIT"))
    print("arrived in all: %d of %d published (the rest was still queued: the domain never "
          "ran dry)" % (r["arrived_total"], r["published"]))
    print("bar (each minute %d ± %g%%, never more than %d connections): %s" % (
        args.rate, TOLERANCE * 100, args.connections, "met" if r["met"] else "NOT met"))
    if r["publish_errors"]:
        print("%d SMTP ERRORS while publishing, e.g. %s" % (r["publish_errors"],
                                                            r["publish_error_samples"]))
    if r["server_ended"]:
        print("THE DAEMON %s" % r["server_ended"].upper())


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--rate", type=int, default=600, help="domain_maxmessages per minute")
    parser.add_argument("--connections", type=int, default=5, help="domain_maxconnections")
    parser.add_argument("--messages", type=int,
                        help="published at the start (default: rate x (minutes + 1))")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.messages = args.messages or args.rate * (args.minutes + 1)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = run(args)
    except inject.NotAnswering as exc:
        print("throttle: THE DAEMON IS NOT ANSWERING ON SMTP: %s" % exc)
        return 1
    if args.json:
        print(json.dumps({"settings": vars(args), "result": result}, indent=2))
    else:
        report(args, result)
    return 0 if result["met"] and not (result["publish_errors"] or result["server_ended"]) else 1


if __name__ == "__main__":
    sys.exit(main())
