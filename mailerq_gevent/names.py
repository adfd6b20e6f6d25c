"""How the daemon compares IP addresses and domain names, everywhere.

An IP address is kept in its canonical text (``ipaddress``; an IPv4-mapped
IPv6 address is its IPv4 address, brackets are dropped), a domain in lower
case without its trailing dot. Tables, throttles, statistics and the SMTP
server all compare through these, so ``Example.COM.`` and ``example.com``, or
``::ffff:192.0.2.1`` and ``192.0.2.1``, are one key.
"""

import functools
import ipaddress


@functools.lru_cache(maxsize=65536)
def canonical_ip(text):
    """The canonical text of an IP address, or None when ``text`` is not one."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(str(text).strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def canonical_domain(text):
    """A domain in the form the lookups compare: lower case, no trailing dot."""
    return str(text).strip().rstrip(".").lower() if text else ""


def host_key(value):
    """A remote host (or a ``paused``/``delegates`` target) as a key: its
    canonical IP when it is one, else its canonical domain; "" when empty."""
    return canonical_ip(value) or canonical_domain(value)
