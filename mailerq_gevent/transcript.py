"""The live view's tee: what an SMTP connection's bytes say, told to a recorder.

The inbound ``smtpd.wire.Wire`` and the outgoing ``delivery.sender.Connection``
(through ``TeeSocket``, the socket under smtplib) each hold a *tap*, and tell
it every chunk they read (``received``) and write (``sent``), a ``note`` when
something happens that is not on the wire (a refused connection), and ``end``.
A connection nobody records has ``NULL_TAP`` and no ``TeeSocket`` under it:
it costs nothing per read or write. The protocol code does not change when
it is watched (pipelining stays on, replies still go out in one write per
group).

``Transcript`` is the tap of a recorded connection. It splits the two byte
streams into what a person reads and hands each piece to its ``sink`` (a
``console.live.Conversation``, or in an SMTP worker process the forwarder to
the daemon's): ``client(line)`` for every command line, ``server(reply)`` for
every whole reply (its lines together), and ``message(content, sender,
recipients, size)`` for every message sent after a 354, dot-stuffing undone
and line ends made CRLF (RFC 5321 §4.5.2), its envelope the sender and the
recipients the server accepted (``size``: of the whole message; of one cut at
``keep`` bytes, as it went over the wire). Replies come in the order of the commands
(RFC 5321 §4.2, RFC 2920 §3), so each reply is matched with the oldest
command not yet answered: that is how it knows which RCPTs were accepted,
when a 354 starts a message, and that after STARTTLS the conversation goes
on over TLS (the tap sees the plain text above the TLS layer).

Bounds: a command line is cut at ``MAX_LINE`` bytes; of a message at most
``keep`` bytes are held (its ``size`` counts them all), the rest is only
scanned for the end of the data.
"""

import collections
import io
import re

from mailerq_gevent.mail.data import unstuff

SECRET = "****"
MECHANISMS = {"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "XOAUTH2", "OAUTHBEARER", "GSSAPI",
              "NTLM", "EXTERNAL", "ANONYMOUS", "SCRAM-SHA-1", "SCRAM-SHA-256"}
_AUTH = re.compile(r"^(AUTH)(\s+\S+)?(\s+\S.*)?$", re.IGNORECASE | re.DOTALL)
MAX_LINE = 4096
MAX_REPLY = 65536
END_OF_DATA = b"\r\n.\r\n"


class NullTap:
    """The tap of a connection nobody records."""

    __slots__ = ()

    def received(self, data):
        pass

    def sent(self, data):
        pass

    def note(self, text):
        pass

    def end(self):
        pass


NULL_TAP = NullTap()


class Sampler:
    """Which new sessions are recorded: every one while watched, else at most
    one every ``every`` seconds (a clock that goes back starts a new period)."""

    def __init__(self, every, clock):
        self.every, self.clock = every, clock
        self._last = None

    def take(self, watched):
        """The time now when this session is to be recorded, else None."""
        now = self.clock()
        if not watched and self._last is not None and (
                self._last <= now < self._last + self.every):
            return None
        self._last = now
        return now


class TeeSocket:
    """A connected socket whose every write and read is told to ``tap`` first
    (``sendall``, ``send``, ``recv``, ``recv_into``, and so the files of
    ``makefile``, as smtplib reads replies); anything else is the socket's
    own. ``raw`` is the socket itself, for a TLS layer to wrap."""

    def __init__(self, raw, tap):
        self.raw, self.tap = raw, tap

    def sendall(self, data):
        self.tap.sent(bytes(data))
        return self.raw.sendall(data)

    def send(self, data):
        sent = self.raw.send(data)
        self.tap.sent(bytes(data[:sent]))
        return sent

    def recv(self, size):
        data = self.raw.recv(size)
        self.tap.received(data)
        return data

    def recv_into(self, buffer):
        count = self.raw.recv_into(buffer)
        if count:
            self.tap.received(bytes(buffer[:count]))
        return count

    def makefile(self, mode="rb", *args, **kwargs):
        return binary_file(self, mode)

    def __getattr__(self, name):
        return getattr(self.raw, name)


def binary_file(sock, mode="rb"):
    """``makefile(mode)`` for a socket wrapper (``TeeSocket``, the delivery's
    ``ClientSocket``): buffered binary reads through its ``recv_into``."""
    if mode != "rb":
        raise ValueError("a wrapped socket reads as binary only")
    return io.BufferedReader(_Reader(sock))


class _Reader(io.RawIOBase):
    def __init__(self, sock):
        super().__init__()
        self.sock = sock

    def readable(self):
        return True

    def readinto(self, buffer):
        return self.sock.recv_into(buffer)


class Transcript:
    """The tap of a recorded connection (see the module docstring). ``inbound``:
    the peer is the SMTP client (our server's side), else we are the client."""

    def __init__(self, sink, inbound, keep=1 << 20):
        self.sink, self.keep, self.inbound = sink, keep, inbound
        self._client, self._server = bytearray(), bytearray()
        self._pending = collections.deque()   # commands sent, not answered yet
        self._greeted = self._answering = False
        self._sender, self._recipients = None, []
        self._data = None       # after a 354: [kept bytes, last 4 bytes, length so far]

    # -- the tap --------------------------------------------------------------

    def received(self, data):
        self._from_client(data) if self.inbound else self._from_server(data)

    def sent(self, data):
        self._from_server(data) if self.inbound else self._from_client(data)

    def note(self, text):
        self.sink.note(text)

    def end(self):
        if self._client and self._data is None:
            self.sink.client(bytes(self._client[:MAX_LINE]))
        self._client.clear()
        self.sink.end()

    # -- the client's side: command lines, and a message after a 354 ----------------

    def _from_client(self, data):
        if self._data is not None:
            data = self._content(data)
        self._client += data
        while self._data is None:
            end = self._client.find(b"\n")
            if end < 0:
                if len(self._client) > MAX_LINE:
                    self._command(bytes(self._client[:MAX_LINE]))
                    self._client.clear()
                return
            line = bytes(self._client[:end + 1])
            del self._client[:end + 1]
            self._command(line[:MAX_LINE])

    def _command(self, line):
        self.sink.client(line)
        if self._answering:                   # the answer to an AUTH challenge
            self._answering = False
            return
        self._pending.append((line[:10].split(b" ", 1)[0].strip().upper(), line))

    def _content(self, data):
        """Take the message out of ``data`` (the stream after the 354, seen as
        CRLF + content, so that an empty message ends too); returns what follows it."""
        kept, tail, length = self._data
        room = self.keep + 2 - len(kept)
        if room > 0:
            kept += data[:room]
        window = tail + data
        found = window.find(END_OF_DATA)
        if found < 0:
            self._data[1:] = [window[-4:], length + len(data)]
            return b""
        end = length - len(tail) + found       # where the CRLF before the dot is
        self._data = None
        whole = end + 2 <= len(kept)
        content = unstuff(bytes(kept[:end + 2]))     # kept starts with the CRLF
        self.sink.message(content if whole else content[:self.keep], self._sender or "",
                          list(self._recipients), len(content) if whole else end)
        self._pending.append((b".", b""))     # the reply to the end of the data
        return data[found - len(tail) + len(END_OF_DATA):]

    # -- the server's side: whole replies, matched with the commands ----------------

    def _from_server(self, data):
        self._server += data
        while True:
            reply = self._reply()
            if reply is None:
                return
            self.sink.server(reply)
            self._answered(int(reply[:3]) if reply[:3].isdigit() else 0)

    def _reply(self):
        """The first whole reply in the buffer (all its lines), or None."""
        start = 0
        while True:
            end = self._server.find(b"\n", start)
            if end < 0:
                if len(self._server) <= MAX_REPLY:
                    return None
                end = len(self._server) - 1               # endless: shown as it is
            elif self._server[start + 3:start + 4] == b"-" and end < MAX_REPLY:
                start = end + 1
                continue
            reply = bytes(self._server[:end + 1])
            del self._server[:end + 1]
            return reply

    def _answered(self, code):
        if not self._greeted:
            self._greeted = True
            return
        if not self._pending:
            return
        verb, line = self._pending[0]
        if verb == b"AUTH" and code == 334:
            self._answering = True                        # the exchange goes on
            return
        self._pending.popleft()
        ok = 200 <= code < 300
        if verb == b"MAIL" and ok:
            self._sender, self._recipients = _path(line), []
        elif verb == b"RCPT" and ok:
            self._recipients.append(_path(line))
        elif verb == b"DATA" and code == 354:
            self._data = [bytearray(b"\r\n"), b"\r\n", 2]
            early, self._client = bytes(self._client), bytearray()
            if early:                                     # sent already: the message's start
                self._from_client(early)
        elif verb in (b".", b"RSET", b"EHLO", b"HELO", b"STARTTLS"):
            self._sender, self._recipients = None, []


def _path(line):
    """The address of a ``MAIL FROM:<a>`` / ``RCPT TO:<b>`` line."""
    text = line.decode("utf-8", "replace")
    _, _, rest = text.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1:].partition(">")[0]
    return rest.split(" ", 1)[0]


def as_text(value):
    """A line or reply (bytes or text) as shown: UTF-8, its last line end gone, LF between lines."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    return str(value).rstrip("\r\n").replace("\r\n", "\n")


class Redactor:
    """What a client's line may show of AUTH, the rule in one place: told each
    reply (``server``), it gives each command line as it may be shown
    (``client``): a line answering a ``334`` challenge as SECRET, an AUTH
    command by ``redact_auth``, any other line as it is (the same object)."""

    __slots__ = ("_answering",)

    def __init__(self):
        self._answering = False

    def server(self, text):
        self._answering = text[:3] == "334"

    def client(self, text):
        if self._answering:
            self._answering = False
            return SECRET
        return redact_auth(text)


def redact_auth(text):
    """An AUTH command as it may be shown: ``AUTH <mechanism> ****`` (a known
    mechanism name stays, an initial response or anything else goes); any other
    line is returned as it is (the same object)."""
    found = _AUTH.match(text)
    if not found:
        return text
    mechanism = (found.group(2) or "").strip()
    shown = mechanism if mechanism.upper() in MECHANISMS else (SECRET if mechanism else "")
    return " ".join(part for part in (found.group(1), shown,
                                      SECRET if found.group(3) else "") if part)
