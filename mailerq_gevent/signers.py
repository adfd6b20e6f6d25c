"""DKIM signatures in helper processes, so that signing uses every core.

``signing.Signer`` does the work (canonicalisation, hashing, the private
key operation); this module decides *where*. With ``smtp-threads: N`` above
1 the daemon starts N - 1 signing processes the first time a message is to
be signed (none for a daemon that never signs), and a sender greenlet hands
its message to the least busy one and waits; its event loop is free
meanwhile, and the kernel, not one interpreter, shares the cores among the
daemon, its SMTP workers and the signers.

    SignerPool(count, log_level="info")
        .sign(mime, keys, now=None) -> bytes    # as Signer.sign
        .stop()

    python -m mailerq_gevent.signers --channel FD [--log-level L]   # one helper

The channel is a UNIX socket pair, the helper's end inherited; frames as in
``smtpd.worker_channel`` (a 4-byte length, then the body), the body a
pickled list: requests ``(id, keys, now, mime)`` to the helper, replies ``(id,
signature headers)`` back. Pickle, because both ends are this program and
the socket is private to them. The requests of one turn of the daemon's
event loop go in one frame, and a helper answers a frame with one frame.

The helper is a plain blocking process (no gevent): it signs, and has
nothing else to do. It ends when its channel closes (the daemon stopped or
died), ignores SIGINT (a terminal's Ctrl-C is the daemon's to handle), and
logs as the daemon does (a key that cannot sign is warned of by the helper
that met it, once per helper).

Signing never fails a delivery and never waits for ever: a message is
signed here, in the calling greenlet, while no helper is up yet, when its
helper dies with the message in hand, and when no answer came within
``SIGN_TIMEOUT``. A helper that dies is started again after
``RESTART_DELAY``.

Measured on two cores (``openssl speed rsa2048``: 3,630 a second a core),
``bench/relay.py --variants dkim --messages 10000 --runs 1``, three rounds
interleaved, medians: signing in the delivery greenlet 1,002 msg/s; in one
helper (``smtp-threads: auto``) 1,161; in one helper with the quicker
canonicalisation of ``signing`` 1,367. The CPU a message is about the same
(1.2-1.4 ms): the gain is the second core, not less work.
"""

import argparse
import itertools
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import gevent
from gevent.event import AsyncResult

from mailerq_gevent import logs
from mailerq_gevent.signing import Signer, crlf
from mailerq_gevent.smtpd.worker_channel import HEADER, ChannelClosed, FrameSocket

log = logs.get(__name__)

SIGN_TIMEOUT = 10.0     # seconds a sender waits for its helper before signing itself
RESTART_DELAY = 1.0


class _Helper:
    __slots__ = ("index", "proc", "channel", "pending", "outgoing", "reader", "ready")

    def __init__(self, index):
        self.index = index
        self.proc = self.channel = self.reader = None
        self.pending = {}       # request id -> AsyncResult
        self.outgoing = []      # requests of this loop turn, not yet sent
        self.ready = False


class SignerPool:
    """``count`` helper processes, started at the first ``sign``."""

    def __init__(self, count, log_level="info", timeout=SIGN_TIMEOUT):
        self.count, self.log_level, self.timeout = count, log_level, timeout
        self.local = Signer()           # while no helper can
        self.helpers = []
        self.stopping = False
        self._ids = itertools.count(1)
        self._started = False

    def sign(self, mime, keys, now=None):
        """``mime`` in CRLF form with its signatures on top (``Signer.sign``)."""
        if isinstance(mime, str):
            mime = mime.encode("utf-8", "surrogateescape")
        now = int(time.time() if now is None else now)
        if not self._started:
            self._start()
        helper = self._least_busy()
        if helper is None:
            return self.local.sign(mime, keys, now)
        request_id = next(self._ids)
        answer = helper.pending[request_id] = AsyncResult()
        if not helper.outgoing:
            gevent.get_hub().loop.run_callback(self._flush, helper)
        helper.outgoing.append((request_id, keys, now, mime))
        answer.wait(self.timeout)
        if answer.successful():
            return answer.value + crlf(mime)
        helper.pending.pop(request_id, None)        # its helper died, or is stuck
        if answer.exception is None:
            log.warning("dkim.helper_slow", index=helper.index, waited=self.timeout)
        return self.local.sign(mime, keys, now)

    # -- the helpers ----------------------------------------------------------

    def _start(self):
        self._started = True
        for index in range(self.count):
            helper = _Helper(index)
            self.helpers.append(helper)
            gevent.spawn(self._run, helper)

    def _least_busy(self):
        ready = [helper for helper in self.helpers if helper.ready]
        return min(ready, key=lambda helper: len(helper.pending)) if ready else None

    def _run(self, helper):
        """Start ``helper``, read its answers, start it again when it dies."""
        while not self.stopping:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            command = [sys.executable, "-m", "mailerq_gevent.signers",
                       "--channel", str(theirs.fileno()), "--log-level", self.log_level]
            try:
                helper.proc = subprocess.Popen(command, pass_fds=[theirs.fileno()])
            except OSError as error:
                log.error("dkim.helper_not_started", index=helper.index, reason=str(error))
                ours.close()
                theirs.close()
                helper.proc, status, reason = None, None, str(error)
            else:
                theirs.close()      # its end is its own: its death closes the channel
                helper.channel = FrameSocket(ours)
                helper.ready = True
                try:
                    while True:
                        for frame in helper.channel.receive_all():
                            for request_id, headers in pickle.loads(frame):
                                answer = helper.pending.pop(request_id, None)
                                if answer is not None:
                                    answer.set(headers)
                except (ChannelClosed, OSError, pickle.UnpicklingError, ValueError) as error:
                    reason = str(error) or error.__class__.__name__
                finally:
                    status = self._lost(helper)
            if not self.stopping:
                log.error("dkim.helper_died", index=helper.index, status=status, reason=reason,
                          restart_in=RESTART_DELAY)
                gevent.sleep(RESTART_DELAY)

    def _lost(self, helper):
        """``helper`` is gone: its waiting senders sign for themselves."""
        helper.ready = False
        if helper.channel is not None:
            helper.channel.close()
            helper.channel = None
        status = None
        if helper.proc is not None:
            status = _end(helper.proc)
            helper.proc = None
        pending, helper.pending, helper.outgoing = helper.pending, {}, []
        for answer in pending.values():
            answer.set_exception(ConnectionError("the signing process went away"))
        return status

    def _flush(self, helper):
        requests, helper.outgoing = helper.outgoing, []
        if not requests or helper.channel is None:
            return
        try:
            helper.channel.send(pickle.dumps(requests, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as error:      # noqa: BLE001 - closed or cannot pickle: sign here
            for request in requests:
                answer = helper.pending.pop(request[0], None)
                if answer is not None:
                    answer.set_exception(error)

    def stop(self, timeout=5.0):
        self.stopping = True
        for helper in self.helpers:
            self._lost(helper)


def _end(proc):
    """Close a helper: it exits at the end of its channel; a stuck one is killed."""
    try:
        return proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()


# -- the helper process -------------------------------------------------------

def serve(sock, signer=None):
    """Answer the daemon's requests on ``sock`` until it closes: the frames of
    ``worker_channel`` read with plain blocking calls (its ``FrameSocket``
    writes from a greenlet, and nothing here runs gevent's hub)."""
    signer = signer or Signer()
    buffer = bytearray()
    while True:
        while not _whole_frame(buffer):
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            buffer += chunk
        replies = []
        while _whole_frame(buffer):
            end = HEADER.size + HEADER.unpack_from(buffer)[0]
            requests = pickle.loads(bytes(buffer[HEADER.size:end]))
            del buffer[:end]
            replies.extend((request_id, _signatures(signer, mime, keys, now))
                           for request_id, keys, now, mime in requests)
        body = pickle.dumps(replies, protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(HEADER.pack(len(body)) + body)


def _whole_frame(buffer):
    """Whether ``buffer`` starts with a whole frame."""
    return len(buffer) >= HEADER.size and \
        len(buffer) >= HEADER.size + HEADER.unpack_from(buffer)[0]


def _signatures(signer, mime, keys, now):
    """The signature headers alone: the daemon has the message already."""
    return signer.signatures(mime, keys, now)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mailerq-gevent dkim signer")
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.setup(args.log_level)
    sock = socket.socket(fileno=args.channel)
    sock.setblocking(True)      # made by gevent in the daemon: non-blocking until now
    try:
        serve(sock)
    except (ConnectionError, OSError) as error:
        log.error("dkim.helper_channel_failed", reason=str(error))
    finally:
        sock.close()


if __name__ == "__main__":
    main()
