"""The delivery engine: consume the outbox, deliver each message, settle it.

``DeliveryEngine`` consumes ``rabbitmq-outbox`` with a prefetch as large as
its pool of sender greenlets, so every message taken is being worked on (none
waits in the process behind another), and takes no further message while
the bodies in hand pass ``IN_HAND_BYTES`` (each is held in three or four
forms while it is sent: 500 messages of 100 KB would be some 200 MB). For
each message:

1. ``nextattempt`` in the future, or the (local IP, domain) pair ``paused``:
   back to the queue with a delay, no attempt counted;
2. the local IP (``ips``/``ip``, round robin by attempt, ``delegates``), the
   capacity (``throttles``: the most specific row, or a flood's), the route
   (``routing``: dns table, smarthost, relay, MX);
3. the attempt (``attempt.Attempts``, connections from ``pool.ConnectionPool``):
   a limit reached gives the message back to the queue for as long as the
   limit says, spread out (``spread.Spread``) so that a backlog returns at
   the limit's pace instead of all at once;
4. the outcome (``outcome.decide``): results, success, failure, retry and DSN
   queues, and for a retry the message itself back to the outbox with its
   delay, all published in one ``publish_many``; only then is the delivery
   acked. A crash before the ack redelivers the message: a duplicate
   delivery is possible, a lost one is not.

A reply that matches ``flood_responses`` switches the pair to that capacity.
Every outcome counts in the per-minute statistics (``stats``), and every
``delivery.*`` log line names the message's queue id (``id=``), as the SMTP
server's ``smtp.queued`` line does.
"""

import functools
import socket
import time

from gevent.event import Event
from gevent.pool import Pool

from mailerq_gevent import logs
from mailerq_gevent.broker import BrokerError, codec
from mailerq_gevent.delivery import outcome, result, routing
from mailerq_gevent.delivery.attempt import Attempts, Job
from mailerq_gevent.delivery.pool import ConnectionPool, Throttled
from mailerq_gevent.delivery.routing import Router, RouteError
from mailerq_gevent.delivery.sender import Connection, client_context
from mailerq_gevent.delivery.spread import Spread
from mailerq_gevent.delivery.throttle import Throttles
from mailerq_gevent.message import Message
from mailerq_gevent.signing import Signer

log = logs.get(__name__)

PAUSED_DELAY = 60.0         # seconds a paused message waits before it is looked at again
ERROR_DELAY = 60.0          # after an unexpected error
DEFAULT_PREFETCH = 500
IN_HAND_BYTES = 32 * 2 ** 20    # queued bodies being delivered at once (one alone always)


class DeliveryEngine:
    def __init__(self, conf, broker, settings, budget, resolver, *, stats=None,
                 router=None, prefetch=None, command_timeout=300.0, connect_timeout=30.0,
                 clock=time.time, monotonic=time.monotonic, recorder=None, signer=None):
        self.conf, self.broker, self.settings = conf, broker, settings
        self.queue = conf.queue("outbox")
        self.stats = stats
        self.clock, self.monotonic = clock, monotonic
        self.hostname = conf.smtp_hostname or socket.getfqdn()
        self.prefetch = prefetch or conf.smtp_connections_out or DEFAULT_PREFETCH
        self.throttles = Throttles(clock=monotonic)
        self.router = router or Router(resolver, relay=conf.relay or None)
        connect = functools.partial(Connection, tls_context=client_context(),
                                    timeout=command_timeout, connect_timeout=connect_timeout,
                                    recorder=recorder)  # live view: a tee per connection
        self.pool = ConnectionPool(self.throttles, budget, connect, self.hostname,
                                   clock=monotonic)
        self.signer = signer or Signer()     # or signers.SignerPool: signing in helpers
        self.attempts = Attempts(self.pool, self.throttles, self.signer)
        self.spread = Spread(clock=monotonic)
        self.senders = Pool(self.prefetch)
        self.in_hand = _Bytes(IN_HAND_BYTES)
        self.consumer = None

    # -- life ------------------------------------------------------------------

    def start(self):
        self.pool.start()
        if self.stats is not None:
            self.stats.start()
        self.consumer = self.broker.consume(self.queue, self._received, prefetch=self.prefetch)
        return self

    def stop(self, timeout=30.0):
        """Stop taking messages, let those in hand finish (up to ``timeout``), close."""
        if self.consumer is not None:
            self.consumer.stop(timeout)
        self.senders.kill(timeout=min(timeout, 5.0))
        self.pool.stop()
        self.signer.stop()
        if self.stats is not None:
            self.stats.stop()

    def _received(self, delivery):
        """In the consumer's greenlet: waiting here (for a sender, or for room
        under ``IN_HAND_BYTES``) takes no further message meanwhile."""
        size = delivery.size
        self.in_hand.take(size)
        self.senders.spawn(self._deliver_sized, delivery, size)

    def _deliver_sized(self, delivery, size):
        try:
            self._deliver(delivery)
        finally:
            self.in_hand.give(size)

    # -- one message -------------------------------------------------------------

    def _deliver(self, delivery):
        try:
            message = Message(delivery.json())
        except codec.CodecError as exc:
            log.error("delivery.bad_message", queue=self.queue, detail=str(exc)[:200])
            delivery.reject()
            return
        try:
            self._deliver_message(delivery, message)
        except BrokerError as exc:
            log.error("delivery.settle_failed", id=message.id, recipient=message.recipient,
                      detail=str(exc)[:200])
            delivery.reject(requeue=True)
        except Exception:  # noqa: BLE001 - a surprise never drops mail
            log.exception("delivery.unexpected_error", id=message.id,
                          recipient=message.recipient)
            self._hold(delivery, message, ERROR_DELAY, changed=False)

    def _deliver_message(self, delivery, message):
        now = self.clock()
        changed = message.mark_queued(now)
        delay = outcome.first_delay(message, now)
        if delay > 0:
            return self._hold(delivery, message, delay, changed)
        domain = message.recipient_domain
        if not domain:
            refused = result.make("local", 0, "no valid recipient address", "5.1.3")
            return self._settle(delivery, message, refused.stamped(now), "", "")
        settings = self.settings()
        localip = routing.choose_local_ip(settings, message.ips, None, domain,
                                          turn=len(message.results))
        if settings.is_paused(localip, domain):
            return self._hold(delivery, message, PAUSED_DELAY, changed)
        try:
            route = self.router.route(settings, domain, message.smarthost)
        except RouteError as exc:
            failed = result.make("dns", 0, exc.description, exc.status)
            return self._settle(delivery, message, failed.stamped(now, localip, domain),
                                localip, domain)
        capacity = self.throttles.effective_capacity(settings, localip, domain)
        self._attempt(delivery, Job(settings, message, domain, localip, capacity, route), changed)

    def _attempt(self, delivery, job, changed):
        """The attempt of ``job``; then the message is held or settled."""
        message, localip, domain = job.message, job.localip, job.domain
        got = self.attempts.run(job)
        if isinstance(got, Throttled):
            delay = PAUSED_DELAY if got.reason == "paused" else self.spread.delay(
                (localip, domain, got.reason), got.delay, _limit(job.capacity, got.reason))
            return self._hold(delivery, message, delay, changed)
        if not got.ok:
            self._check_flood(job.settings, got.description, localip, domain)
        self._settle(delivery, message, got.stamped(self.clock(), localip, job.remote),
                     localip, domain, job.remote)

    def _hold(self, delivery, message, delay, changed):
        """Back to the queue for ``delay`` seconds (with the new body when ``changed``)."""
        delivery.requeue(delay, body=codec.encode(message) if changed else None)

    def _settle(self, delivery, message, result, localip, domain, remote=""):
        decision = outcome.decide(message, result, self.clock(), self.conf, self.hostname)
        items = list(decision.queues)
        if decision.kind == "retry":
            items.append((self.queue, codec.encode(decision.message), decision.delay))
        if items:
            self.broker.publish_many(items)
        delivery.ack()
        if self.stats is not None:
            self.stats.count(decision.kind, localip or "", domain, remote)
        log.info("delivery." + decision.kind, id=message.id, recipient=message.recipient,
                 localip=localip or "", remote=remote, code=result.code, status=result.status,
                 state=result.state, delay=decision.delay, description=result.description[:200])

    # -- throttles ---------------------------------------------------------------

    def _check_flood(self, settings, text, localip, domain):
        rule = settings.flood_response(text, localip or "", domain)
        if rule is not None:
            self.throttles.flood(localip, domain, rule)


class _Bytes:
    """Bytes in hand: ``take`` waits while they would pass ``limit`` (a
    message alone always passes); one greenlet takes, any gives back."""

    def __init__(self, limit):
        self.limit, self.used = limit, 0
        self._room = Event()

    def take(self, size):
        while self.used and self.used + size > self.limit:
            self._room.clear()
            self._room.wait()
        self.used += size

    def give(self, size):
        self.used -= size
        self._room.set()


def _limit(capacity, reason):
    """The tightest per-minute limit behind a ``messages`` or ``connects`` wait."""
    if reason == "messages":
        limits = (capacity.domain_maxmessages, capacity.ip_maxmessages)
    elif reason == "connects":
        limits = (capacity.domain_maxconnects, capacity.ip_maxconnects)
    else:
        return 0
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else 0
