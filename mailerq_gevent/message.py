"""The queued message: one JSON object per recipient, MailerQ's format, for every part.

Receiving (``x-mq-*`` headers, ``smtpd/message.py``), ``/api/inject`` and
delivery read and write the same properties through this module:

    id              the queue id: the SMTP transaction's (``smtp.queued id=``, the
                    ``250 ... queued as`` reply), or a fresh one (``new_id``); every
                    ``delivery.*`` log line of the message carries it
    envelope        the envelope sender ("" for the null reverse-path)
    recipient       the one recipient
    mime            the message; 8-bit bytes travel as ``surrogateescape`` text
    ips / ip        the local IPs to send from (a list, or one)
    key, tags       the sender's own labels
    maxdelivertime  seconds after ``queued``, or a time: the deadline itself
    maxattempts     attempts before giving up (0 or absent: no limit)
    retries         seconds between attempts, the last one repeating
    nextattempt     no attempt before this time
    dkim            extra signing keys (``signing.message_keys``)
    dsn             ``notify``, ``ret``, ``envid``, ``orcpt`` (RFC 3461)
    queues          per-message result queues; ``""`` or ``null`` disables one
    smarthost       the next hop for this message alone
    headers         changes to the header before sending (``delivery/headers.py``)
    results         one object per attempt (``delivery/result.py``)
    queued          when a sender first saw the message (UNIX seconds)

A time is UNIX seconds, or text as ``x-mq-delayed`` takes it (``parse_time``).

:class:`Message` is the JSON object itself (a ``dict``), so properties nobody
here knows pass through untouched; its accessors read the known ones and a
value of the wrong type reads as absent (delivery then uses its defaults).
``check`` is what a message must have to be queued at all; ``set_from_text``
gives a property its value from header text, validated.
"""

import calendar
import email.utils
import ipaddress
import itertools
import os
from datetime import datetime

from mailerq_gevent.config_values import count
from mailerq_gevent.mail.addresses import AddressError, validate

# a "maxdelivertime" above this (Sep 2001 as a UNIX time) is a deadline, not a duration
ABSOLUTE = 10 ** 9
QUEUE_KEYS = ("results", "success", "failure", "retry")
DSN_KEYS = ("notify", "ret", "envid", "orcpt")


class BadValue(ValueError):
    """A property whose value cannot be used: the message is refused."""


class Message(dict):
    """One queued message (see the module docstring for the properties)."""

    __slots__ = ()

    @property
    def id(self):
        return _text(self.get("id"))

    @property
    def envelope(self):
        return _text(self.get("envelope"))

    @property
    def recipient(self):
        return _text(self.get("recipient"))

    @property
    def recipient_domain(self):
        """The domain of a ``local@domain`` recipient; "" for anything else."""
        local, _, domain = self.recipient.rpartition("@")
        return domain if local and domain else ""

    @property
    def mime(self):
        """The message as bytes (the 8-bit ones restored)."""
        raw = self.get("mime") or ""
        return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)

    @property
    def ips(self):
        """The local IPs asked for, as text: ``ips``, else ``ip``."""
        value = self.get("ips") or self.get("ip")
        items = [value] if isinstance(value, str) else (
            value if isinstance(value, (list, tuple)) else ())
        return [str(item) for item in items]

    @property
    def key(self):
        return _text(self.get("key"))

    @property
    def tags(self):
        value = self.get("tags")
        return [str(tag) for tag in value] if isinstance(value, list) else []

    @property
    def maxattempts(self):
        """Attempts before giving up; 0 is no limit."""
        return max(0, int(_number(self.get("maxattempts"), 0)))

    @property
    def retries(self):
        """The seconds between attempts, or None when absent or unusable."""
        values = self.get("retries")
        if not isinstance(values, (list, tuple)) or not values:
            return None
        numbers = [_number(value, None) for value in values]
        if all(n is not None and n >= 0 for n in numbers):
            return [int(n) for n in numbers]
        return None

    @property
    def nextattempt(self):
        """The UNIX time before which no attempt is made, or None."""
        return as_time(self.get("nextattempt"))

    def deadline(self, default):
        """The UNIX time after which no attempt is made: ``queued`` plus
        ``maxdelivertime`` seconds (``default`` when absent or 0), or the time
        ``maxdelivertime`` names."""
        limit = self.get("maxdelivertime")
        if isinstance(limit, str) and not limit.strip().isdigit():
            absolute = as_time(limit)
            if absolute is not None:
                return absolute
        limit = _number(limit, default)
        if limit > ABSOLUTE:
            return limit
        return _number(self.get("queued"), 0) + (limit or default)

    @property
    def dkim(self):
        return self.get("dkim")

    @property
    def dsn(self):
        """The DSN request (``notify``, ``ret``, ``envid``, ``orcpt``); {} when none."""
        value = self.get("dsn")
        return value if isinstance(value, dict) else {}

    @property
    def queues(self):
        """The per-message result queue names; {} when none."""
        value = self.get("queues")
        return value if isinstance(value, dict) else {}

    @property
    def smarthost(self):
        return self.get("smarthost") or None

    @property
    def headers(self):
        value = self.get("headers")
        return value if isinstance(value, dict) else None

    @property
    def results(self):
        value = self.get("results")
        return list(value) if isinstance(value, (list, tuple)) else []

    @property
    def queued(self):
        """When a sender first saw the message, or None."""
        value = self.get("queued")
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def mark_queued(self, now):
        """Set ``queued`` to ``now`` unless the message has it; True when set here."""
        if "queued" in self:
            return False
        self["queued"] = int(now)
        return True


# -- what a message must have -----------------------------------------------------------

def check(data):
    """``data`` as a Message when it can be queued: ``envelope``, ``recipient``
    and a non-empty ``mime`` are strings, the addresses ``local@domain``
    without spaces or control characters (the null sender allowed); else
    BadValue saying what is wrong."""
    if not isinstance(data, dict):
        raise BadValue("a message must be a JSON object")
    for name in ("envelope", "recipient", "mime"):
        if not isinstance(data.get(name), str):
            raise BadValue("%s must be a string" % name)
    if not data["mime"]:
        raise BadValue("mime must not be empty")
    for name in ("recipient", "envelope"):
        if data[name] or name == "recipient":
            try:
                validate(data[name], "loose", utf8=True)
            except AddressError:
                raise BadValue("%s must be an address (user@domain)" % name) from None
    return Message(data)


def _queue_ids():
    """Queue ids: a random prefix for this process, then a counter (no syscall each)."""
    prefix = os.urandom(4).hex().upper()
    for number in itertools.count(1):
        yield "%s%06X" % (prefix, number % 0x1000000)


_QUEUE_IDS = _queue_ids()


def new_id():
    """A fresh queue id, in the form the SMTP server gives its transactions."""
    return next(_QUEUE_IDS)


# -- properties from text (x-mq-* headers) ---------------------------------------------

def set_from_text(properties, key, value):
    """Give ``properties`` what the text ``value`` for ``key`` means (``ip`` a
    list of addresses, ``tag``/``tags`` added to ``tags``, ``delayed`` /
    ``nextattempt`` a time, ``maxdelivertime`` seconds or a time,
    ``maxattempts`` and ``retries`` whole numbers, a result queue name into
    ``queues``, ``dsn-*`` into ``dsn``, anything else as it is); raises
    ValueError for a value that cannot be used."""
    if key == "ip":
        properties["ips"] = [str(ipaddress.ip_address(ip)) for ip in items(value)]
    elif key in ("tag", "tags"):
        properties.setdefault("tags", []).extend(items(value))
    elif key in ("delayed", "nextattempt"):
        properties["nextattempt"] = parse_time(value)
    elif key == "maxdelivertime":
        properties[key] = int(value) if value.isdigit() else parse_time(value)
    elif key == "maxattempts":
        properties[key] = count(value)
    elif key == "retries":
        properties[key] = [count(item) for item in items(value)]
    elif key in QUEUE_KEYS:
        properties.setdefault("queues", {})[key] = value or None
    elif key.startswith("dsn-") and key[4:] in DSN_KEYS:
        properties.setdefault("dsn", {})[key[4:]] = value
    else:
        properties[key] = value


def items(value):
    """The items of a list given as text (separated by commas, semicolons or spaces)."""
    return [item for item in value.replace(";", ",").replace(" ", ",").split(",") if item]


def parse_time(text):
    """Seconds since the epoch from a number, ISO 8601 (UTC unless it says) or an RFC 5322 date."""
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise ValueError("%r is not a time" % text) from None
    if moment.tzinfo is None:
        return calendar.timegm(moment.timetuple())
    return int(moment.timestamp())


def as_time(value):
    """A UNIX time from a number or a time as text, or None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return parse_time(str(value).strip())
    except ValueError:
        return None


def _number(value, default):
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _text(value):
    return value if isinstance(value, str) else str(value or "")
