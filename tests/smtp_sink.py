"""An SMTP sink for the delivery tests and benchmarks: a gevent server on a
loopback port that keeps every message it accepts, or answers with faults.

    sink = SmtpSink().start()          # .port, .messages, .connections
    sink.fault("rcpt", "452 4.2.2 mailbox full")   # every RCPT gets this
    sink.fault("data", "554 5.6.0 rejected")
    sink.fault("mail", "drop")          # close the connection instead of answering
    sink.stop()

Each kept message is a ``Received`` with ``sender``, ``recipients``, ``data``
(bytes exactly as they came, dot-stuffing removed), ``peer`` and ``helo``.
``greeting_delay`` and ``data_delay`` (seconds) slow the greeting and the
reply to the final dot. ``tls`` (an ``ssl.SSLContext``) makes it offer STARTTLS; ``starttls_count``
counts the upgrades. ``advertise`` lists the EHLO keywords (8BITMIME,
PIPELINING, SMTPUTF8, SIZE by default). ``commands`` keeps every MAIL and RCPT
line as it came. A MAIL inside an open transaction (no RSET, end of data
or EHLO since the last MAIL taken) gets 503, as from Postfix. The sink
writes nothing to disk.
"""

import collections
import socket

import gevent
from gevent.event import Event
from gevent.server import StreamServer

Received = collections.namedtuple("Received", "sender recipients data peer helo tls")

DEFAULT_EXTENSIONS = ("8BITMIME", "PIPELINING", "SMTPUTF8", "SIZE 104857600")


class SmtpSink:
    def __init__(self, host="127.0.0.1", port=0, tls=None, advertise=DEFAULT_EXTENSIONS,
                 hostname="sink.test", greeting_delay=0.0, data_delay=0.0):
        self.tls, self.advertise, self.hostname = tls, tuple(advertise), hostname
        self.greeting_delay, self.data_delay = greeting_delay, data_delay
        self.messages = []
        self.connections = 0        # accepted so far
        self.open = 0               # open now
        self.max_open = 0           # most open at once
        self.starttls_count = 0
        self.commands = []          # every MAIL and RCPT line, as it came
        self.faults = {}
        self.arrived = Event()
        self._server = StreamServer((host, port), self._handle)

    @property
    def port(self):
        return self._server.server_port

    def start(self):
        self._server.start()
        return self

    def stop(self):
        self._server.stop(timeout=1)

    def fault(self, stage, reply):
        """At ``stage`` (connect, ehlo, mail, rcpt, data, dot) answer ``reply``
        (a full reply line such as ``451 4.3.0 try later``, or ``drop``)."""
        self.faults[stage] = reply

    def clear_faults(self):
        self.faults.clear()

    def wait_for(self, count, timeout=10.0):
        """Wait until ``count`` messages are kept; True when they are."""
        with gevent.Timeout(timeout, False):
            while len(self.messages) < count:
                self.arrived.clear()
                self.arrived.wait()
        return len(self.messages) >= count

    # -- one client ----------------------------------------------------------

    def _handle(self, sock, address):
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            _Conversation(self, sock, address[0]).run()
        except (OSError, _Drop):
            pass
        finally:
            self.open -= 1
            sock.close()


class _Drop(Exception):
    pass


class _Conversation:
    def __init__(self, sink, sock, peer):
        self.sink, self.sock, self.peer = sink, sock, peer
        self.file = sock.makefile("rb")
        self.helo, self.tls = "", False
        self.reset()

    def reset(self):
        self.sender, self.recipients = None, []

    def reply(self, stage, normal):
        line = self.sink.faults.get(stage, normal)
        if line == "drop":
            raise _Drop()
        self.sock.sendall(line.encode() + b"\r\n")
        return line[:1] in "23"

    def run(self):
        if self.sink.greeting_delay:
            gevent.sleep(self.sink.greeting_delay)
        if not self.reply("connect", "220 %s ESMTP sink" % self.sink.hostname):
            return
        while True:
            line = self.file.readline(4096)
            if not line:
                return
            verb, _, arg = line.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
            if not self.command(verb.upper(), arg):
                return

    def command(self, verb, arg):
        if verb in ("EHLO", "HELO"):
            self.helo = arg
            self.reset()
            return self.ehlo(verb)
        if verb == "STARTTLS" and self.sink.tls is not None and not self.tls:
            return self.starttls()
        if verb in ("MAIL", "RCPT"):
            self.sink.commands.append("%s %s" % (verb, arg))
        if verb == "MAIL":
            if self.sender is not None:     # as Postfix: a transaction is open
                self.sock.sendall(b"503 5.5.1 Error: nested MAIL command\r\n")
                return True
            self.sender = arg.partition(":")[2].split(" ")[0].strip("<>")
            return self.reply("mail", "250 2.1.0 ok") or self.reset() or True
        if verb == "RCPT":
            if self.reply("rcpt", "250 2.1.5 ok"):
                self.recipients.append(arg.partition(":")[2].split(" ")[0].strip("<>"))
            return True
        if verb == "DATA":
            return self.data()
        if verb == "RSET":
            self.reset()
            return self.reply("rset", "250 2.0.0 ok")
        if verb == "NOOP":
            return self.reply("noop", "250 2.0.0 ok")
        if verb == "QUIT":
            self.reply("quit", "221 2.0.0 bye")
            return False
        return self.reply("unknown", "502 5.5.2 not implemented") or True

    def ehlo(self, verb):
        if verb == "HELO":
            return self.reply("ehlo", "250 %s" % self.sink.hostname)
        keywords = list(self.sink.advertise)
        if self.sink.tls is not None and not self.tls:
            keywords.append("STARTTLS")
        lines = [self.sink.hostname] + keywords
        if "ehlo" in self.sink.faults:
            return self.reply("ehlo", "")
        text = "".join("250%s%s\r\n" % ("-" if n < len(lines) - 1 else " ", item)
                       for n, item in enumerate(lines))
        self.sock.sendall(text.encode())
        return True

    def starttls(self):
        self.sock.sendall(b"220 2.0.0 go ahead\r\n")
        self.sock = self.sink.tls.wrap_socket(self.sock, server_side=True)
        self.file = self.sock.makefile("rb")
        self.tls, self.helo = True, ""
        self.sink.starttls_count += 1
        self.reset()
        return True

    def data(self):
        if not self.recipients:
            self.reply("data-sequence", "503 5.5.1 no recipients")
            return True
        if not self.reply("data", "354 go ahead"):
            self.reset()
            return True
        lines = []
        while True:
            line = self.file.readline(1 << 20)
            if not line:
                raise _Drop()
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        if self.sink.data_delay:
            gevent.sleep(self.sink.data_delay)
        if self.reply("dot", "250 2.0.0 queued"):
            self.sink.messages.append(Received(self.sender, tuple(self.recipients),
                                               b"".join(lines), self.peer, self.helo, self.tls))
            self.sink.arrived.set()
        self.reset()
        return True


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
