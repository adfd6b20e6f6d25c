"""The delivery throttles over a fake monotonic clock: rates per simulated
minute, waits, both-or-none taking, connection slots, flood switches with a
real Settings snapshot, and pruning. Nothing sleeps."""

import bisect
import logging

import pytest

from mailerq_gevent.delivery import throttle
from mailerq_gevent.delivery.throttle import Throttles, TokenBucket
from mailerq_gevent.settings import CAPACITY_FIELDS, UNLIMITED, Capacity
from tests.clock import FakeClock
from tests.rows import snapshot

IP, OTHER_IP = "192.0.2.1", "192.0.2.99"
MX1, MX2, MX3, MX4 = "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"
MX5 = "198.51.100.5"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def throttles(clock):
    return Throttles(clock=clock)


def build(**rows):
    """A real snapshot from ``table=[row dict, ...]``; ids in list order."""
    return snapshot(rows, generation=1, loaded_at=0.0)


def cap(localip="", domain="", **limits):
    """A capacity row; the columns not given are -1: fall back to the less specific row."""
    row = dict.fromkeys(CAPACITY_FIELDS, -1)
    return dict(row, localip=localip, domain=domain, **limits)


def greedy(take, clock, seconds):
    """Call ``take()`` as fast as it allows for ``seconds``, advancing the
    clock by each wait it returns; the times of the admitted calls."""
    start, times = clock.now, []
    while clock.now < start + seconds:
        delay = take()
        if delay:
            assert delay > 0
            clock.advance(delay)
        else:
            times.append(clock.now - start)
    return times


def per_minute(times, minutes):
    return [sum(1 for t in times if m * 60 <= t < (m + 1) * 60) for m in range(minutes)]


def busiest_window(times, seconds=60.0):
    """The most admissions in any window of ``seconds`` starting at one of them."""
    return max(bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times))


def test_a_negative_rate_is_refused():
    with pytest.raises(ValueError):
        TokenBucket(-1)


# -- the token bucket -----------------------------------------------------------

def test_600_per_minute_holds_in_each_of_three_minutes(clock):
    bucket = TokenBucket(600, clock=clock)
    times = greedy(bucket.take, clock, 180)
    for count in per_minute(times, 3):
        assert 594 <= count <= 606, per_minute(times, 3)
    assert busiest_window(times) <= 606


def test_after_an_idle_spell_no_minute_exceeds_the_rate_by_more_than_1_percent(clock):
    bucket = TokenBucket(6000, clock=clock)                  # 100 a second
    greedy(bucket.take, clock, 30)
    clock.advance(600)                                  # idle: the bucket fills up
    times = greedy(bucket.take, clock, 120)
    assert busiest_window(times) <= 6060
    assert per_minute(times, 2)[1] == 6000


def test_low_rate_gives_exactly_the_rate_each_minute(clock):
    bucket = TokenBucket(5, clock=clock)
    assert bucket.burst == 1
    assert per_minute(greedy(bucket.take, clock, 300), 5) == [5] * 5


def test_take_returns_the_wait_and_takes_nothing_when_refused(clock):
    bucket = TokenBucket(60, clock=clock)       # one a second, burst 1
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)
    clock.advance(0.25)
    assert bucket.take() == pytest.approx(0.75)
    assert bucket.wait() == pytest.approx(0.75)  # the refusals took nothing
    clock.advance(0.75)
    assert bucket.take() == 0.0


def test_explicit_burst_and_taking_several(clock):
    bucket = TokenBucket(60, clock=clock, burst=5)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take(2) == pytest.approx(2.0)
    clock.advance(3)
    assert bucket.take(3) == 0.0
    with pytest.raises(ValueError):
        bucket.take(6)                          # would never fit
    with pytest.raises(ValueError):
        TokenBucket(60, burst=0.5)


def test_rate_change_applies_at_once_and_keeps_accrued_tokens(clock):
    bucket = TokenBucket(60, clock=clock)
    bucket.take()
    clock.advance(0.5)                          # half a token accrued
    bucket.set_rate(30)                         # now half a token a second
    assert bucket.tokens == pytest.approx(0.5)
    assert bucket.take() == pytest.approx(1.0)
    bucket.set_rate(600)
    assert bucket.take() == pytest.approx(0.05)  # tokens kept, not refilled


def test_lowered_rate_caps_the_tokens_to_the_new_burst(clock):
    bucket = TokenBucket(6000, clock=clock)
    assert bucket.burst == 60 and bucket.tokens == 60
    bucket.set_rate(60)
    assert bucket.tokens == 1
    assert bucket.take() == 0.0 and bucket.take() == pytest.approx(1.0)


def test_unlimited_bucket_never_waits(clock):
    bucket = TokenBucket(0, clock=clock)
    assert all(bucket.take() == 0.0 for _ in range(10000))
    bucket.set_rate(60)                          # from unlimited: starts full
    assert bucket.take() == 0.0 and bucket.take() == pytest.approx(1.0)
    bucket.set_rate(0)
    assert bucket.take() == 0.0


# -- messages and connects per minute ------------------------------------------

def test_unlimited_capacity_admits_everything_and_keeps_no_state(throttles):
    assert all(throttles.admit_message(IP, "example.com", MX1, UNLIMITED) == 0.0
               for _ in range(1000))
    assert throttles.stats() == {"buckets": 0, "open": 0, "floods": 0}


def test_domain_limit_is_per_local_ip_and_domain(throttles):
    limits = Capacity(domain_maxmessages=60)
    assert throttles.admit_message(IP, "example.com", MX1, limits) == 0.0
    assert throttles.admit_message(IP, "EXAMPLE.com.", MX2, limits) == pytest.approx(1.0)
    assert throttles.admit_message(OTHER_IP, "example.com", MX1, limits) == 0.0
    assert throttles.admit_message(IP, "example.org", MX1, limits) == 0.0


def test_ip_limit_is_per_local_ip_and_remote_address(throttles):
    limits = Capacity(ip_maxmessages=60)
    assert throttles.admit_message(IP, "example.com", MX1, limits) == 0.0
    assert throttles.admit_message(IP, "example.org", MX1, limits) == pytest.approx(1.0)
    assert throttles.admit_message("::ffff:192.0.2.1", "a.example", MX1, limits) > 0
    assert throttles.admit_message(IP, "example.org", MX2, limits) == 0.0
    assert throttles.admit_message(OTHER_IP, "example.org", MX1, limits) == 0.0


def test_both_limits_take_a_token_or_neither(throttles):
    limits = Capacity(domain_maxmessages=60, ip_maxmessages=60)
    assert throttles.admit_message(IP, "a.example", MX1, limits) == 0.0
    # b.example's domain token is there, MX1's is not: nothing is taken ...
    assert throttles.admit_message(IP, "b.example", MX1, limits) == pytest.approx(1.0)
    # ... so b.example still has its token for another MX.
    assert throttles.admit_message(IP, "b.example", MX2, limits) == 0.0
    # And the other way round: a.example refuses, MX3 keeps its token.
    assert throttles.admit_message(IP, "a.example", MX3, limits) == pytest.approx(1.0)
    assert throttles.admit_message(IP, "c.example", MX3, limits) == 0.0


def test_the_wait_is_the_longer_of_the_two(throttles, clock):
    limits = Capacity(domain_maxmessages=6, ip_maxmessages=60)
    assert throttles.admit_message(IP, "a.example", MX1, limits) == 0.0
    clock.advance(0.5)
    assert throttles.admit_message(IP, "a.example", MX1, limits) == pytest.approx(9.5)


def test_five_new_connections_a_minute_to_each_of_four_servers(throttles, clock):
    """As MailerQ counts them: ip_maxconnects = 5 with four MX addresses is 4 x 5 = 20
    a minute."""
    limits = Capacity(ip_maxconnects=5)
    start, admitted = clock.now, 0
    while clock.now < start + 60:
        delays = [throttles.admit_connect(IP, "example.org", mx, limits)
                  for mx in (MX1, MX2, MX3, MX4)]
        admitted += delays.count(0.0)
        clock.advance(min(delay for delay in delays if delay) if 0.0 not in delays else 0)
    assert admitted == 20


def test_connects_and_messages_are_separate_buckets(throttles):
    limits = Capacity(domain_maxmessages=60, domain_maxconnects=60)
    assert throttles.admit_connect(IP, "example.com", MX1, limits) == 0.0
    assert throttles.admit_message(IP, "example.com", MX1, limits) == 0.0
    assert throttles.admit_connect(IP, "example.com", MX1, limits) == pytest.approx(1.0)
    assert throttles.admit_message(IP, "example.com", MX1, limits) == pytest.approx(1.0)


def test_a_changed_limit_applies_to_the_next_message(throttles, clock):
    assert throttles.admit_message(IP, "example.com", MX1, Capacity(domain_maxmessages=60)) == 0
    clock.advance(0.5)
    # A reload to 6/min: the half token accrued is kept, at the new rate.
    slower = Capacity(domain_maxmessages=6)
    assert throttles.admit_message(IP, "example.com", MX1, slower) == pytest.approx(5.0)
    assert throttles.admit_message(IP, "example.com", MX1, UNLIMITED) == 0.0


# -- concurrent connections ------------------------------------------------------

def test_domain_connections_are_slots_released_once(throttles):
    limits = Capacity(domain_maxconnections=2)
    first = throttles.open_connection(IP, "example.com", MX1, limits)
    second = throttles.open_connection(IP, "example.com", MX2, limits)
    assert first and second
    assert throttles.open_connection(IP, "example.com", MX3, limits) is None
    assert throttles.open_connection(OTHER_IP, "example.com", MX3, limits) is not None
    first.release()
    first.release()                               # idempotent
    assert first.released
    with throttles.open_connection(IP, "example.com", MX3, limits) as third:   # the one freed
        assert throttles.open_connection(IP, "example.com", MX3, limits) is None  # only one
    assert third.released
    assert throttles.open_connection(IP, "example.com", MX3, limits) is not None
    assert throttles.open_connection(IP, "example.com", MX3, limits) is None


def test_ip_connections_are_per_remote_address_and_taken_both_or_none(throttles):
    limits = Capacity(domain_maxconnections=2, ip_maxconnections=1)
    slot = throttles.open_connection(IP, "a.example", MX1, limits)
    assert throttles.open_connection(IP, "b.example", MX1, limits) is None
    b_slots = [throttles.open_connection(IP, "b.example", mx, limits) for mx in (MX4, MX5)]
    assert all(b_slots)                         # nothing leaked: b.example has both
    for b_slot in b_slots:
        b_slot.release()
    assert throttles.open_connection(IP, "a.example", MX2, limits) is not None
    assert throttles.open_connection(IP, "a.example", MX3, limits) is None
    assert throttles.open_connection(IP, "c.example", MX3, limits) is not None  # MX3 was free
    assert throttles.open_connection(IP, "c.example", MX1, limits) is None      # MX1 is held
    slot.release()
    assert throttles.open_connection(IP, "c.example", MX1, limits) is not None


def test_lowered_connection_limit_applies_to_new_slots_only(throttles):
    slots = [throttles.open_connection(IP, "example.com", MX1, Capacity(domain_maxconnections=3))
             for _ in range(3)]
    lowered = Capacity(domain_maxconnections=1)
    assert throttles.open_connection(IP, "example.com", MX1, lowered) is None
    assert throttles.open_connection(IP, "example.com", MX1,          # existing ones stay
                                     Capacity(domain_maxconnections=3)) is None
    slots[0].release()
    slots[1].release()
    assert throttles.open_connection(IP, "example.com", MX1, lowered) is None
    slots[2].release()
    assert throttles.open_connection(IP, "example.com", MX1, lowered) is not None


def test_connections_are_counted_while_unlimited(throttles):
    slots = [throttles.open_connection(IP, "example.com", MX1, UNLIMITED) for _ in range(3)]
    assert throttles.open_connection(IP, "example.com", MX1,
                                     Capacity(ip_maxconnections=3)) is None
    for slot in slots:
        slot.release()
    assert throttles.stats()["open"] == 0


# -- flood responses with a real snapshot ----------------------------------------

FLOOD_SETTINGS = dict(
    capacity=[
        cap(domain_maxmessages=6000, ip_maxconnections=10),
        cap(localip=IP, domain_maxconnects=100),
        cap(domain="example.com", domain_maxmessages=600, domain_maxconnections=20),
        cap(localip=IP, domain="example.com", domain_maxmessages=1200),
    ],
    flood_responses=[dict(cap(domain_maxmessages=60, domain_maxconnections=1),
                          pattern="flood detected", type="substr", duration=300)],
)
REPLY = "421 4.7.0 message rejected, flood detected from your IP address"


def test_flood_switches_the_pair_and_returns_after_the_duration(throttles, clock, caplog):
    snapshot = build(**FLOOD_SETTINGS)
    normal = throttles.effective_capacity(snapshot, IP, "example.com")
    assert normal.domain_maxmessages == 1200 and normal.domain_maxconnections == 20
    rule = snapshot.flood_response(REPLY, IP, "example.com")
    with caplog.at_level(logging.INFO, logger=throttle.__name__):
        throttles.flood(IP, "Example.COM", rule)
        flooded = throttles.effective_capacity(snapshot, IP, "example.com")
        # The flood row's own columns, the -1 ones from the pair's chain.
        assert flooded == Capacity(domain_maxmessages=60, domain_maxconnects=100,
                                   domain_maxconnections=1, ip_maxconnections=10)
        # Other pairs keep their normal capacity.
        assert throttles.effective_capacity(snapshot, OTHER_IP, "example.com").\
            domain_maxmessages == 600
        assert throttles.effective_capacity(snapshot, IP, "example.org").\
            domain_maxmessages == 6000
        clock.advance(299.9)
        assert throttles.effective_capacity(snapshot, IP, "example.com") == flooded
        clock.advance(0.1)
        assert throttles.effective_capacity(snapshot, IP, "example.com") == normal
    messages = [record.getMessage() for record in caplog.records]
    assert any("event=throttle.flood_started localip=192.0.2.1 domain=example.com rule=1 "
               "duration=300" in message for message in messages)
    assert any("event=throttle.flood_ended" in message for message in messages)
    assert throttles.stats()["floods"] == 0


def test_a_new_flood_reply_starts_the_duration_again(throttles, clock):
    snapshot = build(**FLOOD_SETTINGS)
    rule = snapshot.flood_response(REPLY, IP, "example.com")
    throttles.flood(IP, "example.com", rule)
    clock.advance(200)
    throttles.flood(IP, "example.com", rule)
    clock.advance(200)
    assert throttles.flood_rule(IP, "example.com") == rule
    clock.advance(100)
    assert throttles.flood_rule(IP, "example.com") is None


def test_flood_capacity_throttles_the_running_buckets_at_once(throttles, clock):
    snapshot = build(**FLOOD_SETTINGS)

    def send():
        limits = throttles.effective_capacity(snapshot, IP, "example.com")
        return throttles.admit_message(IP, "example.com", MX1, limits)

    assert per_minute(greedy(send, clock, 60), 1) == [pytest.approx(1200, rel=0.01)]
    throttles.flood(IP, "example.com", snapshot.flood_response(REPLY, IP, "example.com"))
    assert per_minute(greedy(send, clock, 240), 4) == [60] * 4
    clock.advance(60)                                    # the flood has ended
    assert per_minute(greedy(send, clock, 60), 1) == [pytest.approx(1200, rel=0.01)]


def test_flood_capacity_limits_connections_too(throttles):
    snapshot = build(**FLOOD_SETTINGS)
    limits = throttles.effective_capacity(snapshot, IP, "example.com")
    slots = [throttles.open_connection(IP, "example.com", MX1, limits) for _ in range(2)]
    assert all(slots)
    throttles.flood(IP, "example.com", snapshot.flood_response(REPLY, IP, "example.com"))
    limits = throttles.effective_capacity(snapshot, IP, "example.com")
    assert throttles.open_connection(IP, "example.com", MX1, limits) is None


def test_a_reload_takes_effect_for_the_next_message(throttles, clock):
    before = build(capacity=[cap(domain="example.com", domain_maxmessages=60)])
    after = build(capacity=[cap(domain="example.com", domain_maxmessages=6)])
    assert throttles.admit_message(IP, "example.com", MX1,
                                   throttles.effective_capacity(before, IP, "example.com")) == 0
    assert throttles.admit_message(IP, "example.com", MX1, throttles.effective_capacity(
        after, IP, "example.com")) == pytest.approx(10.0)


# -- bounded memory -------------------------------------------------------------

def test_prune_drops_full_buckets_and_ended_floods(throttles, clock):
    limits = Capacity(domain_maxmessages=60, ip_maxconnects=60)
    for n in range(1000):
        throttles.admit_message(IP, "d%d.example" % n, MX1, limits)
        throttles.admit_connect(IP, "d%d.example" % n, "203.0.113.%d" % (n % 250), limits)
    assert throttles.stats()["buckets"] == 1250     # 1000 domains, 250 remote addresses
    clock.advance(1.0)
    assert throttles.admit_message(IP, "d0.example", MX2, limits) == 0.0
    throttles.flood(IP, "example.com", build(**FLOOD_SETTINGS).flood_response(REPLY))
    clock.advance(0.6)
    assert throttles.prune() == 1249          # d0.example was used 0.6 s ago
    assert throttles.stats() == {"buckets": 1, "open": 0, "floods": 1}
    clock.advance(300)
    assert throttles.prune() == 2
    assert throttles.stats() == {"buckets": 0, "open": 0, "floods": 0}


def test_a_pruned_bucket_comes_back_as_it_was(throttles, clock):
    limits = Capacity(domain_maxmessages=60)
    assert throttles.admit_message(IP, "example.com", MX1, limits) == 0.0
    clock.advance(1.0)
    throttles.prune()
    assert throttles.admit_message(IP, "example.com", MX1, limits) == 0.0
    assert throttles.admit_message(IP, "example.com", MX1, limits) == pytest.approx(1.0)


def test_admitting_prunes_by_itself_every_interval(throttles, clock):
    limits = Capacity(domain_maxmessages=60)
    for n in range(100):
        throttles.admit_message(IP, "d%d.example" % n, MX1, limits)
    clock.advance(throttle.PRUNE_INTERVAL)
    throttles.admit_message(IP, "new.example", MX1, limits)
    assert throttles.stats()["buckets"] == 1
