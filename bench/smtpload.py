"""The project's own SMTP load generator: messages/s and time to 250.

    .venv/bin/python bench/smtpload.py --port 2525 [--sessions 20] [--messages 10000]
        [--size 2048] [--mode keep|reconnect] [--per-connection K] [--pipeline]
        [--procs 1] [--json] [--allow-errors]

``--sessions`` parallel SMTP sessions (gevent greenlets on raw sockets, no
smtplib) send ``--messages`` messages in all, each a ``--size``-byte RFC 5322
message (From, To, Subject, Date, Message-ID, a text body in lines under 78
characters) to one recipient. ``keep``: a session connects, reads the
greeting, says EHLO once, repeats MAIL FROM / RCPT TO / DATA / message / "."
and says QUIT at the end (``--per-connection K``: reconnect every K
messages). ``reconnect``: connect, greeting, EHLO, one message, QUIT, for
every message. ``--pipeline``: MAIL, RCPT and DATA in one write where the
server advertises PIPELINING (RFC 2920).

Every reply is checked: anything but the expected 2xx (3xx after DATA) is an
error, the connection is closed and the session goes on with a new one (the
message is not retried); errors make the exit status 1 unless
``--allow-errors``. Figures: messages accepted per second, from the moment
every session is told to start until the last is done, and the p50/p99 time
from writing MAIL FROM to reading the 250 after the final dot.

``--procs P`` splits the sessions over P processes that start together. The
default, 1, was measured on a 2-core machine against aiosmtpd (medians of 4
runs of 10,000): 1 process 2,372/s kept-open and 1,246/s reconnecting, 2
processes 2,302/s and 1,129/s; a second generator takes CPU from the server.
One process drives Postfix's smtp-sink (C) at about 12,000/s kept-open and
4,500/s reconnecting, far above what a Python server reaches here, but on 2
cores it still takes CPU from the server: bench/inject.py therefore also
runs Postfix's smtp-source where it is installed.

Importable: ``run(LoadSpec(...))`` returns a dict of figures;
``run_smtp_source(LoadSpec(...))`` sends the same message with Postfix's
``smtp-source`` (rate only) and returns the same dict; ``message(size)``
builds the message.
"""
# bench/ holds queue.py, named like the standard library module that gevent and
# concurrent.futures import: take this folder off the import path first.
import os  # noqa: I001
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import email.utils  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

DEFAULT_PROCS = 1       # 2 cores, against aiosmtpd: 1 process beat 2 in both modes
TIMEOUT = 60.0          # seconds for one message, connect and QUIT included
SENDER = b"bench@example.com"
WORDS = ("the queue holds every message until a relay takes it and the remote "
         "server answers with a final reply so nothing is lost when a process "
         "stops a bulk sender needs throughput latency and durability at once "
         "delivery attempts follow throttles per domain and per address").split()


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    """What to send where; ``per_connection`` 0 means all of a session's share."""
    host: str = "127.0.0.1"
    port: int = 25
    sessions: int = 20
    messages: int = 10000
    size: int = 2048
    mode: str = "keep"
    per_connection: int = 0
    pipeline: bool = False
    procs: int = DEFAULT_PROCS

    def messages_per_connection(self):
        if self.mode == "reconnect":
            return 1
        return self.per_connection or self.messages


class SMTPError(Exception):
    """An unexpected reply (or a closed connection) where a positive one was due."""


# -- the message ---------------------------------------------------------------

def message(size=2048, seed=1):
    """A ``size``-byte RFC 5322 message (CRLF lines, none starting with '.')."""
    head = _headers(b"<bench.0@bench.example>")
    return head + _body(size - len(head), seed)


def _headers(message_id):
    return b"".join([
        b"From: Bench Sender <bench@example.com>\r\n",
        b"To: Bench Recipient <rcpt@example.org>\r\n",
        b"Subject: mailerq-gevent injection bench\r\n",
        b"Date: " + email.utils.formatdate(localtime=True).encode() + b"\r\n",
        b"Message-ID: " + message_id + b"\r\n",
        b"MIME-Version: 1.0\r\n",
        b"Content-Type: text/plain; charset=us-ascii\r\n",
        b"\r\n",
    ])


def _body(size, seed):
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(max(size, 0) // 4 + 20))
    lines = textwrap.wrap(text, width=72)
    body, total = [], 0
    for line in lines:
        line = line.encode() + b"\r\n"
        if total + len(line) >= size:
            break
        body.append(line)
        total += len(line)
    rest = size - total
    if rest >= 3:
        body.append(b"x" * (rest - 2) + b"\r\n")
    return b"".join(body)


class Messages:
    """Hands out messages with a unique Message-ID; the body is built once."""

    def __init__(self, size, tag):
        self.tag = tag.encode()
        template = message(size)
        self.head, _, self.tail = template.partition(b"Message-ID: <bench.0@bench.example>\r\n")
        self.count = 0

    def next(self):
        self.count += 1
        mid = b"Message-ID: <bench.%d.%s@bench.example>\r\n" % (self.count, self.tag)
        return self.head + mid + self.tail + b".\r\n"


# -- one SMTP connection (gevent sockets; imported lazily: the parent needs none)

class Connection:
    """A client connection: write commands, read and check replies (RFC 5321)."""

    def __init__(self, address):
        from gevent import socket
        family, sockaddr = address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.connect(sockaddr)
        except BaseException:
            self.sock.close()
            raise
        self.buffer = b""
        self.pipelining, self.sent = False, 0

    def reply(self):
        """The next reply as (code, [lines])."""
        lines = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                self._fill()
                continue
            line, self.buffer = self.buffer[:end].rstrip(b"\r"), self.buffer[end + 1:]
            lines.append(line)
            if line[3:4] != b"-":
                if not line[:3].isdigit():
                    raise SMTPError("malformed reply %r" % line[:80])
                return int(line[:3]), lines

    def expect(self, first_digit, what):
        code, lines = self.reply()
        if code // 100 != first_digit:
            raise SMTPError("%s: %s" % (what, lines[-1][:120].decode("ascii", "replace")))
        return lines

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise SMTPError("connection closed by the server")
        self.buffer += data

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


def resolve(host, port):
    """(family, sockaddr) of the server, looked up once per process, not per connect."""
    import socket
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return family, sockaddr


def open_session(spec, address):
    conn = Connection(address)
    try:
        conn.expect(2, "greeting")
        conn.send(b"EHLO bench.example\r\n")
        lines = conn.expect(2, "EHLO")
    except BaseException:
        conn.close()
        raise
    conn.pipelining = spec.pipeline and any(
        line[4:].upper().startswith(b"PIPELINING") for line in lines[1:])
    return conn


def send_one(conn, data, number):
    """One transaction; returns the seconds from MAIL FROM to the final 250."""
    envelope = (b"MAIL FROM:<%s>\r\n" % SENDER, b"RCPT TO:<rcpt%d@example.org>\r\n" % number,
                b"DATA\r\n")
    started = time.perf_counter()
    if conn.pipelining:
        conn.send(b"".join(envelope))
        for what, digit in (("MAIL", 2), ("RCPT", 2), ("DATA", 3)):
            conn.expect(digit, what)
    else:
        for command, what, digit in zip(envelope, ("MAIL", "RCPT", "DATA"), (2, 2, 3)):
            conn.send(command)
            conn.expect(digit, what)
    conn.send(data)
    conn.expect(2, "end of data")
    return time.perf_counter() - started


def quit_session(conn):
    try:
        conn.send(b"QUIT\r\n")
        conn.expect(2, "QUIT")
    finally:
        conn.close()


# -- one generator process -----------------------------------------------------

class Tally:
    """What the greenlets of one process share: work left, latencies, errors."""

    def __init__(self, messages):
        self.left = messages
        self.latencies = []
        self.errors = 0
        self.samples = []

    def take(self):
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def error(self, exc):
        self.errors += 1
        text = "%s: %s" % (exc.__class__.__name__, exc)
        if len(self.samples) < 5 and text not in self.samples:
            self.samples.append(text)


def session(spec, address, tally, messages):
    """One session's loop: take a message, send it, reconnect when due or broken.

    Each message (with the connect and QUIT around it) has TIMEOUT seconds: one
    timer per message, not one per socket call (that costs the generator CPU).
    """
    import gevent
    conn = None
    while tally.take():
        try:
            with gevent.Timeout(TIMEOUT, SMTPError("no reply within %g s" % TIMEOUT)):
                if conn is None:
                    conn = open_session(spec, address)
                conn = transaction(spec, conn, tally, messages)
        except (SMTPError, OSError) as exc:
            tally.error(exc)
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        with gevent.Timeout(TIMEOUT, SMTPError("no reply to QUIT")):
            _quietly(quit_session, conn, tally)


def transaction(spec, conn, tally, messages):
    """One message; then QUIT if this connection has sent its share (returns None)."""
    tally.latencies.append(send_one(conn, messages.next(), messages.count))
    conn.sent += 1
    if conn.sent >= spec.messages_per_connection():
        quit_session(conn)
        return None
    return conn


def _quietly(func, conn, tally):
    try:
        func(conn)
    except (SMTPError, OSError) as exc:
        tally.error(exc)


def run_here(spec, tag="p0"):
    """Run ``spec`` in this process (greenlets only); returns the raw figures."""
    import gevent
    tally, messages = Tally(spec.messages), Messages(spec.size, tag)
    address = resolve(spec.host, spec.port)
    started = time.time()
    greenlets = [gevent.spawn(session, spec, address, tally, messages)
                 for _ in range(spec.sessions)]
    gevent.joinall(greenlets, raise_error=True)
    return {"started": started, "finished": time.time(), "accepted": len(tally.latencies),
            "latencies": tally.latencies, "errors": tally.errors, "samples": tally.samples}


# -- several processes -----------------------------------------------------------

def split(total, parts):
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(spec):
    """Run ``spec`` over ``spec.procs`` child processes; returns the figures."""
    procs = max(1, min(spec.procs, spec.sessions))
    sessions, messages = split(spec.sessions, procs), split(spec.messages, procs)
    children = []
    try:
        for index in range(procs):
            part = dataclasses.replace(spec, sessions=sessions[index],
                                       messages=messages[index], procs=1)
            children.append(_spawn_child(part, "p%d" % index))
        for child in children:
            _await_line(child, "ready")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        parts = [_collect(child) for child in children]
    finally:
        for child in children:
            _reap(child)
    return summarize(spec, parts)


def _spawn_child(spec, tag):
    argv = [sys.executable, os.path.abspath(__file__), "--child", tag,
            "--spec", json.dumps(dataclasses.asdict(spec))]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _await_line(child, expected):
    line = child.stdout.readline().strip()
    if line != expected:
        raise SystemExit("smtpload: a generator process failed to start (%r)" % line)


def _collect(child):
    out = child.stdout.read()
    if child.wait() != 0 or not out.strip():
        raise SystemExit("smtpload: a generator process failed (status %s)" % child.returncode)
    return json.loads(out.strip().splitlines()[-1])


def _reap(child):
    if child.poll() is None:
        child.kill()
        child.wait()
    for stream in (child.stdin, child.stdout):
        stream.close()


def run_smtp_source(spec):
    """The same load from Postfix's smtp-source (no latencies: it reports none).

    Same message and sessions; no pipelining (smtp-source has none). The rate
    is over the whole life of the process; a non-zero exit counts as an error
    and leaves ``accepted`` unknown (None).
    """
    with tempfile.NamedTemporaryFile("wb", suffix=".eml") as handle:
        handle.write(message(spec.size).replace(b"\r\n", b"\n"))
        handle.flush()
        argv = ["smtp-source", "-s", str(spec.sessions), "-m", str(spec.messages),
                "-F", handle.name, "-M", "bench.example", "-f", SENDER.decode(),
                "-t", "rcpt@example.org"] + (["-d"] if spec.mode == "keep" else []) + \
            ["%s:%d" % (spec.host, spec.port)]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
    ok = done.returncode == 0
    return {"mode": spec.mode, "sessions": spec.sessions, "messages": spec.messages,
            "rate": spec.messages / elapsed if ok else None, "seconds": elapsed,
            "accepted": spec.messages if ok else None, "errors": 0 if ok else 1,
            "error_samples": [] if ok else [done.stderr.strip()[-300:]],
            "p50_ms": None, "p99_ms": None}


def child_main(tag, spec_json):
    """In a child: get ready, wait for 'go' on stdin, run, print the figures."""
    spec = LoadSpec(**json.loads(spec_json))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    print(json.dumps(run_here(spec, tag)), flush=True)
    return 0


def percentile(ordered, fraction):
    """Nearest-rank percentile of an ordered list (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def summarize(spec, parts):
    latencies = sorted(x for part in parts for x in part["latencies"])
    elapsed = max(p["finished"] for p in parts) - min(p["started"] for p in parts)
    accepted = sum(p["accepted"] for p in parts)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    return {
        "mode": spec.mode, "sessions": spec.sessions, "messages": spec.messages,
        "size": spec.size, "procs": len(parts), "pipeline": spec.pipeline,
        "accepted": accepted, "errors": sum(p["errors"] for p in parts),
        "error_samples": [s for p in parts for s in p["samples"]][:5],
        "seconds": elapsed, "rate": accepted / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
    }


# -- command line ------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--mode", choices=("keep", "reconnect"), default="keep")
    parser.add_argument("--per-connection", type=int, default=0,
                        help="keep mode: reconnect after K messages (0: never)")
    parser.add_argument("--pipeline", action="store_true",
                        help="MAIL+RCPT+DATA in one write when PIPELINING is offered")
    parser.add_argument("--procs", type=int, default=DEFAULT_PROCS,
                        help="generator processes (default %(default)s)")
    parser.add_argument("--allow-errors", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def spec_of(args):
    return LoadSpec(**{field.name: getattr(args, field.name)
                       for field in dataclasses.fields(LoadSpec)})


def format_result(result):
    return ("%(mode)s: %(accepted)d of %(messages)d accepted in %(seconds).2f s = "
            "%(rate).0f msg/s; time to 250 p50 %(p50)s ms, p99 %(p99)s ms; "
            "%(errors)d errors (%(sessions)d sessions, %(procs)d procs)") % dict(
        result, p50=_ms(result["p50_ms"]), p99=_ms(result["p99_ms"]))


def _ms(value):
    return "-" if value is None else "%.2f" % value


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child_main(args.child, args.spec)
    result = run(spec_of(args))
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    if result["errors"] and not args.allow_errors:
        print("smtpload: %d ERRORS, e.g. %s" % (result["errors"], result["error_samples"]),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
