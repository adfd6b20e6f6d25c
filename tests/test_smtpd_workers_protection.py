"""``smtp-protection`` with ``smtp-threads`` above 1: every worker reports its
failed logins to the daemon, which counts them for all the workers together
and tells every worker (and a worker started later) to block an address that
reached the limit across them."""

import json
import socket

import gevent
import pytest
from gevent.event import Event

from mailerq_gevent import config
from mailerq_gevent.smtpd import protection, worker_channel
from mailerq_gevent.smtpd.protection import FailedLogins
from mailerq_gevent.smtpd.workers import WorkerPool
from tests.waiting import wait_until

IP = "192.0.2.9"


class Worker:
    """A worker process's side of its channel to the pool: it reports failed
    logins, and keeps the blocks the daemon sends it."""

    def __init__(self, pool, index):
        ours, theirs = socket.socketpair()
        self.blocks, self.told = [], Event()
        self.control = worker_channel.Control(theirs, on_block=self._block)
        pool.attach(index, ours)

    def _block(self, ip, seconds):
        self.blocks.append((ip, seconds))
        self.told.set()

    def stop(self):
        self.control.stop()


@pytest.fixture
def pool(tmp_path):
    conf_file = tmp_path / "mailerq.conf"
    conf_file.write_text("")
    conf = config.parse_text("smtp-protection: true\n", path=str(conf_file))
    made = WorkerPool(conf, count=2)
    made.fakes = [Worker(made, index) for index in range(2)]
    yield made
    for worker in made.fakes:
        worker.stop()
    made.stop(5)


def test_failures_spread_over_the_workers_block_the_address_in_every_worker(pool):
    counted = []
    pool.protection.on_failure = counted.append             # each failure the daemon counts
    for attempt in range(protection.LIMIT - 1):
        pool.fakes[attempt % 2].control.auth_failed(IP)     # the count is shared
    wait_until(lambda: len(counted) == protection.LIMIT - 1)
    assert all(worker.blocks == [] for worker in pool.fakes)
    pool.fakes[0].control.auth_failed(IP)
    for worker in pool.fakes:
        assert worker.told.wait(5)
        assert worker.blocks == [(IP, protection.COOL_DOWN)]
    assert pool.protection.blocked(IP)


def test_a_worker_started_later_hears_of_the_blocks_in_force(pool):
    for _ in range(protection.LIMIT):
        pool.fakes[0].control.auth_failed(IP)
    wait_until(lambda: pool.protection.blocked(IP))
    late = Worker(pool, 2)
    try:
        assert late.told.wait(5)
        [(ip, seconds)] = late.blocks
        assert ip == IP and 0 < seconds <= protection.COOL_DOWN
    finally:
        late.stop()


def test_the_worker_side_reports_failures_and_applies_blocks():
    daemon_end, worker_end = socket.socketpair()
    reported, blocked_now = [], Event()
    worker_protection = FailedLogins()
    control = worker_channel.Control(worker_end)
    worker_protection.on_failure, control.on_block = control.auth_failed, worker_protection.block
    daemon = worker_channel.FrameSocket(daemon_end)
    serving = gevent.spawn(worker_channel.serve_channel, daemon, lambda due: None, reported.append)
    try:
        assert worker_protection.failed(IP) is False      # one failure: not blocked here
        gevent.sleep(0.1)
        assert reported == [IP]
        original_block = control.on_block

        def block(ip, seconds):
            original_block(ip, seconds)
            blocked_now.set()
        control.on_block = block
        daemon.send(json.dumps({"block": IP, "seconds": 60}).encode())
        assert blocked_now.wait(5)
        assert worker_protection.blocked(IP) and not worker_protection.blocked("192.0.2.10")
    finally:
        control.stop()
        daemon.close()
        serving.join(5)


def test_block_and_blocks_on_a_fake_clock():
    now = [1000.0]
    logins = FailedLogins(clock=lambda: now[0])
    logins.block(IP, 30)
    assert logins.blocked(IP) and logins.blocks() == [(IP, 30.0)]
    now[0] += 31
    assert not logins.blocked(IP) and logins.blocks() == []
    disabled = FailedLogins(enabled=False)
    disabled.block(IP, 30)
    assert not disabled.blocked(IP)
