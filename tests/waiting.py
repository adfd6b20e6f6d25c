"""Waiting in tests without sleeping a fixed time: poll a condition with a deadline."""

import time

import gevent


def wait_until(predicate, timeout=15.0, interval=0.01):
    """Return once ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out after %gs" % timeout
        gevent.sleep(interval)
