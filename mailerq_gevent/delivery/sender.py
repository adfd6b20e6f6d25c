"""One outgoing SMTP connection: connect, EHLO, STARTTLS, one message at a time.

This is the SMTP client and nothing else: which connection a message gets,
and the limits on opening one, are the pool's (``pool.py``).

``Connection`` wraps ``smtplib.SMTP`` (cooperative under ``gevent.monkey``):
it binds the local IP (``source_address``), greets with the mtaname, upgrades
with STARTTLS when the server offers it (``secure``: required, else the
message is not sent in the clear), and sends one message per ``send`` as
MAIL / RCPT / DATA, so every reply is known with the step that gave it
(RFC 5321 §4.2, §3.3). A transaction that ended with the reply to the end
of its data leaves the server reset (RFC 5321 §4.1.1.4), so the next
message starts with MAIL; one left open (a recipient refused after MAIL was
taken) is ended with RSET before the next.

``send`` never raises for what the remote side does: it returns a
``result.Result`` (state, code, enhanced status, text) and marks the connection
unusable (``broken``) after a network error, a timeout, a 421 or a reply it
cannot trust. Certificates are not verified (opportunistic TLS, RFC 7435, as
MTAs do on port 25); ``secure`` only insists that TLS is used.

``recorder`` (the console's live view, ``console.live.Recorder``): when it
records this connection, the socket under smtplib is a ``transcript.TeeSocket``
that tells the recorder every byte sent and received; nothing else changes
(pipelining stays on), and a connection not recorded has a ``ClientSocket``.
"""

import smtplib
import socket
import ssl

import gevent

from mailerq_gevent import logs
from mailerq_gevent.delivery.result import make
from mailerq_gevent.mail.data import stuff
from mailerq_gevent.transcript import NULL_TAP, TeeSocket, binary_file

log = logs.get(__name__)

CONNECT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 300.0     # RFC 5321 §4.5.3.2 suggests minutes; bounded per step here


def network_error(state, exc):
    """The Result of a connection that failed at ``state`` without a reply."""
    what = "timeout" if isinstance(exc, (socket.timeout, gevent.Timeout)) else (
        exc.__class__.__name__)
    return make(state, 0, "%s: %s" % (what, exc) if str(exc) else what, "4.4.2")


def _path(address):
    """``<address>`` for MAIL/RCPT; smtplib's quoting for anything unusual."""
    if any(c in address for c in "<>\r\n\0 \"") or address.startswith("@"):
        return smtplib.quoteaddr(address)
    return "<%s>" % address


def client_context():
    """TLS for port 25: any certificate, TLS 1.2 or newer (RFC 8996)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Connection:
    """An open SMTP session to ``ip``:``port`` from ``localip``."""

    def __init__(self, ip, port, localip=None, ehlo_name="localhost", secure=False,
                 tls_context=None, timeout=COMMAND_TIMEOUT, connect_timeout=CONNECT_TIMEOUT,
                 recorder=None):
        self.ip, self.port, self.localip = ip, port, localip
        self.ehlo_name, self.secure = ehlo_name, secure
        self.tls_context = tls_context
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.smtp = None
        self.tls = False
        self.sent = 0               # messages sent (accepted or not) on this connection
        self.broken = False
        self.open_transaction = False   # MAIL taken and the transaction not ended
        self._state = "connect"
        self.recorder, self.tap = recorder, NULL_TAP        # the live view's tee

    # -- opening -------------------------------------------------------------

    def open(self):
        """Connect, read the greeting, EHLO, STARTTLS. None when ready, else
        the Result saying why not (the connection is then closed)."""
        if self.recorder is not None:
            self.tap = self.recorder.tap("out", "%s:%d" % (self.ip, self.port), self.localip)
        smtp = self.smtp = _Client(self.tap, local_hostname=self.ehlo_name,
                                   timeout=self.connect_timeout, source_address=(
                                       (self.localip, 0) if self.localip else None))
        try:
            code, text = smtp.connect(self.ip, self.port)
        except smtplib.SMTPConnectError as exc:
            return self._failed(make("greeting", exc.smtp_code, exc.smtp_error))
        except (OSError, smtplib.SMTPException) as exc:
            return self._failed(network_error("connect", exc))
        if code != 220:
            return self._failed(make("greeting", code, text))
        smtp.sock.settimeout(self.timeout)
        return self._hello()

    def _hello(self):
        try:
            refused = self._ehlo()
            if refused:
                return self._failed(refused)
            if self.smtp.has_extn("starttls") and self.tls_context is not None:
                refused = self._starttls()
                if refused:
                    return self._failed(refused)
        except (OSError, smtplib.SMTPException) as exc:
            return self._failed(network_error("ehlo" if not self.tls else "starttls", exc))
        if self.secure and not self.tls:
            return self._failed(make("starttls", 0, "TLS required but not offered", "4.7.5"))
        return None

    def _ehlo(self):
        code, text = self.smtp.ehlo()
        if code == 250:
            return None
        code, text = self.smtp.helo()
        return None if code == 250 else make("ehlo", code, text)

    def _starttls(self):
        code, text = self.smtp.docmd("STARTTLS")
        if code != 220:
            return make("starttls", code, text) if self.secure else None
        sock = self.smtp.sock          # a ClientSocket or a TeeSocket: TLS wraps what is under it
        tls = self.tls_context.wrap_socket(sock.raw)
        self.smtp.sock = TeeSocket(tls, sock.tap) if isinstance(sock, TeeSocket) else tls
        self.smtp.file = None
        self.smtp.helo_resp = self.smtp.ehlo_resp = None
        self.smtp.esmtp_features, self.smtp.does_esmtp = {}, False
        self.tls = True
        return self._ehlo()

    def _failed(self, result):
        self.tap.note("%s: %s" % (result.state, result.description))
        self.close(quit=False)
        return result

    # -- sending -------------------------------------------------------------

    def supports(self, keyword):
        return self.smtp is not None and self.smtp.has_extn(keyword)

    def send(self, envelope, recipient, mime, options=(), rcpt_options=()):
        """MAIL (with ``options``), RCPT (with ``rcpt_options``), DATA for one
        recipient: the Result of the step that decided."""
        reset, self.sent = self.open_transaction, self.sent + 1
        smtp = self.smtp
        if "SMTPUTF8" in options:
            smtp.command_encoding = "utf-8"     # as smtplib's mail() does
        # the commands without smtplib's mail()/rcpt(), whose quoteaddr()
        # parses every address again (RFC 5322 parsing, costly per message):
        # these addresses were validated when the message was queued
        mail = "MAIL FROM:%s%s" % (_path(envelope), "".join(" " + o for o in options))
        rcpt = "RCPT TO:%s%s" % (_path(recipient), "".join(" " + o for o in rcpt_options))
        try:
            if smtp.has_extn("pipelining"):
                result = self._pipelined(reset, mail, rcpt, mime)
            else:
                result = (reset and self._reset()) or self._one_by_one(mail, rcpt, mime)
        except smtplib.SMTPResponseException as exc:     # data() without a 354
            result = make(self._state, exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPException) as exc:
            result = network_error(self._state, exc)
        if result.code == 0 or result.code == 421:
            self.broken = True
        return result

    def _one_by_one(self, mail, rcpt, mime):
        smtp = self.smtp
        self._state = "mail"
        smtp.putcmd(mail)
        code, text = smtp.getreply()
        if code != 250:
            return make("mail", code, text)
        self.open_transaction = True
        self._state = "rcpt"
        smtp.putcmd(rcpt)
        code, text = smtp.getreply()
        if code not in (250, 251):
            self._reset()
            return make("rcpt", code, text)
        self._state = "data"
        code, text = smtp.data(mime)
        self.open_transaction = False   # data() without a 354 raises, and RSET comes next
        return make("data", code, text)

    def _pipelined(self, reset, mail, rcpt, mime):
        """RFC 2920: [RSET,] MAIL, RCPT and DATA in one write, their replies
        read in order, then the message: two round trips instead of four."""
        smtp = self.smtp
        lines = (["RSET"] if reset else []) + [mail, rcpt, "DATA"]
        if any(c in line for line in lines for c in "\r\n"):
            raise ValueError("a CR or LF in a command")
        smtp.send("".join(line + "\r\n" for line in lines))
        self._state = "mail"
        if reset:
            code, text = smtp.getreply()
            if code != 250:
                self.broken = True      # the server's state is unknown: not reused
                return make("mail", code, text)
        replies = [smtp.getreply() for _ in range(3)]
        (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
        self.open_transaction = mail_code == 250   # until the reply to the end of data
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            smtp.send(b".\r\n")       # a server that took DATA anyway: end it empty
            smtp.getreply()
        if mail_code != 250:
            return make("mail", mail_code, mail_text)
        if rcpt_code not in (250, 251):
            return make("rcpt", rcpt_code, rcpt_text)
        self._state = "data"
        if data_code != 354:
            return make("data", data_code, data_text)
        smtp.send(stuff(mime) + (b"" if mime.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, text = smtp.getreply()
        self.open_transaction = False
        return make("data", code, text)

    def _reset(self):
        try:
            code, text = self.smtp.rset()
        except (OSError, smtplib.SMTPException) as exc:
            self.broken = True
            return network_error("mail", exc)
        if code != 250:
            self.broken = True
            return make("mail", code, text)
        self.open_transaction = False
        return None

    @property
    def usable(self):
        return self.smtp is not None and not self.broken

    def close(self, quit=True):
        """QUIT (when ``quit`` and the connection is sound) and close; idempotent."""
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        tap, self.tap = self.tap, NULL_TAP
        if quit and not self.broken and smtp.sock is not None:
            try:
                with gevent.Timeout(5, False):
                    smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
        smtp.close()
        tap.end()


class _Client(smtplib.SMTP):
    """smtplib's client, its socket a ``TeeSocket`` when the live view records
    it, else a ``ClientSocket``."""

    def __init__(self, tap, **options):
        self.tap = tap
        super().__init__(**options)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        return ClientSocket(sock) if self.tap is NULL_TAP else TeeSocket(sock, self.tap)


class ClientSocket:
    """gevent's socket as an SMTP client talks over it: a request, then its
    reply. ``sendall`` tries the OS socket once (a command or a message the
    socket buffer takes: one system call, where gevent's ``sendall`` asks for
    SO_SNDBUF first and slices a memoryview), gevent's for the rest; the read
    after a send waits for the socket to be readable first (the reply cannot
    be there yet), where gevent's ``recv_into`` fails a system call and raises
    first (the server's ``smtpd.wire.TurnSocket`` does the same on its side).
    Waits are gevent's, with the socket's timeout. ``raw`` is the gevent
    socket, for TLS to wrap; anything else is its own."""

    __slots__ = ("raw", "_os", "_sent")

    def __init__(self, raw):
        self.raw = raw
        self._os = raw._sock        # non-blocking: gevent made it so
        self._sent = False          # a request went out since the last read

    def sendall(self, data):
        self._sent = True
        try:
            sent = self._os.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.raw.sendall(memoryview(data)[sent:])

    def recv_into(self, buffer):
        raw = self.raw
        if self._sent:
            self._sent = False
            raw._wait(raw._read_event)
        while True:
            try:
                return self._os.recv_into(buffer)
            except BlockingIOError:
                raw._wait(raw._read_event)

    def makefile(self, mode="rb", *args, **kwargs):
        return binary_file(self, mode)

    def __getattr__(self, name):
        return getattr(self.raw, name)
