"""One delivery attempt of one message: over the route's targets, within the throttles.

``Attempts.run(job)`` walks the targets of the job's route in order and
returns either the ``sender.Attempt`` that decided the message (the remote
side's answer, or the network error of the last target tried) or a
``Throttled(delay)``: a limit is reached, so the message goes back to the
queue for ``delay`` seconds instead of waiting here (no head-of-line
blocking: a slow or limited domain never holds a sender another could use).

For each target (SPEC §7):

* ``paused`` for (local IP, domain, remote IP): skipped;
* a connection: an idle one to that (local IP, remote IP, port) when there is
  one, else a new one, within ``domain_maxconnects``/``ip_maxconnects`` (per
  minute), ``domain_maxconnections``/``ip_maxconnections`` (at once) and the
  daemon's ``smtp-connections-out``;
* ``domain_maxmessages``/``ip_maxmessages`` (per minute);
* the MIME made fit for that server (``mime.prepare``) and signed
  (``signing``), then MAIL / RCPT / DATA.

A target that fails before MAIL (no connection, a refusing greeting, TLS
required and missing) lets the next one try; once a server has answered MAIL
the attempt is decided.
"""

import time


from mailerq_gevent import logs, signing
from mailerq_gevent.delivery import dsn as dsn_module, headers as header_changes
from mailerq_gevent.delivery import mime as mime_module, routing
from mailerq_gevent.delivery.sender import Attempt, Connection

log = logs.get(__name__)

SLOT_WAIT = 2.0         # seconds a message may wait here for a connection slot
SLOT_POLL = 0.1         # seconds between looks for a free slot (a close hands nothing over)
MAX_SLOT_WAITERS = 8    # per (local IP, domain): beyond them, back to the queue
BUSY_DELAY = 5.0        # requeue delay when no connection slot came free in time
SOFT_CONNECTIONS = 20   # open to one server before a message first waits for one to come back
SOFT_WAIT = 0.25        # past them, one more connection at most this often
EARLY_STATES = ("connect", "greeting", "ehlo", "starttls")


class Throttled:
    """The message must wait ``delay`` seconds (``reason`` for the log)."""

    __slots__ = ("delay", "reason")

    def __init__(self, delay, reason):
        self.delay, self.reason = delay, reason

    def __repr__(self):
        return "<Throttled %.2fs %s>" % (self.delay, self.reason)


class Job:
    """What an attempt needs to know of one message."""

    __slots__ = ("settings", "message", "envelope", "recipient", "domain", "localip",
                 "capacity", "route", "remote")

    def __init__(self, settings, message, domain, localip, capacity, route):
        self.settings, self.message, self.domain = settings, message, domain
        self.envelope = message.get("envelope") or ""
        self.recipient = message.get("recipient") or ""
        self.localip, self.capacity, self.route = localip, capacity, route
        self.remote = ""        # the remote IP (or host) the attempt ended at


class _Slots:
    """The connection's throttle slot and its share of ``smtp-connections-out``,
    counted in ``Attempts.open_to`` while held."""

    def __init__(self, slot, attempts, server):
        self.slot, self.attempts, self.server = slot, attempts, server
        attempts.open_to[server] = attempts.open_to.get(server, 0) + 1

    def release(self):
        if self.slot is not None:
            self.slot.release()
            self.slot = None
            attempts = self.attempts
            attempts.budget.release_outbound()
            attempts.open_to[self.server] -= 1
            if not attempts.open_to[self.server]:
                del attempts.open_to[self.server]
                attempts._opened_at.pop(self.server, None)


class Attempts:
    def __init__(self, throttles, idle, budget, signer, hostname, tls_context=None,
                 command_timeout=300.0, connect_timeout=30.0, clock=time.monotonic,
                 recorder=None):
        self.throttles, self.idle, self.budget = throttles, idle, budget
        self.recorder = recorder    # live view hook (console.live), handed to each Connection
        self.signer, self.hostname, self.tls_context = signer, hostname, tls_context
        self.command_timeout, self.connect_timeout = command_timeout, connect_timeout
        self.clock = clock
        self.open_to = {}       # (localip, ip, port) -> connections open to that server
        self._waiters = {}      # (localip, domain) -> greenlets waiting for a connection
        self._opened_at = {}    # (localip, ip, port) -> when the last connection to it was opened

    @property
    def connections(self):
        """Outgoing connections open now (busy or idle)."""
        return sum(self.open_to.values())

    def run(self, job):
        """The deciding ``Attempt``, or ``Throttled``; see the module docstring."""
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
        return last or Attempt("connect", 0, "no target to try", "4.4.4")

    # -- one target ------------------------------------------------------------

    def _at_target(self, job, target):
        conn = self._connection(job, target)
        if not isinstance(conn, Connection):
            return conn                                 # Throttled or a failed Attempt
        wait = self.throttles.admit_message(job.localip, job.domain, target.ip, job.capacity)
        if wait > 0:
            self._give_back(job, conn)
            return Throttled(wait, "messages")
        try:
            attempt = self._send(job, conn)
        finally:
            self._give_back(job, conn)
        return attempt

    def _give_back(self, job, conn):
        """Back to a waiting message, to the idle cache, or closed."""
        self.idle.give(conn, job.capacity)

    def _connection(self, job, target):
        """An idle connection, a new one, or why there is none (Throttled, Attempt).

        Past ``SOFT_CONNECTIONS`` open to the server, a new one is opened at
        most every ``SOFT_WAIT`` seconds; meanwhile a message waits for one
        to be handed over (reusing a connection is far cheaper than a new
        handshake, and receivers limit how many they take; a slow server
        still gets more in time, so the table's limits stay the only hard
        ones). When the pair's limits allow no new connection, a few
        messages wait here (``MAX_SLOT_WAITERS``) for one to come back; the
        rest go back to the queue, so waiting never blocks other domains."""
        key, server = (job.localip, job.domain), (job.localip, target.ip, target.port)
        deadline = None
        while True:
            conn = self.idle.take(*server)
            if conn is not None:
                return conn
            if self._crowded(server):
                conn = self.idle.wait(*server, timeout=SOFT_WAIT)
                if conn is not None:
                    return conn
                continue
            slots = self._try_slots(job, target)
            if slots is not None:
                self._opened_at[server] = self.clock()
                return self._open(job, target, slots)
            if deadline is None:
                if self._waiters.get(key, 0) >= MAX_SLOT_WAITERS:
                    return Throttled(BUSY_DELAY, "connections")
                deadline = self.clock() + SLOT_WAIT
            elif self.clock() >= deadline:
                return Throttled(BUSY_DELAY, "connections")
            conn = self._wait_for_slot(key, server)
            if conn is not None:
                return conn

    def _crowded(self, server):
        return (self.open_to.get(server, 0) >= SOFT_CONNECTIONS and
                self.clock() - self._opened_at.get(server, 0.0) < SOFT_WAIT)

    def _wait_for_slot(self, key, server):
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            return self.idle.wait(*server, timeout=SLOT_POLL)
        finally:
            self._waiters[key] -= 1
            if not self._waiters[key]:
                del self._waiters[key]

    def _open(self, job, target, slots):
        wait = self.throttles.admit_connect(job.localip, job.domain, target.ip, job.capacity)
        if wait > 0:
            slots.release()
            return Throttled(wait, "connects")
        conn = Connection(target.ip, target.port, localip=job.localip,
                          ehlo_name=routing.ehlo_name(job.settings, job.localip, self.hostname),
                          secure=job.capacity.secure, tls_context=self.tls_context,
                          timeout=self.command_timeout, connect_timeout=self.connect_timeout,
                          recorder=self.recorder)
        conn.slot = slots
        failed = conn.open()
        return failed if failed is not None else conn

    def _try_slots(self, job, target):
        slot = self.throttles.open_connection(job.localip, job.domain, target.ip, job.capacity)
        if slot is None:
            return None
        if not self.budget.acquire_outbound(timeout=0) and not (
                self.idle.close_one() and self.budget.acquire_outbound(timeout=0)):
            slot.release()
            return None
        return _Slots(slot, self, (job.localip, target.ip, target.port))

    # -- the transaction -------------------------------------------------------

    def _send(self, job, conn):
        raw = job.message.get("mime") or ""
        raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        raw = header_changes.apply(raw, job.message.get("headers"))
        eight_bit = mime_module.has_8bit(raw)
        options = []
        if mime_module.needs_smtputf8(job.envelope, job.recipient):
            if not conn.supports("smtputf8"):
                return Attempt("mail", 553, "the server does not take internationalised "
                                            "addresses (no SMTPUTF8)", "5.6.7")
            options.append("SMTPUTF8")
        if eight_bit and conn.supports("8bitmime"):
            options.append("BODY=8BITMIME")
        rcpt_options = ()
        if job.message.get("dsn") and conn.supports("dsn"):    # RFC 3461 §6.2: pass them on
            mail_dsn, rcpt_options = dsn_module.smtp_parameters(job.message["dsn"])
            options += mail_dsn
        data = mime_module.prepare(raw, eight_bit_ok=conn.supports("8bitmime"))
        data = self._sign(job, data)
        return conn.send(job.envelope, job.recipient, data, options, rcpt_options)

    def _sign(self, job, data):
        settings, extra = job.settings, job.message.get("dkim")
        if not (extra or settings.dkim_pattern_rows or settings.dkim_domain_rows):
            return data
        keys = signing.keys_for(settings, signing.from_address(data), extra)
        return self.signer.sign(data, keys) if keys else data
