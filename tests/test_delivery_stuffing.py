"""Dot-stuffing on the way out (``mail.data.stuff``, the senders') and its
undoing on the way in (``mail.data.unstuff``, the server's), RFC 5321 §4.5.2:
each against a plain reference on tricky and on random input (dots, bare CR
and LF)."""

import random
import re

import pytest

from mailerq_gevent.mail.data import stuff, unstuff


def referencestuff(data):
    return re.sub(rb"(?m)^\.", b"..", data)        # a dot more after every LF and at the start


def reference_unstuffed(wire):
    lines = wire[2:].split(b"\r\n")
    text = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    return re.sub(rb"\r\n|\r|\n", b"\r\n", text)


def samples(count=3000, seed=5321):
    rng = random.Random(seed)
    for _ in range(count):
        yield bytes(rng.choice(b".\r\nab") for _ in range(rng.randrange(0, 24)))


@pytest.mark.parametrize("data, stuffed", [
    (b"", b""), (b".", b".."), (b".\r\n", b"..\r\n"), (b"a\r\n.b\r\n", b"a\r\n..b\r\n"),
    (b"a\r\n..\r\n", b"a\r\n...\r\n"), (b"a\n.b", b"a\n..b"), (b"a\r.b", b"a\r.b"),
    (b"no dot\r\n", b"no dot\r\n")])
def test_a_dot_more_at_the_start_of_every_line_that_has_one(data, stuffed):
    assert stuff(data) == stuffed


def test_stuffing_is_the_reference_on_random_input():
    for data in samples():
        assert stuff(data) == referencestuff(data), data


@pytest.mark.parametrize("wire, message", [
    (b"\r\n", b""), (b"\r\n..\r\n", b".\r\n"), (b"\r\na\r\n..b\r\n", b"a\r\n.b\r\n"),
    (b"\r\na\rb\r\n", b"a\r\nb\r\n"), (b"\r\na\nb\r\n", b"a\r\nb\r\n"),
    (b"\r\na\r\r\n", b"a\r\n\r\n"), (b"\r\na\n\r", b"a\r\n\r\n")])
def test_unstuffing_undoes_the_dots_and_mends_bare_line_ends(wire, message):
    assert unstuff(wire) == message


def test_unstuffing_is_the_reference_on_random_input():
    for data in samples():
        wire = b"\r\n" + data
        assert unstuff(wire) == reference_unstuffed(wire), data


def test_what_is_stuffed_comes_back_unstuffed():
    for data in samples():
        message = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
        assert unstuff(b"\r\n" + stuff(message)) == message, data
