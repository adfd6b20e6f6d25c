"""The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt), for ``smtp-proxy``.

A connection from an address in ``smtp-proxy`` starts with a PROXY header
giving the real client and server addresses; the session then uses those
(for ``smtp-range``, the trace header, the outgoing IP). A header that is
missing or malformed ends the connection. ``UNKNOWN`` (v1) and ``LOCAL``
(v2, e.g. the proxy's own health checks) keep the connection's addresses.
"""

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107                    # the longest v1 line, CRLF included
V2_MAX = 65535


class ProxyError(Exception):
    """Not a valid PROXY header."""


def read_header(wire):
    """``(client_ip, server_ip)`` from the PROXY header on ``wire``, or None
    when the proxy says it has none to give (UNKNOWN / LOCAL)."""
    start = wire.read_exactly(12)
    if start == SIGNATURE:
        return _version2(wire)
    if start.startswith(b"PROXY "):
        return _version1(start + wire.readline(V1_MAX - 12))
    raise ProxyError("no PROXY header")


def _version1(line):
    if len(line) > V1_MAX or not line.endswith(b"\r\n"):
        raise ProxyError("PROXY v1 line too long or not ended by CRLF")
    parts = line[:-2].decode("ascii", "replace").split(" ")
    if parts[1:2] == ["UNKNOWN"]:
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError("bad PROXY v1 line")
    version = 4 if parts[1] == "TCP4" else 6
    client, server = _address(parts[2], version), _address(parts[3], version)
    for port in parts[4:6]:
        if not port.isdigit() or int(port) > 65535:
            raise ProxyError("bad port in PROXY v1 line")
    return client, server


def _address(text, version):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError("bad address in PROXY header") from None
    if address.version != version:
        raise ProxyError("address family does not match the PROXY header")
    return str(getattr(address, "ipv4_mapped", None) or address)


def _version2(wire):
    command, family, length = struct.unpack("!BBH", wire.read_exactly(4))
    if command >> 4 != 2:
        raise ProxyError("not PROXY protocol version 2")
    payload = wire.read_exactly(length)
    if command & 0x0F == 0:             # LOCAL
        return None
    if command & 0x0F != 1:
        raise ProxyError("unknown PROXY v2 command")
    if family == 0x11 and length >= 12:
        return (str(ipaddress.IPv4Address(payload[0:4])),
                str(ipaddress.IPv4Address(payload[4:8])))
    if family == 0x21 and length >= 36:
        return (str(ipaddress.IPv6Address(payload[0:16])),
                str(ipaddress.IPv6Address(payload[16:32])))
    if family == 0x00:                   # UNSPEC
        return None
    raise ProxyError("unsupported PROXY v2 address family")
