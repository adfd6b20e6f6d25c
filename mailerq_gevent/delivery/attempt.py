"""One delivery attempt of one message: over the route's targets, within the throttles.

``Attempts.run(job)`` walks the targets of the job's route in order and
returns either the ``Result`` that decided the message (the remote side's
answer, or the network error of the last target tried) or a
``Throttled(delay)``: a limit is reached, so the message goes back to the
queue for ``delay`` seconds instead of waiting here (no head-of-line
blocking: a slow or limited domain never holds a sender another could use).

For each target:

* ``paused`` for (local IP, domain, remote IP): skipped;
* a connection from the pool (``pool.py``: reuse, the connection limits and
  ``smtp-connections-out``);
* ``domain_maxmessages``/``ip_maxmessages`` (per minute);
* the MIME made fit for that server (``mime.prepare``) and signed
  (``signing``), then MAIL / RCPT / DATA.

A target that fails before MAIL (no connection, a refusing greeting, TLS
required and missing) lets the next one try; once a server has answered MAIL
the attempt is decided.
"""

from mailerq_gevent import signing
from mailerq_gevent.delivery import dsn as dsn_module, headers as header_changes
from mailerq_gevent.delivery import mime as mime_module, result
from mailerq_gevent.delivery.pool import Throttled

EARLY_STATES = ("connect", "greeting", "ehlo", "starttls")


class Job:
    """What an attempt needs to know of one message (a ``message.Message``)."""

    __slots__ = ("settings", "message", "envelope", "recipient", "domain", "localip",
                 "capacity", "route", "remote")

    def __init__(self, settings, message, domain, localip, capacity, route):
        self.settings, self.message, self.domain = settings, message, domain
        self.envelope, self.recipient = message.envelope, message.recipient
        self.localip, self.capacity, self.route = localip, capacity, route
        self.remote = ""        # the remote IP (or host) the attempt ended at


class Attempts:
    """``pool`` a ``pool.ConnectionPool``, ``throttles`` its ``Throttles``."""

    def __init__(self, pool, throttles, signer):
        self.pool, self.throttles, self.signer = pool, throttles, signer

    def run(self, job):
        """The deciding ``Result``, or ``Throttled``; see the module docstring."""
        last = None
        paused = 0
        for target in job.route.targets:
            if job.settings.is_paused(job.localip, job.domain, target.ip):
                paused += 1
                continue
            job.remote = target.ip
            outcome = self._at_target(job, target)
            if isinstance(outcome, Throttled) or outcome.state not in EARLY_STATES:
                return outcome
            last = outcome
        if last is None and paused:
            return Throttled(0.0, "paused")
        return last or result.make("connect", 0, "no target to try", "4.4.4")

    def _at_target(self, job, target):
        conn = self.pool.acquire(job, target)
        if isinstance(conn, (Throttled, result.Result)):
            return conn
        wait = self.throttles.admit_message(job.localip, job.domain, target.ip, job.capacity)
        if wait > 0:
            self.pool.release(conn)
            return Throttled(wait, "messages")
        try:
            outcome = self._send(job, conn)
        except BaseException:
            self.pool.release(conn, reusable=False)     # in an unknown state: not reused
            raise
        self.pool.release(conn)
        return outcome

    # -- the transaction -------------------------------------------------------

    def _send(self, job, conn):
        message = job.message
        raw = header_changes.apply(message.mime, message.headers, message.id)
        eight_bit = mime_module.has_8bit(raw)
        options = []
        if mime_module.needs_smtputf8(job.envelope, job.recipient):
            if not conn.supports("smtputf8"):
                return result.make("mail", 0, "the server does not take internationalised "
                                              "addresses (no SMTPUTF8)", "5.6.7")
            options.append("SMTPUTF8")
        if eight_bit and conn.supports("8bitmime"):
            options.append("BODY=8BITMIME")
        rcpt_options = ()
        if message.dsn and conn.supports("dsn"):    # RFC 3461 §6.2: pass them on
            mail_dsn, rcpt_options = dsn_module.smtp_parameters(message.dsn)
            options += mail_dsn
        data = mime_module.prepare(raw, eight_bit_ok=conn.supports("8bitmime"))
        data = self._sign(job, data)
        return conn.send(job.envelope, job.recipient, data, options, rcpt_options)

    def _sign(self, job, data):
        settings, extra = job.settings, job.message.dkim
        if not (extra or settings.dkim_pattern_rows or settings.dkim_domain_rows):
            return data
        keys = signing.keys_for(settings, signing.from_address(data), extra)
        return self.signer.sign(data, keys) if keys else data
