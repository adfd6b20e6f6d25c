"""Entry point: ``python -m mailerq_gevent`` and the ``mailerq-gevent`` script.

gevent's monkeypatching is the first statement, before anything else is
imported, so that every socket, lock and sleep below it is cooperative.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402


def main(argv=None):
    from mailerq_gevent.cli import run
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
