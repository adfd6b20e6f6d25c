"""One SMTP worker process (``smtp-threads: N`` above 1 starts N - 1 of them,
``workers.py``).

    python -m mailerq_gevent.smtpd.worker --config FILE --index N --channel FD --workers COUNT

It serves SMTP on the ports of the config (bound with SO_REUSEPORT, beside
the other workers), reads the settings from
the database itself (and again when the daemon says they changed), and
publishes on its own: into the daemon's embedded queue file (through a
writer-only ``EmbeddedQueue``, see ``broker.embedded``; the daemon hears of
each commit over ``worker_channel``), or to RabbitMQ. It stops cleanly on SIGTERM
and at once when the daemon goes away (nothing can be queued then).
"""

from gevent import config, monkey

config.track_greenlet_tree = False     # no spawning stack kept per greenlet (one a message)
monkey.patch_all()

import argparse  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from mailerq_gevent import authn, certificates, config, logs, settings  # noqa: E402
from mailerq_gevent.broker import Broker, backend  # noqa: E402
from mailerq_gevent.connections import ConnectionBudget  # noqa: E402
from mailerq_gevent.db import load  # noqa: E402
from mailerq_gevent.smtpd import worker_channel  # noqa: E402
from mailerq_gevent.smtpd.checks import InboundChecks  # noqa: E402
from mailerq_gevent.smtpd.live_relay import RemoteRecorder  # noqa: E402
from mailerq_gevent.smtpd.server import SMTPServer, listen_all  # noqa: E402

log = logs.get(__name__)
STOP_TIMEOUT = 30.0
INBOUND_EVERY = 0.1     # seconds between looks at the number of open sessions


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="mailerq-gevent smtp worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--var-dir", default="var")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conf = config.load(args.config)
    logs.setup(conf.log_level)
    reloader = settings.Reloader(conf.database, conf.database_ttl, load.load_snapshot)
    reloader.reload_now()
    reloader.start()
    # the channel to the daemon: reload notices, commit notices, its death
    control = worker_channel.Control(socket.socket(fileno=args.channel),
                                     on_reload=reloader.reload_now)
    # the daemon owns the embedded queue's file: this process writes into it
    # and tells the daemon of each commit
    queue = backend(conf.rabbitmq_address, writer_only=True, on_commit=control.committed)
    broker = Broker.from_config(conf, backend=queue)
    broker.start([])        # opens the file; the publisher declares queues on first use
    recorder = RemoteRecorder(control.send)     # the console's live view is the daemon's
    server = _server(conf, args, broker, reloader, recorder)
    # failed logins are counted over all the workers by the daemon, which says what to block
    server.protection.on_failure, control.on_block = control.auth_failed, server.protection.block
    control.on_watch = lambda watched: _watch(recorder, args.index, watched)
    server.start()
    counting = gevent.spawn(_tell_inbound, server, control)
    log.info("smtp.worker_started", index=args.index)
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    gevent.wait([stopping, control.reader], count=1)
    if not stopping.is_set():
        log.error("smtp.worker_orphaned", index=args.index, detail="the daemon process is gone")
    counting.kill()
    server.stop(STOP_TIMEOUT if stopping.is_set() else 1.0)
    broker.stop(5)
    control.stop()
    reloader.stop(5)
    log.info("smtp.worker_stopped", index=args.index)
    return 0


def _tell_inbound(server, control):
    """Tell the daemon how many sessions are open here: now (we listen: the
    daemon waits for that at start), then whenever that changed."""
    told = None
    while True:
        count = server.inbound()
        if count != told:
            control.send({"inbound": count})
            told = count
        gevent.sleep(INBOUND_EVERY)


def _watch(recorder, index, watched):
    """Somebody started (or stopped) watching the live view: send every session
    (or one a second)."""
    recorder.watched = watched
    log.info("smtp.live_watched", index=index, watched=watched)


def _server(conf, args, broker, reloader, recorder):
    listeners = listen_all(conf, reuse_port=True)
    share = lambda limit: math.ceil(limit / args.workers) if limit else 0  # noqa: E731
    budget = ConnectionBudget(share(conf.smtp_connections), share(conf.smtp_connections_in), 0)
    tls = certificates.server_context(
        conf.smtp_certificate, conf.smtp_key, conf.smtp_ciphers, var_dir=args.var_dir,
        hostname=conf.smtp_hostname or socket.gethostname(), name="smtp")
    return SMTPServer(conf, broker, lambda: reloader.current, budget,
                      authenticator=authn.from_spec(conf.smtp_auth), tls_context=tls,
                      listeners=listeners, checks=InboundChecks(conf), recorder=recorder)


if __name__ == "__main__":
    sys.exit(main())
