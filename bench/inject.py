"""Injection rate over SMTP: the daemon's queues beside aiosmtpd discarding mail.

    .venv/bin/python bench/inject.py [--messages 10000] [--runs 3] [--json]

Targets, each started afresh for every run and stopped (SIGTERM) after it:
``aiosmtpd (discard)`` (bench/aiosmtpd_discard.py, the comparison point);
``embedded queue`` (``python -m mailerq_gevent`` on ``sqlite:///<tmp>/queue.sqlite``:
250 only once the message is committed and fsynced); ``rabbitmq`` (the daemon
on ``--rabbitmq``, on queues named for the run and deleted after; skipped with
a note when nothing listens there).

Each gets ``--messages`` messages of ``--size`` bytes (2 KB) over
``--sessions`` (20) parallel sessions in both modes: ``keep`` (many messages
over one connection) and ``reconnect`` (one connection per message), from
bench/smtpload.py, which measures messages/s and the time from MAIL FROM to
the 250 after the final dot (p50/p99). When Postfix's ``smtp-source`` is on
PATH (``../shared/bench/postfix-peer.sh`` installs it) every run is repeated
with it, sending the same message; its rate is an extra column: being C, it
leaves more of the CPU to the server. Figures are medians over ``--runs``
runs (interleaved across targets); "x aiosmtpd" is a rate over aiosmtpd's in
the same mode with the same generator.

After each run what the target holds (the inbox depth; for aiosmtpd, the
count it discarded) is checked against what the generator saw accepted. A
difference (LOST/EXTRA), a server that did not stop cleanly, SMTP errors
(unless ``--allow-errors``) or a daemon not answering on SMTP is printed in
capitals and makes the exit status 1.
"""
# bench/ holds queue.py, named like the standard library module that kombu and
# concurrent.futures import: take this folder off the import path first.
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
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from bench import smtpload  # noqa: E402
from mailerq_gevent.broker.storage import list_messages  # noqa: E402

RABBIT = "amqp://guest:guest@127.0.0.1:5672//"
MODES = ("keep", "reconnect")
BAR = 2.5           # the bar (issue 13): the embedded queue, make run's config, 2.5x aiosmtpd
START_TIMEOUT = 30.0    # seconds for a server to answer 220
STOP_TIMEOUT = 30.0     # seconds for a server to exit after SIGTERM
RUN_CONFIG = os.path.join("conf", "mailerq.conf")      # what ``make run`` uses, under the root


# -- the servers under test ----------------------------------------------------------

def user_config(path, values):
    """The text of the config file at ``path`` with ``values`` ({key: value}) in
    place of its own (a key it does not set is added at the end)."""
    values = {key.strip(): value.strip() for key, value in values.items()}
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle.read().splitlines():
            key = line.partition(":")[0].strip()
            if not line.lstrip().startswith("#") and key in values:
                line = "%s: %s" % (key, values.pop(key))
            lines.append(line)
    lines += ["%s: %s" % item for item in values.items()]
    return "\n".join(lines) + "\n"


class NotAnswering(Exception):
    """The server did not greet with 220 in time (or exited); carries its output."""


class Target:
    """A server under test: one process per run, its output in ``self.log``."""

    name = ""

    def __init__(self):
        self.proc = self.log = None

    def launch(self, argv, port, **popen):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, **popen)
        await_greeting(port, self.proc, self.log)

    def stop(self):
        """Stop the server; returns how it ended ("" when well)."""
        if self.proc is None:
            return ""
        ended, self.proc = terminate(self.proc), None
        return ended

    def output(self, size=600):
        return _tail(self.log, size)

    def cleanup(self):
        if self.log is not None:
            self.log.close()
        self.log = None


class AiosmtpdTarget(Target):
    """bench/aiosmtpd_discard.py; ``held()`` is the count it says it discarded."""

    name = "aiosmtpd (discard)"

    def __init__(self, script):
        super().__init__()
        self.script = script

    def start(self):
        port, self.log = free_port(), tempfile.TemporaryFile("w+")
        self.launch([sys.executable, self.script, "--port", str(port)], port)
        return port

    def held(self):
        found = re.findall(r"^discarded (\d+)$", self.output(None), re.MULTILINE)
        return int(found[-1]) if found else 0


class DaemonTarget(Target):
    """``python -m mailerq_gevent`` in a temp dir, on the embedded queue or RabbitMQ."""

    def __init__(self, name, amqp_url, root, settings=()):
        super().__init__()
        self.name, self.amqp_url, self.root, self.tmp = name, amqp_url, root, None
        self.settings = list(settings)      # extra "key: value" config lines

    def start(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="bench_inject_")
        tag = uuid.uuid4().hex[:10]
        self.inbox = "bench_inbox_%s" % tag
        self.outbox = "bench_outbox_%s" % tag if self.amqp_url else "outbox"
        port, conf = free_port(), os.path.join(self.tmp.name, "mailerq.conf")
        with open(conf, "w") as handle:
            handle.write(self.config(port))
        self.log = open(os.path.join(self.tmp.name, "output.log"), "w+")
        path = os.pathsep.join(filter(None, [self.root, os.environ.get("PYTHONPATH")]))
        self.launch([sys.executable, "-m", "mailerq_gevent", "--config", conf], port,
                    cwd=self.tmp.name, env=dict(os.environ, PYTHONPATH=path))
        # a 220 comes from the first smtp-threads worker that listens: the load
        # (its sessions kept open) starts once they all do, as the daemon then says
        await_line(self.log, "event=daemon.started", self.proc)
        return port

    def config(self, port):
        """``make run``'s config (conf/mailerq.conf) with this run's files, ports
        and queue names in place of its own, and ``settings`` on top."""
        queue = self.amqp_url or "sqlite:///%s/queue.sqlite" % self.tmp.name
        values = {"database": "sqlite:///%s/db.sqlite" % self.tmp.name,
                  "rabbitmq-address": queue, "rabbitmq-inbox": self.inbox,
                  "rabbitmq-outbox": self.outbox, "smtp-port": str(port),
                  "www-port": str(free_port())}
        values.update(line.split(":", 1) for line in self.settings)
        return user_config(os.path.join(self.root, RUN_CONFIG), values)

    def held(self):
        """The inbox depth, read once the daemon has stopped."""
        if self.amqp_url:
            return self._rabbit(lambda channel: channel.queue_declare(
                queue=self.inbox, passive=True).message_count)
        return sum(1 for row in list_messages("%s/queue.sqlite" % self.tmp.name, self.inbox)
                   if not row.not_before)

    def cleanup(self):
        """Delete this run's RabbitMQ queues and the temp dir."""
        try:
            if self.amqp_url and self.tmp is not None:
                self._rabbit(lambda channel: [channel.queue_delete(name)
                                              for name in (self.inbox, self.outbox)])
        finally:
            super().cleanup()
            if self.tmp is not None:
                self.tmp.cleanup()
            self.tmp = None

    def _rabbit(self, func):
        import kombu
        with kombu.Connection(self.amqp_url, connect_timeout=10) as conn:
            return func(conn.default_channel)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def await_greeting(port, proc, stderr):
    """Until a 220 comes from ``port``; NotAnswering on timeout or if ``proc`` exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotAnswering("the server exited with status %s before answering on port "
                               "%d; its output: %s" % (proc.returncode, port, _tail(stderr)))
        if _greets(port):
            return
        time.sleep(0.1)
    raise NotAnswering("nothing answered 220 on 127.0.0.1:%d within %.0f s (the daemon runs, "
                       "but is its SMTP server there?); its output: %s"
                       % (port, START_TIMEOUT, _tail(stderr) or "(none)"))


def await_line(log, text, proc):
    """Until ``text`` is in the output file ``log``; NotAnswering on timeout or if
    ``proc`` exits. Read through a handle of its own: the server's shares ``log``'s offset."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with open(log.name, errors="replace") as handle:
            if text in handle.read():
                return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise NotAnswering("the daemon did not say %r within %.0f s; its output: %s"
                       % (text, START_TIMEOUT, _tail(log) or "(none)"))


def _greets(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            greeting = sock.recv(512)
            if greeting.startswith(b"220"):
                sock.sendall(b"QUIT\r\n")
                return True
    except OSError:
        pass
    return False


def terminate(proc):
    """SIGTERM, wait STOP_TIMEOUT, then SIGKILL; returns how it ended, "" if well."""
    if proc.poll() is not None:
        return "exited on its own with status %s" % proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "did not stop within %.0f s of SIGTERM: killed" % STOP_TIMEOUT
    return "" if status == 0 else "exit status %s after SIGTERM" % status


def _tail(handle, size=2000):
    """The last ``size`` characters a server wrote (all of it for None)."""
    handle.flush()
    handle.seek(0)
    return handle.read()[-size if size else 0:].strip()


def rabbit_reachable(url):
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672),
                                 timeout=1).close()
        return True
    except OSError:
        return False


# -- one run -----------------------------------------------------------------------

def one_run(target, mode, args, tool):
    """Start ``target``, send the load with ``tool``, stop it; figures + accounting."""
    try:
        try:
            port = target.start()
            runner = smtpload.run_smtp_source if tool == "smtp-source" else smtpload.run
            result = runner(load_spec(port, mode, args))
        finally:
            ended = target.stop()
        result["held"], result["server_ended"] = target.held(), ended
        if result["errors"]:
            result["error_samples"].append("server output: %s" % (target.output() or "(none)"))
        return result
    finally:
        target.cleanup()


def load_spec(port, mode, args):
    return smtpload.LoadSpec(port=port, sessions=args.sessions, messages=args.messages,
                             size=args.size, mode=mode, pipeline=args.pipeline,
                             procs=args.procs)


# -- all runs, one row per target and mode -------------------------------------------

def daemon_settings(args):
    """The config lines the command line changes from conf/mailerq.conf's."""
    return ["%s: %s" % (key, value) for key, value in
            (("smtp-threads", args.smtp_threads), ("log-level", args.log_level)) if value]


def describe_daemon(args):
    conf = config_values_of(os.path.join(args.root, RUN_CONFIG), daemon_settings(args))
    return "conf/mailerq.conf (as make run), smtp-threads %s, log-level %s" % (
        conf.smtp_threads, conf.log_level)


def config_values_of(path, settings):
    """The parsed config a daemon would run with (``user_config``'s text)."""
    from mailerq_gevent import config
    return config.parse_text(user_config(path, dict(line.split(":", 1) for line in settings)),
                             path)


def make_targets(args, notes):
    targets = [AiosmtpdTarget(os.path.join(HERE, "aiosmtpd_discard.py"))]
    settings = daemon_settings(args)
    if "embedded" in args.targets:
        targets.append(DaemonTarget("embedded queue", None, args.root, settings))
    if "rabbitmq" in args.targets:
        if args.rabbitmq and rabbit_reachable(args.rabbitmq):
            targets.append(DaemonTarget("rabbitmq", args.rabbitmq, args.root, settings))
        else:
            notes.append("rabbitmq: skipped, nothing listens at %s" % (args.rabbitmq or "''"))
    return targets


def tools(args):
    found = args.smtp_source != "no" and shutil.which("smtp-source")
    if args.smtp_source == "yes" and not found:
        raise SystemExit("inject: --smtp-source yes, but smtp-source is not on PATH")
    return ["smtpload", "smtp-source"] if found else ["smtpload"]


def measure(args, targets, notes):
    """Runs interleaved (run 1 of every target, then run 2, ...) so drift hits all."""
    results = {(t.name, mode, tool): [] for t in targets for mode in MODES
               for tool in tools(args)}
    broken = set()
    for mode, _, target, tool in itertools.product(args.modes, range(args.runs), targets,
                                                   tools(args)):
        if target.name in broken:
            continue
        try:
            results[(target.name, mode, tool)].append(one_run(target, mode, args, tool))
        except NotAnswering as exc:
            broken.add(target.name)
            notes.append("%s: NOT ANSWERING ON SMTP: %s" % (target.name, exc))
    return results, broken


def rows_of(args, targets, results, broken):
    rows = []
    for mode in args.modes:
        for target in targets:
            if target.name not in broken:
                rows.append(row(target.name, mode, results, tools(args)))
        base = next((r for r in rows if r["target"] == targets[0].name and r["mode"] == mode),
                    None)
        for r in rows:
            if r["mode"] == mode:
                add_ratios(r, base)
    return rows


def row(name, mode, results, tool_names):
    runs = results[(name, mode, "smtpload")]
    out = {"target": name, "mode": mode, "runs": len(runs),
           "rate": _median(r["rate"] for r in runs),
           "p50_ms": _median(r["p50_ms"] for r in runs),
           "p99_ms": _median(r["p99_ms"] for r in runs),
           "rate_runs": _rounded(runs),
           "smtp_source_rate": None, "smtp_source_runs": []}
    everything = list(runs)
    if "smtp-source" in tool_names:
        source = results[(name, mode, "smtp-source")]
        everything += source
        out["smtp_source_rate"] = _median(r["rate"] for r in source)
        out["smtp_source_runs"] = _rounded(source)
    out.update(account(everything))
    return out


def account(runs):
    """Errors, and what the target holds against what was accepted, over all runs."""
    errors = sum(r["errors"] for r in runs)
    samples = [s for r in runs for s in r.get("error_samples", [])][:4]
    counted = [r for r in runs if r["accepted"] is not None]
    accepted = sum(r["accepted"] for r in counted)
    held = sum(r["held"] for r in counted)
    ended = sorted({r["server_ended"] for r in runs if r["server_ended"]})
    return {"errors": errors, "error_samples": samples, "accepted": accepted, "held": held,
            "server_ended": ended,
            "accounting": "ok" if held == accepted else
            ("LOST %d" % (accepted - held) if held < accepted else "EXTRA %d" % (held - accepted))}


def add_ratios(r, base):
    for key in ("rate", "smtp_source_rate"):
        ok = base and base[key] and r[key] is not None
        r[key + "_vs_aiosmtpd"] = r[key] / base[key] if ok else None


def _rounded(runs):
    return [None if r["rate"] is None else round(r["rate"]) for r in runs]


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# -- output ----------------------------------------------------------------------------

def report(args, rows, notes, load):
    source = "smtp-source" in tools(args)
    print("%d-byte messages, %d sessions, %d messages a run; load: bench/smtpload.py "
          "(%d procs%s)%s; median of %d runs; load average before: %.2f on %d CPUs" % (
              args.size, args.sessions, args.messages, args.procs,
              ", pipelining" if args.pipeline else "",
              " and smtp-source" if source else "", args.runs, load, os.cpu_count()))
    print("daemon: %s" % describe_daemon(args))
    header = "%-20s %-9s %8s %8s %8s %10s" % ("target", "mode", "msg/s", "p50 ms", "p99 ms",
                                              "x aiosmtpd")
    if source:
        header += " %12s %10s" % ("smtp-source/s", "x aiosmtpd")
    print(header + "  %-10s %s" % ("held", "runs (msg/s)"))
    for r in rows:
        print(format_row(r, source))
    for line in bar_lines(rows) + notes:
        print(line)


def format_row(r, source):
    line = "%-20s %-9s %8s %8s %8s %10s" % (
        r["target"], r["mode"], _num(r["rate"], "%.0f"), _num(r["p50_ms"], "%.2f"),
        _num(r["p99_ms"], "%.2f"), _num(r["rate_vs_aiosmtpd"], "%.2fx"))
    if source:
        line += " %12s %10s" % (_num(r["smtp_source_rate"], "%.0f"),
                                _num(r["smtp_source_rate_vs_aiosmtpd"], "%.2fx"))
    runs = str(r["rate_runs"]) + (" | %s" % r["smtp_source_runs"] if source else "")
    return line + "  %-10s %s" % (r["accounting"], runs)


def _num(value, fmt):
    return "-" if value is None else fmt % value


def bar_lines(rows):
    """The bar is judged with smtp-source when it ran (the issue's load generator
    of choice: C, it leaves the CPU to the servers), else with ours."""
    lines = []
    for r in rows:
        if r["target"] != "embedded queue":
            continue
        ratio, tool = r.get("smtp_source_rate_vs_aiosmtpd"), "smtp-source"
        if ratio is None:
            ratio, tool = r["rate_vs_aiosmtpd"], "bench/smtpload.py"
        if ratio is not None:
            lines.append("bar (embedded >= %.1fx aiosmtpd), %s, by %s: %.2fx, %s" % (
                BAR, r["mode"], tool, ratio, "met" if ratio >= BAR else "NOT met"))
    for r in rows:
        if r["errors"]:
            lines.append("%s %s: %d SMTP ERRORS, e.g. %s" % (
                r["target"], r["mode"], r["errors"], r["error_samples"]))
        if r["server_ended"]:
            lines.append("%s %s: THE SERVER %s" % (r["target"], r["mode"],
                                                    "; ".join(r["server_ended"]).upper()))
        if r["accounting"] != "ok":
            lines.append("%s %s: %s MESSAGES: %d accepted, %d held" % (
                r["target"], r["mode"], r["accounting"], r["accepted"], r["held"]))
    return lines


# -- command line ------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="per run")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--procs", type=int, default=smtpload.DEFAULT_PROCS,
                        help="smtpload generator processes (default %(default)s)")
    parser.add_argument("--pipeline", action="store_true",
                        help="smtpload pipelines MAIL/RCPT/DATA where PIPELINING is offered"
                             " (aiosmtpd does not offer it)")
    parser.add_argument("--modes", type=_csv(MODES), default=list(MODES))
    parser.add_argument("--targets", type=_csv(("embedded", "rabbitmq")),
                        default=["embedded", "rabbitmq"],
                        help="besides aiosmtpd: embedded,rabbitmq")
    parser.add_argument("--rabbitmq", default=RABBIT, help="AMQP URL ('' to skip)")
    parser.add_argument("--smtp-source", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--root", default=ROOT, help="the daemon's source tree, with its "
                        "conf/mailerq.conf (default: this one; another checkout for an A/B)")
    parser.add_argument("--smtp-threads", help="the daemon's smtp-threads (default: as "
                        "conf/mailerq.conf says, i.e. as make run runs it)")
    parser.add_argument("--log-level", help="the daemon's log-level (default: as "
                        "conf/mailerq.conf says)")
    parser.add_argument("--allow-errors", action="store_true")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def _csv(allowed):
    def parse(text):
        items = [item for item in text.split(",") if item]
        if set(items) - set(allowed):
            raise argparse.ArgumentTypeError("choose from %s" % ",".join(allowed))
        return items
    return parse


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    notes, load = [], os.getloadavg()[0]
    if load > 0.5:
        notes.append("note: the machine was busy when the bench started (load average "
                     "%.2f): the figures are noisy; run it on a quiet machine" % load)
    targets = make_targets(args, notes)
    results, broken = measure(args, targets, notes)
    rows = rows_of(args, targets, results, broken)
    if args.json:
        print(json.dumps({"settings": vars(args), "load_average": load, "cpus": os.cpu_count(),
                          "rows": rows, "notes": notes}, indent=2))
    else:
        report(args, rows, notes, load)
    return exit_status(args, rows, broken)


def exit_status(args, rows, broken):
    lost = any(r["accounting"] != "ok" or r["server_ended"] for r in rows)
    errors = any(r["errors"] for r in rows) and not args.allow_errors
    return 1 if (lost or errors or broken) else 0


if __name__ == "__main__":
    sys.exit(main())
