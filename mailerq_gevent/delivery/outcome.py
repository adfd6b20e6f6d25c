"""What one delivery attempt means for the message: success, a retry, or giving up.

``decide(message, result, now, conf)`` turns a ``result.Result`` into a
``Decision``: the message with the result appended to its ``results``, what
to publish where, and, for a retry, after how long. A ``success`` result is
a success; a ``permanent`` one a failure; a ``transient`` one a retry after
the message's ``retries`` schedule (default ``DEFAULT_RETRIES``, the last
value repeating), unless that was the last of ``maxattempts`` or the next
attempt would fall after the deadline (``maxdelivertime`` from ``queued``,
default ``DEFAULT_MAXDELIVERTIME``): then a failure whose description says it
expired.

The message goes to the ``results`` queue and to the ``success``,
``failure`` or ``retry`` one (the config's names, overridden or disabled by
the message's ``queues``); a DSN goes to ``rabbitmq-dsn`` on failure, on
success, and once, at the first retry, on delay, as ``dsn.wants_dsn`` says.
"""

from collections import namedtuple

from mailerq_gevent.broker import codec
from mailerq_gevent.delivery import dsn
from mailerq_gevent.delivery.result import PERMANENT, SUCCESS, TRANSIENT
from mailerq_gevent.message import Message

DEFAULT_RETRIES = (600, 600, 1800, 3600)
DEFAULT_MAXDELIVERTIME = 86400
RESULT_QUEUES = ("results", "success", "failure", "retry")

Decision = namedtuple("Decision", "kind delay queues message")
Decision.__doc__ = """``kind``: success, failure or retry; ``delay``: seconds
before the next attempt (0 unless retry); ``queues``: ``[(queue, body bytes)]``
to publish, disabled queues left out; ``message``: the updated Message (this
result appended; for a retry ``nextattempt`` set), to requeue to the outbox
with ``delay`` on a retry."""


def first_delay(message, now):
    """Seconds to wait before an attempt, from ``nextattempt``; 0 when absent,
    past or unreadable."""
    when = message.nextattempt
    return max(0, when - now) if when is not None else 0


def retry_delay(message, attempt):
    """The delay after attempt number ``attempt`` (1 = the first attempt)."""
    schedule = message.retries or DEFAULT_RETRIES
    return schedule[min(attempt, len(schedule)) - 1]


def decide(message, result, now, conf, reporting_mta=""):
    """The Decision for ``message`` after ``result`` (see the module docstring).

    ``message`` is not changed; ``conf`` gives the queue names (``conf.queue``)
    and ``reporting_mta`` the host name in a DSN (``smtp-hostname`` when empty).
    """
    updated = Message(message)
    updated.mark_queued(now)
    attempt = len(updated.results) + 1
    kind, delay = _KINDS[result.kind], 0
    if kind == "retry":
        delay = retry_delay(updated, attempt)
        reason = _give_up_reason(updated, attempt, now + delay)
        if reason:
            kind, delay = "failure", 0
            result = result.described("expired (%s): %s" % (
                reason, result.description or "no answer"))
    updated["results"] = updated.results + [result.as_dict()]
    if kind == "retry":
        updated["nextattempt"] = int(now + delay)
    items = _publish(updated, kind, conf)
    if dsn.wants_dsn(updated, kind) and (kind != "retry" or attempt == 1):
        items.append(_dsn_item(updated, result, kind, now, conf, reporting_mta))
    return Decision(kind, delay, [item for item in items if item[0]], updated)


_KINDS = {SUCCESS: "success", TRANSIENT: "retry", PERMANENT: "failure"}


def queue_names(message, conf):
    """``{"results": name, ...}``: the config's names overridden by the
    message's ``queues``; ``""`` for a disabled queue."""
    overrides = message.queues
    names = {key: conf.queue(key) or "" for key in RESULT_QUEUES}
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
    limit = message.maxattempts
    if limit > 0 and attempt >= limit:
        return "maxattempts %d reached" % limit
    if next_time > message.deadline(DEFAULT_MAXDELIVERTIME):
        return "maxdelivertime passed"
    return ""
