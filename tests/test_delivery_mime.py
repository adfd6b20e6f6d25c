"""Outgoing MIME hygiene (``delivery.mime``): line ends, long lines, 8-bit
bodies, and the bytes smtplib really puts on the wire."""

import email
import email.policy
import re
import smtplib

import gevent
import pytest
from gevent.server import StreamServer

from mailerq_gevent.delivery import mime
from mailerq_gevent.delivery.mime import has_8bit, needs_smtputf8, prepare
from mailerq_gevent.mail.data import crlf_only

HEAD = b"From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: test\r\n"
UTF8_TEXT = "Grüße aus Köln\r\n".encode()


def lines_ok(data):
    """CRLF only and no line over 998 octets."""
    lines = data.split(b"\r\n")
    return b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(
        b"\r\n", b"") and max(map(len, lines)) <= 998


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def text_of(part):
    """A text part's decoded content with plain newlines."""
    return part.get_content().replace("\r\n", "\n")


def header_block(data):
    return data.split(b"\r\n\r\n", 1)[0]


def multipart(preamble=b"", epilogue=b""):
    return (HEAD + b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="XX"\r\n'
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + preamble +
            b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\nX-Part: one\r\n\r\n" + UTF8_TEXT +
            b"--XX\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\xfe data\r\n"
            b"--XX--\r\n" + epilogue)


def test_a_clean_message_is_returned_as_is():
    clean = HEAD + b"\r\nhello\r\n.leading dot\r\n"
    assert prepare(clean, eight_bit_ok=False) is clean
    eight = HEAD + b"\r\n" + UTF8_TEXT
    assert prepare(eight, eight_bit_ok=True) is eight


def test_str_input_is_taken_as_surrogate_escaped_utf8():
    text = (HEAD + b"\r\n" + UTF8_TEXT + b"\xff\r\n").decode("utf-8", "surrogateescape")
    assert prepare(text, True) == HEAD + b"\r\n" + UTF8_TEXT + b"\xff\r\n"


@pytest.mark.parametrize("raw, fixed", [
    (b"A: 1\nB: 2\n\nbody\n", b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
    (b"A: 1\r\n\r\nbare\rcr\r\n", b"A: 1\r\n\r\nbare\r\ncr\r\n"),
    (b"A: 1\r\n\r\nmixed\nends\r\r\n", b"A: 1\r\n\r\nmixed\r\nends\r\n\r\n"),
])
def test_bare_cr_and_lf_become_crlf(raw, fixed):
    assert prepare(raw, True) == fixed


def test_a_long_body_line_makes_the_part_quoted_printable():
    text = b"word " * 400 + b"end"                   # 2003 octets, one line
    raw = HEAD + b"\r\n" + text + b"\r\nshort\r\n"
    out = prepare(raw, True)
    assert lines_ok(out)
    assert header_block(out) == HEAD + (b"MIME-Version: 1.0\r\n"
                                        b"Content-Transfer-Encoding: quoted-printable")
    assert text_of(parse(out)) == text.decode() + "\nshort\n"


def test_8bit_body_is_encoded_only_when_the_server_lacks_8bitmime():
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + UTF8_TEXT
    assert prepare(raw, True) is raw
    out = prepare(raw, False)
    assert out.isascii() and lines_ok(out)
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in out
    assert text_of(parse(out)) == "Grüße aus Köln\n"


def test_an_existing_transfer_encoding_header_is_replaced_in_place():
    raw = (HEAD + b"Content-Transfer-Encoding: 8bit\r\nMIME-Version: 1.0\r\n"
           b"X-After: kept\r\n\r\n" + UTF8_TEXT)
    out = prepare(raw, False)
    assert header_block(out) == HEAD + (b"Content-Transfer-Encoding: quoted-printable\r\n"
                                        b"MIME-Version: 1.0\r\nX-After: kept")


def test_multipart_parts_are_encoded_one_by_one_and_the_rest_kept():
    raw = multipart()
    out = prepare(raw, False)
    assert out.isascii() and lines_ok(out)
    assert header_block(out) == header_block(raw).replace(b"8bit", b"7bit")
    assert b"--XX\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--XX\r\n" in out
    assert (b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\nX-Part: one\r\n\r\n") in out
    one, two, three = parse(out).iter_parts()
    assert text_of(one) == "Grüße aus Köln"   # the CRLF before "--XX" is the delimiter's
    assert b"\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n--XX\r\n" in out
    assert three["Content-Transfer-Encoding"] == "base64"
    assert three.get_content() == b"\x00\xff\xfe data"
    assert prepare(out, False) is out               # once done, nothing more to do


def test_multipart_with_8bitmime_is_untouched():
    raw = multipart()
    assert prepare(raw, True) is raw


def test_a_preamble_or_epilogue_that_needs_work_is_dropped():
    raw = multipart(preamble=b"Pr\xe9amble\r\n", epilogue=b"\xe9pilogue\r\n")
    out = prepare(raw, False)
    assert out.isascii() and b"amble" not in out and b"pilogue" not in out
    assert len(list(parse(out).iter_parts())) == 3
    kept = multipart(preamble=b"This is MIME.\r\n", epilogue=b"bye\r\n")
    out = prepare(kept, False)
    assert b"This is MIME.\r\n--XX" in out and out.endswith(b"--XX--\r\nbye\r\n")


def test_nested_multipart_and_message_rfc822():
    inner = (b"Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + UTF8_TEXT)
    raw = (HEAD + b'Content-Type: multipart/mixed; boundary="out"\r\n\r\n'
           b'--out\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\n'
           b"--in\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + UTF8_TEXT +
           b"--in--\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
           b"--out--\r\n")
    out = prepare(raw, False)
    assert out.isascii() and lines_ok(out)
    alternative, attached = parse(out).iter_parts()
    assert text_of(next(alternative.iter_parts())) == "Grüße aus Köln"
    inner_out = attached.get_content()
    assert inner_out["Subject"] == "inner" and text_of(inner_out) == "Grüße aus Köln"
    assert inner_out["MIME-Version"] == "1.0"


def test_base64_with_long_lines_is_wrapped_and_stays_base64():
    import base64
    data = bytes(range(256)) * 8
    raw = (HEAD + b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
           base64.b64encode(data) + b"\r\n")
    out = prepare(raw, True)
    assert lines_ok(out) and out.count(b"Content-Transfer-Encoding: base64") == 1
    assert parse(out).get_content() == data


def test_a_long_header_line_is_folded_at_white_space():
    value = " ".join("item%d" % n for n in range(300))
    raw = b"Subject: " + value.encode() + b"\r\nX-Next: kept\r\n\r\nbody\r\n"
    out = prepare(raw, True)
    assert lines_ok(out) and max(map(len, header_block(out).split(b"\r\n"))) <= 78
    assert parse(out)["Subject"] == value
    assert out.endswith(b"\r\nX-Next: kept\r\n\r\nbody\r\n")


def test_a_long_header_without_white_space_is_broken():
    raw = b"X-Token: " + b"a" * 2500 + b"\r\n\r\nbody\r\n"
    out = prepare(raw, True)
    assert lines_ok(out)
    assert parse(out)["X-Token"].replace(" ", "") == "a" * 2500


def test_8bit_in_headers_only_is_left_to_smtputf8():
    raw = b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nascii body\r\n"
    assert prepare(raw, False) == raw


def test_has_8bit_and_needs_smtputf8():
    assert has_8bit(UTF8_TEXT) and not has_8bit(b"ascii") and has_8bit("é")
    assert needs_smtputf8("jörg@example.com", "b@example.com")
    assert needs_smtputf8("", "user@bücher.example")
    assert not needs_smtputf8("a@example.com", "b@example.com")
    assert not needs_smtputf8(None, "b@example.com")


# -- on the wire --------------------------------------------------------------

class Sink:
    """A minimal SMTP server that keeps the raw bytes of each DATA."""

    def __init__(self):
        self.data = []
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()
        self.port = self.server.server_port

    def handle(self, sock, address):
        reader = sock.makefile("rb")
        sock.sendall(b"220 sink\r\n")
        for line in reader:
            verb = line[:4].upper()
            if verb == b"EHLO":
                sock.sendall(b"250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                sock.sendall(b"354 go\r\n")
                self.data.append(self.read_data(reader))
                sock.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                break
            else:
                sock.sendall(b"250 ok\r\n")
        sock.close()

    @staticmethod
    def read_data(reader):
        received = b""
        while not received.endswith(b"\r\n.\r\n"):
            chunk = reader.readline()
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture
def sink():
    running = Sink()
    yield running
    running.server.stop(timeout=1)


def test_smtplib_dot_stuffs_and_the_wire_is_crlf_only(sink):
    raw = b"Subject: dots\n\n.leading\nmiddle . dot\n..two\r\n.\nlast"
    prepared = prepare(raw, True)
    with gevent.Timeout(10):
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
            client.sendmail("a@sender.example", ["b@rcpt.example"], prepared)
    (wire,) = sink.data
    assert wire == (b"Subject: dots\r\n\r\n..leading\r\nmiddle . dot\r\n...two\r\n"
                    b"..\r\nlast\r\n.\r\n")
    assert not re.search(rb"(?<!\r)\n|\r(?!\n)", wire)


def test_smtplib_sends_bytes_as_they_are_hence_prepare(sink):
    """smtplib fixes line ends of a str only: bytes with bare LF go out bare."""
    with gevent.Timeout(10):
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
            client.sendmail("a@sender.example", ["b@rcpt.example"], b"Subject: x\n\nbody\n")
    assert b"Subject: x\n\nbody\n" in sink.data[0]


def test_a_clean_large_message_takes_the_fast_path():
    """A 400 kB clean message comes back as the same object (its cost is bench/ work)."""
    body = b"".join(b"line %06d of a clean message with a normal length\r\n" % n
                    for n in range(8000))
    raw = HEAD + b"\r\n" + body
    assert prepare(raw, False) is raw
    assert mime.MAX_LINE == 998


def _longest_by_split(data):
    return max(map(len, data.split(b"\r\n")))


def test_line_checks_agree_with_splitting_into_lines():
    import random
    draw = random.Random(7)
    pieces = [b"a" * n for n in (1, 7, 300, 990, 995, 996, 997, 998, 999, 1000, 1200)]
    for _ in range(3000):
        data = b"".join(draw.choice(pieces + [b"\r\n", b"\r\n", b"\r", b"\n"])
                        for _ in range(draw.randint(0, 12)))
        assert crlf_only(data) == (
            data.count(b"\r\n") == data.count(b"\r") == data.count(b"\n")), data
        wire = re.sub(rb"\r\n?|\n", b"\r\n", data)      # the checks' callers have CRLF only
        assert mime._has_long_line(wire) == (_longest_by_split(wire) > mime.MAX_LINE), wire
    edge = b"x" * 998
    assert not mime._has_long_line(edge) and mime._has_long_line(edge + b"x")
    assert not mime._has_long_line(edge + b"\r\n" + edge + b"\r\n")
    assert mime._has_long_line(edge + b"\r\n" + edge + b"x\r\n" + edge)
