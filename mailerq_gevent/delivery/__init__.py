"""Delivery: from the outbox to the recipient's MX.

    engine.py    consume the outbox, route, attempt, settle (publish the outcome, ack)
    routing.py   where a message goes (dns table, smarthost, relay, MX), the local IP
    attempt.py   one attempt over the route's targets
    pool.py      the outgoing connections: reuse, limits, smtp-connections-out (idle.py)
    sender.py    one SMTP client connection (smtplib)
    throttle.py  token buckets, connection slots, flood responses
    spread.py    the delays of a throttled backlog
    result.py    one attempt's result (success, transient, permanent)
    outcome.py   what a result means for the message: retry, give up, result queues
    dsn.py       bounces and the DSN parameters passed on (RFC 3461, 3464)
    mime.py, headers.py   the MIME made fit for the next hop; the ``headers`` property
    stats.py     per-minute counters
"""
