"""The SMTP server under test, in this process on a free loopback port, with a
real embedded queue in tmp_path; and a raw client that sees the exact bytes."""

import json
import socket
import ssl

import pytest
from gevent import monkey

from mailerq_gevent import certificates, config
from mailerq_gevent.broker import Broker, backend
from mailerq_gevent.broker.storage import list_messages
from mailerq_gevent.connections import ConnectionBudget
from mailerq_gevent.smtpd.server import SMTPServer
from tests.rows import snapshot

HOSTNAME = "mx.test.example"


def _sent_early(address, data, timeout):
    blocking = monkey.get_original("socket", "socket")()
    blocking.settimeout(timeout)
    blocking.connect(address)
    blocking.sendall(data)
    sock = socket.socket(fileno=blocking.detach())
    sock.settimeout(timeout)
    return sock


class Running:
    """A started SMTPServer and what the tests need to look at."""

    def __init__(self, tmp_path, settings_rows=None, authenticator=None, tls=True,
                 queue_file="queue.sqlite", **conf):
        self.queue_path = tmp_path / queue_file     # its own: a queue file has one owner
        values = dict(smtp_port=(0,), smtp_ip="127.0.0.1", smtp_hostname=HOSTNAME,
                      smtp_timeout=10.0, rabbitmq_address="sqlite:///%s" % self.queue_path,
                      rabbitmq_inbox="inbox")
        values.update(conf)
        self.conf = config.defaults().replace(**values)
        self.backend = backend(self.conf.rabbitmq_address)    # its store takes fault hooks
        self.broker = Broker(self.conf.rabbitmq_address, backend=self.backend)
        self.broker.start(["inbox", "local"])
        self.snapshot = snapshot(settings_rows)
        context = certificates.server_context("", "", var_dir=str(tmp_path)) if tls else None
        self.budget = ConnectionBudget.from_config(self.conf)
        self.server = SMTPServer(self.conf, self.broker, lambda: self.snapshot, self.budget,
                                 authenticator=authenticator, tls_context=context)
        self.server.auth_failure_delay = 0.05
        self.server.start()
        self.port = self.server.addresses[0][1]

    def secure_port(self):
        return [port for _, port, secure in self.server.addresses if secure][0]

    def stop(self):
        self.server.stop(5)
        self.broker.stop(5)

    def queued(self, queue="inbox"):
        """The JSON messages committed to ``queue`` (ready, not delayed), in order."""
        return [json.loads(row.body) for row in list_messages(str(self.queue_path), queue)
                if not row.not_before]


@pytest.fixture
def smtp(tmp_path):
    """``smtp(**options)`` starts a server (see ``Running``); all stop at the end."""
    started = []

    def start(**options):
        # a file of its own beside the other servers' and the console's
        started.append(Running(tmp_path, queue_file="smtp-%d.sqlite" % len(started), **options))
        return started[-1]
    yield start
    for running in started:
        running.stop()


class Raw:
    """A client that sends and reads exact bytes."""

    def __init__(self, port, host="127.0.0.1", greeting=True, timeout=10, early=None):
        """``early``: bytes that are in the server's socket before the server
        has run at all (sent with blocking system calls, during which the hub,
        and so the server in this process, does not run)."""
        if early is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = _sent_early((host, port), early, timeout)
        self.buffer = b""
        if greeting:
            self.greeting = self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def command(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def reply(self):
        """One whole reply (all its lines), as bytes."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def _line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed after %r" % self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def is_closed(self):
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def starttls(self):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)

    def hello(self, name=b"client.example"):
        return self.command(b"EHLO " + name)

    def begin_data(self, sender=b"a@example.com", recipients=(b"b@example.org",)):
        """EHLO, then MAIL, RCPT and DATA in one write; returns once the 354 is in."""
        self.hello()
        lines = [b"MAIL FROM:<" + sender + b">"] + [
            b"RCPT TO:<" + recipient + b">" for recipient in recipients] + [b"DATA"]
        self.send(b"\r\n".join(lines) + b"\r\n")
        codes = [self.reply()[:3] for _ in lines]
        assert codes == [b"250"] * (len(lines) - 1) + [b"354"], codes

    def send_message(self, content, **envelope):
        """A whole transaction (``begin_data``); returns the reply to the final dot."""
        self.begin_data(**envelope)
        self.send(content + b".\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def message(subject="test", body="Hello.\r\n", extra=""):
    return ("From: a@example.com\r\nTo: b@example.org\r\nSubject: %s\r\n%s\r\n%s" % (
        subject, extra, body)).encode()
