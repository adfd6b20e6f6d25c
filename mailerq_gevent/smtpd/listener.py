"""Accepting SMTP connections: gevent's ``StreamServer``, one per listening
port, all of them handing their connections to one pool of runner greenlets
that are used again from one connection to the next.

``Listener`` is a ``StreamServer`` with the product's accept policy:
``max_accept`` connections taken per readiness of the listening socket; a
client that went away before we accepted it (``ECONNABORTED``, ``EPROTO``…)
is skipped; running out of descriptors or memory (``EMFILE`` / ``ENFILE`` /
``ENOBUFS`` / ``ENOMEM``) goes to StreamServer's own accept-error backoff,
which stops accepting for ``min_delay`` (0.1 s, doubling up to 1 s) so the
loop does not spin while the process is out of descriptors, then resumes.

``Runners`` is what the servers' ``spawn`` argument is given (a callable, like
``gevent.spawn_raw``: the servers never refuse to accept, since a client past
``smtp-connections-in`` is answered ``421`` by the session handler, and a
pool object would need gevent's private ``Pool._semaphore``). StreamServer's
default spawn makes a new ``Greenlet`` for every connection and starts it on
the next turn of the loop: a Greenlet object and its links, and under Python
3.11 a fresh 16 KB frame stack (mmap, page faults, munmap). ``Runners.spawn``
switches the accepted connection straight into an idle runner greenlet,
which runs it and then waits for the next one; up to ``max_idle`` runners are
kept idle, past that a runner ends with its session. Measured with one
connection per message (the daemon's CPU per message, medians of 5
interleaved runs of 10,000 2 KB messages over 20 sessions to the embedded
queue, bench/smtpload.py against ``bench/inject.py``'s daemon, under ``flock
-x /tmp/mq-bench.lock``): 256 us with ``Runners``, 301 us with the default
spawn; the accept watcher of our own that this replaced was 246 us in the
same runs (callgrind: StreamServer's accept path, ``_do_read`` / ``do_handle``
/ closing the socket after the handler, is about 9,000 instructions, 2-3 us,
more per connection).
"""

import errno
import functools
import socket

import gevent
import greenlet
from gevent.event import Event
from gevent.server import StreamServer

from mailerq_gevent import logs

log = logs.get(__name__)

MAX_ACCEPT = 100            # connections accepted per readiness of the listening socket
MAX_IDLE = 256              # idle runners kept for the next connections
PAUSE_MIN, PAUSE_MAX = 0.1, 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Listener(StreamServer):
    """One listening socket; each connection goes to ``handle(sock, address,
    secure)`` in a runner of ``runners``. ``secure``: the port speaks TLS from
    the first byte (the handler wraps the socket; StreamServer's own TLS
    wrapping would do the handshake before the session's timeout applies)."""

    max_accept = MAX_ACCEPT
    min_delay, max_delay = PAUSE_MIN, PAUSE_MAX

    def __init__(self, sock, handle, runners, secure=False):
        # accepted sockets inherit it (Linux): replies are buffered and flushed
        # once per pipelined group, so Nagle would only delay them
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.secure = secure
        super().__init__(sock, handle=functools.partial(handle, secure=secure),
                         spawn=runners.spawn)

    def do_read(self):
        """The next connection, or None when none is waiting."""
        while True:
            try:
                return super().do_read()
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.error("smtp.accept_paused", error=errno.errorcode.get(exc.errno, exc.errno),
                              seconds=self.delay)
                    raise                   # StreamServer pauses accepting for self.delay
                if self.is_fatal_error(exc):
                    raise
                # the client gave up before we took it: take the next one


class Runners:
    """The greenlets running sessions, for ``StreamServer(spawn=runners.spawn)``;
    ``busy`` while a session runs, ``join`` / ``kill`` / ``close`` for stopping."""

    def __init__(self, *, max_idle=MAX_IDLE):
        self.max_idle = max_idle
        self._hub = gevent.get_hub()
        self._idle = []
        self.busy = set()
        self._emptied = None        # an Event while somebody waits in join()
        self._closed = False

    def __len__(self):
        return len(self.busy)

    def spawn(self, func, *args):
        """Run ``func(*args)`` in a runner; call from the hub (StreamServer's
        accept callback): returns when the session first waits."""
        runner = self._idle.pop() if self._idle else greenlet.greenlet(self._loop, self._hub)
        self.busy.add(runner)
        runner.switch(func, args)

    def _loop(self, func, args):
        me = greenlet.getcurrent()
        while True:
            try:
                func(*args)
            except greenlet.GreenletExit:
                pass
            except BaseException:  # noqa: BLE001 - one session's surprise must not end the hub
                log.exception("smtp.session_crashed")
            finally:
                self._done(me)
            if self._closed or len(self._idle) >= self.max_idle:
                return
            self._idle.append(me)
            try:
                func, args = self._hub.switch()
            except BaseException:  # noqa: BLE001 - a kill that came late, or close(): end
                if me in self._idle:
                    self._idle.remove(me)
                return

    def _done(self, runner):
        self.busy.discard(runner)
        if not self.busy and self._emptied is not None:
            self._emptied.set()

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

    def kill(self, timeout=None):
        """End every running session (``GreenletExit``), then wait for them."""
        for runner in list(self.busy):
            self.throw(runner, greenlet.GreenletExit)
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
