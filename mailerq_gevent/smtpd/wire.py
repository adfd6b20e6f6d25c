"""One client connection on the wire: bounded reads, buffered replies, TLS.

Reading (RFC 5321 §4.5.3.1 limits):

* ``readline(limit)`` returns one command line without its CRLF. A line
  longer than ``limit`` raises ``LineTooLong`` once the rest of it has been
  read and dropped. The whole line must arrive within the timeout: a client
  that trickles bytes is cut off when its time is up, however often it sends.
* ``read_data(max_size)`` returns the message after a 354 reply. Only
  ``<CRLF>.<CRLF>`` ends it (RFC 5321 §4.1.1.4): bare-LF or bare-CR variants
  (the "SMTP smuggling" sequences) stay inside the one message. Dot-stuffing
  is undone, and any bare CR or LF left in the content becomes CRLF, so what
  is queued has clean lines. A message over ``max_size`` is read to its end
  and dropped (``TooBig``). The time allowed grows with what has arrived
  (``MIN_DATA_RATE``), so a large message on a slow link gets through and a
  trickle does not.

Writing: replies are buffered and sent when the server is about to wait for
the client (so a pipelined group of commands gets its replies in one write).

``tap`` (``transcript.NULL_TAP`` unless the live view records this session;
then a ``transcript.TeeSocket`` sits under the Wire, else nothing does)
is told every chunk read and every write, and the end: the console's live
view is a tee here, and the protocol code does not know of it.

A plain (not TLS) connection is read and written through ``TurnSocket``, a
gevent socket that waits first, once a reply has gone out, and reads after:
see there for why, and what it saves.
"""

import select
import socket
import ssl

import gevent
from gevent import socket as gsocket
from greenlet import getcurrent

from mailerq_gevent.mail.data import unstuff
from mailerq_gevent.transcript import NULL_TAP, TeeSocket

RECV_SIZE = 65536
PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
MIN_DATA_RATE = 1024.0      # bytes per second a DATA transfer must keep up, beyond the timeout
END_OF_DATA = b"\r\n.\r\n"


class Closed(Exception):
    """The client went away."""


class ReadTimeout(Exception):
    """The client did not send what we waited for in time."""


class LineTooLong(Exception):
    """A command line over the limit (it has been read and dropped)."""


class TooBig(Exception):
    """A message over the size limit (it has been read and dropped)."""


class TurnSocket:
    """A plain gevent socket as an SMTP server talks over it: ``recv``,
    ``send``, ``sendall``, ``close`` as gevent's socket has them, on the OS
    socket under it, and ``has_data`` (whether input is waiting).

    A client that does not pipeline says nothing until it has our reply, so
    once a reply has gone out the next ``recv`` waits for the socket to
    become readable first, on an io watcher of its own, and reads after.
    gevent's ``recv`` tries the socket first and waits only after it failed:
    a system call and a Python exception for nearly every command. Measured
    against gevent's own socket (the Wire on ``gevent.socket.socket``'s
    ``recv`` and ``send``), the daemon's CPU per message, medians of 5
    interleaved runs of 10,000 2 KB messages over 20 sessions to the embedded
    queue (bench/smtpload.py against ``bench/inject.py``'s daemon, under
    ``flock -x /tmp/mq-bench.lock``): kept open 169 against 199 us, one
    connection per message 244 against 282 us. The rates were within the
    runs' spread in that measurement, 5,245 against 4,941 msg/s kept open
    and 3,740 against 3,575 reconnecting in an earlier one.
    """

    __slots__ = ("sock", "_raw", "_readable", "_hub", "_replied")

    def __init__(self, sock):
        self.sock = sock
        self._raw = sock._sock              # the OS socket, non-blocking (gevent made it so)
        self._hub = gevent.get_hub()
        self._readable = self._hub.loop.io(sock.fileno(), 1)
        self._replied = False               # a reply went out since the last read

    def send(self, data):
        """Send what the socket buffer takes now (a reply fits: one system call)."""
        self._replied = True
        try:
            return self._raw.send(data)
        except BlockingIOError:
            return 0

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, size):
        if self._replied:           # the client answers our reply: nothing to read yet
            self._replied = False
            self._wait_readable()
        while True:
            try:
                return self._raw.recv(size)
            except BlockingIOError:
                self._wait_readable()

    def has_data(self):
        return _peek(self._raw)

    def close(self):
        """Close the watcher, and the socket unless TLS took it over (detached)."""
        self._readable.close()
        self.sock.close()

    def _wait_readable(self):
        watcher = self._readable
        watcher.start(getcurrent().switch)
        try:
            self._hub.switch()
        finally:
            watcher.stop()


class Wire:
    def __init__(self, sock, timeout):
        self.timeout = timeout
        self._buffer = bytearray()
        self._out = []
        # libev timers, not gevent.Timeout: its start and cancel are Python, and
        # run for every command a client sends; this one serves every line
        self._loop = gevent.get_hub().loop
        self._line_timer = self._loop.timer(timeout, priority=-1)
        self._tap = NULL_TAP
        self._use(sock)

    @property
    def tap(self):
        """The live view's tee: told every chunk read and written, and the end.
        Set, it sits between the Wire and its socket; not set, nothing does."""
        return self._tap

    @tap.setter
    def tap(self, tap):
        self._tap = tap
        self._use(self.sock, self._plain)

    def _use(self, sock, plain=None):
        """Talk over ``sock``: through a ``TurnSocket`` when it is a plain gevent
        one, and through the tap's ``TeeSocket`` when there is a tap."""
        self.sock = sock
        if plain is None:
            plain = TurnSocket(sock) if type(sock) is gsocket.socket else sock
        self._plain = plain
        self._io = plain if self._tap is NULL_TAP else TeeSocket(plain, self._tap)

    def close(self):
        """Close the socket (and the watcher on it); the tap hears the end."""
        self._tap.end()
        self._plain.close()

    # -- writing --------------------------------------------------------------

    def send(self, data):
        self._out.append(data)

    def flush(self):
        if self._out:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out = []
            sent = self._io.send(data)      # a reply fits the socket buffer: one syscall
            if sent < len(data):
                self._io.sendall(data[sent:])

    # -- reading --------------------------------------------------------------

    def readline(self, limit):
        """One line with its line ending (CRLF, or a bare LF: the caller checks)."""
        end = self._buffer.find(b"\n")
        if end >= 0:                       # pipelined: already here, no timer needed
            return self._take_line(end, limit)
        self._line_timer.start(getcurrent().throw, ReadTimeout, update=True)
        try:
            start = len(self._buffer)
            while True:
                if len(self._buffer) > limit:
                    self._drop_rest_of_line()
                    raise LineTooLong()
                self._fill()
                end = self._buffer.find(b"\n", start)
                if end >= 0:
                    return self._take_line(end, limit)
                start = len(self._buffer)
        finally:
            self._line_timer.stop()

    def read_exactly(self, count):
        """``count`` bytes (a PROXY header), within the timeout."""
        self._line_timer.start(getcurrent().throw, ReadTimeout, update=True)
        try:
            while len(self._buffer) < count:
                self._fill()
        finally:
            self._line_timer.stop()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _take_line(self, end, limit):
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        if len(line) > limit:
            raise LineTooLong()
        return line

    def _drop_rest_of_line(self):
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                del self._buffer[:end + 1]
                return
            self._buffer.clear()
            self._fill()

    def read_data(self, max_size):
        """The message up to ``<CRLF>.<CRLF>``, unstuffed, with CRLF line ends."""
        deadline = Deadline(self.timeout)
        # a CRLF in front, so the end can be found even in an empty message
        data, searched, dropped = bytearray(b"\r\n"), 0, 0
        while True:
            data += self._buffer
            self._buffer.clear()
            end = data.find(END_OF_DATA, max(searched - 4, 0))
            if end >= 0:
                self._buffer[:0] = data[end + len(END_OF_DATA):]
                if dropped + end > max_size:
                    raise TooBig()
                del data[end + 2:]
                break
            if dropped + len(data) > max_size + 2:      # keep only what may start the end
                dropped += len(data) - 4
                del data[:-4]
            searched = len(data)
            self._fill(deadline.remaining(dropped + len(data)))
        return unstuff(bytes(data))

    def buffered(self):
        """Whether the client sent more than we have read (pipelined input)."""
        return bool(self._buffer) or self._socket_has_data()

    def discard_buffer(self):
        self._buffer.clear()

    def _socket_has_data(self):
        io = self._plain
        if type(io) is TurnSocket:
            return io.has_data()
        if isinstance(io, ssl.SSLSocket) and io.pending():
            return True
        raw = getattr(io, "_sock", None)            # gevent's socket: the OS one
        if raw is None:
            readable, _, _ = select.select([io], [], [], 0)
            return bool(readable)
        return _peek(raw)

    def _fill(self, timeout=None):
        self.flush()
        if timeout is None:
            chunk = self._io.recv(RECV_SIZE)
        elif timeout <= 0:
            raise ReadTimeout()
        else:
            timer = self._loop.timer(timeout, priority=-1)
            timer.start(getcurrent().throw, ReadTimeout, update=True)
            try:
                chunk = self._io.recv(RECV_SIZE)
            finally:
                timer.close()
        if not chunk:
            raise Closed()
        self._buffer += chunk

    # -- TLS ------------------------------------------------------------------

    def start_tls(self, context):
        """Wrap the socket (server side) and complete the handshake in time.

        Whatever the client sent after STARTTLS in plaintext is dropped first
        (CVE-2011-0411: nothing read before the handshake may count after it).
        """
        self.flush()
        self.discard_buffer()
        tls = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        if type(self._plain) is TurnSocket:
            self._plain.close()     # its watcher; the socket is the TLS one's now (detached)
        self._use(tls)
        with gevent.Timeout(self.timeout, ReadTimeout):
            tls.do_handshake()


class Deadline:
    """``timeout`` seconds, plus one second per ``MIN_DATA_RATE`` bytes received."""

    def __init__(self, timeout):
        self.start, self.timeout = gevent.get_hub().loop.now(), timeout

    def remaining(self, received):
        allowed = self.timeout + received / MIN_DATA_RATE
        return self.start + allowed - gevent.get_hub().loop.now()


def _peek(raw):
    """Whether input waits on the OS socket ``raw`` (without taking it)."""
    try:
        return bool(raw.recv(1, PEEK))
    except OSError:                 # BlockingIOError: nothing yet; or the client is gone
        return False
