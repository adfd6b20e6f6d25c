"""Test set-up: gevent patching first (as in the daemon), then fixtures for
the real services. See ``tests/services.py`` for skip/fail rules."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from tests import services  # noqa: E402

# the fixtures of the support modules, for every test module without importing them
pytest_plugins = ("tests.browser", "tests.console_support", "tests.daemon_support",
                  "tests.dns_server", "tests.smtp_support", "tests.spamd")


def _scratch_name():
    return "mq_test_%s" % uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def pg_server_url():
    """``postgresql://`` URL of a scratch database, dropped after the run."""
    services.require("postgresql", services.PG_HOST, services.PG_PORT)
    import psycopg2
    name = _scratch_name()
    admin = "host=%s port=%d dbname=test user=%s" % (
        services.PG_HOST, services.PG_PORT, os.environ.get("PGUSER", "postgres"))
    try:
        conn = psycopg2.connect(admin)
    except psycopg2.Error as exc:
        services.unavailable("postgresql", str(exc).strip())
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE %s" % name)
    yield "postgresql://%s@%s:%d/%s" % (
        os.environ.get("PGUSER", "postgres"), services.PG_HOST, services.PG_PORT, name)
    conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    conn.close()


@pytest.fixture(scope="session")
def mysql_server_url():
    """``mysql://`` URL of a scratch MariaDB/MySQL database, dropped after the run."""
    services.require("mysql", services.MYSQL_HOST, services.MYSQL_PORT)
    import pymysql
    name = _scratch_name()
    try:
        conn = pymysql.connect(host=services.MYSQL_HOST, port=services.MYSQL_PORT,
                               user="root", password="", autocommit=True)
    except pymysql.MySQLError as exc:
        services.unavailable("mysql", str(exc))
    conn.cursor().execute("CREATE DATABASE %s CHARACTER SET utf8mb4" % name)
    yield "mysql://root@%s:%d/%s" % (services.MYSQL_HOST, services.MYSQL_PORT, name)
    conn.cursor().execute("DROP DATABASE IF EXISTS %s" % name)
    conn.close()


@pytest.fixture(scope="session")
def rabbit_url():
    """``amqp://`` URL of the local RabbitMQ (guest/guest)."""
    services.require("rabbitmq", services.RABBIT_HOST, services.RABBIT_PORT)
    return "amqp://guest:guest@%s:%d//" % (services.RABBIT_HOST, services.RABBIT_PORT)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request, tmp_path):
    """A database URL for each backend the product supports."""
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "mailerq.sqlite")
    return request.getfixturevalue(
        "pg_server_url" if request.param == "postgresql" else "mysql_server_url")
