"""DKIM signing in helper processes (``signers.SignerPool``): what they sign
verifies as the in-process signature does, many senders share them, and a
helper that dies or hangs never costs a message its signature."""

import os
import signal

import gevent
import pytest

from mailerq_gevent import signers, signing
from tests.test_signing import MESSAGE, NOW, dkimpy_results, key, records, require_nacl


@pytest.fixture(scope="module")
def rsa_key():
    return signing.generate_key("rsa-sha256", 2048)


@pytest.fixture
def pool():
    made = []

    def make(count=1, timeout=signers.SIGN_TIMEOUT):
        made.append(signers.SignerPool(count, "warning", timeout=timeout))
        return made[-1]
    yield make
    for each in made:
        each.stop()


def started(pool):
    """``pool`` with its helpers up (the first sign starts them)."""
    pool._start()
    with gevent.Timeout(20):
        while not all(helper.ready for helper in pool.helpers):
            gevent.sleep(0.01)
    return pool


def message_for(number):
    return MESSAGE.replace(b"Message-ID: <1@", b"Message-ID: <%d@" % number)


def test_helpers_sign_exactly_what_this_process_would(pool, rsa_key):
    k = key(rsa_key[0])
    helpers = started(pool(2))
    messages = [message_for(n) for n in range(40)]
    results = [gevent.spawn(helpers.sign, m, [k], NOW) for m in messages]
    gevent.joinall(results, raise_error=True)
    local = signing.Signer()
    for message, result in zip(messages, results):
        assert result.value == local.sign(message, [k], now=NOW)    # RSA PKCS#1 v1.5: deterministic
        assert dkimpy_results(result.value, records((k, rsa_key[1]))) == [True]
    assert local.parses == 1 and helpers.local.parses == 0     # all of it signed by the helpers
    assert all(helper.pending == {} for helper in helpers.helpers)
    assert len({helper.proc.pid for helper in helpers.helpers}) == 2


def test_one_loop_turn_of_requests_crosses_in_one_frame(pool, rsa_key, monkeypatch):
    k = key(rsa_key[0])
    helpers = started(pool(1))
    frames = []
    channel = helpers.helpers[0].channel
    send = channel.send
    monkeypatch.setattr(channel, "send", lambda *parts: (frames.append(parts), send(*parts)))
    results = [gevent.spawn(helpers.sign, message_for(n), [k], NOW) for n in range(25)]
    gevent.joinall(results, raise_error=True)
    assert len(frames) == 1
    assert all(dkimpy_results(r.value, records((k, rsa_key[1]))) == [True] for r in results)


def test_before_the_helpers_are_up_the_message_is_signed_here(pool, rsa_key):
    k = key(rsa_key[0])
    helpers = pool(1)
    signed = helpers.sign(MESSAGE, [k], NOW)        # starts them; none is ready yet
    assert helpers.local.parses == 1
    assert dkimpy_results(signed, records((k, rsa_key[1]))) == [True]


def test_a_helper_killed_with_messages_in_hand_they_are_signed_here_and_it_comes_back(
        pool, rsa_key):
    k = key(rsa_key[0])
    helpers = started(pool(1))
    helper = helpers.helpers[0]
    first = helper.proc.pid
    os.kill(first, signal.SIGSTOP)          # it takes the requests and never answers...
    results = [gevent.spawn(helpers.sign, message_for(n), [k], NOW) for n in range(10)]
    gevent.sleep(0.2)
    assert not any(r.ready() for r in results)
    os.kill(first, signal.SIGKILL)          # ...then dies
    gevent.joinall(results, raise_error=True, timeout=20)
    assert all(dkimpy_results(r.value, records((k, rsa_key[1]))) == [True] for r in results)
    assert helpers.local.parses == 1        # signed here
    with gevent.Timeout(20):
        while not (helper.ready and helper.proc.pid != first):
            gevent.sleep(0.05)
    helpers.local.parses = 0
    assert dkimpy_results(helpers.sign(MESSAGE, [k], NOW), records((k, rsa_key[1]))) == [True]
    assert helpers.local.parses == 0        # the new helper signed it


def test_a_helper_that_does_not_answer_in_time_costs_only_the_wait(pool, rsa_key, caplog):
    k = key(rsa_key[0])
    helpers = started(pool(1, timeout=0.5))
    pid = helpers.helpers[0].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        signed = helpers.sign(MESSAGE, [k], NOW)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert dkimpy_results(signed, records((k, rsa_key[1]))) == [True]
    assert helpers.local.parses == 1
    assert "dkim.helper_slow" in caplog.text


def test_stop_ends_the_helpers(pool, rsa_key):
    helpers = started(pool(2))
    procs = [helper.proc for helper in helpers.helpers]
    helpers.stop()
    assert all(proc.poll() is not None for proc in procs)
    signed = helpers.sign(MESSAGE, [key(rsa_key[0])], NOW)     # stopped: signs here
    assert dkimpy_results(signed, records((key(rsa_key[0]), rsa_key[1]))) == [True]


def test_an_unusable_key_or_message_is_handled_in_the_helper_as_here(pool, rsa_key):
    helpers = started(pool(1))
    broken = signing.SigningKey("example.com", "s1", "not a key")
    assert helpers.sign(MESSAGE, [broken], NOW) == MESSAGE
    assert helpers.sign(b"no header line at all", [key(rsa_key[0])], NOW) == \
        signing.Signer().sign(b"no header line at all", [key(rsa_key[0])], NOW)


def test_helpers_sign_ed25519_too(pool):
    require_nacl()
    pem, txt = signing.generate_key("ed25519")
    k = key(pem, algorithm="ed25519")
    helpers = started(pool(1))
    signed = helpers.sign(MESSAGE, [k], NOW)
    assert helpers.local.parses == 0                                # the helper signed it
    assert signed == signing.Signer().sign(MESSAGE, [k], now=NOW)   # Ed25519: deterministic
    assert dkimpy_results(signed, records((k, txt))) == [True]
