"""Publishing through the daemon process, for the SMTP worker processes.

With ``smtp-threads`` above 1 the SMTP sessions run in worker processes (see
``smtpd/workers.py``), while the embedded queue belongs to the daemon
process alone. A worker's ``RemoteBroker.publish_many`` sends the messages
over a UNIX socket to the daemon, whose ``serve`` calls the real
``Broker.publish_many`` and answers once the messages are durable. So the
250 a worker sends still means "committed", and a worker whose daemon died
answers 451, never 250.

Frames: a 4-byte big-endian length, then the frame. A request is a JSON
header line ``{"id": n, "items": [[queue, size], ...]}`` followed by the
bodies. The daemon publishes the requests that arrived together in one go
(one transaction on the embedded queue) and answers them in one frame:
``{"ok": [ids]}`` or ``{"failed": [ids], "error": text}``. It also sends
``{"reload": true}`` when the settings change.
"""

import itertools
import json
import struct

import gevent
from gevent.event import AsyncResult, Event

from mailerq_gevent import logs
from mailerq_gevent.broker.publisher import BrokerError

log = logs.get(__name__)

HEADER = struct.Struct(">I")
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


def encode_request(request_id, items):
    header = json.dumps({"id": request_id, "items": [[queue, len(body)] for queue, body in items]})
    return [header.encode() + b"\n"] + [body for _, body in items]


def decode_request(frame):
    header, _, rest = frame.partition(b"\n")
    request = json.loads(header)
    items, offset = [], 0
    for queue, size in request["items"]:
        items.append((queue, rest[offset:offset + size]))
        offset += size
    return request["id"], items


class RemoteBroker:
    """The worker's side: ``publish_many`` answered by the daemon process."""

    def __init__(self, sock, on_reload=None, timeout=60.0):
        self.channel = FrameSocket(sock)
        self.on_reload, self.timeout = on_reload, timeout
        self._ids = itertools.count(1)
        self._waiting = {}
        self.reader = gevent.spawn(self._read)

    def publish_many(self, items):
        items = [(item[0], item[1]) for item in items if item[0]]
        if not items:
            return 0
        request_id, answer = next(self._ids), AsyncResult()
        self._waiting[request_id] = answer
        try:
            self.channel.send(*encode_request(request_id, items))
            error = answer.get(timeout=self.timeout)
        except (OSError, ChannelClosed, gevent.Timeout) as exc:
            raise BrokerError("the daemon did not answer: %s" % exc.__class__.__name__) from None
        finally:
            self._waiting.pop(request_id, None)
        if error:
            raise BrokerError(error)
        return len(items)


    def _read(self):
        try:
            while True:
                self._dispatch(json.loads(self.channel.receive()))
        except (ChannelClosed, OSError):
            pass
        finally:
            self.channel.close()
            for answer in self._waiting.values():
                answer.set("the daemon process is gone")

    def _dispatch(self, message):
        if message.get("reload"):
            if self.on_reload is not None:
                gevent.spawn(self.on_reload)
            return
        error = message.get("error", "refused")
        for request_id, outcome in [(i, None) for i in message.get("ok", ())] + [
                (i, error) for i in message.get("failed", ())]:
            answer = self._waiting.get(request_id)
            if answer is not None:
                answer.set(outcome)

    def stop(self, timeout=None):
        self.reader.kill(block=False)
        self.channel.close()


def serve_channel(channel, broker, name):
    """The daemon's side for one worker: publish what it sends, answer it.

    Returns when the worker closes its end. The requests that arrived
    together are published together (all or none), while the next ones are
    already being read, so the embedded queue groups them into few commits.
    """
    try:
        while True:
            requests = [decode_request(frame) for frame in channel.receive_all()]
            gevent.spawn(_answer, channel, broker, requests, name)
    except (ChannelClosed, OSError):
        pass


def _answer(channel, broker, requests, name):
    ids = [request_id for request_id, _ in requests]
    try:
        broker.publish_many([item for _, items in requests for item in items])
        answer = {"ok": ids}
    except BrokerError as exc:
        answer = {"failed": ids, "error": str(exc)[:500]}
    except Exception as exc:  # noqa: BLE001 - the worker must get an answer, never a 250 by default
        log.exception("smtp.worker_publish_failed", worker=name)
        answer = {"failed": ids, "error": exc.__class__.__name__}
    try:
        channel.send(json.dumps(answer).encode())
    except (OSError, ChannelClosed):
        pass
