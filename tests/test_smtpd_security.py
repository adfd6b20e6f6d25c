"""Security regressions of the SMTP server, each in its own test: SMTP
smuggling, STARTTLS command injection, bad bytes in commands, open relay,
RFC 2920 synchronization, slow clients."""

import socket

import gevent
import pytest

from tests.smtp_support import Raw, message
from tests.waiting import wait_until

# -- SMTP smuggling: only <CRLF>.<CRLF> ends DATA --------------------------------

SMUGGLED = (b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"From: admin@example.com\r\nSubject: smuggled\r\n\r\nsmuggled\r\n")


def smuggle(server, fake_end):
    """Send a message whose content holds ``fake_end`` + a second transaction,
    then the real end; there must be exactly one 250 and one queued message."""
    client = Raw(server.port)
    client.begin_data()
    client.send(message() + fake_end + SMUGGLED + b".\r\n")
    replies = [client.reply()]
    client.send(b"QUIT\r\n")
    replies.append(client.reply())
    assert replies[0].startswith(b"250 2.0.0 OK queued as ")
    assert replies[1] == b"221 2.0.0 Bye\r\n"
    queued = server.queued()
    assert len(queued) == 1 and queued[0]["recipient"] == "b@example.org"
    assert "smuggled" in queued[0]["mime"]      # kept inside the one message
    return queued[0]["mime"]


@pytest.fixture
def server(smtp):
    return smtp()


def test_smuggling_bare_lf_dot_bare_lf(server):
    smuggle(server, b"\n.\n")


def test_smuggling_bare_cr_dot_bare_cr(server):
    smuggle(server, b"\r.\r")


def test_smuggling_bare_lf_dot_crlf(server):
    smuggle(server, b"\n.\r\n")


def test_smuggling_crlf_dot_bare_lf(server):
    smuggle(server, b"\r\n.\n")


def test_smuggling_crlf_dot_bare_cr(server):
    smuggle(server, b"\r\n.\r")


def test_smuggling_crlf_dot_cr_crlf(server):
    smuggle(server, b"\r\n.\r\r\n")


def test_smuggling_nul_before_the_dot(server):
    smuggle(server, b"\r\n\x00.\r\n")


def test_smuggling_bare_cr_dot_crlf(server):
    smuggle(server, b"\r.\r\n")


def test_bare_line_ends_are_stored_as_crlf(server):
    mime = smuggle(server, b"\n.\n")
    assert "\r\n.\r\n" in mime and "\n.\n" not in mime.replace("\r\n", "")


# -- STARTTLS ---------------------------------------------------------------------

def test_starttls_discards_pipelined_plaintext(server):
    """CVE-2011-0411: commands sent in plaintext after STARTTLS must not be
    executed inside TLS."""
    client = Raw(server.port)
    client.hello()
    client.send(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
    assert client.reply() == b"220 2.0.0 Ready to start TLS\r\n"
    client.starttls()
    # nothing may arrive inside TLS before we speak (a reply to the injected MAIL would)
    client.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        client.sock.recv(1)
    client.sock.settimeout(10)
    assert client.command(b"RCPT TO:<b@example.org>") == b"503 5.5.1 Error: need MAIL command\r\n"


def test_starttls_resets_helo_and_forgets_the_transaction(server):
    client = Raw(server.port)
    client.hello()
    assert client.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
    client.starttls()
    assert client.command(b"MAIL FROM:<a@example.com>") == (
        b"503 5.5.1 Error: send HELO/EHLO first\r\n")
    assert b"STARTTLS" not in client.hello()


def test_a_second_starttls_is_refused(server):
    client = Raw(server.port)
    client.hello()
    client.command(b"STARTTLS")
    client.starttls()
    client.hello()
    assert client.command(b"STARTTLS") == b"503 5.5.1 Error: TLS already active\r\n"


def test_no_starttls_without_tls(smtp):
    client = Raw(smtp(tls=False).port)
    assert b"STARTTLS" not in client.hello()
    assert client.command(b"STARTTLS") == b"454 4.7.0 TLS not available\r\n"


# -- bad bytes in commands --------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"NOOP\x00\r\n", b"NO\x00OP\r\n", b"NOOP\n", b"NOOP\rRSET\r\n", b"MAIL FROM:<a@x>\rRCPT\r\n",
    b"NOOP \xff\xfe\r\n",
], ids=["nul-at-end", "nul-inside", "bare-lf", "bare-cr", "bare-cr-in-mail", "not-utf8"])
def test_bad_bytes_in_a_command_are_refused(server, line):
    client = Raw(server.port)
    client.hello()
    client.send(line)
    assert client.reply() == b"500 5.5.2 Error: bare CR, LF or NUL in command\r\n"
    assert client.command(b"NOOP") == b"250 2.0.0 OK\r\n"


# -- no open relay ----------------------------------------------------------------

def test_outside_smtp_range_is_refused(smtp):
    running = smtp(smtp_range=())
    client = Raw(running.port)
    assert client.greeting == b"554 5.7.1 Error: 127.0.0.1 may not connect\r\n"
    assert client.is_closed()


def test_default_smtp_range_is_loopback_only():
    from mailerq_gevent import config
    assert [str(net) for net in config.defaults().smtp_range] == ["127.0.0.0/8", "::1/128"]


class _AcceptAll:
    def check(self, user, password):
        return user == "user" and password == "secret"


@pytest.fixture
def guarded(smtp):
    """A server with smtp-auth set and one local address pattern."""
    return smtp(authenticator=_AcceptAll(), settings_rows={"locals": [
        {"address": "info@local.example", "type": "exact"},
        {"address": "*@lists.example", "type": "fnmatch"}]})


@pytest.mark.parametrize("recipient, expected", [
    (b"<b@example.org>", b"530 5.7.0 Authentication required\r\n"),
    (b"<info@local.example>", b"250 2.1.5 Recipient OK\r\n"),
    (b"<anyone@lists.example>", b"250 2.1.5 Recipient OK\r\n"),
    (b"<postmaster>", b"250 2.1.5 Recipient OK\r\n"),
    (b"<user%evil.example@[127.0.0.1]>", b"550 5.7.1 Error: relay access denied\r\n"),
    (b"<user%evil.example@lists.example>", b"550 5.7.1 Error: relay access denied\r\n"),
    (b'<"user@evil.example"@lists.example>', b"550 5.7.1 Error: relay access denied\r\n"),
    (b"<@lists.example:user@evil.example>", b"550 5.7.1 Error: relay access denied\r\n"),
    (b"<evil.example!user@lists.example>", b"550 5.7.1 Error: relay access denied\r\n"),
    (b"<user@evil.example.>", b"530 5.7.0 Authentication required\r\n"),
])
def test_unauthenticated_clients_reach_only_local_addresses(guarded, recipient, expected):
    client = Raw(guarded.port)
    client.hello()
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(b"RCPT TO:" + recipient) == expected


def test_local_mail_goes_to_the_local_queue(guarded):
    reply = Raw(guarded.port).send_message(message(), recipients=(b"info@local.example",))
    assert reply.startswith(b"250 ")
    assert guarded.queued("inbox") == []
    assert [m["recipient"] for m in guarded.queued("local")] == ["info@local.example"]


# -- RFC 2920 synchronization --------------------------------------------------------

def test_talking_before_the_greeting_is_a_sync_error(smtp):
    running = smtp()
    client = Raw(running.port, greeting=False, early=b"EHLO early.example\r\n")
    assert client.reply() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    assert client.is_closed()


def test_content_before_the_354_is_a_sync_error(server):
    client = Raw(server.port)
    client.hello()
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                + message() + b".\r\n")
    assert client.reply() == b"250 2.1.0 Sender OK\r\n"
    assert client.reply() == b"250 2.1.5 Recipient OK\r\n"
    assert client.reply() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    assert client.is_closed()
    assert server.queued() == []


def test_legitimate_pipelining_is_not_a_sync_error(server):
    client = Raw(server.port)
    client.send(b"EHLO client.example\r\n")
    client.reply()
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert [client.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]


# -- slow clients ---------------------------------------------------------------------

def test_a_trickling_client_is_cut_off_when_its_time_is_up(smtp):
    """Each byte comes well within smtp-timeout, but the line never ends: the
    server must give up on the line after smtp-timeout, not wait for ever."""
    running = smtp(smtp_timeout=1.0)
    client = Raw(running.port)
    client.sock.setblocking(False)
    answer = b""
    for _ in range(80):                 # 8 s of trickling, 8 times the timeout
        try:
            answer += client.sock.recv(100)
        except BlockingIOError:
            pass
        if answer:
            break
        try:
            client.send(b"N")
        except OSError:
            break
        gevent.sleep(0.1)
    assert answer == b"421 4.4.2 mx.test.example Error: timeout exceeded\r\n"


def test_200_slow_clients_do_not_keep_out_a_new_one(smtp):
    running = smtp(smtp_timeout=2.0)
    slow = [Raw(running.port) for _ in range(200)]
    for client in slow:
        client.send(b"EHL")              # a command that never ends
    fresh = Raw(running.port)            # answered while the 200 hang
    assert fresh.greeting.startswith(b"220 ")
    assert fresh.hello().startswith(b"250-")
    fresh.command(b"QUIT")
    for client in slow:
        assert client.reply().startswith(b"421 4.4.2")
        client.close()
    wait_until(lambda: running.server.sessions() == [])
    # every slot they held is free again
    assert all(running.budget.try_inbound() for _ in range(running.conf.smtp_connections_in))


def test_a_full_server_says_421_and_the_others_carry_on(smtp):
    running = smtp(smtp_connections_in=2)
    first, second = Raw(running.port), Raw(running.port)
    third = Raw(running.port, greeting=False)
    assert third.reply() == b"421 4.7.0 Too many connections, try again later\r\n"
    assert third.is_closed()
    assert first.command(b"NOOP") == b"250 2.0.0 OK\r\n"
    assert second.command(b"NOOP") == b"250 2.0.0 OK\r\n"
