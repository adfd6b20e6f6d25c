"""DNS for the whole daemon: one dnspython resolver, built from the config.

``dns-server`` (a ``HostPort``) makes every lookup go to that one server on
that port; without it the system's ``/etc/resolv.conf`` is used. Each lookup
is bounded (``lifetime``: the total time for one name and type, retries
included). dnspython opens plain sockets, which ``gevent.monkey`` has made
cooperative, so a slow server blocks only the greenlet that asked.

Nothing is cached here: dnspython's own resolver has no cache unless one is
set, and a record must change for the daemon as soon as it changes in DNS.

Lookups return plain values; "no such name" and "no record of that type" are
both an empty list (the callers treat them alike). A server that fails or does
not answer in time raises :class:`TemporaryError`; callers that implement an
RFC turn it into that RFC's ``temperror``.
"""

import ipaddress
import socket

import dns.exception
import dns.name
import dns.resolver

LIFETIME = 5.0   # seconds for one lookup, retries included
TIMEOUT = 2.0    # seconds for one try at one server
EDNS_PAYLOAD = 1232


class TemporaryError(Exception):
    """The lookup could not be answered now (timeout, SERVFAIL, refused)."""


def make_resolver(dns_server=None, lifetime=LIFETIME, timeout=TIMEOUT):
    """A :class:`dns.resolver.Resolver` asking only ``dns_server`` (a
    ``HostPort``), or the servers of ``/etc/resolv.conf`` when it is None.

    Reading ``resolv.conf`` (or resolving a ``dns-server`` given by name) is
    the only I/O here: build the resolver once, at start. Without a usable
    ``resolv.conf`` every lookup fails with :class:`TemporaryError`.
    """
    if dns_server is None:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.resolver.Resolver(configure=False)
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [_address_of(dns_server.host)]
        resolver.port = dns_server.port
    # EDNS0 with the DNS-flag-day size: DKIM keys (over 512 bytes) come
    # over UDP instead of a TCP retry after a truncated answer
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    resolver.lifetime = lifetime
    resolver.timeout = min(timeout, lifetime)
    resolver.cache = None
    return resolver


def _address_of(host):
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)[0][4][0]


def resolve(resolver, name, rdtype, lifetime=None):
    """The rdata of ``name``/``rdtype`` (empty when there is none).

    ``lifetime`` may shorten (never lengthen) the resolver's own bound.
    """
    bound = resolver.lifetime if lifetime is None else min(lifetime, resolver.lifetime)
    try:
        answer = resolver.resolve(name, rdtype, search=False, lifetime=bound,
                                  raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers,
            dns.resolver.NoResolverConfiguration) as exc:
        raise TemporaryError("%s %s: %s" % (name, rdtype, exc.__class__.__name__)) from exc
    except (dns.exception.SyntaxError, dns.name.NameTooLong, dns.name.IDNAException):
        return []   # not a name that can exist
    return list(answer)


def txt(resolver, name, lifetime=None):
    """The TXT records of ``name``, each one as bytes (its strings joined)."""
    return [b"".join(rdata.strings) for rdata in resolve(resolver, name, "TXT", lifetime)]
