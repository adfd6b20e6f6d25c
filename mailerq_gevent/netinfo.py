"""The IP addresses configured on this host's interfaces (for the ``ips`` table).

Read from the kernel through ``psutil.net_if_addrs()``: no network traffic.
IPv4 and IPv6, loopback included; IPv6 link-local addresses (``fe80::/10``)
and IPv4 ones (``169.254/16``) are left out: they never send mail.
"""

import ipaddress
import socket

import psutil


def host_addresses():
    """Every usable address of this host, canonical text, IPv4 first, sorted."""
    found = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = _parse(entry.address)
            if address is not None and not address.is_link_local:
                found.add(address)
    return tuple(str(address) for address in sorted(found, key=lambda a: (a.version, a)))


def _parse(text):
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
