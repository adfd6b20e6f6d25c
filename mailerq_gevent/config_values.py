"""Parsers for the value types of the config file (see ``config.py``).

Each parser takes the raw text after ``name:`` (already stripped) and returns
a typed value, or raises :class:`ValueError` with a message saying what is
wrong; ``config.py`` adds the file, line and key. An empty value means "not
set" for the optional types.
"""

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2,
               "G": 1024 ** 3, "GB": 1024 ** 3}
_DURATION_UNITS = {"": 1, "s": 1, "ms": 0.001, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?)+$")
AUTH_SCHEMES = ("hardcoded", "file", "ldap", "ldaps", "radius", "users", "http", "https", "exec")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
QUEUE_SCHEMES = ("amqp", "amqps", "sqlite", "memory")


@dataclass(frozen=True)
class HostPort:
    """A ``host:port`` pair (IPv6 hosts written as ``[::1]:25``)."""

    host: str
    port: int

    def __str__(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)


def text(raw):
    return raw


def integer(raw):
    try:
        return int(raw)
    except ValueError:
        raise ValueError("%r is not a whole number" % raw) from None


def count(raw):
    """A whole number >= 0 (0 means unlimited where the key says so)."""
    value = integer(raw)
    if value < 0:
        raise ValueError("%d is negative" % value)
    return value


def processes(raw):
    """A number of processes: ``auto`` (one per CPU this process may run on) or a count."""
    if raw.strip().lower() == "auto":
        return cpus()
    return count(raw)


def cpus():
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def boolean(raw):
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("%r is not a boolean (true/false, yes/no, on/off, 1/0)" % raw)


def port(raw):
    """One TCP port, or None when empty."""
    if raw == "":
        return None
    value = integer(raw)
    if not 1 <= value <= 65535:
        raise ValueError("port %d is out of range 1-65535" % value)
    return value


def port_list(raw):
    """``25,2525,1024-1026`` -> (25, 2525, 1024, 1025, 1026); empty -> ()."""
    ports = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        low, dash, high = item.partition("-")
        first, last = port(low.strip()), port(high.strip()) if dash else None
        if first is None or (dash and last is None):
            raise ValueError("%r is not a port or a range" % item)
        if dash and last < first:
            raise ValueError("range %r runs backwards" % item)
        ports.extend(range(first, (last or first) + 1))
    if len(set(ports)) != len(ports):
        raise ValueError("a port is listed twice")
    return tuple(ports)


def ip_address(raw):
    """One IP address (canonical text), or None when empty."""
    if raw == "":
        return None
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ValueError("%r is not an IP address" % raw) from None


def _split_list(raw):
    return [part.strip() for part in re.split(r"[;,\s]+", raw) if part.strip()]


def ip_list(raw):
    """IP addresses separated by ``;``, ``,`` or spaces."""
    return tuple(ip_address(item) for item in _split_list(raw))


def cidr_list(raw):
    """IP ranges (``10.0.0.0/8;::1``) separated by ``;``, ``,`` or spaces."""
    networks = []
    for item in _split_list(raw):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError("%r is not an IP range (address or address/bits)" % item) from None
    return tuple(networks)


def size(raw):
    """``100MB`` -> bytes (units B, KB, MB, GB; K = 1024)."""
    match = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", raw)
    unit = match and match.group(2).upper()
    if not match or unit not in _SIZE_UNITS:
        raise ValueError("%r is not a size (a number with B, KB, MB or GB)" % raw)
    return int(match.group(1)) * _SIZE_UNITS[unit]


def duration(raw):
    """``300``, ``300s``, ``5m``, ``1h``, ``1d``, ``250ms`` -> seconds (float)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", raw)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError("%r is not a duration (seconds, or a number with ms, s, m, h or d)" % raw)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def hostname(raw):
    if raw and not _HOSTNAME.match(raw):
        raise ValueError("%r is not a host name" % raw)
    return raw


def host_port(default_port):
    """Parser for ``host[:port]`` / ``[v6]:port``; empty -> None."""
    def parse(raw):
        if raw == "":
            return None
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", raw)
        if not match:
            raise ValueError("%r is not host[:port]" % raw)
        host = match.group(1) or match.group(3)
        if match.group(1):
            ip_address(host)
        elif not _is_ip(host):
            hostname(host)
        number = port(match.group(2) or match.group(4) or str(default_port))
        return HostPort(host, number)
    return parse


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def one_of(*choices):
    def parse(raw):
        if raw.lower() not in choices:
            raise ValueError("%r is not one of %s" % (raw, ", ".join(choices)))
        return raw.lower()
    return parse


def subset_of(*choices):
    """A comma list whose items all come from ``choices`` -> tuple."""
    def parse(raw):
        items = tuple(item.lower() for item in _split_list(raw))
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise ValueError("%r not among %s" % (unknown[0], ", ".join(choices)))
        return items
    return parse


def url(schemes, optional=False):
    """Parser for a URL whose scheme is one of ``schemes`` (kept as text)."""
    def parse(raw):
        if raw == "" and optional:
            return ""
        scheme = urlsplit(raw).scheme.lower()
        if "://" not in raw or scheme.split("+")[0] not in schemes:
            shown = (scheme + "://...") if "://" in raw else "the value"
            raise ValueError("%s is not a URL starting with %s" % (
                shown, " or ".join(s + "://" for s in schemes)))
        if scheme == "sqlite" and not raw.startswith("sqlite:///"):
            raise ValueError("an SQLite URL needs three slashes: sqlite:///path")
        return raw
    return parse


def auth_spec(raw):
    """An authentication scheme (``smtp-auth``, ``www-auth``): checked for a known scheme only."""
    return url(AUTH_SCHEMES, optional=True)(raw)


def redact_url(raw):
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", raw)
