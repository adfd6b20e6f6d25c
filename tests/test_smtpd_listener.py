"""Accepting SMTP connections (smtpd/listener.py): a gevent StreamServer per
port whose spawn runs each connection in a runner greenlet used again from
one connection to the next, idle runners kept up to a bound, ended by kill
and close; a session that crashes does not stop the server; running out of
descriptors pauses accepting instead of spinning, and accepting resumes by
itself."""

import os
import resource
import socket

import gevent
import greenlet
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from mailerq_gevent import netinfo
from mailerq_gevent.smtpd.listener import Listener, Runners


class Served:
    """A handle that answers each connection with one line and records which
    greenlet served it; ``hold`` keeps sessions open until released."""

    def __init__(self):
        self.runners, self.crash_next = [], False
        self.hold = None

    def __call__(self, sock, address, secure):
        self.runners.append(greenlet.getcurrent())
        if self.crash_next:
            self.crash_next = False
            raise RuntimeError("a session's surprise")
        sock.sendall(b"hello %s\r\n" % (b"tls" if secure else b"plain"))
        if self.hold is not None:
            self.hold.wait()


@pytest.fixture
def serve():
    """``serve(max_idle=, secure=)`` -> (handle, runners, listening), started."""
    started = []

    def start(max_idle=256, secure=False):
        handle, runners = Served(), Runners(max_idle=max_idle)
        listening = Listener(netinfo.listen("127.0.0.1", 0, 64), handle, runners, secure)
        listening.start()
        started.append((runners, listening))
        return handle, runners, listening

    yield start
    for runners, listening in started:
        listening.close()
        runners.kill(timeout=5)
        runners.close()


def connect(listening):
    return socket.create_connection((listening.server_host, listening.server_port), timeout=5)


def talk(listening):
    """Connect, read the line, close; returns the line."""
    with connect(listening) as client:
        return client.makefile("rb").readline()


def test_the_listener_is_a_stream_server(serve):
    _, _, listening = serve()
    assert isinstance(listening, StreamServer)
    assert listening.started and not listening.closed
    listening.close()
    assert listening.closed
    with pytest.raises(OSError):
        talk(listening)


def test_one_greenlet_serves_connection_after_connection(serve):
    handle, runners, listening = serve()
    assert [talk(listening) for _ in range(5)] == [b"hello plain\r\n"] * 5
    assert len(set(map(id, handle.runners))) == 1
    assert not runners.busy


def test_sessions_at_once_get_a_runner_each_and_idle_ones_are_bounded(serve):
    handle, runners, listening = serve(max_idle=2)
    handle.hold = Event()
    clients = [connect(listening) for _ in range(4)]
    for client in clients:
        assert client.makefile("rb").readline() == b"hello plain\r\n"
    assert len(runners.busy) == 4 and len(set(map(id, handle.runners))) == 4
    first = list(handle.runners)
    handle.hold.set()
    assert runners.join(5)
    assert sum(runner.dead for runner in first) == 2
    kept = [runner for runner in first if not runner.dead]
    # two sessions at once again: the two runners kept serve them, no new one
    handle.hold = Event()
    again = [connect(listening) for _ in range(2)]
    for client in again:
        assert client.makefile("rb").readline() == b"hello plain\r\n"
    assert sorted(map(id, handle.runners[4:])) == sorted(map(id, kept))
    handle.hold.set()
    for client in clients + again:
        client.close()


def test_a_crashing_session_leaves_the_listener_serving(serve, caplog):
    handle, runners, listening = serve()
    handle.crash_next = True
    assert talk(listening) == b""           # closed without a word
    assert "event=smtp.session_crashed" in caplog.text
    assert talk(listening) == b"hello plain\r\n"
    assert handle.runners[0] is handle.runners[1]   # the runner outlived the crash


def test_kill_ends_running_sessions_and_close_ends_idle_runners(serve):
    handle, runners, listening = serve()
    handle.hold = Event()
    client = connect(listening)
    assert client.makefile("rb").readline() == b"hello plain\r\n"
    assert runners.join(0.2) is False
    assert runners.kill(timeout=5) is True
    assert client.recv(1) == b""            # the server closed it after the session
    client.close()
    handle.hold = None
    talk(listening)                         # leaves one idle runner
    idle = handle.runners[-1]
    assert not idle.dead and not runners.busy
    runners.close()
    gevent.sleep(0.05)
    assert idle.dead


def test_running_out_of_descriptors_pauses_accepting_then_resumes(serve, caplog):
    """The process really runs out of descriptors (RLIMIT_NOFILE lowered to
    what is open, the gaps filled) while a client connects."""
    _, _, listening = serve()
    client = socket.socket()
    client.settimeout(5)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (max(map(int, os.listdir("/proc/self/fd"))) + 1, limits[1]))
        fillers = _fill_descriptors()
        started = gevent.get_hub().loop.now()
        client.connect((listening.server_host, listening.server_port))
        _wait_for(lambda: "event=smtp.accept_paused" in caplog.text)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    with client:
        assert client.makefile("rb").readline() == b"hello plain\r\n"
    assert "event=smtp.accept_paused error=EMFILE seconds=0.1" in caplog.text
    assert gevent.get_hub().loop.now() - started >= 0.09


def _fill_descriptors():
    fillers = []
    while True:
        try:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return fillers


def _wait_for(condition, timeout=5.0):
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.005)


def test_the_secure_flag_reaches_the_handler(serve):
    _, _, listening = serve(secure=True)
    assert talk(listening) == b"hello tls\r\n"
    assert listening.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
