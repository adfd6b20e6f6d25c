"""From an accepted SMTP transaction to the queued JSON messages (``mailerq_gevent/message.py``).

``build(transaction, content, conf, snapshot)`` returns ``(queue, body)``
pairs, one per recipient, for ``Publisher.publish_many``:

* each recipient's message carries the transaction's queue id (``id``: the
  one in the ``smtp.queued`` log line and the ``250 ... queued as`` reply);

* a ``Received:`` trace header is put in front (RFC 5321 §4.4; the protocol
  name per RFC 3848: ESMTP, ESMTPS, ESMTPA, ESMTPSA);
* with ``smtp-extract`` on (MailerQ's), every ``x-mq-*`` header becomes a
  JSON property and leaves the MIME (``mail/headers.py`` for the header
  block, ``message.set_from_text`` for what each value means);
* the outgoing IP: ``x-mq-ip``, else the address the client connected to when
  it is mappable (in ``smtp-mappable-ips``, or that list is empty, and not in
  ``smtp-unmappable-ips``), else ``smtp-defaultips``; none of them: no ``ips``
  property, and delivery uses its own default;
* DSN parameters (RET, ENVID from MAIL; NOTIFY, ORCPT from RCPT) go to ``dsn``;
* a recipient in the ``locals`` table goes to ``rabbitmq-local`` (a report,
  DSN or DMARC, to ``rabbitmq-reports`` when that is set), every other to
  ``rabbitmq-inbox``.

The MIME is carried as a JSON string: bytes that are not UTF-8 are kept with
``surrogateescape`` (they travel as ``\\udcXX`` escapes and come back as the
same bytes). It is encoded once and spliced into each recipient's JSON.
"""

import email.utils
import functools
import ipaddress
from datetime import datetime, timezone

from mailerq_gevent import message as queued_message
from mailerq_gevent.broker import codec
from mailerq_gevent.mail import headers

PREFIX = b"x-mq-"


class BadHeader(ValueError):
    """An ``x-mq-*`` header whose value cannot be used (the message is refused)."""


class Transaction:
    """What the session knows of one accepted message."""

    __slots__ = ("queue_id", "sender", "mail_params", "recipients", "helo", "esmtp", "tls",
                 "user", "peer_ip", "local_ip", "hostname", "received_at", "ips")

    def __init__(self, queue_id, sender, mail_params, recipients, helo, esmtp=True, tls=False,
                 user=None, peer_ip="", local_ip="", hostname="", received_at=0.0, ips=None):
        self.queue_id, self.sender, self.mail_params = queue_id, sender, mail_params
        self.recipients, self.helo, self.esmtp, self.tls = recipients, helo, esmtp, tls
        self.user, self.peer_ip, self.local_ip = user, peer_ip, local_ip
        self.hostname, self.received_at, self.ips = hostname, received_at, ips


def build(tx, content, conf, snapshot, checks=None):
    """``[(queue, body bytes)]`` for the transaction (see the module docstring).

    ``checks``: the inbound checks' results (``checks.CheckResults``), which go
    to the ``checks`` property and, for the recipients ``smtp-auth-results``
    names (local, nonlocal), into an Authentication-Results header.
    """
    properties = {}
    if conf.smtp_extract:
        found, content = headers.remove(content, PREFIX)
        properties = extract(found)
        properties.pop("id", None)          # the queue id is the transaction's
    ips = properties.get("ips") or (tx.ips if tx.ips is not None else
                                    outgoing_ips(tx.local_ip, conf))
    properties.pop("ips", None)
    if ips:
        properties["ips"] = ips
    if checks is not None:
        properties["checks"] = checks.results
    mimes = _Mimes(received_header(tx), content, checks, tx.hostname)
    report = is_report(content)
    items = []
    for path, params in tx.recipients:
        local = path.address.lower() == "postmaster" or snapshot.is_local(path.address)
        labelled = checks is not None and (
            "local" if local else "nonlocal") in conf.smtp_auth_results
        items.append((_queue_for(local, conf, report), codec.encode_with_mime(
            _message(tx, path, params, properties), mimes.get(labelled))))
    return items


class _Mimes:
    """The MIME as a JSON string, with or without the Authentication-Results
    header, each made once for all the recipients that want it."""

    def __init__(self, trace, content, checks, authserv_id):
        self.trace, self.content, self.checks, self.authserv_id = trace, content, checks, authserv_id
        self._made = {}

    def get(self, with_results):
        if with_results not in self._made:
            results = self.checks.header(self.authserv_id) if with_results else b""
            self._made[with_results] = codec.encode_text(
                (self.trace + results + self.content).decode("utf-8", "surrogateescape"))
        return self._made[with_results]


def _message(tx, path, params, properties):
    message = {"id": tx.queue_id, "envelope": tx.sender, "recipient": path.address}
    message.update(properties)
    dsn = _dsn(tx.mail_params, params)
    dsn.update(message.get("dsn") or {})
    if dsn:
        message["dsn"] = dsn
    return message


def _dsn(mail_params, rcpt_params):
    dsn = {}
    for source, name in ((mail_params, "RET"), (mail_params, "ENVID"),
                         (rcpt_params, "NOTIFY"), (rcpt_params, "ORCPT")):
        if source.get(name):
            dsn[name.lower()] = source[name]
    return dsn


REPORT_TYPES = ("multipart/report", "application/zip", "application/gzip",
                "application/x-gzip", "application/xml", "text/xml")


def is_report(content):
    """A delivery status notification (RFC 3464, ``multipart/report``) or a
    DMARC aggregate report (RFC 7489 §7.2.1.1: "Report Domain:" subject, or a
    zip / gzip / XML message)."""
    media = headers.content_type(content)
    if media.startswith(REPORT_TYPES):
        return True
    return media.startswith("multipart/") and headers.field(content, "subject").startswith(
        "Report Domain:")


def _queue_for(local, conf, report):
    if local and report and conf.rabbitmq_reports:
        return conf.rabbitmq_reports
    if local and conf.rabbitmq_local:
        return conf.rabbitmq_local
    return conf.rabbitmq_inbox


def received_header(tx):
    protocol = ("ESMTP" if tx.esmtp else "SMTP") + ("S" if tx.tls else "") + (
        "A" if tx.user else "")
    date = _rfc5322_date(int(tx.received_at))
    target = "\r\n\tfor <%s>;" % tx.recipients[0][0].address if len(tx.recipients) == 1 else ";"
    text = "Received: from %s ([%s])\r\n\tby %s (mailerq-gevent) with %s id %s%s %s\r\n" % (
        _clean(tx.helo), tx.peer_ip, tx.hostname, protocol, tx.queue_id, target, date)
    return text.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=4)
def _rfc5322_date(second):
    """The date of a trace header; made once a second, not once a message."""
    return email.utils.format_datetime(datetime.fromtimestamp(second, timezone.utc))


@functools.lru_cache(maxsize=1024)
def _clean(text):
    """The HELO name as a header may show it: no control characters, bounded
    (kept: a client says the same name in each of its sessions)."""
    return "".join(c if c.isprintable() and c not in "()\\" else "?" for c in text[:255])


def outgoing_ips(local_ip, conf):
    """[the submitted-to address] when mappable, else ``smtp-defaultips``."""
    if local_ip and mappable(local_ip, conf):
        return [local_ip]
    return list(conf.smtp_defaultips)


def mappable(ip, conf):
    """Whether mail submitted to ``ip`` may leave from it."""
    address = ipaddress.ip_address(ip)
    if conf.smtp_mappable_ips and not any(address in net for net in conf.smtp_mappable_ips):
        return False
    return not any(address in net for net in conf.smtp_unmappable_ips)


# -- x-mq-* headers -> JSON properties ------------------------------------------

def extract(found):
    """``[("x-mq-name", value)]`` -> the JSON properties they stand for."""
    properties = {}
    for name, value in found:
        try:
            queued_message.set_from_text(properties, name[len(PREFIX):].lower(), value.strip())
        except ValueError as exc:
            raise BadHeader("bad value in the %s header: %s" % (name, exc)) from None
    return properties
