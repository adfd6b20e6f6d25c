"""The SMTP server's protocol, byte for byte (RFC 5321, 2920, 3207, 3461, 6531)."""

import gevent
import pytest

from tests.smtp_support import HOSTNAME, Raw, message


@pytest.fixture
def server(smtp):
    return smtp()


def test_greeting_and_ehlo(server):
    client = Raw(server.port)
    assert client.greeting == b"220 mx.test.example ESMTP mailerq-gevent\r\n"
    assert client.hello() == (
        b"250-mx.test.example\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 STARTTLS\r\n")
    assert client.command(b"QUIT") == b"221 2.0.0 Bye\r\n"
    assert client.is_closed()


def test_helo(server):
    client = Raw(server.port)
    assert client.command(b"HELO client.example") == b"250 mx.test.example\r\n"
    assert client.command(b"HELO") == b"501 5.5.4 Syntax: HELO hostname\r\n"
    assert client.command(b"EHLO") == b"501 5.5.4 Syntax: EHLO hostname\r\n"


def test_a_whole_transaction(server):
    client = Raw(server.port)
    client.hello()
    assert client.command(b"MAIL FROM:<a@example.com>") == b"250 2.1.0 Sender OK\r\n"
    assert client.command(b"RCPT TO:<b@example.org>") == b"250 2.1.5 Recipient OK\r\n"
    assert client.command(b"DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    client.send(message() + b".\r\n")
    queued = client.reply()
    assert queued.startswith(b"250 2.0.0 OK queued as ") and queued.endswith(b"\r\n")
    [queued_json] = server.queued()
    assert queued_json["envelope"] == "a@example.com"
    assert queued_json["recipient"] == "b@example.org"
    mime = queued_json["mime"]
    queue_id = queued.split()[-1].decode()
    assert mime.startswith("Received: from client.example ([127.0.0.1])\r\n\tby %s "
                           "(mailerq-gevent) with ESMTP id %s\r\n\tfor <b@example.org>; "
                           % (HOSTNAME, queue_id))
    assert mime.endswith("\r\n" + message().decode())


@pytest.mark.parametrize("line, expected", [
    (b"MAIL FROM:<a@example.com>", b"503 5.5.1 Error: send HELO/EHLO first\r\n"),
    (b"RCPT TO:<a@example.com>", b"503 5.5.1 Error: need MAIL command\r\n"),
    (b"DATA", b"503 5.5.1 Error: need MAIL command\r\n"),
])
def test_bad_sequence_before_helo(server, line, expected):
    assert Raw(server.port).command(line) == expected


def test_bad_sequences_in_a_transaction(server):
    client = Raw(server.port)
    client.hello()
    assert client.command(b"RCPT TO:<b@example.org>") == b"503 5.5.1 Error: need MAIL command\r\n"
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(b"MAIL FROM:<a@example.com>") == (
        b"503 5.5.1 Error: nested MAIL command\r\n")
    assert client.command(b"DATA") == b"503 5.5.1 Error: need RCPT command\r\n"
    assert client.command(b"RSET") == b"250 2.0.0 OK\r\n"
    assert client.command(b"RCPT TO:<b@example.org>") == b"503 5.5.1 Error: need MAIL command\r\n"


@pytest.mark.parametrize("line, expected", [
    (b"FOO", b"500 5.5.2 Error: command not recognized\r\n"),
    (b"MAIL FROM", b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"),
    (b"MAIL TO:<a@example.com>", b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"),
    (b"MAIL FROM:<a@example.com> FOO=BAR", b"555 5.5.4 Error: unsupported parameter FOO\r\n"),
    (b"MAIL FROM:<a@example.com> BODY=BINARYMIME", b"501 5.5.4 Error: bad value for BODY\r\n"),
    (b"MAIL FROM:<a@example.com> SIZE=999999999999",
     b"552 5.3.4 Message size exceeds fixed limit\r\n"),
    (b"MAIL FROM:<a@@example.com>",
     b"501 5.1.7 Error: bad address syntax in the local part\r\n"),
    (b"MAIL FROM:<a@example.com", b"501 5.1.7 Error: bad path: no closing '>'\r\n"),
    (b"MAIL FROM:<" + b"a" * 250 + b"@example.com>",
     b"501 5.1.7 Error: path too long (over 256 characters)\r\n"),
    (b"MAIL FROM:<j\xc3\xb6rg@example.com>",
     b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n"),
    (b"MAIL FROM:<j\xc3\xb6rg@example.com> SMTPUTF8", b"250 2.1.0 Sender OK\r\n"),
    (b"MAIL FROM:<> BODY=8BITMIME SIZE=100 RET=HDRS ENVID=abc", b"250 2.1.0 Sender OK\r\n"),
    (b"VRFY", b"501 5.5.4 Syntax: VRFY address\r\n"),
    (b"VRFY someone", b"252 2.5.0 Cannot VRFY user, but will accept message and attempt "
                      b"delivery\r\n"),
    (b"NOOP", b"250 2.0.0 OK\r\n"),
    (b"HELP", b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP "
              b"STARTTLS AUTH\r\n"),
    (b"AUTH PLAIN", b"502 5.5.1 Error: command not implemented\r\n"),
])
def test_replies(server, line, expected):
    client = Raw(server.port)
    client.hello()
    assert client.command(line) == expected


@pytest.mark.parametrize("line, expected", [
    (b"RCPT TO:<b@example.org> FOO=1", b"555 5.5.4 Error: unsupported parameter FOO\r\n"),
    (b"RCPT TO:<b@example.org> NOTIFY=SOMETIMES", b"501 5.5.4 Error: bad value for NOTIFY\r\n"),
    (b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org",
     b"250 2.1.5 Recipient OK\r\n"),
    (b"RCPT TO:<>", b"501 5.1.3 Error: empty recipient\r\n"),
    (b"RCPT TO:<postmaster>", b"250 2.1.5 Recipient OK\r\n"),
    (b"RCPT TO:<b@-bad-.example>", b"501 5.1.3 Error: bad domain '-bad-.example'\r\n"),
    (b"RCPT TO:<b@[127.0.0.300]>", b"501 5.1.3 Error: bad address literal [127.0.0.300]\r\n"),
    (b"RCPT TO:<b@[IPv6:::1]>", b"250 2.1.5 Recipient OK\r\n"),
    (b'RCPT TO:<"john smith"@example.org>', b"250 2.1.5 Recipient OK\r\n"),
])
def test_recipient_replies(server, line, expected):
    client = Raw(server.port)
    client.hello()
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(line) == expected


def test_loose_validation_takes_what_strict_refuses(smtp):
    strict, loose = smtp(), smtp(smtp_validate_address="loose")
    for running, expected in ((strict, b"501 5.1.3 Error: bad address syntax in the local "
                                       b"part\r\n"), (loose, b"250 2.1.5 Recipient OK\r\n")):
        client = Raw(running.port)
        client.hello()
        client.command(b"MAIL FROM:<a@example.com>")
        assert client.command(b"RCPT TO:<first..last.@example.org>") == expected


def test_too_many_recipients(server, monkeypatch):
    from mailerq_gevent.smtpd import session
    monkeypatch.setattr(session, "MAX_RECIPIENTS", 3)
    client = Raw(server.port)
    client.hello()
    client.command(b"MAIL FROM:<a@example.com>")
    for number in range(3):
        assert client.command(b"RCPT TO:<r%d@example.org>" % number).startswith(b"250 ")
    assert client.command(b"RCPT TO:<r9@example.org>") == b"452 4.5.3 Error: too many recipients\r\n"


def test_command_line_too_long(server):
    client = Raw(server.port)
    client.hello()
    assert client.command(b"NOOP " + b"x" * 600) == b"500 5.5.0 Error: line too long\r\n"
    assert client.command(b"NOOP " + b"x" * 20000) == b"500 5.5.0 Error: line too long\r\n"
    assert client.command(b"NOOP") == b"250 2.0.0 OK\r\n"


def test_message_too_big(smtp):
    running = smtp(smtp_maxsize=1000)
    client = Raw(running.port)
    client.hello()
    client.command(b"MAIL FROM:<a@example.com>")
    client.command(b"RCPT TO:<b@example.org>")
    client.command(b"DATA")
    client.send(message(body="x" * 70 + "\r\n") * 30 + b".\r\n")
    assert client.reply() == b"552 5.3.4 Message size exceeds fixed limit\r\n"
    assert client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
    assert running.queued() == []


def test_pipelining_gets_all_replies_and_queues(server):
    client = Raw(server.port)
    client.hello()
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                b"RCPT TO:<c@example.org>\r\nDATA\r\n")
    assert client.reply() == b"250 2.1.0 Sender OK\r\n"
    assert client.reply() == b"250 2.1.5 Recipient OK\r\n"
    assert client.reply() == b"250 2.1.5 Recipient OK\r\n"
    assert client.reply() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    client.send(message() + b".\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<d@example.org>\r\n"
                b"DATA\r\n")
    assert client.reply().startswith(b"250 2.0.0 OK queued as ")
    assert client.reply() == b"250 2.1.0 Sender OK\r\n"
    assert client.reply() == b"250 2.1.5 Recipient OK\r\n"
    assert client.reply() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    client.send(message() + b".\r\nQUIT\r\n")
    assert client.reply().startswith(b"250 2.0.0 OK queued as ")
    assert client.reply() == b"221 2.0.0 Bye\r\n"
    assert [m["recipient"] for m in server.queued()] == [
        "b@example.org", "c@example.org", "d@example.org"]


def test_dot_stuffing_is_undone(server):
    reply = Raw(server.port).send_message(b"Subject: dots\r\n\r\n..leading\r\n...\r\n")
    assert reply.startswith(b"250 ")
    assert server.queued()[0]["mime"].endswith("Subject: dots\r\n\r\n.leading\r\n..\r\n")


def test_an_empty_message_is_queued(server):
    assert Raw(server.port).send_message(b"", sender=b"").startswith(b"250 ")
    assert server.queued()[0]["envelope"] == ""


def test_dsn_parameters_reach_the_json(server):
    client = Raw(server.port)
    client.hello()
    client.command(b"MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ314159")
    client.command(b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org")
    client.command(b"DATA")
    client.send(message() + b".\r\n")
    client.reply()
    assert server.queued()[0]["dsn"] == {"ret": "HDRS", "envid": "QQ314159",
                                         "notify": "SUCCESS,FAILURE",
                                         "orcpt": "rfc822;b@example.org"}


def test_the_error_budget_ends_the_session(server):
    client = Raw(server.port)
    for _ in range(20):
        assert client.command(b"FOO") == b"500 5.5.2 Error: command not recognized\r\n"
    assert client.command(b"FOO") == b"421 4.7.0 Error: too many errors\r\n"
    assert client.is_closed()


def test_idle_client_is_cut_off(smtp):
    running = smtp(smtp_timeout=0.5)
    client = Raw(running.port)
    assert client.reply() == b"421 4.4.2 mx.test.example Error: timeout exceeded\r\n"
    assert client.is_closed()


def test_stop_lets_a_session_finish_its_transaction(smtp):
    running = smtp()
    client = Raw(running.port)
    client.hello()
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    [client.reply() for _ in range(3)]
    stopper = gevent.spawn(running.server.stop, 10)
    gevent.sleep(0.1)
    client.send(message() + b".\r\n")
    assert client.reply().startswith(b"250 ")
    client.command(b"QUIT")
    stopper.join(10)
    assert len(running.queued()) == 1


def test_stop_says_421_at_once_to_a_session_waiting_for_a_command(smtp):
    running = smtp()
    client = Raw(running.port)
    client.hello()
    started = gevent.get_hub().loop.now()
    stopper = gevent.spawn(running.server.stop, 10)
    assert client.reply() == b"421 4.3.2 Service shutting down\r\n"
    assert client.is_closed()
    stopper.join(5)
    assert stopper.successful()
    assert gevent.get_hub().loop.now() - started < 5       # not the 10 s allowed
    with pytest.raises(OSError):                           # no longer listening
        Raw(running.port)


def test_stop_cuts_a_session_still_receiving_when_its_time_is_up(smtp, caplog):
    running = smtp()
    client = Raw(running.port)
    client.begin_data()
    client.send(b"Subject: never ends\r\n")
    started = gevent.get_hub().loop.now()
    running.server.stop(0.5)
    assert gevent.get_hub().loop.now() - started >= 0.45
    assert "event=smtp.sessions_cut count=1" in caplog.text
    assert client.is_closed()                              # without a reply
    assert running.queued() == []
    assert running.server.sessions() == []
