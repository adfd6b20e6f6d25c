"""Delivery status notifications to the envelope sender (RFC 3464, RFC 3461, RFC 3462).

The messages here are ``message.Message`` values.

``wants_dsn(message, kind)`` reads the message's ``dsn.notify`` (RFC 3461
NOTIFY: ``NEVER`` or any of ``SUCCESS``, ``FAILURE``, ``DELAY``, as a comma
separated string or a list). Without ``notify`` only a failure is reported.
A null reverse-path (``""`` or ``<>``) never gets a DSN, whatever it asks.

``build_dsn`` makes the ``multipart/report; report-type=delivery-status``
message (RFC 3462) with the ``email`` package (policy SMTP, CRLF): a
human-readable ``text/plain`` part, the ``message/delivery-status`` part
(RFC 3464 §2.2 per-message fields, §2.3 per-recipient fields) and the original
message. ``dsn.ret`` chooses how much of it: ``FULL`` the whole message
(``message/rfc822``), ``HDRS`` only its header (``text/rfc822-headers``).
Without ``ret`` it is ``HDRS``: the bulk mail this daemon sends is the sender's
own, and returning every bounced newsletter whole only costs bandwidth. A
``FULL`` message larger than ``max_full`` is returned as headers too.

``dsn_message`` wraps it in the queue JSON for ``rabbitmq-dsn``, with a null
envelope sender so that a DSN never causes another one, and a queue id of
its own.

``smtp_parameters`` turns the same ``dsn`` property into the ESMTP parameters
a relay passes on to a next hop that offers DSN (RFC 3461 §4, §6.2): RET and
ENVID on MAIL, NOTIFY and ORCPT on RCPT. ENVID and ORCPT travel as xtext; a
value that arrived over SMTP is xtext already and goes on as it came.
"""

import email
import email.policy
import email.utils
import re
from email.message import EmailMessage, Message, MIMEPart

from mailerq_gevent.mail import addresses, headers
from mailerq_gevent.mail.status import is_status
from mailerq_gevent.message import Message as QueuedMessage, new_id

NOTIFY_FOR = {"success": "SUCCESS", "failure": "FAILURE", "retry": "DELAY", "delay": "DELAY"}
ACTIONS = {"success": "delivered", "failure": "failed", "retry": "delayed", "delay": "delayed"}
SUBJECTS = {"delivered": "Successful Mail Delivery Report",
            "failed": "Undelivered Mail Returned to Sender",
            "delayed": "Delayed Mail (still being retried)"}
INTROS = {"delivered": "Your message was successfully delivered to the recipient below.",
          "failed": "I'm sorry to have to inform you that your message could not\n"
                    "be delivered to the recipient below. It has been given up.",
          "delayed": "Delivery of your message to the recipient below has been delayed.\n"
                     "It is still being retried; you need not send it again."}
MAX_FULL = 10 * 1024 * 1024
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


_IS_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
MAX_ENVID, MAX_ORCPT = 100, 500     # RFC 3461 §4.4, §4.2


def smtp_parameters(dsn):
    """``(MAIL parameters, RCPT parameters)`` for a next hop offering DSN, from
    the message's ``dsn`` property; a value that cannot be sent as RFC 3461
    allows is left out rather than have the next hop refuse the message."""
    dsn = dsn if isinstance(dsn, dict) else {}
    mail, rcpt = [], []
    ret = str(dsn.get("ret") or "").strip().upper()
    if ret in ("FULL", "HDRS"):
        mail.append("RET=" + ret)
    envid = _xtext(str(dsn.get("envid") or "").strip())
    if envid and len(envid) <= MAX_ENVID:
        mail.append("ENVID=" + envid)
    wanted = _notify(dsn)
    if wanted and addresses.valid_notify(wanted):
        rcpt.append("NOTIFY=" + ",".join(sorted(wanted)))
    orcpt = _orcpt(str(dsn.get("orcpt") or "").strip())
    if orcpt and len(orcpt) <= MAX_ORCPT:
        rcpt.append("ORCPT=" + orcpt)
    return mail, rcpt


def _orcpt(value):
    """``addr-type;xtext`` (an address without a type is rfc822). Only rfc822
    addresses are encoded here; another type (utf-8 has an encoding of its
    own, RFC 6533) goes on only when it is valid as it stands."""
    if not value:
        return ""
    kind, sep, address = value.partition(";")
    if not sep:
        kind, address = "rfc822", value
    kind, address = kind.strip(), address.strip()
    if not address or not _ADDRESS_TYPE.match(kind):
        return ""
    if kind.lower() != "rfc822":
        return "%s;%s" % (kind, address) if _IS_XTEXT.match(address) else ""
    return "%s;%s" % (kind, _xtext(address))


def _xtext(text):
    """RFC 3461 §4 xtext: kept when it is xtext already, else encoded (octets
    outside ``!``..``~``, and ``+`` and ``=``, as ``+XX``)."""
    if _IS_XTEXT.match(text):
        return text
    return "".join(chr(octet) if 33 <= octet <= 126 and octet not in (43, 61) else
                   "+%02X" % octet for octet in text.encode("utf-8"))


def _notify(dsn):
    """The NOTIFY keywords asked for (upper case), or None when not given."""
    raw = dsn.get("notify")
    items = raw if isinstance(raw, (list, tuple)) else re.split(r"[,\s]+", str(raw or ""))
    wanted = {str(item).strip().upper() for item in items if str(item).strip()}
    return wanted or None


def wants_dsn(message, kind):
    """Whether the sender wants a DSN for ``kind`` (success, failure, retry/delay)."""
    if is_null_sender(message.envelope):
        return False
    wanted = _notify(message.dsn)
    if wanted is None:
        return kind == "failure"
    return "NEVER" not in wanted and NOTIFY_FOR.get(kind) in wanted


def is_null_sender(envelope):
    return not (envelope or "").strip().strip("<>").strip()


def full_return(message):
    """True when ``dsn.ret`` is FULL (the default, HDRS, returns the header only)."""
    return str(message.dsn.get("ret") or "").strip().upper() == "FULL"


def dsn_message(message, result, reporting_mta, now, kind="failure"):
    """The JSON message for ``rabbitmq-dsn``: the DSN to the envelope sender,
    from the null reverse-path, leaving from the original message's ``ips``."""
    mime = build_dsn(message, result, reporting_mta, now, kind)
    out = QueuedMessage(id=new_id(), envelope="",
                        recipient=message.envelope.strip().strip("<>"),
                        mime=mime.decode("utf-8", "surrogateescape"))
    if message.ips:
        out["ips"] = message.ips
    return out


def build_dsn(message, result, reporting_mta, now, kind="failure", max_full=MAX_FULL):
    """The DSN for ``message`` after ``result`` (a Result or its dict) as bytes."""
    result = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    action = ACTIONS[kind]
    sender = message.envelope.strip().strip("<>")
    policy = email.policy.SMTP if _is_ascii(sender, message.recipient) else (
        email.policy.SMTPUTF8)
    report = _envelope_headers(EmailMessage(policy=policy), sender, reporting_mta, now, action)
    report.set_content(_human_text(message, result, reporting_mta, action))
    report.make_mixed()
    report.attach(_status_part(message, result, reporting_mta, action, policy))
    report.attach(_original_part(message, max_full, policy))
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")
    return report.as_bytes()


def _envelope_headers(report, sender, reporting_mta, now, action):
    report["From"] = "Mail Delivery System <MAILER-DAEMON@%s>" % reporting_mta
    report["To"] = sender
    report["Subject"] = SUBJECTS[action]
    report["Date"] = email.utils.formatdate(now, usegmt=True)
    report["Message-ID"] = email.utils.make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"
    return report


def _human_text(message, result, reporting_mta, action):
    remote = _clean(result.get("to") or "the remote host", ascii_only=False)
    said = _clean(_reply_text(result) or "no answer", ascii_only=False)
    return ("This is the mail system at host %s.\n\n%s\n\n<%s>: %s said\n"
            "    %s\n    (at the %s step)\n") % (
        reporting_mta, INTROS[action], message.recipient, remote, said,
        result.get("state") or "delivery")


def _status_part(message, result, reporting_mta, action, policy):
    part = MIMEPart(policy=policy)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload([_per_message(message, reporting_mta, policy),
                      _per_recipient(message, result, action, policy)])
    return part


def _per_message(message, reporting_mta, policy):
    fields = Message(policy=policy)
    fields["Reporting-MTA"] = "dns; %s" % reporting_mta
    envid = message.dsn.get("envid")
    if envid:
        fields["Original-Envelope-Id"] = _clean(_xtext_decode(envid))
    if message.queued:
        fields["Arrival-Date"] = email.utils.formatdate(float(message.queued), usegmt=True)
    return fields


def _per_recipient(message, result, action, policy):
    fields = Message(policy=policy)
    orcpt = message.dsn.get("orcpt")
    if orcpt:
        fields["Original-Recipient"] = _typed_address(_xtext_decode(orcpt))
    fields["Final-Recipient"] = _typed_address(message.recipient)
    fields["Action"] = action
    fields["Status"] = dsn_status(result, action)
    if result.get("to"):
        fields["Remote-MTA"] = "dns; %s" % _clean(result["to"])
    if result.get("code"):
        fields["Diagnostic-Code"] = "smtp; %s" % _clean(_reply_text(result))
    if result.get("time"):
        fields["Last-Attempt-Date"] = email.utils.formatdate(float(result["time"]), usegmt=True)
    return fields


def dsn_status(result, action):
    """The Status field (RFC 3463): the reply's enhanced code when its class
    fits the action, else ``x.0.0``; a failure that got no 5xx reply (retries
    used up) is ``5.4.7``, delivery time expired."""
    status, code = result.get("status") or "", int(result.get("code") or 0)
    wanted = {"delivered": "2", "failed": "5", "delayed": "4"}[action]
    if is_status(status) and status[0] == wanted:
        return status
    if action == "failed" and not 500 <= code < 600:
        return "5.4.7"
    return wanted + ".0.0"


def _original_part(message, max_full, policy):
    original = message.mime
    part = MIMEPart(policy=policy)
    if full_return(message) and len(original) <= max_full:
        part.set_content(email.message_from_bytes(original, policy=policy),
                         cte="7bit" if original.isascii() else "8bit")
    else:
        block = headers.split(original)[0].decode("utf-8", "replace")
        part.set_content(block, subtype="rfc822-headers")
    return part


def _reply_text(result):
    """``code status text``; the status once when the text starts with it."""
    status, text = result.get("status") or "", result.get("description") or ""
    parts = [str(result["code"])] if result.get("code") else []
    parts += [status if not text.startswith(status + " ") and text != status else "", text]
    return " ".join(part for part in parts if part)


def _typed_address(address):
    """``rfc822; addr`` (RFC 3464 §2.3.2), or ``utf-8; addr`` for an
    internationalised address (RFC 6533); an ORCPT that names its type keeps it."""
    address = _clean(address, ascii_only=False)
    if ";" in address:
        kind, _, rest = address.partition(";")
        return "%s; %s" % (kind.strip(), rest.strip())
    return "%s; %s" % ("rfc822" if address.isascii() else "utf-8", address)


def _xtext_decode(text):
    """RFC 3461 §4 xtext: ``+XX`` stands for the octet XX."""
    return _XTEXT.sub(lambda match: chr(int(match.group(1), 16)), str(text))


def _clean(text, ascii_only=True):
    """One line, no control characters (a reply from a remote server is data,
    not headers), and ASCII unless told otherwise."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return text.encode("ascii", "replace").decode("ascii") if ascii_only else text


def _is_ascii(*texts):
    return all((text or "").isascii() for text in texts)
