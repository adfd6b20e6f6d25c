"""The settings snapshot's lookups (built from plain rows) and its Reloader
(against real SQLite files, an unreachable and a locked PostgreSQL)."""

import dataclasses
import logging
import time

import gevent
import pytest
from sqlalchemy import text

from mailerq_gevent import patterns, settings
from mailerq_gevent.db import load, schema, tables
from mailerq_gevent.db.engine import make_engine
from mailerq_gevent.db.load import load_snapshot
from mailerq_gevent.settings import UNLIMITED, Capacity, Reloader, Settings
from tests.rows import snapshot
from tests.waiting import wait_until

IP, OTHER_IP = "192.0.2.1", "192.0.2.99"
LIMITS = tables.CAPACITY_COLUMNS + ("secure",)


def build(**rows):
    """A snapshot from ``table=[row dict, ...]``; ids are given in list order."""
    return snapshot(rows, generation=7, loaded_at=1000.0)


def cap(localip="", domain="", **limits):
    return dict({"localip": localip, "domain": domain}, **limits)


def skipped(caplog, table):
    return [r.getMessage() for r in caplog.records
            if "event=settings.row_skipped" in r.getMessage() and "table=%s " % table
            in r.getMessage()]


# -- capacity ---------------------------------------------------------------

FOUR_LEVELS = [
    cap(domain_maxmessages=1, domain_maxconnects=1, ip_maxmessages=1),
    cap(localip=IP, domain_maxmessages=2, domain_maxconnects=2),
    cap(domain="example.com", domain_maxmessages=3),
    cap(localip=IP, domain="example.com", domain_maxmessages=4),
]


@pytest.mark.parametrize("localip, domain, expected", [
    (IP, "example.com", 4),            # ip + domain
    (OTHER_IP, "example.com", 3),      # domain only
    (IP, "other.example", 2),          # ip only
    (OTHER_IP, "other.example", 1),    # neither
    (None, "example.com", 3),          # no local IP known
])
def test_capacity_most_specific_row_wins(localip, domain, expected):
    assert build(capacity=FOUR_LEVELS).capacity(localip, domain).domain_maxmessages == expected


def test_capacity_minus_one_falls_back_per_column_across_four_levels():
    snapshot = build(capacity=[
        cap(domain_maxmessages=10, domain_maxconnects=11, domain_maxconnections=12,
            ip_maxmessages=13, ip_maxconnects=14, ip_maxconnections=-1,
            connection_maxmessages=16, connection_maxidletime=17, secure=1),
        cap(localip=IP, domain_maxmessages=20, domain_maxconnects=21, domain_maxconnections=-1,
            ip_maxmessages=-1, ip_maxconnects=None, ip_maxconnections=-1,
            connection_maxmessages=-1, connection_maxidletime=-1, secure=-1),
        cap(domain="example.com", domain_maxmessages=30, domain_maxconnects=-1,
            domain_maxconnections=-1, ip_maxmessages=-1, ip_maxconnects=34,
            ip_maxconnections=-1, connection_maxmessages=0, connection_maxidletime=-1,
            secure=-1),
        cap(localip=IP, domain="example.com", domain_maxmessages=-1, domain_maxconnects=-1,
            domain_maxconnections=-1, ip_maxmessages=-1, ip_maxconnects=-1,
            ip_maxconnections=-1, connection_maxmessages=-1, connection_maxidletime=-5,
            secure=-1),
    ])
    assert snapshot.capacity(IP, "example.com") == Capacity(
        domain_maxmessages=30,       # from the domain row
        domain_maxconnects=21,       # domain row -1, from the ip row
        domain_maxconnections=12,    # -1 down to the global row
        ip_maxmessages=13,
        ip_maxconnects=34,           # the domain row beats the ip row's NULL
        ip_maxconnections=0,         # -1 everywhere: unlimited
        connection_maxmessages=0,    # 0 on the domain row: unlimited, no fall back
        connection_maxidletime=17,   # -5 reads as -1
        secure=True)
    # The ip row's NULL is unlimited, not a fall back to the global 14.
    assert snapshot.capacity(IP, "other.example").ip_maxconnects == 0


def test_capacity_without_rows_is_unlimited():
    assert settings.CAPACITY_FIELDS == LIMITS        # Capacity mirrors the table
    assert build().capacity(IP, "example.com") == UNLIMITED
    assert build(capacity=[cap(domain="a.example", domain_maxmessages=5)]).capacity(
        IP, "b.example") == UNLIMITED


def test_capacity_matches_domain_case_insensitively_and_ips_canonically():
    snapshot = build(capacity=[cap(localip="2001:DB8:0::1", domain="Example.COM",
                                   ip_maxconnections=3)])
    assert snapshot.capacity("2001:db8::0:1", "EXAMPLE.com.").ip_maxconnections == 3
    assert snapshot.capacity("2001:db8::2", "example.com").ip_maxconnections == 0


def test_capacity_row_with_bad_ip_or_duplicate_key_is_skipped(caplog):
    with caplog.at_level(logging.WARNING):
        snapshot = build(capacity=[
            cap(localip="not-an-ip", domain="example.com", domain_maxmessages=1),
            cap(domain="example.com", domain_maxmessages=2),
            cap(domain="EXAMPLE.com", domain_maxmessages=3),
            cap(domain="bad.example", domain_maxmessages="lots"),
        ])
    assert snapshot.capacity(IP, "example.com").domain_maxmessages == 2
    assert snapshot.capacity(IP, "bad.example") == UNLIMITED
    messages = skipped(caplog, "capacity")
    assert len(messages) == 3
    assert "id=1 " in messages[0] and "not an IP address" in messages[0]
    assert "id=3 " in messages[1] and "duplicate" in messages[1]


# -- flood responses --------------------------------------------------------

def test_flood_response_first_match_by_id_falls_back_to_normal_capacity():
    snapshot = build(
        capacity=[cap(domain="example.com", domain_maxmessages=100, ip_maxconnections=4)],
        flood_responses=[
            {"pattern": "x(", "type": "regex", "duration": 60, "domain_maxmessages": 1},
            {"pattern": "flood detected", "type": "substr", "duration": 600,
             "domain_maxmessages": 10, "ip_maxconnections": -1},
            {"pattern": "*flood*", "type": "fnmatch", "duration": 60},
        ])
    rule = snapshot.flood_response("550 Message rejected, FLOOD detected from your IP",
                                   IP, "example.com")
    assert (rule.id, rule.type, rule.duration) == (2, "substr", 600)
    assert rule.capacity.domain_maxmessages == 10
    assert rule.capacity.ip_maxconnections == 4      # -1: the pair's normal limit
    assert snapshot.flood_response("550 flood", IP, "example.com").id == 3
    assert snapshot.flood_response("250 ok") is None


def test_flood_response_null_duration_is_the_default_and_negative_is_skipped(caplog):
    snapshot = build(flood_responses=[
        {"pattern": "slow down", "type": "substr", "duration": -5},
        {"pattern": "slow down", "type": "substr", "duration": None},
    ])
    rule = snapshot.flood_response("421 slow down")
    assert (rule.id, rule.duration) == (2, load.DEFAULT_FLOOD_DURATION)
    assert rule.capacity == UNLIMITED
    (message,) = skipped(caplog, "flood_responses")
    assert "id=1 " in message and "negative" in message


# -- patterns and locals ----------------------------------------------------

@pytest.mark.parametrize("kind, pattern, text, expected", [
    ("exact", "Info@Example.com", "info@example.COM", True),
    ("exact", "info@example.com", "xinfo@example.com", False),
    (None, "info@example.com", "INFO@example.com", True),          # NULL type: exact
    ("", "info@example.com", "info@example.com.au", False),
    ("substr", "@Example.", "bob@example.org", True),
    ("substr", "@example.net", "bob@example.org", False),
    ("fnmatch", "*@example.com", "Bob@EXAMPLE.com", True),
    ("fnmatch", "*@example.com", "bob@example.com.evil", False),    # whole text
    ("fnmatch", "list-?@*", "list-a@x.org", True),
    ("regex", r"^bounce\+.*@", "BOUNCE+123@x.org", True),
    ("regex", r"example\.org$", "bob@mail.example.org", True),      # searched
    ("regex", r"^example\.org$", "bob@example.org", False),
    ("REGEX", r"\d{3}", "abc123", True),                            # type case-insensitive
])
def test_pattern_types(kind, pattern, text, expected):
    assert patterns.compile_pattern(pattern, kind).matches(text) is expected


@pytest.mark.parametrize("pattern, kind", [("a(b", "regex"), ("x", "glob"), ("", "exact")])
def test_unusable_pattern_raises(pattern, kind):
    with pytest.raises(patterns.PatternError):
        patterns.compile_pattern(pattern, kind)


def test_is_local_and_bad_regex_row_is_skipped_and_logged(caplog):
    with caplog.at_level(logging.WARNING):
        snapshot = build(locals=[
            {"address": "postmaster@example.com", "type": "exact"},
            {"address": "[unclosed", "type": "regex"},
            {"address": "*@lists.example.com", "type": "fnmatch"},
            {"address": "abuse@", "type": "substr"},
        ])
    assert snapshot.is_local("Postmaster@Example.com")
    assert snapshot.is_local("news@LISTS.example.com")
    assert snapshot.is_local("abuse@anything.org")
    assert not snapshot.is_local("bob@example.com")
    assert not snapshot.is_local(None)
    messages = skipped(caplog, "locals")
    assert len(messages) == 1 and "id=2 " in messages[0] and "bad regex" in messages[0]


# -- DKIM -------------------------------------------------------------------

def dkim_key(domain, **extra):
    return dict({"domain": domain, "selector": "s1", "privatekey": "-----SECRET-----",
                 "algorithm": "rsa-sha256", "expire": None}, **extra)


def test_dkim_keys_for_from_address_in_pattern_order():
    snapshot = build(
        dkim_keys=[dkim_key("example.com"), dkim_key("esp.example", algorithm="SHA-256"),
                   dkim_key("old.example", algorithm="SHA-1", expire=3600),
                   dkim_key("ed.example", algorithm="ed25519-sha256")],
        dkim_patterns=[
            {"sign": "*@example.com", "type": "fnmatch", "key": 1},
            {"sign": "@", "type": "substr", "key": 2},
            {"sign": "news@example.com", "type": "exact", "key": 1},   # key 1 once only
            {"sign": "x", "type": "exact", "key": 99},                 # no such key
        ])
    keys = snapshot.dkim_keys_for("News@Example.com")
    assert [key.id for key in keys] == [1, 2]
    assert [key.id for key in snapshot.dkim_keys_for("bob@other.org")] == [2]
    assert snapshot.dkim_key_rows.get(2).algorithm == "rsa-sha256"
    assert snapshot.dkim_key_rows.get(3).algorithm == "rsa-sha1" and snapshot.dkim_key_rows.get(3).expire == 3600
    assert snapshot.dkim_key_rows.get(4).algorithm == "ed25519-sha256"
    assert snapshot.dkim_key_rows.get(1).expire == 0
    assert snapshot.dkim_key_rows.get(99) is None
    assert len(snapshot.dkim_pattern_rows) == 3
    assert [key.id for key in snapshot.dkim_keys_for_domain("OLD.example")] == [3]


def test_dkim_key_rows_that_cannot_sign_are_skipped_and_never_show_the_key(caplog):
    with caplog.at_level(logging.DEBUG):
        snapshot = build(dkim_keys=[dkim_key("a.example", algorithm="md5"),
                                    dkim_key("b.example", privatekey=""),
                                    dkim_key("c.example")])
    assert list(snapshot.dkim_key_rows) == [3]
    assert "SECRET" not in repr(snapshot.dkim_key_rows.get(3)) + repr(snapshot)
    assert "SECRET" not in caplog.text
    assert len(skipped(caplog, "dkim_keys")) == 2


# -- paused, delegates, mtanames, dns ---------------------------------------

def test_paused_rows_with_empty_columns_match_all():
    snapshot = build(paused=[
        {"localip": IP, "target": "Example.com"},
        {"localip": "", "target": "198.51.100.7"},
        {"localip": "192.0.2.2", "target": ""},
    ])
    assert snapshot.is_paused(IP, "example.COM")
    assert not snapshot.is_paused(OTHER_IP, "example.com")
    assert snapshot.is_paused(OTHER_IP, "any.example", remote_ip="198.51.100.7")
    assert not snapshot.is_paused(OTHER_IP, "any.example", remote_ip="198.51.100.8")
    assert snapshot.is_paused("192.0.2.2", "whatever.example")
    assert not build().is_paused(IP, "example.com")
    everything = build(paused=[{"localip": None, "target": None}])
    assert everything.is_paused(OTHER_IP, "any.example", "203.0.113.1")


def test_delegate_most_specific_row():
    snapshot = build(delegates=[
        {"localip": "", "target": "example.com", "newip": "192.0.2.10"},
        {"localip": IP, "target": "example.com", "newip": "192.0.2.11"},
        {"localip": IP, "target": "198.51.100.7", "newip": "192.0.2.12"},
        {"localip": IP, "target": "", "newip": "192.0.2.13"},           # skipped: no target
        {"localip": IP, "target": "bad.example", "newip": "nowhere"},    # skipped: bad newip
    ])
    assert snapshot.delegate(IP, "EXAMPLE.com") == "192.0.2.11"
    assert snapshot.delegate(OTHER_IP, "example.com") == "192.0.2.10"
    assert snapshot.delegate(IP, "other.example", "198.51.100.7") == "192.0.2.12"
    assert snapshot.delegate(IP, "other.example", "198.51.100.8") is None
    assert snapshot.delegate(IP, "bad.example") is None
    assert len(snapshot.delegate_rows) == 3


def test_mtaname_by_canonical_ip():
    snapshot = build(mtanames=[{"ip": "2001:db8::0001", "hostname": "mx1.example.com"},
                               {"ip": "bogus", "hostname": "x.example"}])
    assert snapshot.mtaname("2001:DB8::1") == "mx1.example.com"
    assert snapshot.mtaname(IP) is None
    assert len(snapshot.mtaname_rows) == 1


@pytest.mark.parametrize("address, host, port", [
    ("192.0.2.25", "192.0.2.25", None),
    ("192.0.2.25:2525", "192.0.2.25", 2525),
    ("[2001:db8::25]:587", "2001:db8::25", 587),
    ("[2001:DB8::25]", "2001:db8::25", None),
    ("2001:db8::25", "2001:db8::25", None),
    ("MX.Example.net", "mx.example.net", None),
    ("mx.example.net:26", "mx.example.net", 26),
])
def test_dns_address_forms(address, host, port):
    assert load.parse_dns_address(address) == (host, port)


@pytest.mark.parametrize("address", ["192.0.2.1:99999", "[nothex]:25", "a b", "", "h:x"])
def test_bad_dns_address_raises(address):
    with pytest.raises(ValueError):
        load.parse_dns_address(address)


def test_dns_override_sorted_by_priority_then_id():
    snapshot = build(dns=[
        {"domain": "example.com", "address": "192.0.2.3", "priority": 20},
        {"domain": "Example.com", "address": "[2001:db8::1]:2525", "priority": 10},
        {"domain": "example.com", "address": "192.0.2.1:25", "priority": 10},
        {"domain": "example.com", "address": "192.0.2.9:0", "priority": 1},   # bad port
    ])
    targets = snapshot.dns_override("EXAMPLE.COM.")
    assert targets == (settings.DnsTarget("2001:db8::1", 2525, 10),
                       settings.DnsTarget("192.0.2.1", 25, 10),
                       settings.DnsTarget("192.0.2.3", None, 20))
    assert snapshot.dns_override("other.example") == ()


def test_rows_of_unexpected_types_are_used_or_skipped_never_fatal(caplog):
    """SQLite stores any type in any column; a load must survive it."""
    with caplog.at_level(logging.WARNING):
        snapshot = build(mtanames=[{"ip": IP, "hostname": 42}],
                         locals=[{"address": 123, "type": None}, {"address": "a@b", "type": 7}],
                         dkim_keys=[dkim_key("x.example", algorithm=256)],
                         dns=[{"domain": "example.com", "address": "192.0.2.5",
                               "priority": "high"}])
    assert snapshot.mtaname(IP) == "42"
    assert snapshot.is_local("123") and not snapshot.is_local("a@b")
    assert snapshot.dkim_key_rows == {} and snapshot.dns_override("example.com") == ()
    assert [len(skipped(caplog, t)) for t in ("locals", "dkim_keys", "dns")] == [1, 1, 1]


# -- the snapshot as a value ------------------------------------------------

def test_empty_snapshot_is_not_loaded_and_allows_everything():
    empty = Settings.empty()
    assert (empty.loaded, empty.generation) == (False, 0)
    assert empty.capacity(IP, "example.com") == UNLIMITED
    assert not empty.is_paused(IP, "example.com") and not empty.is_local("a@b.c")
    assert empty.dkim_keys_for("a@b.c") == () and empty.delegate(IP, "b.c") is None
    snapshot = build()
    assert (snapshot.loaded, snapshot.generation, snapshot.loaded_at) == (True, 7, 1000.0)


def test_snapshot_is_frozen():
    snapshot = build(capacity=[cap(domain="example.com", domain_maxmessages=1)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.generation = 8
    with pytest.raises(TypeError):
        snapshot.capacity_rows[("", "x.example")] = (1,) * len(LIMITS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.capacity(IP, "example.com").domain_maxmessages = 5


# -- Reloader -----------------------------------------------------------------

@pytest.fixture
def sqlite_url(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "settings.sqlite")
    engine = make_engine(url)
    schema.ensure_schema(engine)
    engine.dispose()
    return url


def set_limit(url, value, domain="example.com"):
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(tables.capacity.delete().where(tables.capacity.c.domain == domain))
        conn.execute(tables.capacity.insert().values(domain=domain, domain_maxmessages=value))
    engine.dispose()


def limit(reloader):
    return reloader.current.capacity(IP, "example.com").domain_maxmessages


def test_reload_now_picks_up_a_changed_row(sqlite_url):
    set_limit(sqlite_url, 5)
    reloader = Reloader(sqlite_url, 600, load_snapshot, clock=lambda: 1234.5)
    assert not reloader.current.loaded
    assert reloader.reload_now() is True
    assert (limit(reloader), reloader.current.generation) == (5, 1)
    assert reloader.current.loaded_at == 1234.5
    set_limit(sqlite_url, 9)
    assert limit(reloader) == 5                  # nothing changes until a reload
    assert reloader.reload_now() is True
    assert (limit(reloader), reloader.current.generation) == (9, 2)


def test_database_error_keeps_last_good_snapshot(sqlite_url, caplog):
    set_limit(sqlite_url, 5)
    reloader = Reloader(sqlite_url, 600, load_snapshot)
    assert reloader.reload_now()
    good = reloader.current
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE dns"))
    with caplog.at_level(logging.INFO):
        assert reloader.reload_now() is False
    assert reloader.current is good and limit(reloader) == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert message.startswith("event=settings.reload_failed error=OperationalError detail=")
    assert "no such table: dns" in message and not errors[0].exc_info  # no traceback


def test_unreachable_server_fails_fast_and_logs_no_password(caplog):
    reloader = Reloader("postgresql://nobody:s3cret@127.0.0.1:1/none", 600, load_snapshot)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        assert reloader.reload_now() is False
    assert time.monotonic() - started < 10
    assert not reloader.current.loaded
    assert "event=settings.reload_failed error=OperationalError" in caplog.text
    assert "s3cret" not in caplog.text


def test_load_timeout_on_a_locked_table_keeps_last_snapshot(pg_server_url, caplog):
    engine = make_engine(pg_server_url)
    schema.purge(engine)
    reloader = Reloader(engine, 600, load_snapshot, load_timeout=0.5)
    assert reloader.reload_now()
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE dns IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        with caplog.at_level(logging.ERROR):
            assert reloader.reload_now() is False
        assert time.monotonic() - started < 5
        locker.rollback()
    assert "error=LoadTimeout" in caplog.text
    assert reloader.current.generation == 1
    assert reloader.reload_now() and reloader.current.generation == 2


def test_periodic_reload_and_stop(sqlite_url):
    set_limit(sqlite_url, 1)
    reloader = Reloader(sqlite_url, 0.05, load_snapshot)
    reloader.start()
    try:
        wait_until(lambda: limit(reloader) == 1)
        set_limit(sqlite_url, 2)
        wait_until(lambda: limit(reloader) == 2)
        assert reloader.running
    finally:
        reloader.stop(timeout=5)
    assert not reloader.running
    generation = reloader.current.generation
    set_limit(sqlite_url, 3)
    gevent.sleep(0.3)
    assert reloader.current.generation == generation and limit(reloader) == 2


def test_retries_sooner_until_the_first_load_succeeds(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "later.sqlite")
    reloader = Reloader(url, 600, load_snapshot, first_retry=0.01)
    reloader.start()
    try:
        gevent.sleep(0.1)
        assert reloader.running and not reloader.current.loaded
        schema.ensure_schema(make_engine(url))
        wait_until(lambda: reloader.current.loaded)
    finally:
        reloader.stop(timeout=5)


def test_prepare_runs_before_loads_until_it_succeeds(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "fresh.sqlite")
    calls = []

    def prepare(engine):
        calls.append(engine)
        if len(calls) == 1:
            raise OSError("database not ready")
        schema.ensure_schema(engine)
    reloader = Reloader(url, 600, load_snapshot, prepare=prepare)
    assert reloader.reload_now() is False and not reloader.current.loaded
    assert reloader.reload_now() is True and reloader.current.loaded
    assert reloader.reload_now() is True
    assert len(calls) == 2


def test_subscribers_hear_each_new_snapshot(sqlite_url):
    heard = []

    def broken(snapshot):
        raise RuntimeError("subscriber bug")
    reloader = Reloader(sqlite_url, 600, load_snapshot)
    reloader.subscribe(broken)
    reloader.subscribe(heard.append)
    assert reloader.reload_now() and reloader.reload_now()
    assert [s.generation for s in heard] == [1, 2] and heard[-1] is reloader.current


def test_ttl_must_be_positive():
    with pytest.raises(ValueError):
        Reloader("sqlite:///x.sqlite", 0, load_snapshot)
