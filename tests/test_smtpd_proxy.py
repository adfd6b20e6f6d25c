"""PROXY protocol v1 and v2 from the addresses in smtp-proxy (HAProxy's spec)."""

import socket
import struct

import pytest

from mailerq_gevent import config
from tests.smtp_support import Raw, message

PROXIES = config.KEYS["smtp-proxy"][0]("127.0.0.0/8")
V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(client, server, command=0x21, family=0x11):
    if family == 0x11:
        payload = socket.inet_aton(client) + socket.inet_aton(server) + struct.pack("!HH", 1, 25)
    elif family == 0x21:
        payload = (socket.inet_pton(socket.AF_INET6, client) +
                   socket.inet_pton(socket.AF_INET6, server) + struct.pack("!HH", 1, 25))
    else:
        payload = b""
    return V2 + struct.pack("!BBH", command, family, len(payload)) + payload


@pytest.fixture
def proxied(smtp):
    return smtp(smtp_proxy=PROXIES, smtp_range=config.KEYS["smtp-range"][0](
        "127.0.0.0/8;192.0.2.0/24;2001:db8::/32"))


@pytest.mark.parametrize("header, client_ip", [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n", "192.0.2.7"),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", "2001:db8::7"),
    (v2_header("192.0.2.8", "198.51.100.1"), "192.0.2.8"),
    (v2_header("2001:db8::8", "2001:db8::1", family=0x21), "2001:db8::8"),
], ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tcp6"])
def test_the_real_client_address_is_used(proxied, header, client_ip):
    client = Raw(proxied.port, greeting=False)
    client.send(header)
    assert client.reply().startswith(b"220 ")
    assert client.send_message(message()).startswith(b"250 ")
    mime = proxied.queued()[0]["mime"]
    assert "([%s])" % client_ip in mime.split("\r\n")[0]


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n",
                                    v2_header("", "", command=0x20, family=0x00)],
                         ids=["v1-unknown", "v2-local"])
def test_unknown_and_local_keep_the_proxy_address(proxied, header):
    client = Raw(proxied.port, greeting=False)
    client.send(header)
    assert client.reply().startswith(b"220 ")
    assert client.send_message(message()).startswith(b"250 ")
    assert "([127.0.0.1])" in proxied.queued()[0]["mime"].split("\r\n")[0]


def test_smtp_range_applies_to_the_real_client(proxied):
    client = Raw(proxied.port, greeting=False)
    client.send(b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 25\r\n")
    assert client.reply() == b"554 5.7.1 Error: 203.0.113.9 may not connect\r\n"


@pytest.mark.parametrize("header", [
    b"EHLO client.example\r\n", b"PROXY TCP4 192.0.2.7 nonsense 1 25\r\n",
    b"PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n", b"PROXY " + b"x" * 200 + b"\r\n",
    V2 + b"\x11\x11\x00\x0c" + b"\x00" * 12,
], ids=["plain-smtp", "bad-address", "wrong-family", "too-long", "v2-wrong-version"])
def test_a_bad_header_closes_the_connection(proxied, header):
    client = Raw(proxied.port, greeting=False)
    client.send(header)
    assert client.is_closed()
    assert proxied.queued() == []


def test_a_header_from_outside_smtp_proxy_is_just_a_bad_command(smtp):
    client = Raw(smtp().port)
    assert client.command(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25") == (
        b"500 5.5.2 Error: command not recognized\r\n")


def test_data_after_the_header_before_the_greeting_is_a_sync_error(proxied):
    client = Raw(proxied.port, greeting=False,
                 early=b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO early\r\n")
    assert client.reply() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
