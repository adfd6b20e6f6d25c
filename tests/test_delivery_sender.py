"""One outgoing SMTP connection (``delivery.sender.Connection``) over its
``ClientSocket``: what does not fit the socket buffer at once still arrives
whole, the read after a request waits for the reply within the command
timeout, and STARTTLS wraps the socket under it."""

import time

import pytest

from mailerq_gevent import certificates
from mailerq_gevent.delivery.sender import Connection, ClientSocket
from tests.smtp_sink import SmtpSink

MIME = (b"From: a@origin.test\r\nTo: b@example.test\r\nSubject: s\r\n\r\n"
        b"line one\r\n.a line that starts with a dot\r\n")


@pytest.fixture
def sinks():
    made = []

    def make(**options):
        made.append(SmtpSink(**options).start())
        return made[-1]
    yield make
    for sink in made:
        sink.stop()


def opened(sink, **options):
    conn = Connection("127.0.0.1", sink.port, ehlo_name="mta.test", **options)
    assert conn.open() is None
    return conn


@pytest.mark.parametrize("pipelining", [True, False])
def test_many_messages_on_one_connection_arrive_in_order(sinks, pipelining):
    advertise = ("8BITMIME", "SIZE 104857600") + (("PIPELINING",) if pipelining else ())
    sink = sinks(advertise=advertise)
    conn = opened(sink)
    assert isinstance(conn.smtp.sock, ClientSocket)
    try:
        for n in range(50):
            result = conn.send("a@origin.test", "r%d@example.test" % n, MIME + b"%d\r\n" % n)
            assert (result.state, result.code) == ("data", 250), result
    finally:
        conn.close()
    assert [list(m.recipients) for m in sink.messages] == [["r%d@example.test" % n] for n in range(50)]
    assert all(m.data == MIME + b"%d\r\n" % n for n, m in enumerate(sink.messages))


def test_a_message_larger_than_the_socket_buffer_arrives_whole(sinks):
    sink = sinks()
    conn = opened(sink)
    big = MIME + b"".join(b"%07d %s\r\n" % (n, b"x" * 90) for n in range(80000))   # 7.8 MB
    try:
        result = conn.send("a@origin.test", "b@example.test", big)
    finally:
        conn.close()
    assert (result.state, result.code) == ("data", 250), result
    assert sink.messages[0].data == big


def test_a_reply_that_never_comes_is_a_timeout_within_the_command_timeout(sinks):
    sink = sinks(data_delay=30)         # takes the message, never answers the final dot in time
    conn = opened(sink, timeout=0.5)
    started = time.monotonic()
    result = conn.send("a@origin.test", "b@example.test", MIME)
    waited = time.monotonic() - started
    conn.close(quit=False)
    assert (result.state, result.code, result.status) == ("data", 0, "4.4.2"), result
    assert "timed out" in result.description
    assert 0.4 < waited < 5
    assert not conn.usable


def test_starttls_wraps_the_socket_under_the_turn_socket(sinks, tmp_path):
    sink = sinks(tls=certificates.server_context("", "", var_dir=str(tmp_path)))
    from mailerq_gevent.delivery.sender import client_context
    conn = opened(sink, tls_context=client_context())
    try:
        assert conn.tls and not isinstance(conn.smtp.sock, ClientSocket)
        result = conn.send("a@origin.test", "b@example.test", MIME)
    finally:
        conn.close()
    assert result.code == 250 and sink.messages[0].tls and sink.messages[0].data == MIME
