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
from mailerq_gevent.smtpd.workers import WorkerPool, _Worker

IP = "192.0.2.9"


class Recording:
    """A worker's channel as the pool sees it: frames sent to it are kept."""

    def __init__(self):
        self.frames = []

    def send(self, *parts):
        self.frames.append(json.loads(b"".join(parts)))


@pytest.fixture
def pool(tmp_path):
    conf_file = tmp_path / "mailerq.conf"
    conf_file.write_text("")
    conf = config.parse_text("smtp-protection: true\n", path=str(conf_file))
    made = WorkerPool(conf, count=2)
    for index in range(2):
        made.workers[index] = _Worker(index, None, Recording())
    return made


def test_failures_spread_over_the_workers_block_the_address_in_every_worker(pool):
    for attempt in range(protection.LIMIT - 1):
        pool._auth_failed(IP)                 # from either worker: the count is shared
    assert all(worker.channel.frames == [] for worker in pool.workers.values())
    pool._auth_failed(IP)
    for worker in pool.workers.values():
        assert worker.channel.frames == [{"block": IP, "seconds": protection.COOL_DOWN}]
    assert pool.protection.blocked(IP)


def test_a_worker_started_later_hears_of_the_blocks_in_force(pool):
    for _ in range(protection.LIMIT):
        pool._auth_failed(IP)
    ours, theirs = socket.socketpair()
    late = _Worker(2, None, None)
    serving = gevent.spawn(pool._serve, late, ours)
    try:
        frame = worker_channel.FrameSocket(theirs).receive()
        notice = json.loads(frame)
        assert notice["block"] == IP and 0 < notice["seconds"] <= protection.COOL_DOWN
    finally:
        theirs.close()
        serving.join(5)


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
