"""What one delivery attempt means for the message: result, retry or give up (SPEC §4, §7).

A ``Result`` is one attempt's outcome, appended to the message's ``results``
list as the dict ``{"state", "result", "time", "from", "to", "code",
"status", "description"}``:

* ``state``: the step that ended the attempt: ``connect``, ``greeting``,
  ``ehlo``, ``starttls``, ``mail``, ``rcpt``, ``data`` (the SMTP steps),
  ``dns``, ``throttle``, ``local`` (ours);
* ``result``: ``"ok"`` for a delivered message, else ``"error"``;
* ``time``: UNIX seconds (int); ``from``: the local IP; ``to``: the remote IP
  (or host name when none was reached);
* ``code``: the SMTP reply code, ``0`` when there was no reply (a network
  error or a timeout); ``status``: the enhanced status ``x.y.z`` (RFC 3463),
  ``""`` when none; ``description``: the reply text or the error.

A local error that must not be retried (a domain that does not exist, a
refused address) carries a made-up 5xx code, so ``classify`` needs only the
code: 2xx success, 5xx failure, anything else (4xx, no reply) retry.

``decide(message, result, now, conf)`` turns a ``Result`` into a ``Decision``:
what to publish where, and, for a retry, after how long. The message
properties it reads (SPEC §4): ``retries`` (seconds between attempts, the last
one repeating; default ``DEFAULT_RETRIES``), ``maxattempts`` (0 or absent:
no limit), ``maxdelivertime`` (seconds after ``queued``, 0 or absent: 24 h; a
time, as ``x-mq-maxdelivertime`` may give one, is an absolute deadline),
``queues`` (per-message result queues, ``""``/``null`` disables one) and
``dsn`` (a DSN on failure, on success, and once, at the first retry, on
delay, as ``dsn.wants_dsn`` says).

``queued`` (UNIX seconds) is the property this module names for the time the
message was first seen by a sender: the delivery engine calls ``mark_queued``
on first sight, and the give-up time counts from it.
"""

from collections import namedtuple
from dataclasses import dataclass

from mailerq_gevent.broker import codec
from mailerq_gevent.delivery import dsn
from mailerq_gevent.mail import status
from mailerq_gevent.smtpd.message import parse_time

DEFAULT_RETRIES = (600, 600, 1800, 3600)
DEFAULT_MAXDELIVERTIME = 86400
QUEUED = "queued"
RESULT_QUEUES = ("results", "success", "failure", "retry")
# a "maxdelivertime" above this (Sep 2001 as a UNIX time) is a deadline, not a duration
_ABSOLUTE = 10 ** 9

Decision = namedtuple("Decision", "kind delay queues message")
Decision.__doc__ = """``kind``: success, failure or retry; ``delay``: seconds
before the next attempt (0 unless retry); ``queues``: ``[(queue, body bytes)]``
to publish, disabled queues left out; ``message``: the updated message (this
result appended; for a retry ``nextattempt`` set), to requeue to the outbox
with ``delay`` on a retry."""


@dataclass(frozen=True)
class Result:
    """One attempt's outcome (see the module docstring for the fields)."""

    state: str
    result: str
    time: int
    local_ip: str = ""
    remote: str = ""
    code: int = 0
    status: str = ""
    description: str = ""

    @property
    def kind(self):
        return classify(self.code)

    def as_dict(self):
        """The JSON form appended to the message's ``results``."""
        return {"state": self.state, "result": self.result, "time": int(self.time),
                "from": self.local_ip, "to": self.remote, "code": int(self.code or 0),
                "status": self.status, "description": self.description}

    @classmethod
    def from_reply(cls, state, code, text, now, local_ip="", remote=""):
        """A Result from an SMTP reply; the enhanced code is split off the text."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = " ".join((text or "").split())
        code_status, _, rest = text.partition(" ")
        if not status.is_status(code_status):
            code_status, rest = "", text
        return cls(state, "ok" if classify(code) == "success" else "error", int(now),
                   local_ip, remote, int(code or 0), code_status, rest.strip())

    @classmethod
    def from_attempt(cls, attempt, now, local_ip="", remote=""):
        """A Result from anything with ``state``, ``code``, ``status`` and
        ``text`` (``sender.Attempt``)."""
        code = int(attempt.code or 0)
        return cls(attempt.state, "ok" if classify(code) == "success" else "error", int(now),
                   local_ip, remote, code, attempt.status or "",
                   " ".join(str(attempt.text or "").split()))

    @classmethod
    def error(cls, state, description, now, local_ip="", remote="", code=0, status=""):
        """A Result for an attempt that got no usable reply (network, DNS, local)."""
        return cls(state, "error", int(now), local_ip, remote, code, status, description)


def classify(code):
    """``success`` for 2xx, ``failure`` for 5xx, ``retry`` for 4xx and no code."""
    if code and 200 <= code < 300:
        return "success"
    if code and 500 <= code < 600:
        return "failure"
    return "retry"


def mark_queued(message, now):
    """Set ``queued`` to ``now`` unless the message has it; returns its value."""
    return message.setdefault(QUEUED, int(now))


def first_delay(message, now):
    """Seconds to wait before an attempt, from ``nextattempt`` (a UNIX time or
    a date as ``x-mq-delayed`` accepts); 0 when absent, past or unreadable."""
    when = _as_time(message.get("nextattempt"))
    return max(0, when - now) if when is not None else 0


def retry_delay(message, attempt):
    """The delay after attempt number ``attempt`` (1 = the first attempt)."""
    schedule = _retries(message)
    return schedule[min(attempt, len(schedule)) - 1]


def deadline(message):
    """The UNIX time after which no attempt is made (``queued`` + ``maxdelivertime``)."""
    limit = message.get("maxdelivertime")
    if isinstance(limit, str) and not limit.strip().isdigit():
        absolute = _as_time(limit)
        if absolute is not None:
            return absolute
    limit = _number(limit, DEFAULT_MAXDELIVERTIME)
    if limit > _ABSOLUTE:
        return limit
    return _number(message.get(QUEUED), 0) + (limit or DEFAULT_MAXDELIVERTIME)


def decide(message, result, now, conf, reporting_mta=""):
    """The Decision for ``message`` after ``result`` (see the module docstring).

    ``message`` is not changed; ``conf`` gives the queue names (``conf.queue``)
    and ``reporting_mta`` the host name in a DSN (``smtp-hostname`` when empty).
    """
    updated = dict(message)
    updated.setdefault(QUEUED, int(now))
    attempt = len(updated.get("results") or ()) + 1
    kind, delay = result.kind, 0
    if kind == "retry":
        delay = retry_delay(updated, attempt)
        reason = _give_up_reason(updated, attempt, now + delay)
        if reason:
            kind, delay = "failure", 0
            result = _expired(result, reason)
    updated["results"] = list(updated.get("results") or ()) + [result.as_dict()]
    if kind == "retry":
        updated["nextattempt"] = int(now + delay)
    items = _publish(updated, kind, conf)
    if dsn.wants_dsn(updated, kind) and (kind != "retry" or attempt == 1):
        items.append(_dsn_item(updated, result, kind, now, conf, reporting_mta))
    return Decision(kind, delay, [item for item in items if item[0]], updated)


def queue_names(message, conf):
    """``{"results": name, ...}``: the config's names overridden by the
    message's ``queues``; ``""`` for a disabled queue."""
    overrides = message.get("queues")
    names = {key: conf.queue(key) or "" for key in RESULT_QUEUES}
    if isinstance(overrides, dict):
        for key in RESULT_QUEUES:
            if key in overrides:
                names[key] = overrides[key] or ""
    return names


def _publish(message, kind, conf):
    names = queue_names(message, conf)
    if not (names["results"] or names[kind]):
        return []               # both off: no need to encode the message (its MIME) at all
    body = codec.encode(message)
    return [(names["results"], body), (names[kind], body)]


def _dsn_item(message, result, kind, now, conf, reporting_mta):
    mta = reporting_mta or conf.smtp_hostname or "localhost"
    body = dsn.dsn_message(message, result.as_dict(), mta, now, kind=kind)
    return conf.queue("dsn"), codec.encode(body)


def _give_up_reason(message, attempt, next_time):
    limit = int(_number(message.get("maxattempts"), 0))
    if limit > 0 and attempt >= limit:
        return "maxattempts %d reached" % limit
    if next_time > deadline(message):
        return "maxdelivertime passed"
    return ""


def _expired(result, reason):
    return Result(result.state, "error", result.time, result.local_ip, result.remote,
                  result.code, result.status,
                  "expired (%s): %s" % (reason, result.description or "no answer"))


def _retries(message):
    values = message.get("retries")
    if isinstance(values, (list, tuple)) and values:
        numbers = [_number(value, None) for value in values]
        if all(n is not None and n >= 0 for n in numbers):
            return [int(n) for n in numbers]
    return DEFAULT_RETRIES


def _as_time(value):
    """A UNIX time from a number or a date string, or None."""
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
