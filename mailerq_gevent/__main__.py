"""Entry point: ``python -m mailerq_gevent`` and the ``mailerq-gevent`` script.

gevent's monkeypatching is the first statement, before anything else is
imported, so that every socket, lock and sleep below it is cooperative.
Before it, gevent is told not to record where each greenlet was spawned
(``track_greenlet_tree``, a debugging aid): delivery spawns one a message,
and the stack taken each time was a measurable part of a message's cost.
"""

from gevent import config, monkey

config.track_greenlet_tree = False     # no spawning stack kept per greenlet (one a message)
monkey.patch_all()

import sys  # noqa: E402


def main(argv=None):
    from mailerq_gevent.cli import run
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
