"""Real services the tests talk to: PostgreSQL, MariaDB/MySQL, RabbitMQ.

Each helper returns a URL for the service or skips the test with a reason
that says how to get the service. Under CI (``CI=true``) a missing service is
a failure, not a skip: ``.ci/run`` starts the services, so a green CI means
the tests that need them really ran.
"""

import os
import socket

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672

HOW = {
    "postgresql": "start it: pg_ctlcluster --skip-systemctl-redirect "
                  "$(ls /etc/postgresql) main start",
    "mysql": "start it: start-stop-daemon --start --oknodo --background "
             "--exec /usr/sbin/mariadbd",
    "rabbitmq": "start it: rabbitmq-server -detached",
}


def reachable(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(kind, why):
    """Skip (or, under CI, fail) because service ``kind`` cannot be used."""
    message = "%s not available (%s); %s" % (kind, why, HOW[kind])
    if os.environ.get("CI") == "true":
        pytest.fail("under CI every service must run: " + message)
    pytest.skip(message)


def require(kind, host, port):
    if not reachable(host, port):
        unavailable(kind, "nothing listens on %s:%d" % (host, port))
