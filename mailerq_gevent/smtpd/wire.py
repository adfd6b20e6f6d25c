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

``tap`` (``transcript.NULL_TAP`` unless the live view records this session)
is told every chunk read and every write, and the end: the console's live
view is a tee here, and the protocol code does not know of it.

On a plain (not TLS) gevent socket the OS socket is read and written directly
and the wait for input is on an io watcher of our own: gevent's ``recv``
tries the socket first and waits only after the failed call, which is a
system call and a Python exception for every command, since a client that
does not pipeline says nothing until it has our reply. So once a reply has
gone out, the next read waits for the socket to become readable first.
"""

import select
import socket
import ssl

import gevent
from gevent import socket as gsocket
from greenlet import getcurrent

from mailerq_gevent.transcript import NULL_TAP

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


class Wire:
    def __init__(self, sock, timeout):
        self.timeout = timeout
        self._buffer = bytearray()
        self._out = []
        # libev timers, not gevent.Timeout: its start and cancel are Python, and
        # run for every command a client sends; this one serves every line
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop
        self._line_timer = self._loop.timer(timeout, priority=-1)
        self._readable = None
        self.tap = NULL_TAP         # the live view's tee: every chunk read and written
        self._use(sock)

    def _use(self, sock):
        """Talk over ``sock``: its OS socket directly when it is a plain gevent one."""
        self.sock = sock
        if self._readable is not None:
            self._readable.close()
        if type(sock) is gsocket.socket:
            self._raw = sock._sock          # non-blocking (gevent made it so)
            self._readable = self._loop.io(sock.fileno(), 1)
        else:
            self._raw = self._readable = None
        self._replied = False               # a reply went out since the last read

    def close(self):
        """Close the socket (and our watcher on it)."""
        self.tap.end()
        if self._readable is not None:
            self._readable.close()
            self._readable = None
        self.sock.close()

    # -- writing --------------------------------------------------------------

    def send(self, data):
        self._out.append(data)

    def flush(self):
        if self._out:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out = []
            self.tap.sent(data)
            raw = self._raw
            if raw is None:
                sent = self.sock.send(data)
            else:
                self._replied = True
                try:
                    sent = raw.send(data)   # a reply fits the socket buffer: one syscall
                except BlockingIOError:
                    sent = 0
            if sent < len(data):
                self.sock.sendall(data[sent:])

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
        return clean(bytes(data))

    def buffered(self):
        """Whether the client sent more than we have read (pipelined input)."""
        return bool(self._buffer) or self._socket_has_data()

    def discard_buffer(self):
        self._buffer.clear()

    def _socket_has_data(self):
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        raw = getattr(self.sock, "_sock", None)     # gevent's socket: the real one
        if raw is None:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable)
        try:
            return bool(raw.recv(1, PEEK))
        except BlockingIOError:
            return False
        except OSError:
            return False

    def _fill(self, timeout=None):
        self.flush()
        if timeout is None:
            chunk = self._recv()
        elif timeout <= 0:
            raise ReadTimeout()
        else:
            timer = self._loop.timer(timeout, priority=-1)
            timer.start(getcurrent().throw, ReadTimeout, update=True)
            try:
                chunk = self._recv()
            finally:
                timer.close()
        if not chunk:
            raise Closed()
        self.tap.received(chunk)
        self._buffer += chunk

    def _recv(self):
        raw = self._raw
        if raw is None:
            return self.sock.recv(RECV_SIZE)
        if self._replied:           # the client answers our reply: nothing to read yet
            self._replied = False
            self._wait_readable()
        while True:
            try:
                return raw.recv(RECV_SIZE)
            except BlockingIOError:
                self._wait_readable()

    def _wait_readable(self):
        watcher = self._readable
        watcher.start(getcurrent().switch)
        try:
            self._hub.switch()
        finally:
            watcher.stop()

    # -- TLS ------------------------------------------------------------------

    def start_tls(self, context):
        """Wrap the socket (server side) and complete the handshake in time.

        Whatever the client sent after STARTTLS in plaintext is dropped first
        (CVE-2011-0411: nothing read before the handshake may count after it).
        """
        self.flush()
        self.discard_buffer()
        tls = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
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


def clean(data):
    """Undo dot-stuffing and make every line end in CRLF; ``data`` starts with CRLF."""
    data = data.replace(b"\r\n.", b"\r\n")[2:]
    if data.count(b"\r") != data.count(b"\n") or data.count(b"\r\n") != data.count(b"\n"):
        data = _normalise_line_ends(data)
    return data


def _normalise_line_ends(data):
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
