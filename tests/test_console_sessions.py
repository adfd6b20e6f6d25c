"""Console sessions and the failed-login throttle, on an injected clock."""

from mailerq_gevent.console.sessions import LoginThrottle, Sessions
from tests.clock import FakeClock


def test_a_session_ends_after_the_idle_time_without_requests():
    clock = FakeClock()
    sessions = Sessions(idle=60, absolute=3600, clock=clock)
    session = sessions.start("admin")
    clock.now += 59
    assert sessions.get(session.id) is session      # a request restarts the idle clock
    clock.now += 59
    assert sessions.get(session.id) is session
    clock.now += 61
    assert sessions.get(session.id) is None


def test_a_session_ends_at_the_absolute_limit_however_busy():
    clock = FakeClock()
    sessions = Sessions(idle=60, absolute=300, clock=clock)
    session = sessions.start("admin")
    for _ in range(5):
        clock.now += 50
        assert sessions.get(session.id) is session
    clock.now += 51
    assert sessions.get(session.id) is None


def test_ids_and_csrf_tokens_are_random_and_compared_in_constant_time():
    sessions = Sessions()
    first, second = sessions.start("a"), sessions.start("a")
    assert first.id != second.id and first.csrf != second.csrf and len(first.id) >= 40
    assert first.csrf_matches(first.csrf) and not first.csrf_matches(second.csrf)
    assert not first.csrf_matches("") and not first.csrf_matches(None)


def test_the_throttle_counts_per_address_and_per_user_and_forgets_after_the_window():
    clock = FakeClock()
    throttle = LoginThrottle(limit=3, window=600, clock=clock)
    for _ in range(3):
        throttle.failed("192.0.2.1", "admin")
    assert throttle.blocked("192.0.2.1", "someone-else")     # the address
    assert throttle.blocked("198.51.100.7", "ADMIN")          # the user, from anywhere
    assert not throttle.blocked("198.51.100.7", "other")
    clock.now += 601
    assert not throttle.blocked("192.0.2.1", "admin")
