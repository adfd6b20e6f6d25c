"""The database package on every backend (SQLite, PostgreSQL, MariaDB): engine,
schema creation and upgrade, purge, the ``ips`` table and snapshot loading.

The server databases are one scratch database per run shared by all tests, so
the ``engine`` fixture drops our tables (and the foreign one) before and after.
"""

import ipaddress
import socket
import time
from datetime import datetime

import gevent
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from mailerq_gevent import netinfo
from mailerq_gevent.db import load, schema, tables
from mailerq_gevent.db.engine import make_engine

OURS = set(tables.metadata.tables)
FOREIGN = "customer_notes"
IP = "192.0.2.1"


def drop_everything(engine):
    tables.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS %s" % FOREIGN))


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    drop_everything(engine)
    yield engine
    drop_everything(engine)
    engine.dispose()


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_ensure_schema_creates_every_table_column_and_index(engine):
    changes = schema.ensure_schema(engine)
    assert sorted(changes) == sorted(("table", name) for name in OURS)
    inspector = inspect(engine)
    assert OURS <= set(inspector.get_table_names())
    for table in tables.metadata.tables.values():
        assert [c["name"] for c in inspector.get_columns(table.name)] == list(table.c.keys())
        assert {i["name"] for i in inspector.get_indexes(table.name)} >= {
            index.name for index in table.indexes}
    assert {"ix_deliveries_total_time", "ix_deliveries_domain_time",
            "ix_deliveries_ip_time"} <= {i.name for t in tables.metadata.tables.values()
                                         for i in t.indexes}


def test_ensure_schema_twice_is_a_noop_and_keeps_rows(engine):
    schema.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(tables.capacity.insert().values(domain="example.com", domain_maxmessages=7))
    assert schema.ensure_schema(engine) == []
    assert count(engine, tables.capacity) == 1


def test_capacity_defaults_fall_back_and_counters_start_at_zero(engine):
    schema.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO capacity (domain, domain_maxmessages) "
                          "VALUES ('example.com', 1000)"))
        conn.execute(tables.deliveries_total.insert().values(time=datetime(2024, 5, 1, 12, 0)))
        row = conn.execute(select(tables.capacity)).mappings().one()
        stats = conn.execute(select(tables.deliveries_total)).mappings().one()
    assert row["domain_maxmessages"] == 1000 and row["ip_maxconnections"] == -1
    assert row["secure"] == -1
    assert (stats["success"], stats["failures"], stats["retries"]) == (0, 0, 0)


def test_missing_columns_and_indexes_are_added_and_rows_kept(engine):
    stamp = "TIMESTAMP" if engine.dialect.name == "postgresql" else "DATETIME"
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE capacity (id INTEGER PRIMARY KEY, localip VARCHAR(45), "
            "domain VARCHAR(255), domain_maxmessages INTEGER, domain_maxconnects INTEGER, "
            "domain_maxconnections INTEGER, ip_maxmessages INTEGER, ip_maxconnects INTEGER, "
            "ip_maxconnections INTEGER, connection_maxmessages INTEGER)"))
        conn.execute(text("INSERT INTO capacity (id, localip, domain, domain_maxmessages) "
                          "VALUES (1, '', 'example.com', 50)"))
        conn.execute(text("CREATE TABLE deliveries_ip (id INTEGER PRIMARY KEY, time %s NOT NULL, "
                          "localip VARCHAR(45), remoteip VARCHAR(45), success INTEGER)" % stamp))
        conn.execute(text("INSERT INTO deliveries_ip (id, time, localip, success) "
                          "VALUES (1, '2024-05-01 12:00:00', '192.0.2.1', 3)"))
    changes = schema.ensure_schema(engine)
    assert {("column", "capacity.connection_maxidletime"), ("column", "capacity.secure"),
            ("column", "deliveries_ip.failures"), ("column", "deliveries_ip.retries"),
            ("index", "ix_deliveries_ip_time"), ("index", "ix_deliveries_ip_remoteip"),
            } <= set(changes)
    assert ("table", "capacity") not in changes
    with engine.connect() as conn:
        row = conn.execute(select(tables.capacity)).mappings().one()
        stats = conn.execute(select(tables.deliveries_ip)).mappings().one()
    assert (row["domain"], row["domain_maxmessages"]) == ("example.com", 50)
    assert (row["secure"], row["connection_maxidletime"]) == (-1, -1)
    assert (stats["success"], stats["failures"], stats["retries"]) == (3, 0, 0)
    assert load.load_snapshot(engine).capacity(IP, "example.com").domain_maxmessages == 50
    assert schema.ensure_schema(engine) == []


def test_instances_starting_together_both_succeed(engine, db_url):
    other = make_engine(db_url)
    jobs = [gevent.spawn(schema.ensure_schema, e) for e in (engine, other)]
    gevent.joinall(jobs, raise_error=True, timeout=60)
    assert all(job.successful() for job in jobs)
    assert OURS <= set(inspect(engine).get_table_names())


@pytest.mark.parametrize("db_url", ["postgresql", "mysql"], indirect=True)  # not SQLite,
def test_an_instance_waits_while_another_holds_the_schema_lock(engine):  # whose DDL is transactional
    holder = engine.connect()
    lock, unlock = {
        "postgresql": ("SELECT pg_advisory_lock(%d)" % schema.LOCK_KEY,
                       "SELECT pg_advisory_unlock(%d)" % schema.LOCK_KEY),
        "mysql": ("SELECT GET_LOCK('%s', 5)" % schema.LOCK_NAME,
                  "SELECT RELEASE_LOCK('%s')" % schema.LOCK_NAME)}[engine.dialect.name]
    try:
        holder.exec_driver_sql(lock)
        job = gevent.spawn(schema.ensure_schema, engine)
        gevent.sleep(0.5)
        assert not job.ready()
        assert not OURS & set(inspect(engine).get_table_names())
        holder.exec_driver_sql(unlock)
        assert sorted(job.get(timeout=30)) == sorted(("table", name) for name in OURS)
    finally:
        holder.close()


def test_purge_empties_our_tables_and_leaves_others_alone(engine):
    schema.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(tables.capacity.insert().values(domain="example.com"))
        conn.execute(tables.dkim_keys.insert().values(domain="example.com", selector="s"))
        conn.execute(text("CREATE TABLE %s (id INTEGER PRIMARY KEY, note VARCHAR(20))" % FOREIGN))
        conn.execute(text("INSERT INTO %s (id, note) VALUES (1, 'keep me')" % FOREIGN))
    schema.purge(engine)
    assert OURS <= set(inspect(engine).get_table_names())
    assert count(engine, tables.capacity) == count(engine, tables.dkim_keys) == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT note FROM %s" % FOREIGN)).scalar_one() == "keep me"
    with engine.begin() as conn:   # the recreated tables work (autoincrement ids)
        conn.execute(tables.capacity.insert().values(domain="a.example"))


def test_purge_on_an_empty_database_creates_the_tables(engine):
    schema.purge(engine)
    assert OURS <= set(inspect(engine).get_table_names())


def test_record_ips_replaces_this_hosts_rows_only(engine):
    schema.ensure_schema(engine)
    when = datetime(2024, 5, 1, 12, 30)
    load.record_ips(engine, ["127.0.0.1", "::1"], "host-a", "/", "mq", "outbox", now=when)
    load.record_ips(engine, ["198.51.100.4"], "host-b")
    load.record_ips(engine, ["127.0.0.1", "2001:DB8::0:5", "127.0.0.1"], "host-a",
                    "/mail", "mq", "outbox", now=when)
    with engine.connect() as conn:
        rows = conn.execute(select(tables.ips).order_by(tables.ips.c.id)).mappings().all()
    host_a = [(r["ip"], r["vhost"], r["exchange"], r["outbox"], r["updated"])
              for r in rows if r["hostname"] == "host-a"]
    assert host_a == [("127.0.0.1", "/mail", "mq", "outbox", when),
                      ("2001:db8::5", "/mail", "mq", "outbox", when)]
    assert [r["ip"] for r in rows if r["hostname"] == "host-b"] == ["198.51.100.4"]


def test_host_addresses_lists_this_hosts_interfaces():
    addresses = netinfo.host_addresses()
    assert "127.0.0.1" in addresses
    parsed = [ipaddress.ip_address(a) for a in addresses]
    assert all(str(a) == text_ for a, text_ in zip(parsed, addresses))
    assert not any(a.is_link_local for a in parsed)
    assert len(set(addresses)) == len(addresses)


def populate(engine):
    rows = {
        tables.capacity: [dict(localip="", domain="", domain_maxmessages=100),
                          dict(localip=IP, domain="bücher.example", domain_maxmessages=-1,
                               ip_maxconnections=2, secure=1)],
        tables.flood_responses: [dict(pattern="too fast", type="substr", duration=300,
                                      domain_maxmessages=5)],
        tables.dkim_keys: [dict(id=4, domain="example.com", selector="mq1",
                                privatekey="-----BEGIN PRIVATE KEY-----", algorithm="SHA-256")],
        tables.dkim_patterns: [dict(sign="*@example.com", type="fnmatch", key=4)],
        tables.locals_: [dict(address="postmaster@example.com", type="exact"),
                         dict(address="(", type="regex")],
        tables.delegates: [dict(localip=IP, target="example.org", newip="192.0.2.2")],
        tables.paused: [dict(localip="", target="paused.example")],
        tables.mtanames: [dict(ip=IP, hostname="mta1.example.com")],
        tables.dns: [dict(domain="example.net", address="[2001:db8::25]:2525", priority=5)],
    }
    with engine.begin() as conn:
        for table, items in rows.items():
            for item in items:   # one by one: the rows name different columns
                conn.execute(table.insert().values(**item))


def test_load_snapshot_from_a_populated_database(engine, caplog):
    schema.ensure_schema(engine)
    populate(engine)
    snapshot = load.load_snapshot(engine, now=99.0, generation=3)
    assert (snapshot.loaded, snapshot.generation, snapshot.loaded_at) == (True, 3, 99.0)
    capacity = snapshot.capacity(IP, "BÜCHER.example")
    assert (capacity.domain_maxmessages, capacity.ip_maxconnections, capacity.secure) == (
        100, 2, True)
    assert snapshot.flood_response("421 too fast", IP, "x.example").capacity.domain_maxmessages == 5
    (key,) = snapshot.dkim_keys_for("news@example.com")
    assert (key.id, key.selector, key.algorithm) == (4, "mq1", "rsa-sha256")
    assert snapshot.is_local("POSTMASTER@example.com") and not snapshot.is_local("(")
    assert snapshot.delegate(IP, "example.org") == "192.0.2.2"
    assert snapshot.is_paused("198.51.100.1", "paused.example")
    assert snapshot.mtaname(IP) == "mta1.example.com"
    assert [(t.host, t.port, t.priority) for t in snapshot.dns_override("example.net")] == [
        ("2001:db8::25", 2525, 5)]
    assert "event=settings.row_skipped table=locals id=2" in caplog.text


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_silent_server_fails_fast(scheme):
    """A server that accepts TCP but never answers must not hang a connect."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        engine = make_engine("%s://user:pw@127.0.0.1:%d/db" % (
            scheme, listener.getsockname()[1]), connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="no answer"):
            engine.connect()
        assert time.monotonic() - started < 3
    finally:
        listener.close()


@pytest.mark.parametrize("url, dialect, driver", [
    ("postgres://u@127.0.0.1/db", "postgresql", "psycopg2"),
    ("postgresql+pg8000://u@127.0.0.1/db", "postgresql", "psycopg2"),
    ("mariadb://u@127.0.0.1/db", "mysql", "pymysql"),
    ("mysql://u@127.0.0.1/db", "mysql", "pymysql"),
])
def test_make_engine_picks_a_cooperative_driver(url, dialect, driver):
    engine = make_engine(url)
    assert (engine.dialect.name, engine.dialect.driver) == (dialect, driver)
    if dialect == "mysql":
        assert engine.url.query["charset"] == "utf8mb4"


def test_make_engine_sqlite_creates_the_directory_and_uses_wal(tmp_path):
    path = tmp_path / "new" / "dir" / "db.sqlite"
    engine = make_engine("sqlite:///%s" % path)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    assert path.exists()


def test_make_engine_rejects_other_schemes():
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("oracle://u@host/db")
