"""Where a message goes: the ordered next hops for a recipient domain.

Owns next-hop selection (RFC 5321 §5.1; null MX, RFC 7505), the daemon's DNS
cache, and the choice of local IP and EHLO name. The first rule that applies:
the ``dns`` table's rows for the domain by priority (IP, IP:port or host);
the message's ``smarthost``; the config's ``relay``; an address literal
(``[192.0.2.1]``, ``[IPv6:::1]``); the MX hosts, best preference first,
equal preferences shuffled on every call (RFC 5321 §5.1), at most
``max_hosts`` hosts and ``max_addresses`` addresses (as Postfix), each host's
A addresses before its AAAA, a repeated address kept once; with no MX at
all, the domain's own A/AAAA (the implicit MX).

:class:`PermanentRouteError`: no such domain, null MX, a name that cannot
exist, no address for any MX. :class:`TemporaryRouteError`: timeout,
SERVFAIL, and a configured hop (table, smarthost, relay) without an address
(an operator's slip must not bounce mail). Both carry ``description`` and
an enhanced ``status`` for the delivery result.

Answers are cached per :class:`Router` (one per daemon) for their TTL,
within ``MIN_TTL``..``max_ttl``; no such name / no such record for the SOA
minimum (``NEGATIVE_TTL`` without an SOA, at most ``MAX_NEGATIVE_TTL``); a
failed lookup for ``TEMPORARY_TTL`` only, so a broken server is not hammered.
The cache is an LRU of ``cache_size`` entries; one query per (name, type) is
in flight, concurrent routes wait for it. Each lookup is bounded by the
resolver's lifetime, a whole route by ``budget`` seconds.
"""

import collections
import itertools
import random
import re
import time
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import gevent
from gevent.event import AsyncResult

from mailerq_gevent import config_values, logs
from mailerq_gevent.names import canonical_domain, canonical_ip

log = logs.get(__name__)

SMTP_PORT = 25
MAX_MX_HOSTS = 5
MAX_ADDRESSES = 10
MIN_TTL = 5               # seconds: even a TTL of 0 is kept this long
MAX_TTL = 3600
NEGATIVE_TTL = 60         # NXDOMAIN / no records, when no SOA says otherwise
MAX_NEGATIVE_TTL = 300
TEMPORARY_TTL = 5         # a timeout or SERVFAIL is not asked again sooner
CACHE_SIZE = 10000
ROUTE_BUDGET = 30.0       # seconds for all the lookups of one route

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LITERAL = re.compile(r"\[(?:ipv6:)?([0-9a-f:.]+)\]")


@dataclass(frozen=True)
class Target:
    """One address to try: ``host_name`` (the MX or configured host, for TLS
    and logs), ``ip`` (canonical text) and ``port``."""

    host_name: str
    ip: str
    port: int = SMTP_PORT


@dataclass(frozen=True)
class Route:
    """The targets for ``domain`` in the order to try them; ``source`` is
    ``dns``, ``smarthost``, ``relay``, ``literal``, ``mx`` or ``implicit``."""

    domain: str
    targets: tuple
    source: str

    def __iter__(self):
        return iter(self.targets)

    def __len__(self):
        return len(self.targets)


class RouteError(Exception):
    """No route now: ``description`` (for humans) and ``status`` (RFC 3463)."""

    permanent = False

    def __init__(self, description, status):
        super().__init__(description)
        self.description, self.status = description, status


class TemporaryRouteError(RouteError):
    """Try again later (DNS timeout or failure): status 4.4.3 or 4.3.5."""


class PermanentRouteError(RouteError):
    """The domain cannot receive mail: 5.1.2, 5.1.10 (null MX) or 5.4.4."""

    permanent = True


@dataclass(frozen=True)
class _Answer:
    values: tuple = ()       # (preference, host) for MX ("" for "."), else addresses
    nxdomain: bool = False
    failure: str = ""        # set: the lookup failed for now


class DnsCache:
    """An LRU of ``key -> value`` entries, each expiring on ``clock``."""

    def __init__(self, size, clock):
        self.size, self._clock = size, clock
        self._entries = collections.OrderedDict()

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        item = self._entries.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return item[1]

    def put(self, key, value, ttl):
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Router:
    """Routes recipient domains; ``resolver`` from ``resolver.make_resolver``,
    ``relay`` a ``HostPort`` or None, ``clock`` the cache's monotonic clock."""

    def __init__(self, resolver, relay=None, clock=time.monotonic, *, cache_size=CACHE_SIZE,
                 max_ttl=MAX_TTL, max_hosts=MAX_MX_HOSTS, max_addresses=MAX_ADDRESSES,
                 ipv6=True, mx_port=SMTP_PORT, budget=ROUTE_BUDGET, rng=None):
        self.resolver, self.relay = resolver, relay
        self.cache = DnsCache(cache_size, clock)
        self.max_ttl, self.max_hosts, self.max_addresses = max_ttl, max_hosts, max_addresses
        self.families = ("A", "AAAA") if ipv6 else ("A",)
        self.mx_port, self.budget = mx_port, budget
        self._rng = rng or random.Random()
        self._inflight = {}

    def route(self, settings, domain, smarthost=None):
        """The :class:`Route` for ``domain``; raises a :class:`RouteError`."""
        name = canonical_domain(domain)
        deadline = time.monotonic() + self.budget
        override = settings.dns_override(name)
        if override:
            hops = [(target.host, target.port or SMTP_PORT) for target in override]
            return self._configured(name, "dns", hops, deadline)
        if smarthost:
            return self._configured(name, "smarthost", [_parse_hop(smarthost)], deadline)
        if self.relay is not None:
            return self._configured(name, "relay", [(self.relay.host, self.relay.port)],
                                    deadline)
        literal = _address_literal(name)
        if literal:
            return Route(name, (Target(name, literal, self.mx_port),), "literal")
        return self._mx_route(name, deadline)

    def _configured(self, name, source, hops, deadline):
        targets, failure = self._collect(hops, deadline, configured=True)
        if targets:
            return Route(name, targets, source)
        raise failure or TemporaryRouteError("%s %s has no address" % (
            source, ", ".join(host for host, _ in hops)), "4.3.5")

    def _mx_route(self, domain, deadline):
        name = _dns_name(domain)
        if name is None:
            raise PermanentRouteError("%r is not a valid domain name" % domain, "5.1.2")
        answer = self._lookup(name, "MX", deadline)
        if answer.nxdomain:
            raise PermanentRouteError("domain %s does not exist" % name, "5.1.2")
        hosts = self._order(answer.values) if answer.values else [name]
        if not hosts:
            raise PermanentRouteError("domain %s accepts no mail (null MX)" % name, "5.1.10")
        hops = [(host, self.mx_port) for host in hosts[:self.max_hosts]]
        targets, failure = self._collect(hops, deadline)
        if targets:
            return Route(domain, targets, "mx" if answer.values else "implicit")
        raise failure or PermanentRouteError("no address for %s %s" % (
            "the MX hosts of" if answer.values else "the domain", name), "5.4.4")

    def _order(self, records):
        """MX hosts best first, equal preferences shuffled, each host once,
        "." (null MX) left out."""
        hosts = []
        for _, group in itertools.groupby(sorted(records), key=lambda record: record[0]):
            names = [host for _, host in group if host]
            self._rng.shuffle(names)
            hosts.extend(names)
        return list(dict.fromkeys(hosts))

    def _collect(self, hops, deadline, configured=False):
        """``(targets, first failure)`` for ``(host, port)`` hops, in order, capped;
        a configured hop may be an IP, an MX host may not (RFC 5321 §5.1)."""
        targets, failure = [], None
        for host, port in hops:
            ip = canonical_ip(host) if configured else None
            try:
                ips = [ip] if ip else self._addresses(host.rstrip(".").lower(), deadline)
            except TemporaryRouteError as error:
                failure = failure or error
                continue
            targets = list(dict.fromkeys(targets + [Target(host, i, port) for i in ips]))
            if len(targets) >= self.max_addresses:
                break
        return tuple(targets[:self.max_addresses]), failure

    def _addresses(self, host, deadline):
        """A then AAAA addresses of ``host``; [] when it has none."""
        found, failure = [], None
        for rdtype in self.families:
            answer = self._lookup(host, rdtype, deadline, raising=False)
            if answer.failure:
                failure = answer
            found.extend(answer.values)
            if answer.nxdomain:
                break
        if failure and not found:
            raise _temporary(host, failure)
        return found

    def _lookup(self, name, rdtype, deadline, raising=True):
        key = (name, rdtype)
        answer = self.cache.get(key)
        if answer is None:
            answer = self._coalesced(key, deadline)
        if raising and answer.failure:
            raise _temporary(name, answer)
        return answer

    def _coalesced(self, key, deadline):
        """The answer of the one query in flight for ``key`` (made here if none)."""
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return pending.get(timeout=self.resolver.lifetime + 1.0)
            except gevent.Timeout:
                return _Answer(failure="timed out waiting for %s/%s" % key)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _Answer(failure="no time left for %s/%s" % key)
        pending = self._inflight[key] = AsyncResult()
        try:
            answer, ttl = self._query(key[0], key[1], min(remaining, self.resolver.lifetime))
            self.cache.put(key, answer, ttl)
            pending.set(answer)
            return answer
        finally:
            del self._inflight[key]
            if not pending.ready():
                pending.set(_Answer(failure="lookup of %s/%s interrupted" % key))

    def _query(self, name, rdtype, lifetime):
        """``(_Answer, seconds to cache it)`` from the DNS."""
        try:
            reply = self.resolver.resolve(name, rdtype, search=False, lifetime=lifetime,
                                          raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            return _Answer(nxdomain=True), _negative_ttl(exc.responses().values())
        except dns.exception.Timeout:
            return _failed(name, rdtype, "timed out")
        except dns.resolver.NoNameservers:
            return _failed(name, rdtype, "no server answered (SERVFAIL or refused)")
        except dns.exception.DNSException as exc:
            return _failed(name, rdtype, exc.__class__.__name__)
        if reply.rrset is None:
            return _Answer(), _negative_ttl([reply.response])
        ttl = max(MIN_TTL, min(reply.chaining_result.minimum_ttl, self.max_ttl))
        return _Answer(tuple(_value(rdata) for rdata in reply.rrset)), ttl


def _value(rdata):
    if rdata.rdtype == dns.rdatatype.MX:
        exchange = rdata.exchange
        host = "" if exchange == dns.name.root else exchange.to_text(omit_final_dot=True)
        return rdata.preference, host.lower()
    return canonical_ip(rdata.address)


def _failed(name, rdtype, why):
    log.warning("route.dns_failed", name=name, type=rdtype, error=why)
    return _Answer(failure="DNS lookup of %s/%s: %s" % (name, rdtype, why)), TEMPORARY_TTL


def _temporary(name, answer):
    return TemporaryRouteError(answer.failure or "DNS lookup of %s failed" % name, "4.4.3")


def _negative_ttl(responses):
    """The SOA minimum of a negative answer (RFC 2308 §5), bounded."""
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                ttl = min(rrset.ttl, rrset[0].minimum)
                return max(MIN_TTL, min(ttl, MAX_NEGATIVE_TTL))
    return NEGATIVE_TTL


def _dns_name(domain):
    """``domain`` as an ASCII (IDNA) name of letters, digits and hyphens, or None."""
    try:
        name = dns.name.from_unicode(domain).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


def _address_literal(domain):
    """The IP of an RFC 5321 §4.1.3 address literal, or None."""
    match = _LITERAL.fullmatch(domain)
    return canonical_ip(match.group(1)) if match else None


def _parse_hop(smarthost):
    """``(host, port)`` from a message's ``smarthost``."""
    try:
        hop = config_values.host_port(SMTP_PORT)(str(smarthost).strip())
    except ValueError as exc:
        raise PermanentRouteError("smarthost %r: %s" % (smarthost, exc), "5.3.5") from None
    return hop.host, hop.port


def _ip_list(value):
    items = [value] if isinstance(value, str) else list(value or ())
    return [ip for ip in (canonical_ip(item) for item in items) if ip]


def choose_local_ip(settings, message_ips, default_ips, domain, turn=0):
    """The local IP to send from, or None ("let the OS choose").

    The candidates are the message's ``ips`` (a list) or ``ip`` (a string),
    else ``default_ips``; text that is not an IP is left out. Round robin:
    candidate number ``turn`` (modulo their count) -- pass the attempt
    number, so a retry moves to the next IP. A ``delegates`` row for the
    domain (even one for any local IP, when none is chosen) replaces it.
    """
    candidates = _ip_list(message_ips) or _ip_list(default_ips)
    localip = candidates[turn % len(candidates)] if candidates else None
    return settings.delegate(localip, domain) or localip


def ehlo_name(settings, localip, hostname):
    """The EHLO name: the ``mtanames`` row of ``localip``, else ``hostname``."""
    return (settings.mtaname(localip) if localip else None) or hostname
