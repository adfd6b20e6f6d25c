"""This host on the network: its IP addresses (for the ``ips`` table), and
the listening sockets of the SMTP server and the console.

Addresses are read from the kernel through ``psutil.net_if_addrs()``: no
network traffic. IPv4 and IPv6, loopback included; IPv6 link-local addresses
(``fe80::/10``) and IPv4 ones (``169.254/16``) are left out: they never send mail.
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


def listen(ip, port, backlog, reuse_port=False):
    """A listening TCP socket on ``ip`` (all addresses when empty: IPv6 and
    IPv4 on one dual-stack socket where the host has it). ``reuse_port``:
    SO_REUSEPORT, for several processes on one port."""
    options = dict(backlog=backlog, reuse_port=reuse_port)
    if ip:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return socket.create_server((ip, port), family=family, **options)
    if socket.has_dualstack_ipv6():
        return socket.create_server(("::", port), family=socket.AF_INET6,
                                    dualstack_ipv6=True, **options)
    return socket.create_server(("0.0.0.0", port), **options)
