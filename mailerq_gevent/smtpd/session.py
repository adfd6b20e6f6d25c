"""One inbound SMTP session: the RFC 5321 state machine, a method per verb.

Per-connection state (HELO name, TLS, the authenticated user, error counts)
lives on the ``Session``; per-transaction state in its ``Envelope``, so RSET,
EHLO and STARTTLS drop only the envelope (STARTTLS drops the rest as well).
Handlers return a ``Reply`` (or None when they have answered already); only
``_send`` writes, and replies go out when the session next waits for the
client, so a pipelined group (RFC 2920) is answered in one write.

Protocol hygiene, each with its own test: a command line must end in CRLF and
hold no NUL or bare CR; a client that talks before the greeting, or sends
message content before the 354 to DATA, breaks RFC 2920 and gets
``554 5.5.0`` and the connection is closed (as Postfix and Exim do);
STARTTLS drops whatever plaintext came after it (CVE-2011-0411) and forgets
HELO and AUTH; AUTH is offered only inside TLS (or, if ``smtp-auth-plaintext``
is on, to a loopback client). Too many errors or failed logins end the session.
"""

import ipaddress
import ssl
import time

import gevent

from mailerq_gevent import logs
from mailerq_gevent.broker import BrokerError
from mailerq_gevent.mail import addresses
from mailerq_gevent.message import new_id
from mailerq_gevent.smtpd import auth, message, paths, proxy, reply
from mailerq_gevent.smtpd.wire import Closed, LineTooLong, ReadTimeout, TooBig, Wire

log = logs.get(__name__)

COMMAND_LIMIT = 512             # RFC 5321 §4.5.3.1.4, CRLF included
AUTH_LIMIT = 12288              # RFC 4954 §4
MAX_RECIPIENTS = 1000
MAX_ERRORS = 20
MAX_AUTH_FAILURES = 3


class ShuttingDown(BaseException):
    """Raised into an idle session when the server stops."""


class Envelope:
    __slots__ = ("sender", "params", "recipients", "utf8", "snapshot")

    def __init__(self, sender, params, snapshot):
        self.sender, self.params, self.snapshot = sender, params, snapshot
        self.recipients = []
        self.utf8 = "SMTPUTF8" in params


class Session:
    VERBS = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP",
             "STARTTLS", "AUTH")

    def __init__(self, server, sock, peer_ip, local_ip, implicit_tls=False):
        self.server, self.conf = server, server.conf
        self.wire = Wire(sock, self.conf.smtp_timeout)
        self.max_size = self.conf.smtp_maxsize
        self.validation = self.conf.smtp_validate_address
        self.peer_ip, self.local_ip = peer_ip, local_ip
        self.implicit_tls, self.tls = implicit_tls, False
        self.hostname = None
        self.helo, self.esmtp, self.user, self.envelope = None, False, None, None
        self.errors = self.auth_failures = 0
        self.idle = False           # waiting for a command (not inside DATA)

    # -- the connection -------------------------------------------------------

    def run(self):
        try:
            if self.implicit_tls:
                self.wire.start_tls(self.server.tls_context)
                self.tls = True
            self._converse()
        except ReadTimeout:
            self._send(reply.TIMEOUT.format(host=self.hostname or "-"))
        except ShuttingDown:
            self._send(reply.SHUTTING_DOWN)
        except (Closed, OSError, ssl.SSLError, EOFError):
            pass
        finally:
            self._close()

    def _converse(self):
        answer = self._opening()
        while answer is None or not answer.close:
            if answer is not None:
                self._send(answer)
            answer = self._next_command()
        self._send(answer)

    def _opening(self):
        if self.server.behind_proxy(self.peer_ip):
            self._read_proxy_header()
        if self.server.recorder is not None:       # the live view: a tee at the Wire
            self.wire.tap = self.server.recorder.tap("in", self.peer_ip, self.local_ip)
        self.hostname = self.server.hostname_for(self.local_ip)
        if not self.server.allowed(self.peer_ip):
            log.info("smtp.refused", client=self.peer_ip, reason="smtp-range")
            return reply.ACCESS_DENIED.format(ip=self.peer_ip)
        if self.server.protection.blocked(self.peer_ip):
            return reply.BLOCKED
        if self.wire.buffered():
            log.info("smtp.sync_error", client=self.peer_ip, stage="before greeting")
            return reply.SYNC_ERROR
        return reply.greeting(self.hostname)

    def _read_proxy_header(self):
        """Take the real addresses from the PROXY header; a bad one ends the connection."""
        try:
            real = proxy.read_header(self.wire)
        except (proxy.ProxyError, LineTooLong) as exc:
            log.warning("smtp.proxy_refused", proxy=self.peer_ip, detail=str(exc))
            raise Closed() from None
        if real is not None:
            self.peer_ip, self.local_ip = real

    def _close(self):
        try:
            self.wire.flush()
        except (OSError, ssl.SSLError):
            pass
        try:
            self.wire.close()
        except OSError:
            pass

    def _send(self, answer):
        self.wire.send(answer.encode())

    def challenge(self, answer):
        """Send a 334 challenge and return the client's line (for AUTH)."""
        self._send(answer)
        line = self.wire.readline(AUTH_LIMIT)
        if not line.endswith(b"\r\n"):
            raise Closed()
        return line[:-2].decode("ascii", "replace").strip()

    # -- commands -------------------------------------------------------------

    def _next_command(self):
        if self.server.stopping:
            return reply.SHUTTING_DOWN
        self.idle = True
        try:
            line = self.wire.readline(AUTH_LIMIT)
        except LineTooLong:
            return self._error(reply.LINE_TOO_LONG)
        finally:
            self.idle = False
        return self.dispatch(line)

    def dispatch(self, raw):
        if not raw.endswith(b"\r\n") or b"\0" in raw or b"\r" in raw[:-2]:
            return self._error(reply.BAD_CHARACTER)
        try:
            text = raw[:-2].decode("utf-8")
        except UnicodeDecodeError:
            return self._error(reply.BAD_CHARACTER)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        handler = HANDLERS.get(verb)
        if handler is None:
            return self._error(reply.UNKNOWN_COMMAND)
        if len(raw) > COMMAND_LIMIT and verb != "AUTH":
            return self._error(reply.LINE_TOO_LONG)
        answer = handler(self, argument)
        if answer is not None and answer.code >= 500 and answer.code != 554:
            return self._error(answer)
        return answer

    def _error(self, answer):
        self.errors += 1
        return reply.TOO_MANY_ERRORS if self.errors > MAX_ERRORS else answer

    def do_ehlo(self, argument):
        return self._hello(argument, esmtp=True)

    def do_helo(self, argument):
        return self._hello(argument, esmtp=False)

    def _hello(self, argument, esmtp):
        name = argument.strip()
        if not name or " " in name:
            return reply.SYNTAX.format(usage="%s hostname" % ("EHLO" if esmtp else "HELO"))
        self.helo, self.esmtp, self.envelope = name, esmtp, None
        if not esmtp:
            return reply.HELO.format(host=self.hostname)
        starttls = self.server.tls_context is not None and not self.tls
        with_auth = (self.server.authenticator is not None and self.user is None and
                     self._may_auth())
        return reply.ehlo(self.hostname, self.max_size, starttls, with_auth)

    def _may_auth(self):
        if self.tls:
            return True
        return self.conf.smtp_auth_plaintext and ipaddress.ip_address(self.peer_ip).is_loopback

    def do_mail(self, argument):
        if not self.helo:
            return reply.NEED_HELO
        if self.envelope is not None:
            return reply.NESTED_MAIL
        parsed = self._parse_path(argument, sender=True)
        if isinstance(parsed, reply.Reply):
            return parsed
        path, params = parsed
        problem = self._mail_params(params)
        if problem is None and path.address:
            problem = self._check_address(path.address, "SMTPUTF8" in params, sender=True)
        if problem is not None:
            return problem
        self.envelope = Envelope(path.address, params, self.server.settings())
        return reply.SENDER_OK

    def _parse_path(self, argument, sender):
        """``(path, params)`` of MAIL FROM (``sender``) or RCPT TO, or the Reply refusing it."""
        keyword = "FROM" if sender else "TO"
        try:
            return paths.parse_command(argument, keyword, self._strict)
        except addresses.AddressError as exc:
            return self._bad_address(exc, sender)
        except ValueError:
            return reply.SYNTAX.format(usage="%s %s:<address>" % (
                "MAIL" if sender else "RCPT", keyword))

    @property
    def _strict(self):
        return self.validation == "strict"

    def _mail_params(self, params):
        for name, value in params.items():
            if name == "SIZE":
                if not (value or "").isdigit():
                    return reply.BAD_PARAMETER.format(name=name)
                if int(value) > self.max_size:
                    return reply.TOO_BIG
            elif name == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    return reply.BAD_PARAMETER.format(name=name)
            elif name in ("SMTPUTF8",):
                if value is not None:
                    return reply.BAD_PARAMETER.format(name=name)
            elif name == "RET":
                if (value or "").upper() not in ("FULL", "HDRS"):
                    return reply.BAD_PARAMETER.format(name=name)
            elif name not in ("ENVID", "AUTH") or value is None:
                return (reply.UNKNOWN_PARAMETER if name not in ("ENVID", "AUTH")
                        else reply.BAD_PARAMETER).format(name=name)
        return None

    def _check_address(self, address, utf8, sender):
        try:
            addresses.validate(address, self.validation, utf8)
        except addresses.AddressError as exc:
            return self._bad_address(exc, sender)
        return None

    def _bad_address(self, exc, sender):
        if isinstance(exc, addresses.NeedsSmtpUtf8):
            return reply.NEEDS_SMTPUTF8
        digit = 7 if sender else 3
        return reply.BAD_ADDRESS.format(digit=digit, what=exc.what)

    def do_rcpt(self, argument):
        if self.envelope is None:
            return reply.NEED_MAIL
        if len(self.envelope.recipients) >= MAX_RECIPIENTS:
            return reply.TOO_MANY_RECIPIENTS
        parsed = self._parse_path(argument, sender=False)
        if isinstance(parsed, reply.Reply):
            return parsed
        path, params = parsed
        problem = self._rcpt_params(params) or self._check_recipient(path)
        if problem is not None:
            return problem
        self.envelope.recipients.append((path, params))
        return reply.RECIPIENT_OK

    def _rcpt_params(self, params):
        for name, value in params.items():
            if name == "NOTIFY":
                items = set((value or "").upper().split(","))
                if not addresses.valid_notify(items):
                    return reply.BAD_PARAMETER.format(name=name)
            elif name == "ORCPT":
                if not value or ";" not in value:
                    return reply.BAD_PARAMETER.format(name=name)
            else:
                return reply.UNKNOWN_PARAMETER.format(name=name)
        return None

    def _check_recipient(self, path):
        address = path.address
        if not address:
            return reply.BAD_ADDRESS.format(digit=3, what="empty recipient")
        if address.lower() != "postmaster":
            problem = self._check_address(address, self.envelope.utf8, sender=False)
            if problem is not None:
                return problem
        return self.server.relay_check(self, path)

    def do_data(self, argument):
        if self.envelope is None:
            return reply.NEED_MAIL
        if not self.envelope.recipients:
            return reply.NEED_RCPT
        if argument.strip():
            return reply.SYNTAX.format(usage="DATA")
        if self.wire.buffered():
            log.info("smtp.sync_error", client=self.peer_ip, stage="content before 354")
            return reply.SYNC_ERROR
        self._send(reply.START_DATA)
        envelope, self.envelope = self.envelope, None
        try:
            content = self.wire.read_data(self.max_size)
        except TooBig:
            return reply.TOO_BIG
        return self._queue(envelope, content)

    def _queue(self, envelope, content):
        tx = message.Transaction(
            queue_id=new_id(), sender=envelope.sender,
            mail_params=envelope.params, recipients=envelope.recipients, helo=self.helo,
            esmtp=self.esmtp, tls=self.tls, user=self.user, peer_ip=self.peer_ip,
            local_ip=self.local_ip, hostname=self.hostname,
            received_at=time.time(), ips=self.server.outgoing_ips(self.local_ip))
        checks = self.server.checks
        results = checks.run(self.peer_ip, self.helo, tx.sender, content) if checks else None
        try:
            items = message.build(tx, content, self.conf, envelope.snapshot, results)
            self.server.broker.publish_many(items)
        except message.BadHeader as exc:
            return reply.Reply(554, "5.6.0", "Error: %s" % exc)
        except BrokerError as exc:
            log.error("smtp.queue_failed", id=tx.queue_id, client=self.peer_ip,
                      detail=str(exc)[:300])
            return reply.QUEUE_DOWN
        except Exception:  # noqa: BLE001 - a surprise is transient: 451, never a lost 250
            log.exception("smtp.queue_error", id=tx.queue_id, client=self.peer_ip)
            return reply.LOCAL_ERROR
        log.info("smtp.queued", id=tx.queue_id, client=self.peer_ip, sender=tx.sender,
                 recipients=len(tx.recipients), size=len(content), user=self.user or "")
        return reply.QUEUED.format(id=tx.queue_id)

    def do_rset(self, argument):
        self.envelope = None
        return reply.OK

    def do_noop(self, argument):
        return reply.OK

    def do_quit(self, argument):
        return reply.BYE

    def do_vrfy(self, argument):
        if not argument.strip():
            return reply.SYNTAX.format(usage="VRFY address")
        return reply.VRFY

    def do_help(self, argument):
        return reply.HELP

    def do_starttls(self, argument):
        if self.tls:
            return reply.TLS_ACTIVE
        if self.server.tls_context is None:
            return reply.TLS_UNAVAILABLE
        if argument.strip():
            return reply.SYNTAX.format(usage="STARTTLS")
        self._send(reply.READY_TLS)
        self.wire.start_tls(self.server.tls_context)
        self.tls = True
        self.helo, self.esmtp, self.user, self.envelope = None, False, None, None
        return None

    def do_auth(self, argument):
        refusal = self._auth_refusal()
        if refusal is not None:
            return refusal
        answer = auth.exchange(self, argument)
        if isinstance(answer, reply.Reply):
            return answer
        user, password = answer
        if password is not None and self.server.authenticator.check(user, password):
            self.user = user
            log.info("smtp.auth_ok", client=self.peer_ip, user=user)
            return reply.AUTH_OK
        return self._auth_failed(user)

    def _auth_refusal(self):
        if self.server.authenticator is None:
            return reply.NOT_IMPLEMENTED
        if not self.helo:
            return reply.NEED_HELO
        if self.user is not None:
            return reply.ALREADY_AUTHENTICATED
        if self.envelope is not None:
            return reply.AUTH_IN_TRANSACTION
        if not self._may_auth():
            return reply.ENCRYPTION_REQUIRED
        return None

    def _auth_failed(self, user):
        self.auth_failures += 1
        blocked = self.server.protection.failed(self.peer_ip)
        log.warning("smtp.auth_failed", client=self.peer_ip, user=user[:100],
                    failures=self.auth_failures, blocked=blocked)
        gevent.sleep(self.server.auth_failure_delay)
        if blocked or self.auth_failures >= MAX_AUTH_FAILURES:
            return reply.TOO_MANY_AUTH_FAILURES
        return reply.AUTH_FAILED


# the verb -> method table, built once
HANDLERS = {verb: getattr(Session, "do_" + verb.lower()) for verb in Session.VERBS}
