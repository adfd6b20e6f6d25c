"""Per-minute delivery counters (``delivery.stats``): counting with a fake
clock, and flushing into real SQLite, PostgreSQL and MariaDB databases."""

import logging
from datetime import datetime

import pytest
from sqlalchemy import select

from mailerq_gevent.db import tables
from mailerq_gevent.db.engine import make_engine
from mailerq_gevent.delivery.stats import Stats, minute_time
from tests.clock import FakeClock
from tests.waiting import wait_until

STATS_TABLES = [tables.deliveries_total, tables.deliveries_domain, tables.deliveries_ip]
T0 = 1_700_000_040            # 2023-11-14 22:14:00 UTC, the start of a minute
MINUTE = datetime(2023, 11, 14, 22, 14)
IP, REMOTE = "192.0.2.1", "198.51.100.7"


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    tables.metadata.drop_all(engine, tables=STATS_TABLES)
    tables.metadata.create_all(engine, tables=STATS_TABLES)
    yield engine
    tables.metadata.drop_all(engine, tables=STATS_TABLES)
    engine.dispose()


def rows(engine, table):
    """``[(time, localip, key, success, failures, retries)]`` ordered by id."""
    key = {"deliveries_domain": "domain", "deliveries_ip": "remoteip"}.get(table.name)
    columns = [table.c.time, table.c.localip] + ([table.c[key]] if key else []) + [
        table.c.success, table.c.failures, table.c.retries]
    with engine.connect() as conn:
        found = conn.execute(select(*columns).order_by(table.c.id)).all()
    return [tuple(row) if key else (row[0], row[1], None) + tuple(row[2:]) for row in found]


def test_counts_are_kept_per_minute_and_key():
    stats = Stats("sqlite://", clock=FakeClock(T0 + 5))
    stats.count("success", IP, "Example.COM", REMOTE)
    stats.count("success", IP, "example.com", REMOTE)
    stats.count("failure", IP, "example.com", "::ffff:198.51.100.7")
    stats.count("retry", IP, "other.example", "")
    assert stats.pending() == {
        ("deliveries_total", T0, IP, None): [2, 1, 1],
        ("deliveries_domain", T0, IP, "example.com"): [2, 1, 0],
        ("deliveries_domain", T0, IP, "other.example"): [0, 0, 1],
        ("deliveries_ip", T0, IP, REMOTE): [2, 1, 0],
    }


def test_an_unknown_local_ip_and_no_domain():
    stats = Stats("sqlite://", clock=FakeClock(T0))
    stats.count("retry", None, "", None)
    assert stats.pending() == {("deliveries_total", T0, "", None): [0, 0, 1]}


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        Stats("sqlite://").count("bounced", IP, "example.com", REMOTE)


def test_minute_rollover_with_a_fake_clock():
    clock = FakeClock(T0 + 59)
    stats = Stats("sqlite://", clock=clock)
    stats.count("success", IP)
    clock.now = T0 + 60
    stats.count("success", IP)
    stats.count("failure", IP)
    clock.now = T0 + 185
    stats.count("retry", IP)
    assert stats.pending() == {("deliveries_total", T0, IP, None): [1, 0, 0],
                               ("deliveries_total", T0 + 60, IP, None): [1, 1, 0],
                               ("deliveries_total", T0 + 180, IP, None): [0, 0, 1]}


def test_minute_time_is_naive_utc():
    assert minute_time(T0) == MINUTE


def test_flush_writes_every_table(engine):
    stats = Stats(engine, clock=FakeClock(T0 + 30))
    stats.count("success", IP, "example.com", REMOTE)
    stats.count("failure", IP, "example.com", REMOTE)
    stats.count("retry", "2001:DB8::0:1", "example.org", "2001:db8::25")
    assert stats.flush() is True and stats.pending() == {}
    assert sorted(rows(engine, tables.deliveries_total)) == [
        (MINUTE, "192.0.2.1", None, 1, 1, 0), (MINUTE, "2001:db8::1", None, 0, 0, 1)]
    assert sorted(rows(engine, tables.deliveries_domain)) == [
        (MINUTE, "192.0.2.1", "example.com", 1, 1, 0),
        (MINUTE, "2001:db8::1", "example.org", 0, 0, 1)]
    assert sorted(rows(engine, tables.deliveries_ip)) == [
        (MINUTE, "192.0.2.1", REMOTE, 1, 1, 0), (MINUTE, "2001:db8::1", "2001:db8::25", 0, 0, 1)]


def test_flushes_of_one_minute_add_to_one_row(engine):
    clock = FakeClock(T0)
    stats = Stats(engine, clock=clock)
    stats.count("success", IP, "example.com", REMOTE)
    stats.flush()
    clock.now = T0 + 20
    stats.count("success", IP, "example.com", REMOTE)
    stats.count("retry", IP, "example.com", REMOTE)
    clock.now = T0 + 60
    stats.count("failure", IP, "example.com", REMOTE)
    stats.flush()
    later = datetime(2023, 11, 14, 22, 15)
    for table, key in ((tables.deliveries_total, None), (tables.deliveries_domain, "example.com"),
                       (tables.deliveries_ip, REMOTE)):
        assert rows(engine, table) == [(MINUTE, IP, key, 2, 0, 1), (later, IP, key, 0, 1, 0)]


def test_flush_merges_with_an_existing_row(engine):
    with engine.begin() as conn:
        conn.execute(tables.deliveries_domain.insert(), [
            dict(time=MINUTE, localip=IP, domain="example.com", success=5, failures=1, retries=2),
            dict(time=MINUTE, localip=IP, domain="example.com", success=7, failures=0, retries=0),
            dict(time=MINUTE, localip=IP, domain="other.example", success=3, failures=0,
                 retries=0)])
    stats = Stats(engine, clock=FakeClock(T0 + 10))
    stats.count("success", IP, "example.com", REMOTE)
    stats.count("retry", IP, "example.com", REMOTE)
    assert stats.flush()
    assert rows(engine, tables.deliveries_domain) == [   # only the oldest duplicate grows
        (MINUTE, IP, "example.com", 6, 1, 3), (MINUTE, IP, "example.com", 7, 0, 0),
        (MINUTE, IP, "other.example", 3, 0, 0)]


def test_a_failed_flush_keeps_the_counts_and_the_next_writes_them_once(engine, caplog):
    tables.metadata.drop_all(engine, tables=[tables.deliveries_ip])   # the write will fail
    stats = Stats(engine, clock=FakeClock(T0))
    stats.count("success", IP, "example.com", REMOTE)
    with caplog.at_level(logging.ERROR):
        assert stats.flush() is False
    assert "event=stats.flush_failed" in caplog.text
    assert rows(engine, tables.deliveries_total) == []     # all or nothing
    stats.count("success", IP, "example.com", REMOTE)
    tables.metadata.create_all(engine, tables=[tables.deliveries_ip])
    assert stats.flush() is True
    for table in STATS_TABLES:
        assert [row[3] for row in rows(engine, table)] == [2]


def test_a_database_that_is_down_keeps_the_counts():
    stats = Stats(lambda: make_engine("postgresql://u@127.0.0.1:1/none", connect_timeout=1),
                  clock=FakeClock(T0))
    stats.count("failure", IP, "example.com", REMOTE)
    assert stats.flush() is False
    assert stats.flush() is False
    assert stats.pending()[("deliveries_total", T0, IP, None)] == [0, 1, 0]


def test_counts_older_than_max_age_are_dropped_when_a_flush_fails(caplog):
    clock = FakeClock(T0)
    stats = Stats(lambda: make_engine("postgresql://u@127.0.0.1:1/none", connect_timeout=1),
                  clock=clock, max_age=3600)
    stats.count("success", IP)
    clock.now = T0 + 3700
    stats.count("retry", IP)
    with caplog.at_level(logging.WARNING):
        assert stats.flush() is False
    assert stats.pending() == {("deliveries_total", T0 + 3660, IP, None): [0, 0, 1]}
    assert "event=stats.dropped counts=1" in caplog.text


def test_counts_made_during_a_flush_are_not_lost(engine):
    stats = Stats(lambda: counting_source(), clock=FakeClock(T0))

    def counting_source():          # runs inside flush, after the counts were taken
        stats.count("retry", IP)
        return engine

    stats.count("success", IP)
    assert stats.flush()
    assert stats.pending() == {("deliveries_total", T0, IP, None): [0, 0, 1]}
    assert stats.flush()
    assert rows(engine, tables.deliveries_total) == [(MINUTE, IP, None, 1, 0, 1)]


def test_start_flushes_periodically_and_stop_flushes_the_rest(engine):
    stats = Stats(engine, interval=0.05, clock=FakeClock(T0))
    stats.start()
    try:
        assert stats.running
        stats.count("success", IP, "example.com", REMOTE)
        wait_until(lambda: rows(engine, tables.deliveries_total))
        stats.count("failure", IP, "example.com", REMOTE)
    finally:
        stats.stop(timeout=5)
    assert not stats.running and stats.pending() == {}
    assert rows(engine, tables.deliveries_total) == [(MINUTE, IP, None, 1, 1, 0)]


def test_stop_without_start_flushes_and_disposes_an_engine_it_made(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "stats.sqlite")
    engine = make_engine(url)
    tables.metadata.create_all(engine, tables=STATS_TABLES)
    stats = Stats(url, clock=FakeClock(T0))
    stats.count("success", IP)
    stats.stop(timeout=5)
    assert rows(engine, tables.deliveries_total) == [(MINUTE, IP, None, 1, 0, 0)]
