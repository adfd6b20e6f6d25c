"""The channel between the daemon and its SMTP worker processes (``smtp-threads`` > 1).

Each worker publishes on its own: to RabbitMQ, or straight into the embedded
queue's file, which the daemon owns (the worker's own ``EmbeddedQueue`` is
writer-only): the worker commits (and fsyncs) before its 250, exactly as the
daemon would. What crosses this channel is small:

* worker -> daemon ``{"committed": true, "due": t}`` after each commit to the
  embedded queue, which the daemon passes to its queue's
  ``committed_elsewhere``: its consumers read what arrived (and its timer
  knows of a delayed message due at ``t``) without polling the file;
* daemon -> worker ``{"reload": true}`` when the settings change;
* worker -> daemon ``{"auth_failed": ip}`` for each failed login, and daemon ->
  worker ``{"block": ip, "seconds": s}`` when the failures of all workers
  together shut an address out (``smtp-protection``);
* worker -> daemon ``{"live": ...}``, the sessions the console's live view
  records (``live_relay.py``), and daemon -> worker ``{"watch": true|false}``
  when somebody starts or stops watching;
* the end of the channel: a worker whose daemon is gone stops (nothing it
  accepts could be delivered), and the daemon restarts a worker that died.

Frames: a 4-byte big-endian length, then a JSON object.
"""

import json
import struct

import gevent
from gevent.event import Event

from mailerq_gevent import logs

log = logs.get(__name__)

HEADER = struct.Struct(">I")
NOTICE_DELAY = 0.005    # seconds commit notices are gathered before one is sent
MAX_FRAME = 2 ** 31 - 1


class ChannelClosed(Exception):
    """The other process went away."""


class FrameSocket:
    """Length-prefixed frames over a stream socket.

    ``send`` only queues a frame; one writer greenlet sends everything queued
    in one system call, so the frames of the many sessions that finish in one
    turn of the event loop cross together.
    """

    def __init__(self, sock):
        self.sock = sock
        self._buffer = bytearray()
        self._outgoing = []
        self._ready = Event()
        self._writer = gevent.spawn(self._write)

    def send(self, *parts):
        if self._writer.dead:
            raise ChannelClosed()
        self._outgoing.append(HEADER.pack(sum(len(part) for part in parts)))
        self._outgoing.extend(parts)
        self._ready.set()

    def _write(self):
        try:
            while True:
                self._ready.wait()
                self._ready.clear()
                data, self._outgoing = b"".join(self._outgoing), []
                self.sock.sendall(data)
        except OSError:
            pass

    def receive(self):
        size = HEADER.unpack(self._exactly(HEADER.size))[0]
        return self._exactly(size)

    def receive_all(self):
        """One frame (waiting for it), plus every further frame already received."""
        frames = [self.receive()]
        while len(self._buffer) >= HEADER.size:
            size = HEADER.unpack_from(self._buffer)[0]
            if len(self._buffer) < HEADER.size + size:
                break
            frames.append(self.receive())
        return frames

    def _exactly(self, count):
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise ChannelClosed()
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def close(self):
        self._writer.kill(block=False)
        self.sock.close()


class Control:
    """The worker's side: reload notices in, commit notices out, the daemon's death."""

    def __init__(self, sock, on_reload=None, on_block=None, on_watch=None):
        self.channel = FrameSocket(sock)
        self.on_reload, self.on_block, self.on_watch = on_reload, on_block, on_watch
        self._notice, self._due = None, None
        self.reader = gevent.spawn(self._read)

    def committed(self, due=None):
        """Tell the daemon that messages were committed to its queue file.

        Notices are gathered for ``NOTICE_DELAY`` seconds and sent as one:
        the daemon wakes its consumers once for many commits."""
        if due is not None:
            self._due = due if self._due is None else min(self._due, due)
        if self._notice is None:
            self._notice = gevent.spawn_later(NOTICE_DELAY, self._send_notice)

    def auth_failed(self, ip):
        """Report a failed login from ``ip`` to the daemon, which counts all workers'."""
        self.send({"auth_failed": ip})

    def send(self, notice):
        """Send a notice (a JSON object) to the daemon; nothing when it is gone."""
        try:
            self.channel.send(json.dumps(notice).encode())
        except ChannelClosed:
            pass

    def _send_notice(self):
        due, self._due, self._notice = self._due, None, None
        try:
            self.channel.send(json.dumps({"committed": True, "due": due}).encode())
        except ChannelClosed:
            pass        # the daemon is gone; the messages wait in the file for the next one

    def _read(self):
        try:
            while True:
                notice = json.loads(self.channel.receive())
                if notice.get("reload") and self.on_reload:
                    gevent.spawn(self.on_reload)
                if notice.get("block") and self.on_block:
                    self.on_block(str(notice["block"]), float(notice.get("seconds") or 0))
                if "watch" in notice and self.on_watch:
                    self.on_watch(bool(notice["watch"]))
        except (ChannelClosed, OSError):
            pass
        finally:
            self.channel.close()

    def stop(self, timeout=None):
        self.reader.kill(block=False)
        self.channel.close()


def serve_channel(channel, on_commit, on_auth_failed=None, on_live=None, on_inbound=None):
    """The daemon's side for one worker: ``on_commit(due)`` for every commit
    notice, ``on_auth_failed(ip)`` for every failed login, ``on_live(notice)``
    for every live-view notice. Returns when the worker closes its end."""
    try:
        while True:
            for frame in channel.receive_all():
                notice = json.loads(frame)
                if notice.get("committed"):
                    on_commit(notice.get("due"))
                if notice.get("auth_failed") and on_auth_failed is not None:
                    on_auth_failed(str(notice["auth_failed"]))
                if notice.get("live") and on_live is not None:
                    on_live(notice)
                if "inbound" in notice and on_inbound is not None:
                    on_inbound(int(notice["inbound"]))
    except (ChannelClosed, OSError, ValueError):
        pass
