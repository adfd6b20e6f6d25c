"""Accepting SMTP connections: an io watcher per listening socket, and session
greenlets that are used again.

``gevent.server.StreamServer`` makes a new ``Greenlet`` for every connection
and starts it on the next turn of the loop: a Greenlet object and its links,
a pool entry, and under Python 3.11 a fresh 16 KB frame stack (mmap, page
faults, munmap). With one connection per message that was about a fifth of
what the server itself spends on a connection (``bench/inject.py``, reconnect
mode). Here the hub's io callback accepts up to ``MAX_ACCEPT`` connections at
a time and switches each straight into an idle runner greenlet, which calls
``handle(sock, address)`` and then waits for the next connection. Up to
``MAX_IDLE`` runners are kept idle; past that a runner ends with its session.

Failures to accept: ``EMFILE`` / ``ENFILE`` / ``ENOBUFS`` / ``ENOMEM`` pause
accepting (0.1 s, doubling to 1 s) so the loop does not spin while the
process is out of descriptors; a client that went away before we accepted
it (``ECONNABORTED``, ``EPROTO``…) is skipped.
"""

import errno
import socket

import gevent
import greenlet
from gevent import socket as gsocket
from gevent.event import Event

from mailerq_gevent import logs

log = logs.get(__name__)

MAX_ACCEPT = 100            # connections accepted per readiness of the listening socket
MAX_IDLE = 256              # idle runners kept for the next connections
PAUSE_MIN, PAUSE_MAX = 0.1, 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Runners:
    """The greenlets running sessions: ``run(*args)`` (from the hub) calls
    ``handle(*args)`` in one; ``busy`` while a session runs, ``join`` / ``kill``
    for stopping."""

    def __init__(self, handle):
        self._handle = handle
        self._hub = gevent.get_hub()
        self._idle = []
        self.busy = set()
        self._emptied = None        # an Event while somebody waits in join()
        self._closed = False

    def __len__(self):
        return len(self.busy)

    def run(self, *args):
        """Run ``handle(*args)`` (two arguments or more) in a runner; call from
        the hub (an io callback): returns when the session first waits."""
        runner = self._idle.pop() if self._idle else greenlet.greenlet(self._loop, self._hub)
        self.busy.add(runner)
        runner.switch(*args)

    def _loop(self, *args):
        me = greenlet.getcurrent()
        while True:
            try:
                self._handle(*args)
            except greenlet.GreenletExit:
                pass
            except BaseException:  # noqa: BLE001 - one session's surprise must not end the hub
                log.exception("smtp.session_crashed")
            finally:
                self.busy.discard(me)
                if not self.busy and self._emptied is not None:
                    self._emptied.set()
            if self._closed or len(self._idle) >= MAX_IDLE:
                return
            self._idle.append(me)
            try:
                args = self._hub.switch()
            except BaseException:  # noqa: BLE001 - a kill that came late, or close(): end
                if me in self._idle:
                    self._idle.remove(me)
                return

    def join(self, timeout=None):
        """Wait until no session runs (or ``timeout``); True when none does."""
        if not self.busy:
            return True
        self._emptied = Event()
        try:
            return self._emptied.wait(timeout)
        finally:
            self._emptied = None

    def throw(self, runner, exception, still=None):
        """Raise ``exception`` in ``runner`` on the next turn of the loop, if it
        still runs a session then (and ``still()`` is true, when given)."""
        self._hub.loop.run_callback(_throw, runner, self.busy, exception, still)

    def kill(self, exception=greenlet.GreenletExit, timeout=None):
        """Raise ``exception`` in every running session, then wait for them."""
        for runner in list(self.busy):
            self.throw(runner, exception)
        return self.join(timeout)

    def close(self):
        """No more sessions: idle runners end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for runner in idle:
            self._hub.loop.run_callback(runner.throw, greenlet.GreenletExit)


def _throw(runner, busy, exception, still):
    # it may have finished, or moved on, since the kill was asked
    if runner in busy and (still is None or still()):
        runner.throw(exception)


class Listener:
    """Accepts on one listening socket and hands each connection to ``runners``
    (``handle(sock, address, secure)``)."""

    def __init__(self, sock, runners, secure=False):
        self.socket, self.runners, self.secure = sock, runners, secure
        # accepted sockets inherit it (Linux): replies are buffered and flushed
        # once per pipelined group, so Nagle would only delay them
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._raw = getattr(sock, "_sock", sock)
        self._family, self._type, self._proto = sock.family, sock.type, sock.proto
        self._watcher = None
        self._pause = PAUSE_MIN
        self._resume_timer = None

    def start(self):
        self._watcher = gevent.get_hub().loop.io(self.socket.fileno(), 1)
        self._watcher.start(self._accept)

    def close(self):
        for watcher in (self._watcher, self._resume_timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._watcher = self._resume_timer = None
        self.socket.close()

    def _accept(self):
        for _ in range(MAX_ACCEPT):
            try:
                fd, address = self._raw._accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                    return
                continue            # the client gave up before we took it
            sock = gsocket.socket(self._family, self._type, self._proto, fileno=fd)
            self.runners.run(sock, address, self.secure)
            if self._watcher is None:       # closed meanwhile (a session stopped us)
                return
        self._pause = PAUSE_MIN

    def _pause_accepting(self, exc):
        log.error("smtp.accept_paused", error=errno.errorcode.get(exc.errno, exc.errno),
                  seconds=self._pause)
        self._watcher.stop()
        loop = gevent.get_hub().loop
        self._resume_timer = loop.timer(self._pause)
        self._resume_timer.start(self._resume)
        self._pause = min(self._pause * 2, PAUSE_MAX)

    def _resume(self):
        self._resume_timer.close()
        self._resume_timer = None
        if self._watcher is not None:
            self._watcher.start(self._accept)
