"""The delivery throttles: may this go now, and if not, how long to wait.

Owns the run-time side of the ``capacity`` and ``flood_responses`` tables:
messages and new connections per minute as token buckets, concurrent
connections as counters handed out as slots — the ``domain_*`` limits per
(local IP, recipient domain), the ``ip_*`` ones per (local IP, remote MX
address), as MailerQ counts them (``ip_maxconnects`` 5 with four MX
addresses is five new connections a minute to each of them) — and flood switches: after a reply matching a flood row, the
(local IP, domain) pair uses that row's capacity for its duration.

Nothing here blocks, so one slow domain never holds up the others: ``admit_*``
returns 0.0 (admitted, tokens taken) or the seconds until it would be
(nothing taken; the engine requeues the message with that delay), and
``open_connection`` a Slot or None. The connection pool (``pool.py``) is
the only user of the slots. This is the one interface of the throttle
state, so that it can live elsewhere (shared by several instances) without
its callers changing. A check of two limits takes from both or
neither. It all runs in one gevent hub without yielding: no locks, not
thread-safe.

A bucket refills continuously and holds at most ``burst`` tokens, by default
1% of a minute's worth (at least one), and starts full. Any 60-second window
then sees at most ``per_minute + burst - 1`` takes (within 1% even after an
idle spell), while the burst absorbs the lateness of requeued messages. A
bucket full again is like a new one, so ``prune()`` drops it losing nothing:
memory follows the pairs used in the last minute, not every domain ever seen.

Limits come from the Capacity passed to each call, so a settings reload
applies to the next message (a changed rate keeps the accrued tokens; a
lowered connection limit refuses new slots until enough are released). Time
is an injectable monotonic clock, so tests need no sleeping.
"""

import time

from mailerq_gevent import logs
from mailerq_gevent.names import canonical_domain, canonical_ip, host_key

log = logs.get(__name__)

BURST_SHARE = 0.01      # default burst: this share of a minute's tokens (at least 1)
PRUNE_INTERVAL = 60.0   # seconds between the automatic prunes done by admit_*
_EPSILON = 1e-9         # float slack when comparing token counts


def _per_minute(rate):
    value = float(rate)
    if not value >= 0:
        raise ValueError("rate %r is negative" % (rate,))
    return value


class TokenBucket:
    """``per_minute`` tokens a minute, refilled continuously, at most ``burst``
    held (default: ``BURST_SHARE`` of a minute's worth, at least 1); starts
    full. ``per_minute`` 0 is unlimited."""

    __slots__ = ("_clock", "_fixed_burst", "per_minute", "burst", "_rate", "_tokens", "_stamp")

    def __init__(self, per_minute, clock=time.monotonic, burst=None):
        if burst is not None and not burst >= 1:
            raise ValueError("burst %r is below 1" % (burst,))
        self._clock, self._fixed_burst = clock, burst
        self._stamp = clock()
        self._configure(per_minute)
        self._tokens = self.burst

    def __repr__(self):
        return "<TokenBucket %g/min burst=%g tokens=%.3f>" % (
            self.per_minute, self.burst, self.tokens)

    def _configure(self, per_minute):
        self.per_minute = _per_minute(per_minute)
        self._rate = self.per_minute / 60.0
        self.burst = float(self._fixed_burst or max(1.0, self.per_minute * BURST_SHARE))

    def _refill(self):
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    @property
    def tokens(self):
        """The tokens held now (``burst`` when unlimited)."""
        self._refill()
        return self._tokens

    @property
    def full(self):
        """Whether the bucket holds ``burst`` tokens: it is then like a new one."""
        return self.tokens >= self.burst - _EPSILON

    def set_rate(self, per_minute):
        """Use a new rate from now on; the tokens accrued so far are kept (at
        most the new burst). From unlimited, the bucket starts full."""
        self._refill()
        was_unlimited = not self._rate
        self._configure(per_minute)
        self._tokens = self.burst if was_unlimited else min(self._tokens, self.burst)

    def wait(self, n=1):
        """Seconds until ``n`` tokens are there (0.0: now); takes nothing."""
        if not self._rate:
            return 0.0
        if n > self.burst:
            raise ValueError("%g tokens never fit a burst of %g" % (n, self.burst))
        missing = n - self.tokens
        return 0.0 if missing <= _EPSILON else missing / self._rate

    def take(self, n=1):
        """Take ``n`` tokens and return 0.0 if they are there; else take
        nothing and return the seconds until they will be."""
        delay = self.wait(n)
        if not delay and self._rate:
            self._tokens = max(0.0, self._tokens - n)
        return delay


class Slot:
    """One open connection counted against the concurrent-connection limits;
    ``release()`` (or leaving a ``with`` block) gives it back, once."""

    __slots__ = ("_owner", "_keys")

    def __init__(self, owner, keys):
        self._owner, self._keys = owner, keys

    def release(self):
        keys, self._keys = self._keys, ()
        for key in keys:
            self._owner._close(key)

    @property
    def released(self):
        return not self._keys

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


class Throttles:
    """The run-time throttle state of one delivery engine (see the module doc)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._buckets = {}   # (capacity field, localip, domain or remote) -> TokenBucket
        self._open = {}      # ("domain"|"ip", localip, domain or remote) -> open count
        self._floods = {}    # (localip, domain) -> (until, FloodRule)
        self._pruned_at = clock()

    # -- flood responses ----------------------------------------------------

    def effective_capacity(self, settings, localip, domain):
        """The flood capacity while a flood is active for the pair, else
        ``settings.capacity(localip, domain)``."""
        rule = self.flood_rule(localip, domain)
        return rule.capacity if rule is not None else settings.capacity(localip, domain)

    def flood_rule(self, localip, domain):
        """The FloodRule active for the pair, or None (an ended one is dropped)."""
        pair = (canonical_ip(localip) or "", canonical_domain(domain))
        entry = self._floods.get(pair)
        if entry is None:
            return None
        if entry[0] > self._clock():
            return entry[1]
        self._end_flood(pair)
        return None

    def flood(self, localip, domain, rule):
        """Use ``rule.capacity`` for the pair for ``rule.duration`` seconds from
        now (a new match while flooded starts the duration again)."""
        pair = (canonical_ip(localip) or "", canonical_domain(domain))
        renewed = pair in self._floods
        self._floods[pair] = (self._clock() + rule.duration, rule)
        (log.debug if renewed else log.info)(
            "throttle.flood_renewed" if renewed else "throttle.flood_started",
            localip=pair[0], domain=pair[1], rule=rule.id, duration=rule.duration)

    def _end_flood(self, pair):
        _, rule = self._floods.pop(pair)
        log.info("throttle.flood_ended", localip=pair[0], domain=pair[1], rule=rule.id)

    # -- rates: messages and new connections per minute ---------------------

    def admit_message(self, localip, domain, remote_ip, capacity):
        """One message from ``localip`` to ``domain`` at ``remote_ip``: 0.0 when
        both ``domain_maxmessages`` and ``ip_maxmessages`` allow it now (a
        token taken from each), else the seconds to wait (nothing taken).
        ``remote_ip`` None: the domain limit only."""
        return self._admit(localip, domain, remote_ip, capacity,
                           "domain_maxmessages", "ip_maxmessages")

    def admit_connect(self, localip, domain, remote_ip, capacity):
        """One new connection: as ``admit_message`` for ``domain_maxconnects``
        and ``ip_maxconnects``."""
        return self._admit(localip, domain, remote_ip, capacity,
                           "domain_maxconnects", "ip_maxconnects")

    def _admit(self, localip, domain, remote_ip, capacity, domain_field, ip_field):
        self._maybe_prune()
        local = canonical_ip(localip) or ""
        buckets = [bucket for bucket in (
            self._bucket(domain_field, local, canonical_domain(domain), capacity),
            self._bucket(ip_field, local, host_key(remote_ip), capacity)) if bucket]
        delay = max([bucket.wait() for bucket in buckets], default=0.0)
        if not delay:
            for bucket in buckets:
                bucket.take()
        return delay

    def _bucket(self, field, local, target, capacity):
        """The bucket of a limited key, its rate set from ``capacity``; or None."""
        limit = getattr(capacity, field)
        if not limit or not target:
            return None
        key = (field, local, target)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(limit, self._clock)
        elif bucket.per_minute != limit:
            bucket.set_rate(limit)
        return bucket

    # -- concurrent connections ---------------------------------------------

    def open_connection(self, localip, domain, remote_ip, capacity):
        """A Slot when both ``domain_maxconnections`` for (localip, domain) and
        ``ip_maxconnections`` for (localip, remote_ip) have room, else None.
        Connections are counted even when unlimited, so a limit set by a
        later reload sees them."""
        local = canonical_ip(localip) or ""
        checks = ((("domain", local, canonical_domain(domain)), capacity.domain_maxconnections),
                  (("ip", local, host_key(remote_ip)), capacity.ip_maxconnections))
        if any(limit and self._open.get(key, 0) >= limit for key, limit in checks):
            return None
        keys = tuple(key for key, _ in checks if key[2])
        for key in keys:
            self._open[key] = self._open.get(key, 0) + 1
        return Slot(self, keys)

    def _close(self, key):
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    # -- memory -------------------------------------------------------------

    def prune(self):
        """Drop the buckets that are full again (a new one would be the same)
        and the floods that have ended; return how many were dropped. The
        admit_* calls do this every ``PRUNE_INTERVAL`` seconds by themselves;
        open counters go when their last slot is released."""
        self._pruned_at = now = self._clock()
        full = [key for key, bucket in self._buckets.items() if bucket.full]
        for key in full:
            del self._buckets[key]
        ended = [pair for pair, (until, _) in self._floods.items() if until <= now]
        for pair in ended:
            self._end_flood(pair)
        return len(full) + len(ended)

    def _maybe_prune(self):
        if self._clock() - self._pruned_at >= PRUNE_INTERVAL:
            self.prune()

    def stats(self):
        """Sizes of the state held (for the console and tests)."""
        return {"buckets": len(self._buckets), "open": sum(self._open.values()),
                "floods": len(self._floods)}
