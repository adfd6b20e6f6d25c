"""The SMTP accept loop (smtpd/listener.py): runner greenlets used again from
one connection to the next, kept idle up to a bound, ended by kill and close;
a session that crashes does not stop the listener; running out of descriptors
pauses accepting instead of spinning, and accepting resumes by itself."""

import errno
import socket

import gevent
import greenlet
import pytest
from gevent.event import Event

from mailerq_gevent import netinfo
from mailerq_gevent.smtpd import listener as listener_module
from mailerq_gevent.smtpd.listener import Listener, Runners


class Served:
    """A handle that answers each connection with one line and records which
    greenlet served it; ``hold`` keeps sessions open until released."""

    def __init__(self):
        self.runners, self.crash_next = [], False
        self.hold = None

    def __call__(self, sock, address, secure):
        self.runners.append(greenlet.getcurrent())
        try:
            if self.crash_next:
                self.crash_next = False
                raise RuntimeError("a session's surprise")
            sock.sendall(b"hello %s\r\n" % (b"tls" if secure else b"plain"))
            if self.hold is not None:
                self.hold.wait()
        finally:
            sock.close()


@pytest.fixture
def served():
    handle = Served()
    runners = Runners(handle)
    listening = Listener(netinfo.listen("127.0.0.1", 0, 64), runners)
    listening.start()
    yield handle, runners, listening
    listening.close()
    runners.kill(timeout=5)
    runners.close()


def talk(listening):
    """Connect, read the line, close; returns the line."""
    with socket.create_connection(listening.socket.getsockname()[:2], timeout=5) as client:
        return client.makefile("rb").readline()


def test_one_greenlet_serves_connection_after_connection(served):
    handle, runners, listening = served
    assert [talk(listening) for _ in range(5)] == [b"hello plain\r\n"] * 5
    assert len(set(map(id, handle.runners))) == 1
    assert not runners.busy


def test_sessions_at_once_get_a_runner_each_and_idle_ones_are_bounded(served, monkeypatch):
    handle, runners, listening = served
    monkeypatch.setattr(listener_module, "MAX_IDLE", 2)
    handle.hold = Event()
    clients = [socket.create_connection(listening.socket.getsockname()[:2], timeout=5)
               for _ in range(4)]
    for client in clients:
        assert client.makefile("rb").readline() == b"hello plain\r\n"
    assert len(runners.busy) == 4 and len(set(map(id, handle.runners))) == 4
    handle.hold.set()
    assert runners.join(5)
    assert len(runners._idle) == 2
    assert sum(runner.dead for runner in handle.runners) == 2
    for client in clients:
        client.close()


def test_a_crashing_session_leaves_the_listener_serving(served, caplog):
    handle, runners, listening = served
    handle.crash_next = True
    assert talk(listening) == b""           # closed without a word
    assert "event=smtp.session_crashed" in caplog.text
    assert talk(listening) == b"hello plain\r\n"


def test_kill_ends_running_sessions_and_close_ends_idle_runners(served):
    handle, runners, listening = served
    handle.hold = Event()
    client = socket.create_connection(listening.socket.getsockname()[:2], timeout=5)
    assert client.makefile("rb").readline() == b"hello plain\r\n"
    assert runners.join(0.2) is False
    assert runners.kill(timeout=5) is True
    assert client.recv(1) == b""            # the session's finally closed it
    client.close()
    handle.hold = None
    talk(listening)                         # leaves one idle runner
    idle = list(runners._idle)
    assert idle
    runners.close()
    gevent.sleep(0.05)
    assert all(runner.dead for runner in idle)


def test_running_out_of_descriptors_pauses_accepting_then_resumes(served, caplog):
    handle, runners, listening = served

    class Exhausted:
        """The listening socket, failing its first accept with EMFILE."""

        def __init__(self, real):
            self.real, self.failures = real, 0

        def _accept(self):
            if self.failures == 0:
                self.failures += 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.real._accept()

    listening._raw = Exhausted(listening._raw)
    started = gevent.get_hub().loop.now()
    assert talk(listening) == b"hello plain\r\n"
    assert "event=smtp.accept_paused error=EMFILE seconds=0.1" in caplog.text
    assert gevent.get_hub().loop.now() - started >= 0.09


def test_the_secure_flag_reaches_the_handler():
    handle = Served()
    runners = Runners(handle)
    listening = Listener(netinfo.listen("127.0.0.1", 0, 64), runners, secure=True)
    listening.start()
    try:
        assert talk(listening) == b"hello tls\r\n"
        assert listening.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listening.close()
        runners.close()
