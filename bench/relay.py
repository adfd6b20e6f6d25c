"""End-to-end relay rate: SMTP in, through the queue, SMTP out to a sink; Postfix beside it.

    .venv/bin/python bench/relay.py [--messages 10000] [--runs 3] [--postfix | --peer HOST:PORT]
        [--variants base,rabbitmq,dkim,100k|all] [--peer-dkim] [--sink-port 2726] [--json]

``--messages`` messages of ``--size`` bytes (2 KB) over ``--sessions`` (20)
kept-open sessions go into an MTA relaying them to one SMTP sink on
``--sink-port`` (up for the whole bench). The clock starts with the load and
stops when the sink holds every message the generator saw accepted (polled
every 5 ms); not within ``--timeout`` s: INCOMPLETE. Load: ``smtp-source -d``
if installed, else bench/smtpload.py; sink: ``smtp-sink -c`` (its ``mesg=N``
counter), else tests/smtp_sink.py in a child printing the same counter.

Rows (each MTA started afresh per run; runs interleaved across rows):
``daemon`` (``python -m mailerq_gevent`` on conf/mailerq.conf, the config
``make run`` uses, with this run's files, ports and ``relay`` to the sink in
place of its own; ``--smtp-threads`` / ``--log-level`` change those two); the
``--variants`` ``rabbitmq`` (queues named for the run, deleted after; skipped
when unreachable), ``dkim`` (RSA-2048 ``dkim_keys`` and ``dkim_patterns``
rows for the sender's domain seeded before start; an extra 5-message run to
the project's sink checks that signatures arrive and verify), ``100k``
(102,400-byte messages); the peer at each size (``--peer``: an MTA relaying
to the sink port; ``--postfix``: set up by ../shared/bench/postfix-peer.sh,
stopped after). ``--peer-dkim`` (implies ``--postfix`` and ``dkim``) sets the
peer up with ../shared/bench/postfix-dkim-peer.sh and adds the row
``postfix+opendkim``: Postfix signing through OpenDKIM as a milter
(RSA-2048, relaxed/relaxed), the milter switched on for that row's runs and
off for the others; the daemon's dkim row signs with the same key and is
compared with it. The bars (``BARS``): daemon 4x the peer, dkim 6x the
signing peer, rabbitmq 3x, 100k 2x with the daemon's processes under 300 MB
resident.

Columns: ``msg/s`` (median of ``--runs``), ``x peer`` (over the peer at the
same size, signed over signed), ``x plain`` (over the plain peer),
``inject/s`` (the generator's rate, until its last 250), ``cpu s/1k`` (CPU
seconds per 1000 messages of the MTA's process tree, reaped children
included, from before the load until the sink is full; Postfix: its master's
tree), ``rss MB`` (the most the MTA's processes held resident together,
looked at every 0.25 s), ``held`` (the sink's count against the accepted:
ok, LOST n, EXTRA n), ``runs`` (each run's msg/s). Incomplete runs, SMTP
errors, an MTA not stopping cleanly, a failed DKIM check: exit status 1.
"""
# bench/ holds queue.py and dkim.py, named like modules that kombu and we import:
# take this folder off the import path first.
import os  # noqa: I001
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import smtplib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench import inject, smtpload  # noqa: E402

# the bars (issue 13): each daemon row against the peer at its size (signed against signed)
BARS = {"daemon": 4.0, "daemon dkim": 6.0, "daemon rabbitmq": 3.0, "daemon 100k": 2.0}
RSS_BAR = 300 << 20         # bytes: the 100k row's daemon (all its processes) during a run
BIG = 102400                # the 100k variant's message size
VARIANTS = ("base", "rabbitmq", "dkim", "100k")
POSTFIX = ("127.0.0.1", 2725)
PEER_SCRIPT = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "postfix-peer.sh"))
DKIM_PEER_SCRIPT = os.path.join(os.path.dirname(PEER_SCRIPT), "postfix-dkim-peer.sh")
DKIM_PEER_KEY = "/run/mailerq-bench-opendkim/bench.private"    # the key that script makes
MILTER = "inet:127.0.0.1:8891"                                  # where its OpenDKIM listens
MASTER_PID = "/var/spool/postfix/pid/master.pid"
POLL = 0.005                # seconds between looks at the sink's counter
SETTLE = 0.5                # seconds to wait for duplicates once the sink is full
RSS_EVERY = 0.25            # seconds between looks at the MTA's resident memory
DKIM_DOMAIN, DKIM_SELECTOR = "example.com", "bench"     # smtpload's From domain
_COUNTER = re.compile(rb"mesg=(\d+)")


# -- the MTAs ------------------------------------------------------------------------

def seed_database(path, rows):
    """Create the schema in the SQLite file ``path``; insert ``rows`` ({table: [dict]})."""
    from sqlalchemy import insert
    from mailerq_gevent.db import schema, tables
    from mailerq_gevent.db.engine import make_engine
    engine = make_engine("sqlite:///" + path)
    try:
        schema.ensure_schema(engine)
        with engine.begin() as conn:
            for name, values in rows.items():
                conn.execute(insert(tables.metadata.tables[name]), values)
    finally:
        engine.dispose()


class RelayDaemon(inject.DaemonTarget):
    """inject's daemon, SMTP publishing straight to the outbox, its database seeded."""

    def __init__(self, name, amqp_url, settings, seed=None, root=ROOT):
        super().__init__(name, amqp_url, root, settings)
        self.seed = seed or {}

    def config(self, port):
        self.inbox = self.outbox
        if self.seed:
            seed_database(os.path.join(self.tmp.name, "db.sqlite"), self.seed)
        return super().config(port)

    def pids(self):
        return [self.proc.pid]


class Peer(inject.Target):
    """Another MTA, already running at ``port``; its CPU is counted given its pid file.
    ``milter`` True / False: the Postfix peer signs through OpenDKIM, or not (its
    ``smtpd_milters`` set before the run when it differs, then ``postfix reload``)."""

    signing = None              # what the Postfix peer was last set to (one Postfix for all)

    def __init__(self, name, port, pidfile=None, milter=None):
        super().__init__()
        self.name, self.port, self.pidfile, self.milter = name, port, pidfile, milter

    def start(self):
        if self.milter is not None and Peer.signing is not self.milter:
            value = MILTER if self.milter else ""
            subprocess.run(["postconf", "-e", "smtpd_milters = " + value,
                            "non_smtpd_milters = " + value], check=True)
            subprocess.run(["postfix", "reload"], check=True, capture_output=True)
            if self.milter:
                _await_milter()
            time.sleep(2.0)     # the old smtpd processes finish, new ones read the change
            Peer.signing = self.milter
        return self.port

    def pids(self):
        try:
            with open(self.pidfile) as handle:
                return [int(handle.read().split()[0])]
        except (TypeError, OSError, ValueError, IndexError):
            return []


def _await_milter(up=True, timeout=10.0):
    """Until OpenDKIM accepts connections at MILTER (``up``; SystemExit when it
    does not in time), or until nothing answers there (an OpenDKIM stopped by
    the last run may linger)."""
    host, port = MILTER.split(":")[1:]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            answered = True
        except OSError:
            answered = False
        if answered == up:
            return
        time.sleep(0.1)
    if up:
        raise SystemExit("relay: OpenDKIM does not answer at %s" % MILTER)


def tree_cpu(roots):
    """CPU seconds of ``roots``, their live descendants and their reaped children."""
    ticks = _tree(roots, lambda fields: sum(int(x) for x in fields[11:15]))  # u/s/cu/cs time
    return sum(ticks.values()) / os.sysconf("SC_CLK_TCK") if ticks else None


def tree_rss(roots):
    """Resident bytes of ``roots`` and their live descendants (None: none alive)."""
    pages = _tree(roots, lambda fields: int(fields[21]))
    return sum(pages.values()) * os.sysconf("SC_PAGE_SIZE") if pages else None


def _tree(roots, read):
    """{pid: read(stat fields after the name)} for ``roots`` and their descendants."""
    parent, values = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        parent[int(entry)], values[int(entry)] = int(fields[1]), read(fields)
    tree, frontier = set(), [pid for pid in roots if pid in values]
    while frontier:
        tree.update(frontier)
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
    return {pid: values[pid] for pid in tree}


# -- the sink ----------------------------------------------------------------------

class Sink(inject.Target):
    """smtp-sink -c, or tests/smtp_sink.py in a child printing the same counter."""

    def __init__(self, kind, port):
        super().__init__()
        self.name, self.port, self.out = kind, port, None

    def start(self):
        if _taken(self.port):       # another bench's sink would count this one's messages
            raise SystemExit("relay: something already listens on 127.0.0.1:%d (another "
                             "bench?); wait for it, or give --sink-port" % self.port)
        if self.name == "smtp-sink":
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            argv = ["smtp-sink", "-c"] + user + ["127.0.0.1:%d" % self.port, "1000"]
        else:
            argv = [sys.executable, os.path.abspath(__file__), "--sink-child", str(self.port)]
        self.out, self.log = tempfile.TemporaryFile(), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.log)
        inject.await_greeting(self.port, self.proc, self.log)
        return self

    def held(self):
        size = os.fstat(self.out.fileno()).st_size
        found = _COUNTER.findall(os.pread(self.out.fileno(), 256, max(0, size - 256)))
        return int(found[-1]) if found else 0

    def wait_for(self, count, deadline):
        """The monotonic time the sink held ``count``; None at ``deadline``."""
        while time.monotonic() < deadline:
            if self.held() >= count:
                return time.monotonic()
            time.sleep(POLL)
        return None

    def cleanup(self):
        super().cleanup()
        if self.out is not None:
            self.out.close()
        self.out = None


def _taken(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def sink_child(port):
    """The project's sink (tests/smtp_sink.py) printing ``mesg=N`` as smtp-sink -c;
    it forgets each message once counted (100 KB x 10,000 would not fit)."""
    import gevent
    from tests.smtp_sink import SmtpSink
    sink, total = SmtpSink(port=port).start(), 0
    while True:
        gevent.sleep(POLL)
        if sink.messages:
            total += len(sink.messages)
            del sink.messages[:]
            sys.stdout.write("mesg=%d\r" % total)
            sys.stdout.flush()


# -- DKIM: the seed rows, and a check that they sign -----------------------------------

def dkim_seed(key_file=None):
    """The dkim rows for the sender's domain: a new RSA-2048 key, or the one in
    ``key_file`` (the signing peer's, so both sign with the same key)."""
    from mailerq_gevent.signing import generate_key, public_txt
    if key_file:
        with open(key_file) as handle:
            pem = handle.read()
        txt = public_txt(pem)
    else:
        pem, txt = generate_key("rsa-sha256", 2048)
    rows = {"dkim_keys": [{"id": 1, "domain": DKIM_DOMAIN, "selector": DKIM_SELECTOR,
                           "privatekey": pem, "algorithm": "rsa-sha256", "expire": 0}],
            "dkim_patterns": [{"sign": "*@" + DKIM_DOMAIN, "type": "fnmatch", "key": 1}]}
    return rows, txt


def check_dkim(args, seed, txt, count=5):
    """Relay ``count`` messages through a daemon seeded like the dkim row to the
    project's sink (here: its hub runs while we wait on it); verify them."""
    import dkim
    from tests.smtp_sink import SmtpSink
    sink = SmtpSink().start()
    daemon = RelayDaemon("dkim check", None, daemon_settings(args, sink.port), seed,
                         root=args.root)
    try:
        port = daemon.start()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for n in range(count):
                client.sendmail(smtpload.SENDER.decode(), ["rcpt%d@example.org" % n],
                                smtpload.message(args.size, seed=n))
        sink.wait_for(count, timeout=30)
    finally:
        daemon.stop()
        daemon.cleanup()
        sink.stop()
    got = [m.data for m in sink.messages]
    signed = sum(b"\nDKIM-Signature:" in b"\n" + d.partition(b"\r\n\r\n")[0] for d in got)
    record = {("%s._domainkey.%s." % (DKIM_SELECTOR, DKIM_DOMAIN)).encode(): txt.encode()}
    valid = sum(dkim.verify(d, dnsfunc=lambda name, timeout=5: record.get(name)) for d in got)
    ok = signed == valid == count
    return ok, "dkim check: %d sent, %d arrived, %d with a DKIM-Signature, %d verified " \
        "(d=%s s=%s)%s" % (count, len(got), signed, valid, DKIM_DOMAIN, DKIM_SELECTOR,
                           "" if ok else ": DKIM CHECK FAILED")


# -- the runs -------------------------------------------------------------------------

def daemon_settings(args, sink_port):
    return inject.daemon_settings(args) + ["relay: 127.0.0.1:%d" % sink_port]


def one_run(row, sink, args):
    """MTA up, the load, wait for the sink, MTA down; figures and accounting."""
    target, before, peak = row["target"], sink.held(), [0]

    def look():
        peak[0] = max(peak[0], tree_rss(target.pids()) or 0)

    try:
        port = target.start()
        cpu0 = tree_cpu(target.pids())
        sampler = RssSampler(look).start()      # from the load until the sink is full
        try:
            result = args.runner(smtpload.LoadSpec(
                host=row["host"], port=port, sessions=args.sessions, messages=args.messages,
                size=row["size"], mode="keep", procs=args.procs))
            accepted = result["accepted"] or 0
            start = time.monotonic() - result["seconds"]
            full = sink.wait_for(before + accepted, start + args.timeout)
            cpu1 = tree_cpu(target.pids())
        finally:
            sampler.stop()
        time.sleep(SETTLE)
    finally:
        ended = target.stop()
        target.cleanup()
    cpu = None if None in (cpu0, cpu1) or not accepted else (cpu1 - cpu0) * 1000.0 / accepted
    return {"rate": accepted / (full - start) if full and accepted else None,
            "inject_rate": result["rate"], "accepted": accepted, "held": sink.held() - before,
            "complete": full is not None, "errors": result["errors"],
            "error_samples": result["error_samples"], "server_ended": ended, "cpu_per_1k": cpu,
            "peak_rss": peak[0] or None}


class RssSampler:
    """``look()`` every RSS_EVERY seconds in a thread, and once more at ``stop``."""

    def __init__(self, look):
        import threading
        self.look, self.done = look, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.done.wait(RSS_EVERY):
            self.look()

    def stop(self):
        self.done.set()
        self.thread.join()
        self.look()


def make_rows(args, notes):
    settings = daemon_settings(args, args.sink_port)
    rows = [_row("daemon", RelayDaemon("daemon", None, settings, root=args.root), args.size)]
    if "rabbitmq" in args.variants:
        if inject.rabbit_reachable(args.rabbitmq):
            rows.append(_row("daemon rabbitmq",
                             RelayDaemon("daemon rabbitmq", args.rabbitmq, settings,
                                         root=args.root), args.size))
        else:
            notes.append("rabbitmq: skipped, nothing listens at %s" % args.rabbitmq)
    if "dkim" in args.variants:
        seed, txt = dkim_seed(DKIM_PEER_KEY if args.peer_dkim else None)
        ok, line = check_dkim(args, seed, txt)
        notes.append(line)
        args.failed |= not ok
        rows.append(_row("daemon dkim", RelayDaemon("daemon dkim", None, settings, seed,
                                                    root=args.root),
                         args.size))
    if "100k" in args.variants:
        rows.append(_row("daemon 100k", RelayDaemon("daemon 100k", None, settings,
                                                    root=args.root), BIG))
    if args.peer:
        host, port = args.peer
        name = "postfix" if args.postfix else "peer %s:%d" % (host, port)
        milter = False if args.peer_dkim else None
        for size in sorted({r["size"] for r in rows}):
            peer = Peer(name, port, MASTER_PID if args.postfix else None, milter)
            rows.append(_row(name + ("" if size == args.size else " 100k"), peer, size, host))
        if args.peer_dkim:
            rows.append(_row("postfix+opendkim", Peer("postfix+opendkim", port, MASTER_PID,
                                                      True), args.size, host, signed=True))
    return rows


def _row(name, target, size, host="127.0.0.1", signed=None):
    signed = name.endswith(" dkim") if signed is None else signed
    return {"name": name, "target": target, "size": size, "host": host,
            "peer": isinstance(target, Peer), "signed": signed, "runs": []}


def measure(args, rows, sink, notes):
    """Run 1 of every row, then run 2, ...: drift hits all alike."""
    broken = set()
    for _, row in itertools.product(range(args.runs), rows):
        if row["name"] in broken:
            continue
        try:
            row["runs"].append(one_run(row, sink, args))
        except inject.NotAnswering as exc:
            broken.add(row["name"])
            args.failed = True
            notes.append("%s: NOT ANSWERING ON SMTP: %s" % (row["name"], exc))
    return [summarize(row) for row in rows if row["name"] not in broken]


def summarize(row):
    runs = row["runs"]
    accepted, held = sum(r["accepted"] for r in runs), sum(r["held"] for r in runs)
    accounting = ("ok" if held == accepted else "LOST %d" % (accepted - held)
                  if held < accepted else "EXTRA %d" % (held - accepted))
    return {"name": row["name"], "size": row["size"], "peer": row["peer"],
            "signed": row["signed"],
            "peak_rss": max((r["peak_rss"] or 0 for r in runs), default=0) or None,
            "rate": inject._median(r["rate"] for r in runs),
            "inject_rate": inject._median(r["inject_rate"] for r in runs),
            "cpu_per_1k": inject._median(r["cpu_per_1k"] for r in runs),
            "rate_runs": [None if r["rate"] is None else round(r["rate"]) for r in runs],
            "incomplete": sum(not r["complete"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "error_samples": [s for r in runs for s in r["error_samples"]][:3],
            "server_ended": sorted({r["server_ended"] for r in runs if r["server_ended"]}),
            "accepted": accepted, "held": held, "accounting": accounting}


def add_ratios(rows):
    """``x_peer``: over the peer at the same size (a signed row: over the signing
    peer when there is one), ``x_plain``: over the plain peer at that size."""
    for r in rows:
        plain = next((p for p in rows if p["peer"] and not p["signed"]
                      and p["size"] == r["size"]), None)
        signing = next((p for p in rows if p["peer"] and p["signed"]
                        and p["size"] == r["size"]), None)
        peer = signing if r["signed"] and signing is not None else plain
        r["x_peer"] = _ratio(r, peer)
        r["x_plain"] = _ratio(r, plain)
        r["peer_name"] = peer["name"] if peer is not None else None


def _ratio(row, peer):
    ok = peer is not None and not row["peer"] and peer["rate"] and row["rate"]
    return row["rate"] / peer["rate"] if ok else None


# -- output ----------------------------------------------------------------------------

def report(args, rows, notes, load):
    print("%d messages a run over %d kept-open sessions; load: %s; sink: %s on port %d; "
          "median of %d runs; load average before: %.2f on %d CPUs" % (
              args.messages, args.sessions, args.generator, args.sink, args.sink_port,
              args.runs, load, os.cpu_count()))
    print("daemon: embedded queue unless named, %s" % inject.describe_daemon(args))
    line = "%-22s %7s %8s %7s %8s %9s %9s %7s  %-10s %s"
    print(line % ("MTA", "size", "msg/s", "x peer", "x plain", "inject/s", "cpu s/1k",
                  "rss MB", "held", "runs"))
    for r in rows:
        print(line % (r["name"], r["size"], _num(r["rate"], "%.0f"), _num(r["x_peer"], "%.2fx"),
                      _num(r["x_plain"], "%.2fx"), _num(r["inject_rate"], "%.0f"),
                      _num(r["cpu_per_1k"], "%.2f"),
                      _num(r["peak_rss"] and r["peak_rss"] / 1e6, "%.0f"),
                      r["accounting"], r["rate_runs"]))
    for line in bar_lines(rows) + notes:
        print(line)


def _num(value, fmt):
    return "-" if value is None else fmt % value


def bar_lines(rows):
    lines = []
    for r in rows:
        bar = BARS.get(r["name"])
        if bar is None or r["x_peer"] is None:
            continue
        lines.append("bar: %s >= %.1fx %s (same load, same sink): %.2fx, %s" % (
            r["name"], bar, r["peer_name"], r["x_peer"], "met" if r["x_peer"] >= bar
            else "NOT met"))
        if r["size"] == BIG and r["peak_rss"]:
            lines.append("bar: %s RSS < %d MB: %.0f MB at the most, %s" % (
                r["name"], RSS_BAR >> 20, r["peak_rss"] / 1e6,
                "met" if r["peak_rss"] < RSS_BAR else "NOT met"))
    for r in rows:
        found = [r["incomplete"] and "%d RUN(S) INCOMPLETE" % r["incomplete"],
                 r["errors"] and "%d SMTP ERRORS, e.g. %s" % (r["errors"], r["error_samples"]),
                 r["server_ended"] and "THE MTA " + "; ".join(r["server_ended"]).upper(),
                 r["accounting"] != "ok" and "%s MESSAGES: %d accepted, %d at the sink" % (
                     r["accounting"], r["accepted"], r["held"])]
        lines += ["%s: %s" % (r["name"], text) for text in found if text]
    return lines


# -- command line ------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--messages", type=int, default=10000, help="per run")
    add("--size", type=int, default=2048)
    add("--sessions", type=int, default=20)
    add("--runs", type=int, default=3)
    add("--timeout", type=float, default=300.0, help="seconds for the sink to get a run")
    add("--variants", type=inject._csv(VARIANTS + ("all",)), default=["base"])
    add("--rabbitmq", help="AMQP URL, adds the rabbitmq variant (default %s)" % inject.RABBIT)
    add("--dkim", action="store_true", help="adds the dkim variant")
    add("--peer", type=_host_port, help="HOST:PORT of an MTA relaying to the sink port")
    add("--postfix", action="store_true", help="set up Postfix as the peer, stop it after")
    add("--peer-dkim", action="store_true",
        help="--postfix and the dkim variant, and a row of Postfix signing through OpenDKIM "
             "as a milter (../shared/bench/postfix-dkim-peer.sh) with the daemon's key")
    add("--sink-port", type=int, default=2726)
    add("--generator", choices=("auto", "smtp-source", "smtpload"), default="auto")
    add("--sink", choices=("auto", "smtp-sink", "project"), default="auto")
    add("--procs", type=int, default=smtpload.DEFAULT_PROCS, help="smtpload processes")
    add("--root", default=ROOT, help="the daemon's source tree, with its conf/mailerq.conf "
                                     "(default: this one; another checkout for an A/B)")
    add("--smtp-threads", help="the daemon's smtp-threads (default: conf/mailerq.conf's, "
                               "as make run runs it; 1 runs it in a single process)")
    add("--log-level", help="the daemon's log-level (default: conf/mailerq.conf's)")
    add("--json", action="store_true")
    add("--sink-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink_child:
        return args
    variants = set(VARIANTS if "all" in args.variants else args.variants)
    variants |= {"rabbitmq"} if args.rabbitmq else set()
    variants |= {"dkim"} if args.dkim or args.peer_dkim else set()
    args.postfix |= args.peer_dkim
    args.variants, args.rabbitmq = sorted(variants), args.rabbitmq or inject.RABBIT
    args.peer = args.peer or (POSTFIX if args.postfix else None)
    args.generator = _which(args.generator, "smtp-source", "smtpload")
    args.sink = _which(args.sink, "smtp-sink", "project")
    args.runner = smtpload.run_smtp_source if args.generator == "smtp-source" else smtpload.run
    args.failed = False
    return args


def _which(choice, postfix_tool, ours):
    if choice == "auto":
        return postfix_tool if shutil.which(postfix_tool) else ours
    if choice == postfix_tool and not shutil.which(postfix_tool):
        raise SystemExit("relay: %s is not on PATH" % postfix_tool)
    return choice


def _host_port(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("HOST:PORT, e.g. 127.0.0.1:2725")
    return host, int(port)


def postfix_peer(*argv, script=PEER_SCRIPT):
    if not os.access(script, os.X_OK):
        raise SystemExit("relay: --postfix needs %s (it sets up a loopback Postfix), which is "
                         "missing; set up a peer yourself and give --peer" % script)
    subprocess.run([script] + list(argv), check=True, stdout=sys.stderr)


def run_all(args, notes):
    sink = Sink(args.sink, args.sink_port)
    script = DKIM_PEER_SCRIPT if args.peer_dkim else PEER_SCRIPT
    try:
        sink.start()
        if args.postfix:
            if args.peer_dkim:      # the script starts OpenDKIM only when nothing answers there
                _await_milter(up=False)
            postfix_peer(str(args.sink_port), script=script)
        return measure(args, make_rows(args, notes), sink, notes)
    except inject.NotAnswering as exc:
        raise SystemExit("relay: the sink (%s) is not answering: %s" % (args.sink, exc))
    finally:
        if args.postfix:
            postfix_peer("stop", script=script)
        sink.stop()
        sink.cleanup()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.sink_child:
        return sink_child(args.sink_child)
    notes, load = [], os.getloadavg()[0]
    if load > 0.5:
        notes.append("note: the machine was busy when the bench started (load average "
                     "%.2f): the figures are noisy" % load)
    rows = run_all(args, notes)
    add_ratios(rows)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "runner"}
        print(json.dumps({"settings": settings, "load_average": load, "rows": rows,
                          "notes": notes}, indent=2))
    else:
        report(args, rows, notes, load)
    bad = any(r["incomplete"] or r["errors"] or r["server_ended"] or r["accounting"] != "ok"
              for r in rows)
    return 1 if bad or args.failed else 0


if __name__ == "__main__":
    sys.exit(main())
