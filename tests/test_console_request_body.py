"""The one reader of JSON request bodies (console/request_body.py), driven
through the real server: a body that stops arriving is answered 408 and its
connection closed, so the request slot is free again at once."""

import socket

import pytest

from mailerq_gevent.console import request_body

ROUTES = ["/api/tables/paused", "/api/inject"]


def _head(c, session, path, framing):
    return ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            "Cookie: mq_session=%s\r\nX-CSRF-Token: %s\r\n%s\r\n"
            % (path, c.port, session.cookies["mq_session"], session.csrf, framing)).encode()


def _until_closed(sock):
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return received
        received += data


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("framing,start", [
    ("Content-Length: 100\r\n", b'{"target": '),
    ("Transfer-Encoding: chunked\r\n", b'40\r\n{"target": ')])
def test_a_body_that_stops_arriving_is_a_408_and_frees_the_slot(
        console, monkeypatch, path, framing, start):
    monkeypatch.setattr(request_body, "READ_TIMEOUT", 0.2)
    c = console(www_connections=1)
    session = c.login()
    session.close()                 # its kept-alive connection would hold the one slot
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as stalled:
        stalled.sendall(_head(c, session, path, framing) + start)   # and then nothing
        answer = _until_closed(stalled)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"\r\nConnection: close" in head
        assert body == b'{"error": "the body did not arrive in time"}'
        # the stalled client still has its socket open: the one slot is free all the same
        listed = session.get(c.url + "/api/tables", timeout=10)
        assert listed.status_code == 200
    assert session.get(c.url + "/api/tables/paused", timeout=10).json()["rows"] == []
