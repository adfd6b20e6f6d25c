"""The console under test: a real ConsoleServer on a free loopback port, with
a real SQLite database (schema made), a Reloader, an embedded queue, and
``requests`` sessions that log in like a browser."""

import re

import pytest
import requests

from mailerq_gevent import authn, config, settings
from mailerq_gevent.broker import Broker
from mailerq_gevent.console.app import ConsoleServer
from mailerq_gevent.console.templates import Context
from mailerq_gevent.db import load, schema
from mailerq_gevent.db.engine import make_engine

USER, PASSWORD = "admin", "s3cret-pass"


class Console:
    def __init__(self, tmp_path, tls=None, **conf):
        values = dict(www_port=0, www_ip="127.0.0.1",
                      www_auth="hardcoded://%s:%s" % (USER, PASSWORD),
                      database="sqlite:///%s" % (tmp_path / "db.sqlite"),
                      rabbitmq_address="sqlite:///%s" % (tmp_path / "queue.sqlite"))
        values.update(conf)
        self.conf = config.defaults().replace(**values)
        self.database = make_engine(self.conf.database)
        schema.ensure_schema(self.database)
        self.reloader = settings.Reloader(self.database, 600, load.load_snapshot)
        self.reloader.reload_now()
        self.start_broker()
        self.context = Context(self.conf, database=self.database, reloader=self.reloader,
                               broker=self.broker,
                               authenticator=authn.from_spec(self.conf.www_auth),
                               secure=tls is not None)
        self.server = ConsoleServer(self.context, tls_context=tls).start()
        self.port = self.server.addresses[0][1]
        self.url = "http://127.0.0.1:%d" % self.port

    def start_broker(self):
        """A new Broker on the queue file, as the daemon makes one when it starts."""
        self.broker = Broker(self.conf.rabbitmq_address)
        self.broker.start(["outbox"])
        return self.broker

    def stop(self):
        self.server.stop(2)
        self.broker.stop(5)
        self.database.dispose()

    def client(self):
        """A requests.Session that is not logged in."""
        session = requests.Session()
        session.base = self.url
        return session

    def login(self, user=USER, password=PASSWORD):
        """A logged-in requests.Session with ``.csrf`` (from the page's meta tag)."""
        session = self.client()
        answer = session.post(self.url + "/login", data={"user": user, "password": password},
                              allow_redirects=True, timeout=10)
        assert answer.status_code == 200, answer.text[:300]
        session.csrf = csrf_of(answer.text)
        return session


def csrf_of(html):
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', html)
    return found.group(1) if found else ""


@pytest.fixture
def console(tmp_path):
    made = []

    def make(**conf):
        made.append(Console(tmp_path, **conf))
        return made[-1]
    yield make
    for each in made:
        each.stop()
