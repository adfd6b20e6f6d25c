"""The SMTP injection server (MailerQ's built-in SMTP server; RFC 5321).

    server.py      listeners, connection limits, who may connect / relay, greeting names
    listener.py    accepting: a gevent StreamServer per port, session greenlets reused
    session.py     one session: the state machine, a method per verb
    wire.py        reading lines and DATA within limits and deadlines; STARTTLS
    paths.py       MAIL/RCPT paths and parameters (addresses: ``mail/addresses.py``)
    auth.py        the AUTH PLAIN / LOGIN exchange (schemes in ``authn/``)
    protection.py  blocking addresses that keep failing to log in
    message.py     the queued JSON: Received, x-mq-* properties, outgoing IP, queues
    checks.py      smtp-check: SPF, DKIM, DMARC, spamd (authresults.py: the header)
    proxy.py       the PROXY protocol from smtp-proxy ranges
    workers.py     smtp-threads: sessions in worker processes (worker.py: one of them)
    reply.py       every reply the server sends

A 250 after DATA is sent only once every recipient's message is durably
queued (``Broker.publish_many``); when the queue cannot take it, 451.
"""
