"""The command line: ``mailerq-gevent [--config FILE] [--purge-database] [--check-config]``.

Exit status: 0 after a clean stop (or a valid ``--check-config``), 2 for a bad
config file or bad arguments, 1 when the daemon could not start.
SIGTERM and SIGINT stop the daemon gracefully (``App.stop``).
"""

import argparse
import signal
import sys

import gevent
from gevent.event import Event

from mailerq_gevent import config, logs

log = logs.get(__name__)
STOP_TIMEOUT = 30.0


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="mailerq-gevent",
        description="A gevent-based bulk-mail transfer agent in the spirit of MailerQ.")
    parser.add_argument("--config", default=config.DEFAULT_PATH, metavar="FILE",
                        help="config file (default: %(default)s)")
    parser.add_argument("--purge-database", action="store_true",
                        help="drop every table and create them anew, then run")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config file and exit (0 valid, 2 not)")
    return parser.parse_args(argv)


def run(argv):
    args = parse_args(argv)
    try:
        conf = config.load(args.config)
    except config.ConfigError as exc:
        print("mailerq-gevent: %s" % exc, file=sys.stderr)
        return 2
    if args.check_config:
        print("%s: ok" % args.config)
        return 0
    logs.setup(conf.log_level)
    return serve(conf, purge=args.purge_database)


def serve(conf, purge=False):
    """Start the daemon, wait for SIGTERM/SIGINT, stop it."""
    from mailerq_gevent.app import App
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    app = App(conf, purge_database=purge)
    try:
        app.start()
    except Exception as exc:  # noqa: BLE001 - report any start failure, then stop cleanly
        log.exception("daemon.start_failed", error=exc.__class__.__name__)
        app.stop(STOP_TIMEOUT)
        return 1
    log.info("daemon.started", config=conf.path)
    stopping.wait()
    log.info("daemon.stopping")
    app.stop(STOP_TIMEOUT)
    log.info("daemon.stopped")
    return 0
