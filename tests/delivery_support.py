"""The delivery engine under test: a real embedded queue in tmp_path, real SMTP
sinks on loopback, settings from plain rows (swappable), a real resolver."""

import json

from mailerq_gevent import config
from mailerq_gevent.broker import Broker, codec
from mailerq_gevent.broker.storage import list_messages
from mailerq_gevent.connections import ConnectionBudget
from mailerq_gevent.delivery.engine import DeliveryEngine
from mailerq_gevent.resolver import make_resolver
from tests.rows import snapshot
from tests.smtp_sink import SmtpSink

QUEUES = ("outbox", "results", "success", "failure", "retry", "dsn")

MIME = (b"From: Sender <sender@origin.test>\r\nTo: rcpt@example.test\r\n"
        b"Subject: hello\r\nMessage-ID: <1@origin.test>\r\n\r\nHello there.\r\n"
        b".a line starting with a dot\r\n")


def capacity(domain="", localip="", **limits):
    row = {name: -1 for name in ("domain_maxmessages", "domain_maxconnects",
                                 "domain_maxconnections", "ip_maxmessages", "ip_maxconnects",
                                 "ip_maxconnections", "connection_maxmessages",
                                 "connection_maxidletime")}
    row.update(limits, domain=domain, localip=localip)
    row.setdefault("secure", 0)
    return row


class World:
    """An engine on an embedded queue; ``sink`` receives every domain routed to it."""

    def __init__(self, tmp_path, rows=None, sink=None, dns_server=None, router=None,
                 recorder=None, **conf):
        self.queue_path = tmp_path / "queue.sqlite"
        values = dict(rabbitmq_address="sqlite:///%s" % self.queue_path,
                      rabbitmq_outbox="outbox", smtp_hostname="mta.test", rabbitmq_dsn="dsn")
        values.update(conf)
        self.conf = config.defaults().replace(**values)
        self.broker = Broker(self.conf.rabbitmq_address)
        self.broker.start(QUEUES)
        self.sink = sink or SmtpSink().start()
        self.rows = rows or {}
        self.snapshot = None
        self.set_rows(self.rows)
        self.engine = DeliveryEngine(self.conf, self.broker, lambda: self.snapshot,
                                     ConnectionBudget(), make_resolver(dns_server),
                                     router=router, command_timeout=5.0, connect_timeout=5.0,
                                     recorder=recorder)

    def set_rows(self, rows):
        """New settings (as a reload would bring); ``dns`` rows default to the sink."""
        rows = dict(rows)
        rows.setdefault("dns", [{"domain": domain, "address": "127.0.0.1:%d" % self.sink.port,
                                 "priority": 10} for domain in ("example.test", "other.test")])
        self.snapshot = snapshot(rows)

    def start(self):
        self.engine.start()
        return self

    def stop(self):
        self.engine.stop(5)
        self.broker.stop(5)
        self.sink.stop()

    def inject(self, recipient="rcpt@example.test", mime=MIME, **properties):
        message = dict({"envelope": "sender@origin.test", "recipient": recipient,
                        "mime": mime.decode("utf-8", "surrogateescape")}, **properties)
        self.broker.publish("outbox", codec.encode(message))
        return message

    def queued(self, queue):
        """The JSON messages in ``queue`` (delayed ones too), in order."""
        return [json.loads(row.body) for row in list_messages(str(self.queue_path), queue)]

    def count(self, queue):
        return len(self.queued(queue))
