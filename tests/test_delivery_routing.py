"""Routing (delivery/routing.py) against a real DNS server on loopback:
MX order, implicit MX, AAAA, the dns table, smarthost and relay, the
permanent and temporary failures, the TTL cache, and the local IP / EHLO
name helpers. Every address in these zones is a loopback address."""

import contextlib
import random
import time

import gevent
import pytest

from mailerq_gevent.config_values import HostPort
from mailerq_gevent.delivery import routing
from mailerq_gevent.delivery.routing import (
    PermanentRouteError,
    Router,
    Target,
    TemporaryRouteError,
    choose_local_ip,
    ehlo_name,
)
from mailerq_gevent.resolver import make_resolver
from mailerq_gevent.settings import Settings
from tests.clock import FakeClock
from tests.dns_server import TTL, serve_zone, silent_server
from tests.rows import snapshot

EMPTY = Settings.empty()

ZONE = [
    ("example.test", "MX", "20 mx2.example.test"),
    ("example.test", "MX", "10 mx1.example.test"),
    ("example.test", "MX", "30 mx3.example.test"),
    ("mx1.example.test", "A", "127.0.0.1"),
    ("mx2.example.test", "A", "127.0.0.2"),
    ("mx3.example.test", "A", "127.0.0.3"),
    ("mx3.example.test", "AAAA", "::1"),
    ("implicit.test", "A", "127.0.1.1"),
    ("implicit.test", "AAAA", "::1"),
    ("v6only.test", "AAAA", "::1"),
    ("relay.test", "A", "127.0.2.1"),
    ("nullmx.test", "MX", "0 ."),
    ("nowhere.test", "MX", "10 missing.nowhere.test"),
    ("textonly.test", "TXT", "v=spf1 -all"),
    ("flaky.test", "MX", "10 broken.flaky.test"),
    ("flaky.test", "MX", "20 good.flaky.test"),
    ("good.flaky.test", "A", "127.0.3.1"),
    ("allbroken.test", "MX", "10 broken.flaky.test"),
]
SERVFAIL = ["servfail.test", "broken.flaky.test"]


def settings_with(**rows):
    return snapshot(rows)


@contextlib.contextmanager
def quiet_server():
    """``silent_server()``, tried again when its TCP twin port happens to be taken."""
    for _ in range(5):
        try:
            server = silent_server()
            address = server.__enter__()
        except OSError:
            continue
        try:
            yield HostPort(*address)
        finally:
            server.__exit__(None, None, None)
        return
    raise RuntimeError("no free port pair for a silent DNS server")


def targets(route):
    return [(t.host_name, t.ip, t.port) for t in route]


@pytest.fixture(scope="module")
def shared_zone():
    """One server for the tests that only read it."""
    with serve_zone(ZONE, servfail=SERVFAIL) as zone:
        yield zone


@pytest.fixture
def zone(dns_zone):
    """A server of the test's own, which the test may stop."""
    return dns_zone(ZONE, servfail=SERVFAIL)


@pytest.fixture
def clock():
    return FakeClock()


def short_resolver(zone):
    return make_resolver(zone.address, lifetime=0.5, timeout=0.5)


@pytest.fixture
def router(shared_zone, clock):
    return Router(make_resolver(shared_zone.address, lifetime=2, timeout=1), clock=clock)


@pytest.fixture
def own_router(zone, clock):
    return Router(short_resolver(zone), clock=clock)


# -- MX and implicit MX -----------------------------------------------------

def test_mx_hosts_in_preference_order_ipv4_before_ipv6(router):
    route = router.route(EMPTY, "Example.TEST.")
    assert route.source == "mx" and route.domain == "example.test"
    assert targets(route) == [("mx1.example.test", "127.0.0.1", 25),
                              ("mx2.example.test", "127.0.0.2", 25),
                              ("mx3.example.test", "127.0.0.3", 25),
                              ("mx3.example.test", "::1", 25)]


def test_ipv6_can_be_left_out(shared_zone):
    router = Router(make_resolver(shared_zone.address, lifetime=2), ipv6=False)
    assert [t.ip for t in router.route(EMPTY, "example.test")] == [
        "127.0.0.1", "127.0.0.2", "127.0.0.3"]


def test_equal_preferences_are_shuffled_and_stay_ahead_of_worse_ones(dns_zone):
    zone = dns_zone([("eq.test", "MX", "10 a.eq.test"), ("eq.test", "MX", "10 b.eq.test"),
                     ("eq.test", "MX", "20 c.eq.test"), ("a.eq.test", "A", "127.0.0.1"),
                     ("b.eq.test", "A", "127.0.0.2"), ("c.eq.test", "A", "127.0.0.3")])
    router = Router(make_resolver(zone.address, lifetime=2), rng=random.Random(5))
    orders = {tuple(t.host_name for t in router.route(EMPTY, "eq.test")) for _ in range(20)}
    assert orders == {("a.eq.test", "b.eq.test", "c.eq.test"),
                      ("b.eq.test", "a.eq.test", "c.eq.test")}


def test_no_mx_means_the_domains_own_addresses(router):
    route = router.route(EMPTY, "implicit.test")
    assert route.source == "implicit"
    assert targets(route) == [("implicit.test", "127.0.1.1", 25), ("implicit.test", "::1", 25)]
    assert targets(router.route(EMPTY, "v6only.test")) == [("v6only.test", "::1", 25)]


def test_mx_hosts_and_addresses_are_capped_and_duplicates_dropped(dns_zone):
    records = [("many.test", "MX", "%d mx%d.many.test" % (n, n)) for n in range(1, 8)]
    records += [("mx%d.many.test" % n, "A", "127.0.4.%d" % n) for n in range(1, 8)]
    records += [("wide.test", "MX", "10 big.wide.test"), ("wide.test", "MX", "20 dup.wide.test")]
    records += [("big.wide.test", "A", "127.0.5.%d" % n) for n in range(1, 13)]
    records += [("same.test", "MX", "10 one.same.test"), ("same.test", "MX", "20 two.same.test"),
                ("one.same.test", "A", "127.0.6.1"), ("two.same.test", "A", "127.0.6.1")]
    router = Router(make_resolver(dns_zone(records).address, lifetime=2))
    assert [t.host_name for t in router.route(EMPTY, "many.test")] == [
        "mx%d.many.test" % n for n in range(1, 6)]                # 5 hosts
    assert len(router.route(EMPTY, "wide.test")) == 10           # 10 addresses
    assert targets(router.route(EMPTY, "same.test")) == [("one.same.test", "127.0.6.1", 25),
                                                         ("two.same.test", "127.0.6.1", 25)]
    assert len(Router(router.resolver, max_addresses=3).route(EMPTY, "wide.test")) == 3


def test_mx_port_for_test_rigs(shared_zone):
    router = Router(make_resolver(shared_zone.address, lifetime=2), mx_port=2525)
    assert {t.port for t in router.route(EMPTY, "example.test")} == {2525}


def test_one_mx_host_failing_leaves_the_others(router):
    assert targets(router.route(EMPTY, "flaky.test")) == [("good.flaky.test", "127.0.3.1", 25)]


# -- the dns table, smarthost, relay, address literals --------------------

def test_dns_table_overrides_mx_by_priority(router):
    settings = settings_with(dns=[
        {"domain": "example.test", "address": "127.0.0.9:2525", "priority": 20},
        {"domain": "example.test", "address": "127.0.0.8", "priority": 10},
        {"domain": "example.test", "address": "relay.test:26", "priority": 30}])
    route = router.route(settings, "example.test", smarthost="127.0.0.7")
    assert route.source == "dns"
    assert targets(route) == [("127.0.0.8", "127.0.0.8", 25), ("127.0.0.9", "127.0.0.9", 2525),
                              ("relay.test", "127.0.2.1", 26)]


def test_smarthost_then_relay(shared_zone):
    resolver = make_resolver(shared_zone.address, lifetime=2)
    relayed = Router(resolver, relay=HostPort("relay.test", 2526))
    route = relayed.route(EMPTY, "example.test")
    assert (route.source, targets(route)) == ("relay", [("relay.test", "127.0.2.1", 2526)])
    route = relayed.route(EMPTY, "example.test", smarthost="[::1]:2527")
    assert (route.source, targets(route)) == ("smarthost", [("::1", "::1", 2527)])
    route = Router(resolver).route(EMPTY, "nullmx.test", smarthost="relay.test")
    assert targets(route) == [("relay.test", "127.0.2.1", 25)]


def test_a_configured_hop_without_address_is_temporary(shared_zone):
    router = Router(make_resolver(shared_zone.address, lifetime=2),
                    relay=HostPort("gone.test", 25))
    with pytest.raises(TemporaryRouteError) as caught:
        router.route(EMPTY, "example.test")
    assert caught.value.status == "4.3.5" and "gone.test" in caught.value.description


def test_a_malformed_smarthost_is_permanent(router):
    with pytest.raises(PermanentRouteError) as caught:
        router.route(EMPTY, "example.test", smarthost="host:notaport")
    assert caught.value.status == "5.3.5" and caught.value.permanent


@pytest.mark.parametrize("literal, ip", [("[127.0.0.1]", "127.0.0.1"),
                                         ("[IPv6:::1]", "::1")])
def test_address_literal_is_its_own_route(router, literal, ip):
    route = router.route(EMPTY, literal)
    assert route.source == "literal" and [t.ip for t in route] == [ip]


# -- failures -------------------------------------------------------------

def expect(router, cls, status, domain):
    with pytest.raises(cls) as caught:
        router.route(EMPTY, domain)
    assert caught.value.status == status, caught.value.description
    return caught.value


def test_nxdomain_is_permanent(router):
    error = expect(router, PermanentRouteError, "5.1.2", "no-such-domain.test")
    assert "does not exist" in error.description


def test_null_mx_is_permanent(router):
    error = expect(router, PermanentRouteError, "5.1.10", "nullmx.test")
    assert "null MX" in error.description


def test_no_address_for_any_mx_is_permanent(router):
    expect(router, PermanentRouteError, "5.4.4", "nowhere.test")
    expect(router, PermanentRouteError, "5.4.4", "textonly.test")   # no MX, no A


@pytest.mark.parametrize("domain", ["", "exa mple.test", "a..test", "-x.test",
                                    "x" * 64 + ".test", "under_score.test", "a" * 250 + ".test"])
def test_a_name_that_cannot_exist_is_permanent(router, domain):
    error = expect(router, PermanentRouteError, "5.1.2", domain)
    assert "not a valid domain name" in error.description


def test_an_international_name_is_asked_in_its_ascii_form(dns_zone):
    zone = dns_zone([("xn--bcher-kva.test", "A", "127.0.7.1")])
    route = Router(make_resolver(zone.address, lifetime=2)).route(EMPTY, "BÜCHER.test")
    assert targets(route) == [("xn--bcher-kva.test", "127.0.7.1", 25)]


def test_servfail_is_temporary(router):
    expect(router, TemporaryRouteError, "4.4.3", "servfail.test")
    error = expect(router, TemporaryRouteError, "4.4.3", "allbroken.test")
    assert not error.permanent and "broken.flaky.test" in error.description


def test_a_silent_server_is_temporary_within_the_resolvers_bound():
    with quiet_server() as address:
        router = Router(make_resolver(address, lifetime=1, timeout=0.5))
        started = time.monotonic()
        expect(router, TemporaryRouteError, "4.4.3", "example.test")
        assert time.monotonic() - started < 2.5


# -- the cache ------------------------------------------------------------

def test_answers_are_cached_for_their_ttl(own_router, zone, clock):
    router = own_router
    first = router.route(EMPTY, "example.test")
    zone.stop()
    clock.now += TTL - 1
    assert targets(router.route(EMPTY, "example.test")) == targets(first)
    clock.now += 2
    expect(router, TemporaryRouteError, "4.4.3", "example.test")


def test_ttl_is_capped(zone, clock):
    router = Router(short_resolver(zone), clock=clock,
                    max_ttl=10)
    router.route(EMPTY, "implicit.test")
    zone.stop()
    clock.now += 9
    assert router.route(EMPTY, "implicit.test").source == "implicit"
    clock.now += 2
    expect(router, TemporaryRouteError, "4.4.3", "implicit.test")


def test_nxdomain_is_cached_for_the_negative_ttl(own_router, zone, clock):
    router = own_router
    expect(router, PermanentRouteError, "5.1.2", "no-such-domain.test")
    zone.stop()
    clock.now += routing.NEGATIVE_TTL - 1
    expect(router, PermanentRouteError, "5.1.2", "no-such-domain.test")
    clock.now += 2
    expect(router, TemporaryRouteError, "4.4.3", "no-such-domain.test")


def test_a_failure_is_remembered_only_briefly(clock):
    with quiet_server() as address:
        router = Router(make_resolver(address, lifetime=0.5, timeout=0.5),
                        clock=clock)
        expect(router, TemporaryRouteError, "4.4.3", "example.test")
        started = time.monotonic()
        expect(router, TemporaryRouteError, "4.4.3", "example.test")   # from the cache
        assert time.monotonic() - started < 0.2
        clock.now += routing.TEMPORARY_TTL + 1
        started = time.monotonic()
        expect(router, TemporaryRouteError, "4.4.3", "example.test")   # asked again
        assert time.monotonic() - started >= 0.4


def test_the_cache_is_bounded_least_recently_used_out(zone, clock):
    router = Router(short_resolver(zone), clock=clock,
                    cache_size=3)
    router.route(EMPTY, "implicit.test")      # MX, A, AAAA: three entries
    router.route(EMPTY, "v6only.test")        # pushes implicit.test out
    assert len(router.cache) == 3
    zone.stop()
    assert router.route(EMPTY, "v6only.test").source == "implicit"
    expect(router, TemporaryRouteError, "4.4.3", "implicit.test")


class CountingResolver:
    """The real resolver, counting the queries that reach it."""

    def __init__(self, resolver):
        self.resolver, self.lifetime, self.queries = resolver, resolver.lifetime, []

    def resolve(self, name, rdtype, **options):
        self.queries.append((name, rdtype))
        gevent.sleep(0.05)    # keep the query in flight while the others arrive
        return self.resolver.resolve(name, rdtype, **options)


def test_concurrent_routes_share_one_lookup(shared_zone):
    resolver = CountingResolver(make_resolver(shared_zone.address, lifetime=2))
    router = Router(resolver)
    routes = [gevent.spawn(router.route, EMPTY, "example.test") for _ in range(5)]
    gevent.joinall(routes, timeout=10, raise_error=True)
    assert {len(greenlet.value) for greenlet in routes} == {4}
    assert resolver.queries.count(("example.test", "MX")) == 1
    assert resolver.queries.count(("mx1.example.test", "A")) == 1


# -- local IP and EHLO name -------------------------------------------------

def test_local_ip_from_the_message_then_the_defaults_round_robin():
    defaults = ["192.0.2.10", "192.0.2.11"]
    assert choose_local_ip(EMPTY, ["192.0.2.1", "192.0.2.2"], defaults, "x.test") == "192.0.2.1"
    assert choose_local_ip(EMPTY, ["192.0.2.1", "192.0.2.2"], defaults, "x.test",
                           turn=3) == "192.0.2.2"
    assert choose_local_ip(EMPTY, "192.0.2.5", defaults, "x.test") == "192.0.2.5"
    assert choose_local_ip(EMPTY, None, defaults, "x.test", turn=1) == "192.0.2.11"
    assert choose_local_ip(EMPTY, ["not an ip"], defaults, "x.test") == "192.0.2.10"
    assert choose_local_ip(EMPTY, [], [], "x.test") is None


def test_local_ip_is_rewritten_by_delegates():
    settings = settings_with(delegates=[
        {"localip": "192.0.2.1", "target": "x.test", "newip": "192.0.2.7"},
        {"localip": "", "target": "y.test", "newip": "192.0.2.8"}])
    assert choose_local_ip(settings, ["192.0.2.1"], [], "X.test") == "192.0.2.7"
    assert choose_local_ip(settings, ["192.0.2.2"], [], "x.test") == "192.0.2.2"
    assert choose_local_ip(settings, ["192.0.2.2"], [], "y.test") == "192.0.2.8"
    assert choose_local_ip(settings, None, [], "y.test") == "192.0.2.8"


def test_ehlo_name_from_mtanames_else_the_hostname():
    settings = settings_with(mtanames=[{"ip": "192.0.2.1", "hostname": "out1.example.test"}])
    assert ehlo_name(settings, "192.0.2.1", "mta.example.test") == "out1.example.test"
    assert ehlo_name(settings, "192.0.2.2", "mta.example.test") == "mta.example.test"
    assert ehlo_name(settings, None, "mta.example.test") == "mta.example.test"


def test_target_is_a_plain_value():
    assert Target("mx.test", "127.0.0.1") == Target("mx.test", "127.0.0.1", 25)
