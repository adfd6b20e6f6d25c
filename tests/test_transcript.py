"""The live view's tee: SMTP byte streams split into commands, replies and messages."""

import pytest

from mailerq_gevent import transcript
from mailerq_gevent.mail.data import unstuff
from mailerq_gevent.transcript import Transcript

GREETING = b"220 mx.example ESMTP\r\n"
EHLO_REPLY = b"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


class Sink:
    """Everything a Transcript tells, in order."""

    def __init__(self):
        self.entries, self.messages, self.ended = [], [], False

    def client(self, line):
        self.entries.append(("client", line))

    def server(self, reply):
        self.entries.append(("server", reply))

    def message(self, content, sender, recipients, size):
        self.messages.append((content, sender, recipients, size))
        self.entries.append(("message", content))

    def note(self, text):
        self.entries.append(("note", text))

    def end(self):
        self.ended = True


def session(client_chunks, server_chunks, inbound=True, keep=1 << 20):
    """Feed ``(side, bytes)`` steps in order: 'c' from the client, 's' from the server."""
    sink = Sink()
    tap = Transcript(sink, inbound=inbound, keep=keep)
    steps = [("s", GREETING)] + list(client_chunks) + list(server_chunks)
    for side, data in steps:
        from_client = side == "c"
        (tap.received if from_client == inbound else tap.sent)(data)
    tap.end()
    return sink


def pipelined(content, after=b"QUIT\r\n"):
    """EHLO, then MAIL / two RCPTs (the second refused) / DATA in one write, the
    message, and what comes after it."""
    return [("c", b"EHLO client.example\r\n"), ("s", EHLO_REPLY),
            ("c", b"MAIL FROM:<a@example.com> SIZE=10\r\nRCPT TO:<b@example.org>\r\n"
                  b"RCPT TO:<nobody@example.org>\r\nDATA\r\n"),
            ("s", b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go\r\n"),
            ("c", content + after), ("s", b"250 queued\r\n221 bye\r\n")]


def test_a_pipelined_transaction_keeps_the_accepted_recipients_only():
    sink = session(pipelined(b"Subject: hi\r\n\r\nHello\r\n.\r\n"), [])
    [(content, sender, recipients, size)] = sink.messages
    assert content == b"Subject: hi\r\n\r\nHello\r\n" and size == len(content)
    assert (sender, recipients) == ("a@example.com", ["b@example.org"])
    kinds = [kind for kind, _ in sink.entries]
    assert kinds == ["server", "client", "server", "client", "client", "client", "client",
                     "server", "server", "server", "server", "message", "client", "server",
                     "server"]
    assert sink.entries[2] == ("server", EHLO_REPLY)        # one reply, all its lines
    assert sink.entries[12] == ("client", b"QUIT\r\n") and sink.ended


def test_the_end_of_the_data_is_found_wherever_the_chunks_are_cut():
    stream = b"Subject: cut\r\n\r\n..one\r\ntwo\r\n.\r\nQUIT\r\n"
    expected = b"Subject: cut\r\n\r\n.one\r\ntwo\r\n"
    for cut in range(1, len(stream)):
        steps = pipelined(b"", after=b"")[:-1] + [("c", stream[:cut]), ("c", stream[cut:])]
        sink = session(steps, [("s", b"250 queued\r\n221 bye\r\n")])
        assert [m[0] for m in sink.messages] == [expected], cut
        assert ("client", b"QUIT\r\n") in sink.entries, cut


def test_an_empty_message_and_bare_line_ends():
    sink = session(pipelined(b".\r\n"), [])
    assert sink.messages[0][0] == b""
    sink = session(pipelined(b"a\nb\rc\r\n.\r\n"), [])
    assert sink.messages[0][0] == b"a\r\nb\r\nc\r\n"


def test_a_long_message_is_cut_but_its_end_still_found():
    body = b"x" * 1000 + b"\r\n"
    sink = session(pipelined(body + b".\r\n"), [], keep=100)
    [(content, _, _, size)] = sink.messages
    assert content == b"x" * 100 and size == len(body)
    assert ("client", b"QUIT\r\n") in sink.entries


def test_after_rset_the_next_transaction_has_its_own_envelope():
    steps = [("c", b"EHLO c\r\n"), ("s", b"250 mx\r\n"),
             ("c", b"MAIL FROM:<old@example.com>\r\nRCPT TO:<old@example.org>\r\nRSET\r\n"
                   b"MAIL FROM:<new@example.com>\r\nRCPT TO:<new@example.org>\r\nDATA\r\n"),
             ("s", b"250 ok\r\n250 ok\r\n250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
             ("c", b"body\r\n.\r\n")]
    sink = session(steps, [])
    assert sink.messages[0][1:3] == ("new@example.com", ["new@example.org"])


def test_answers_to_an_auth_challenge_are_no_commands():
    steps = [("c", b"EHLO c\r\n"), ("s", b"250 mx\r\n"), ("c", b"AUTH LOGIN\r\n"),
             ("s", b"334 VXNlcm5hbWU6\r\n"), ("c", b"YWxpY2U=\r\n"), ("s", b"334 UGFzc3dvcmQ6\r\n"),
             ("c", b"c2VjcmV0\r\n"), ("s", b"235 2.7.0 ok\r\n"),
             ("c", b"MAIL FROM:<alice@example.com>\r\n"), ("s", b"250 ok\r\n"),
             ("c", b"RCPT TO:<b@example.org>\r\n"), ("s", b"250 ok\r\n"),
             ("c", b"DATA\r\n"), ("s", b"354 go\r\n"), ("c", b"hi\r\n.\r\n")]
    sink = session(steps, [])
    assert sink.messages[0][1:3] == ("alice@example.com", ["b@example.org"])


def test_outgoing_the_sent_bytes_are_the_client_side():
    sink = session(pipelined(b"body\r\n.\r\n"), [], inbound=False)
    assert sink.messages[0][:3] == (b"body\r\n", "a@example.com", ["b@example.org"])
    assert sink.entries[1] == ("client", b"EHLO client.example\r\n")


def test_after_starttls_the_envelope_starts_afresh_and_lines_go_on():
    steps = [("c", b"EHLO c\r\n"), ("s", b"250 mx\r\n"), ("c", b"MAIL FROM:<x@example.com>\r\n"),
             ("s", b"250 ok\r\n"), ("c", b"STARTTLS\r\n"), ("s", b"220 go ahead\r\n"),
             ("c", b"EHLO c\r\n"), ("s", b"250 mx\r\n"), ("c", b"RCPT TO:<b@example.org>\r\n"),
             ("s", b"503 need MAIL\r\n")]
    sink = session(steps, [])
    assert sink.entries[-2:] == [("client", b"RCPT TO:<b@example.org>\r\n"),
                                 ("server", b"503 need MAIL\r\n")]


def test_unfinished_and_overlong_lines_and_replies_are_bounded():
    sink = session([("c", b"x" * (transcript.MAX_LINE * 3)), ("c", b"NOOP")], [])
    lines = [data for kind, data in sink.entries if kind == "client"]
    assert all(len(line) <= transcript.MAX_LINE for line in lines) and lines[-1] == b"NOOP"
    endless = b"250-more\r\n" * (transcript.MAX_REPLY // 10 + 10)
    sink = session([("c", b"EHLO c\r\n"), ("s", endless)], [])
    replies = [data for kind, data in sink.entries if kind == "server"][1:]
    assert replies and all(len(reply) <= transcript.MAX_REPLY + 10 for reply in replies)


@pytest.mark.parametrize("stuffed, original", [
    (b"", b""), (b"..\r\n", b".\r\n"), (b"a\r\n..b\r\n", b"a\r\n.b\r\n"),
    (b"...\r\n", b"..\r\n"), (b"a\nb\r\n", b"a\r\nb\r\n")])
def test_unstuff(stuffed, original):
    assert unstuff(b"\r\n" + stuffed) == original

