"""Wiring only: build the daemon's parts from the config, start them, stop them.

The order follows the mail: the settings (database snapshot) and the queue
come first, then the parts that use them (SMTP server, delivery, console),
which are appended to ``parts``; each has ``start()`` and ``stop(timeout)``.
Stopping goes the other way round: listeners first, the queue last, so what
is in flight can still be acknowledged.

The database may be down when the daemon starts: that is logged, the daemon
runs on the empty snapshot, and the reloader retries; the schema is created
(or purged, with ``--purge-database``) and this host's addresses are written
to ``ips`` at the first successful connection. The embedded queue must open
(the file is this process's alone); an unreachable RabbitMQ is not fatal.
"""

import socket
from urllib.parse import unquote, urlsplit

from mailerq_gevent import authn, certificates, logs, netinfo, resolver, settings
from mailerq_gevent import broker as broker_module
from mailerq_gevent.config_values import redact_url
from mailerq_gevent.connections import ConnectionBudget
from mailerq_gevent.console import app as console_app, live
from mailerq_gevent.console.templates import Context
from mailerq_gevent.db import engine as db_engine, load, schema
from mailerq_gevent.delivery.engine import DeliveryEngine
from mailerq_gevent.delivery.stats import Stats
from mailerq_gevent.signers import SignerPool
from mailerq_gevent.smtpd.checks import InboundChecks
from mailerq_gevent.smtpd.server import SMTPServer
from mailerq_gevent.smtpd.workers import WorkerPool, worker_processes

VAR_DIR = "var"     # generated files (the self-signed certificate), like the default paths

log = logs.get(__name__)


class App:
    def __init__(self, conf, purge_database=False):
        self.conf = conf
        self.purge_database = purge_database
        self.reloader = None
        self.database = None
        self.queue = self.broker = None
        self.budget = ConnectionBudget.from_config(conf)
        self.recorder = live.Recorder.from_config(conf) if conf.www_auth and (
            conf.www_port or conf.www_secure_port) else None    # the console's live SMTP view
        self.parts = []

    def queue_names(self):
        """Every queue named in the config ('' = disabled, left out)."""
        keys = ("inbox", "outbox", "local", "reports", "results", "success", "failure",
                "retry", "dsn")
        return [self.conf.queue(key) for key in keys if self.conf.queue(key)]

    def start(self):
        # the embedded queue (or RabbitMQ), which the broker opens and closes
        self.queue = broker_module.backend(self.conf.rabbitmq_address)
        self.broker = broker_module.Broker.from_config(self.conf, backend=self.queue)
        self.broker.start(self.queue_names())
        self.database = db_engine.make_engine(self.conf.database)
        self.reloader = settings.Reloader(self.database, self.conf.database_ttl, load.load_snapshot,
                                          prepare=self._prepare_database)
        self.reloader.reload_now()
        self.reloader.start()
        self.parts = self._build_parts()
        for part in self.parts:
            part.start()

    def _build_parts(self):
        parts = []
        if self.conf.queue("outbox"):
            parts.append(self._delivery())
        if self.conf.smtp_port or self.conf.smtp_secure_port:
            parts.append(self._smtp_server())
        if self.conf.www_port or self.conf.www_secure_port:
            console = self._console()
            if console is not None:
                parts.append(console)
        return parts

    def _console(self):
        """The web console, or None (and a warning) without ``www-auth``."""
        conf = self.conf
        if not conf.www_auth:
            log.warning("console.disabled", reason="www-auth is empty: nobody could log in")
            return None
        tls = None
        if conf.www_secure_port:
            tls = certificates.server_context(
                conf.www_certificate, conf.www_privatekey, conf.www_ciphers, var_dir=VAR_DIR,
                hostname=conf.www_host or socket.gethostname(), name="www")
        context = Context(
            conf, database=self.database, reloader=self.reloader, broker=self.broker,
            authenticator=authn.from_spec(conf.www_auth), recorder=self.recorder,
            status=self.status, secure=tls is not None)
        return console_app.ConsoleServer(context, tls_context=tls)

    def status(self):
        """Open connections for the console: inbound (here, or in all the SMTP
        worker processes), outbound (busy or idle), idle."""
        found = {type(part): part for part in self.parts}
        smtp = found.get(SMTPServer) or found.get(WorkerPool)
        engine = found.get(DeliveryEngine)
        return {"inbound": smtp.inbound() if smtp else None,
                "outbound": engine.pool.open_count if engine else 0,
                "idle": engine.pool.idle_count if engine else 0}

    def _delivery(self):
        """The sender pool on the outbox, counting into the ``deliveries_*`` tables."""
        return DeliveryEngine(self.conf, self.broker, lambda: self.reloader.current, self.budget,
                              resolver.make_resolver(self.conf.dns_server or None),
                              stats=Stats(self.database), recorder=self.recorder,
                              signer=self._signer())

    def _signer(self):
        """DKIM in ``smtp-threads`` - 1 helper processes, or here for 1."""
        helpers = worker_processes(self.conf.smtp_threads)
        return SignerPool(helpers, self.conf.log_level) if helpers else None

    def _smtp_server(self):
        """The SMTP server here, or (``smtp-threads`` > 1) in worker processes."""
        conf = self.conf
        tls = certificates.server_context(
            conf.smtp_certificate, conf.smtp_key, conf.smtp_ciphers, var_dir=VAR_DIR,
            hostname=conf.smtp_hostname or socket.gethostname(), name="smtp")
        authenticator = authn.from_spec(conf.smtp_auth)    # checks the spec here, at start
        workers = worker_processes(conf.smtp_threads)
        if workers:
            pool = WorkerPool(conf, workers, var_dir=VAR_DIR,
                              on_commit=self.queue.committed_elsewhere, recorder=self.recorder)
            self.reloader.subscribe(pool.settings_changed)
            return pool
        return SMTPServer(conf, self.broker, lambda: self.reloader.current, self.budget,
                          authenticator=authenticator, tls_context=tls,
                          checks=InboundChecks(conf), recorder=self.recorder)

    def stop(self, timeout=30.0):
        if self.recorder is not None:
            self.recorder.close()       # live view streams end now, not at the console's timeout
        for part in reversed(self.parts):
            _stop_quietly(part, timeout)
        for part in (self.broker, self.reloader):
            if part is not None:
                _stop_quietly(part, timeout)

    def _prepare_database(self, engine):
        """At the first successful connection: schema (or purge), then ``ips``."""
        if self.purge_database:
            log.warning("database.purging", database=redact_url(self.conf.database))
            schema.purge(engine)
            self.purge_database = False
        else:
            schema.ensure_schema(engine)
        addresses = netinfo.host_addresses()
        load.record_ips(engine, addresses, socket.gethostname(), vhost=self._vhost(),
                        exchange=self.conf.rabbitmq_exchange, outbox=self.conf.rabbitmq_outbox)
        log.info("database.ready", ips=len(addresses))

    def _vhost(self):
        url = self.conf.rabbitmq_address
        if not url.startswith("amqp"):
            return ""
        return unquote(urlsplit(url).path[1:]) or "/"


def _stop_quietly(part, timeout):
    try:
        part.stop(timeout)
    except Exception:  # noqa: BLE001 - one part failing to stop must not keep others up
        log.exception("daemon.stop_failed", part=part.__class__.__name__)
