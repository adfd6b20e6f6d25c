"""The connection pool (``delivery.pool``) on a fake monotonic clock with fake
connections: opening, reuse (newest first), hand-over, closing and giving back
every slot, ``smtp-connections-out``, the soft limit per server, the waiters'
limits. Real throttles and budget; nothing sleeps (the pool's slot poll is
made 1 ms where a test lets a waiter look again; the waiters in turn wake on
the real loop timer, tens of milliseconds)."""

import time

import gevent
import pytest

from mailerq_gevent.connections import ConnectionBudget
from mailerq_gevent.delivery import pool as pool_module
from mailerq_gevent.delivery import result
from mailerq_gevent.delivery.attempt import Job
from mailerq_gevent.delivery.idle import IdleConnections
from mailerq_gevent.delivery.pool import ConnectionPool, Throttled
from mailerq_gevent.delivery.routing import Target
from mailerq_gevent.delivery.throttle import Throttles
from mailerq_gevent.message import Message
from mailerq_gevent.settings import Capacity
from tests.clock import FakeClock
from tests.rows import snapshot

IP = "192.0.2.1"
MX1, MX2 = Target("mx1.example", "198.51.100.1"), Target("mx2.example", "198.51.100.2")


class FakeConnection:
    """What the pool uses of ``sender.Connection``."""

    def __init__(self, ip, port, localip=None, ehlo_name="", secure=False, fail=None):
        self.ip, self.port, self.localip = ip, port, localip
        self.ehlo_name, self.secure, self.fail = ehlo_name, secure, fail
        self.sent, self.broken, self.closed = 0, False, None

    def open(self):
        if self.fail is not None:
            self.close(quit=False)
        return self.fail

    @property
    def usable(self):
        return self.closed is None and not self.broken

    def close(self, quit=True):
        if self.closed is None:
            self.closed = "quit" if quit and not self.broken else "dropped"


class Dialer:
    def __init__(self):
        self.made, self.fail = [], None

    def __call__(self, ip, port, **options):
        conn = FakeConnection(ip, port, fail=self.fail, **options)
        self.made.append(conn)
        return conn


class World:
    def __init__(self, outbound=0, rows=None):
        self.clock, self.dialer = FakeClock(), Dialer()
        self.budget = ConnectionBudget(outbound=outbound)
        self.throttles = Throttles(clock=self.clock)
        self.settings = snapshot(rows or {})
        self.pool = ConnectionPool(self.throttles, self.budget, self.dialer, "mta.test",
                                   clock=self.clock)

    def job(self, domain="example.com", **limits):
        message = Message(envelope="a@origin.example", recipient="b@" + domain)
        return Job(self.settings, message, domain, IP, Capacity(**limits), None)


@pytest.fixture
def world():
    made = World()
    yield made
    made.pool.stop(1)


@pytest.fixture
def quick_poll(monkeypatch):
    monkeypatch.setattr(pool_module, "SLOT_POLL", 0.001)


# -- opening, reuse, closing ---------------------------------------------------------

def test_a_new_connection_greets_with_the_mtaname_and_is_counted_until_closed():
    w = World(rows={"mtanames": [{"ip": IP, "hostname": "out1.mta.test"}]})
    conn = w.pool.acquire(w.job(secure=1), MX1)
    assert (conn.ip, conn.port, conn.localip) == (MX1.ip, 25, IP)
    assert (conn.ehlo_name, conn.secure) == ("out1.mta.test", 1)
    assert (w.pool.open_count, w.pool.idle_count) == (1, 0)
    w.pool.release(conn)
    assert (w.pool.open_count, w.pool.idle_count) == (1, 1) and conn.closed is None
    w.pool.stop(1)
    assert conn.closed == "quit" and (w.pool.open_count, w.pool.idle_count) == (0, 0)


def test_without_an_mtaname_the_hostname_is_the_ehlo_name(world):
    assert world.pool.acquire(world.job(), MX1).ehlo_name == "mta.test"


def test_the_newest_idle_connection_is_reused_first(world):
    first, second = world.pool.acquire(world.job(), MX1), world.pool.acquire(world.job(), MX1)
    world.pool.release(first)
    world.pool.release(second)
    assert world.pool.acquire(world.job(), MX1) is second
    assert world.pool.acquire(world.job(), MX1) is first
    assert world.pool.acquire(world.job(), MX2) is world.dialer.made[-1]    # another server
    assert len(world.dialer.made) == 3


def test_an_idle_connection_expires_after_connection_maxidletime(world):
    conn = world.pool.acquire(world.job(connection_maxidletime=200), MX1)
    world.pool.release(conn)
    world.clock.advance(0.2)
    fresh = world.pool.acquire(world.job(), MX1)
    assert fresh is not conn and len(world.dialer.made) == 2
    gevent.sleep(0)                                 # the expired one is closed aside
    assert conn.closed == "quit" and world.pool.open_count == 1


def test_unlimited_idle_time_is_the_default_idle_time(world):
    conn = world.pool.acquire(world.job(), MX1)
    world.pool.release(conn)
    world.clock.advance(pool_module.DEFAULT_IDLE - 0.01)
    assert world.pool.acquire(world.job(), MX1) is conn


def test_a_used_up_broken_or_unreusable_connection_is_closed_and_gives_its_slot_back(world):
    job = world.job(connection_maxmessages=2, domain_maxconnections=1)
    conn = world.pool.acquire(job, MX1)
    conn.sent = 2
    world.pool.release(conn)
    assert conn.closed == "quit" and world.pool.open_count == 0
    broken = world.pool.acquire(job, MX1)            # the slot is free again
    broken.broken = True
    world.pool.release(broken)
    assert broken.closed == "dropped" and world.pool.open_count == 0
    unknown = world.pool.acquire(job, MX1)
    world.pool.release(unknown, reusable=False)
    assert unknown.closed == "dropped" and world.pool.open_count == 0
    assert world.pool.acquire(job, MX1) is world.dialer.made[3]


def test_the_capacity_of_the_message_using_it_decides_at_release(world):
    conn = world.pool.acquire(world.job(), MX1)
    conn.sent = 5
    world.pool.release(conn)                          # unlimited: kept
    again = world.pool.acquire(world.job(connection_maxmessages=5), MX1)
    assert again is conn
    world.pool.release(again)
    assert conn.closed == "quit"


def test_a_failed_opening_returns_its_result_and_holds_nothing():
    w = World(outbound=1)
    w.dialer.fail = result.make("greeting", 554, "5.3.2 not now")
    got = w.pool.acquire(w.job(domain_maxconnections=1), MX1)
    assert got is w.dialer.fail and w.pool.open_count == 0
    w.dialer.fail = None
    assert not isinstance(w.pool.acquire(w.job(domain_maxconnections=1), MX1), Throttled)


# -- limits ------------------------------------------------------------------------------

def test_a_connects_limit_throttles_a_new_connection_and_gives_its_slot_back(world):
    job = world.job(domain_maxconnects=60, domain_maxconnections=1)
    conn = world.pool.acquire(job, MX1)
    world.pool.release(conn, reusable=False)
    throttled = world.pool.acquire(job, MX1)
    assert isinstance(throttled, Throttled) and throttled.reason == "connects"
    assert throttled.delay == pytest.approx(1.0) and world.pool.open_count == 0
    world.clock.advance(1.0)
    assert world.pool.acquire(job, MX1) is world.dialer.made[1]


def test_smtp_connections_out_closes_an_idle_connection_to_make_room():
    w = World(outbound=1)
    first = w.pool.acquire(w.job(), MX1)
    w.pool.release(first)
    second = w.pool.acquire(w.job("other.example"), MX2)
    assert first.closed == "quit" and second is w.dialer.made[1]
    assert (w.pool.open_count, w.pool.idle_count) == (1, 0)


def test_with_no_room_a_message_waits_then_goes_back_to_the_queue(quick_poll):
    w = World(outbound=1)
    busy = w.pool.acquire(w.job(), MX1)
    waiting = gevent.spawn(w.pool.acquire, w.job("other.example"), MX2)
    gevent.sleep(0)
    assert not waiting.ready()
    w.clock.advance(pool_module.SLOT_WAIT)
    throttled = waiting.get(timeout=1)
    assert isinstance(throttled, Throttled) and throttled.reason == "connections"
    assert throttled.delay == pool_module.BUSY_DELAY and busy.closed is None


def test_a_slot_freed_by_a_close_is_found_by_a_waiting_message(world, quick_poll):
    job = world.job(domain_maxconnections=1)
    busy = world.pool.acquire(job, MX1)
    waiting = gevent.spawn(world.pool.acquire, job, MX2)
    gevent.sleep(0)
    busy.broken = True
    world.pool.release(busy)                          # closed: nothing handed over
    conn = waiting.get(timeout=1)
    assert conn is world.dialer.made[1] and conn.ip == MX2.ip


def test_a_connection_given_back_goes_to_the_first_waiting_message(world):
    job = world.job(domain_maxconnections=1)
    busy = world.pool.acquire(job, MX1)
    waiting = [gevent.spawn(world.pool.acquire, job, MX1)
               for _ in range(pool_module.MAX_SLOT_WAITERS)]
    gevent.sleep(0)
    extra = world.pool.acquire(job, MX1)              # enough wait already: back to the queue
    assert isinstance(extra, Throttled) and extra.delay == pool_module.BUSY_DELAY
    world.pool.release(busy)
    assert waiting[0].get(timeout=1) is busy and world.pool.idle_count == 0
    assert not any(greenlet.ready() for greenlet in waiting[1:])
    world.clock.advance(pool_module.SLOT_WAIT)
    assert all(isinstance(greenlet.get(timeout=1), Throttled) for greenlet in waiting[1:])
    assert len(world.dialer.made) == 1


def test_past_the_soft_limit_a_new_connection_to_a_server_waits_its_turn(world):
    job = world.job()
    busy = [world.pool.acquire(job, MX1) for _ in range(pool_module.SOFT_CONNECTIONS)]
    waiting = gevent.spawn(world.pool.acquire, job, MX1)
    gevent.sleep(0)
    assert not waiting.ready()
    world.pool.release(busy[0])
    assert waiting.get(timeout=1) is busy[0]          # handed over, none opened
    assert len(world.dialer.made) == pool_module.SOFT_CONNECTIONS
    world.clock.advance(pool_module.SOFT_WAIT)
    assert world.pool.acquire(job, MX1) is world.dialer.made[-1]
    assert world.pool.open_count == pool_module.SOFT_CONNECTIONS + 1


# -- the idle cache ---------------------------------------------------------------------

def test_the_reaper_closes_what_is_idle_past_its_time():
    clock, closed = FakeClock(), []
    idle = IdleConnections(lambda conn, wait: closed.append(conn), clock)
    old, young, broken = (FakeConnection("198.51.100.%d" % n, 25) for n in range(3))
    broken.broken = True
    idle.give(old, "a", 1.0)
    idle.give(young, "b", 5.0)
    idle.give(broken, "b", 5.0)
    clock.advance(1.0)
    assert idle.reap() == 2 and closed == [old, broken]
    assert len(idle) == 1 and idle.take("b") is young


def test_close_one_closes_the_connection_nearest_its_expiry():
    clock, closed = FakeClock(), []
    idle = IdleConnections(lambda conn, wait: closed.append(conn), clock)
    soon, later = FakeConnection("198.51.100.1", 25), FakeConnection("198.51.100.2", 25)
    idle.give(later, "a", 5.0)
    idle.give(soon, "b", 1.0)
    assert idle.close_one() and closed == [soon]
    assert idle.close_one() and not idle.close_one() and len(idle) == 0


def test_waiters_in_turn_wake_one_at_a_time_and_in_order():
    """Hundreds of messages waiting for a crowded server's connections: one
    wakes per period (to open the next), the first in line first, instead
    of every one of them at each period."""
    idle = IdleConnections(lambda conn, wait: None)
    woken = []

    def waiting(n):
        got = idle.wait("mx", 0.02, in_turn=True)
        woken.append((n, got))

    waiters = [gevent.spawn(waiting, n) for n in range(50)]
    gevent.sleep(0)
    deadline = time.monotonic() + 5
    while len(woken) < 3 and time.monotonic() < deadline:
        gevent.sleep(0.005)
    assert [n for n, _ in woken[:3]] == [0, 1, 2] and all(got is None for _, got in woken)
    assert len(woken) < 50
    conn = FakeConnection("198.51.100.9", 25)
    first_waiting = len(woken)
    idle.give(conn, "mx", 5.0)                        # handed to the first still waiting
    gevent.sleep(0)
    assert (first_waiting, conn) in woken
    idle.stop()                                       # the rest are let go, the timer closed
    gevent.joinall(waiters, timeout=5)
    assert len(woken) == 50 and not idle._turns and not idle._in_turn and not idle._waiting


def test_a_waiter_not_in_turn_keeps_its_own_timeout_beside_them():
    idle = IdleConnections(lambda conn, wait: None)
    in_turn = gevent.spawn(idle.wait, "mx", 30.0, in_turn=True)
    gevent.sleep(0)
    assert idle.wait("mx", 0.01) is None              # its own 10 ms, not the line's 30 s
    conn = FakeConnection("198.51.100.9", 25)
    idle.give(conn, "mx", 5.0)
    assert in_turn.get(timeout=1) is conn and not idle._turns


def test_a_waiter_woken_in_turn_does_not_orphan_the_line_after_it():
    """The first in line woken in turn, taken off the line by another
    waiter's leaving, and a newer line begun before it runs: its leaving
    must not drop the newer line, whose waiters would never be handed a
    connection (they waited 30 s while connections idled: seen in a bench)."""
    import collections

    from gevent.event import AsyncResult
    idle = IdleConnections(lambda conn, wait: None)
    first = gevent.spawn(idle.wait, "mx", 0.01, in_turn=True)
    gevent.sleep(0)
    idle._next_turn("mx")                   # its turn: woken, not yet run
    idle._waiting["mx"].popleft()           # as another waiter's leaving does
    del idle._waiting["mx"]
    newer = AsyncResult()                   # a waiter of the newer line, as wait() makes it
    idle._waiting.setdefault("mx", collections.deque()).append(newer)
    assert first.get(timeout=1) is None
    conn = FakeConnection("198.51.100.9", 25)
    idle.give(conn, "mx", 5.0)
    assert newer.ready() and newer.get() is conn
