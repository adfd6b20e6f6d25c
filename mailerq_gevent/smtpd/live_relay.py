"""The live view of the sessions that run in SMTP worker processes (``smtp-threads`` > 1).

The recorder lives in the daemon (the console is there); a worker's sessions
are told to it over the worker's channel. In the worker, ``RemoteRecorder``
gives each session's Wire its tee (``tap``): a ``transcript.Transcript``
whose pieces (command lines, whole replies, messages, notes, the end) go out
as ``{"live": kind, "n": number, ...}`` notices, AUTH data already hidden.
In the daemon, ``LiveRelay.feed`` turns them into the recorder's own
conversations. Which sessions are sent: every one while somebody watches
(the daemon says ``{"watch": true}`` / ``false``), else at most one every
``sample_every`` seconds per worker; the daemon's recorder then applies its
own sampling and bounds. Nobody watching and not the sampled session: the
session's tap is ``NULL_TAP``, and nothing crosses the channel.
"""

import base64
import itertools
import time

from mailerq_gevent.transcript import NULL_TAP, Redactor, Sampler, Transcript, as_text

KEEP = 1 << 20          # bytes of a message sent to the daemon (its recorder keeps as much)


class RemoteRecorder:
    """The worker's side: ``send(notice)`` puts a notice on the channel to the daemon."""

    def __init__(self, send, sample_every=1.0, keep=KEEP, clock=time.monotonic):
        self.send, self.keep = send, keep
        self.watched = False
        self._numbers = itertools.count(1)
        self._sampler = Sampler(sample_every, clock)

    def tap(self, direction, peer, local):
        """A tee for a new session: a Transcript sent to the daemon, or NULL_TAP."""
        if self._sampler.take(self.watched) is None:
            return NULL_TAP
        number = next(self._numbers)
        self.send({"live": "begin", "n": number, "direction": direction, "peer": peer,
                   "local": local})
        return Transcript(_Forwarder(self.send, number), inbound=direction == "in",
                          keep=self.keep)


class _Forwarder:
    """A Transcript's sink that sends every piece to the daemon."""

    def __init__(self, send, number):
        self.send, self.number = send, number
        self._redactor = Redactor()         # AUTH data never leaves the worker

    def client(self, line):
        self._notice("client", text=self._redactor.client(as_text(line)))

    def server(self, reply):
        text = as_text(reply)
        self._redactor.server(text)
        self._notice("server", text=text)

    def message(self, content, sender, recipients, size):
        self._notice("message", mime=base64.b64encode(content).decode("ascii"),
                     sender=sender, recipients=recipients, size=size)

    def note(self, text):
        self._notice("note", text=str(text))

    def end(self):
        self._notice("end")

    def _notice(self, kind, **fields):
        fields.update(live=kind, n=self.number)
        self.send(fields)


class LiveRelay:
    """The daemon's side: the notices of every worker into ``recorder``."""

    def __init__(self, recorder):
        self.recorder = recorder
        self._open = {}         # (worker, number) -> Conversation (None: not sampled here)

    def feed(self, worker, notice):
        """One ``{"live": ...}`` notice from worker number ``worker``."""
        kind, key = notice.get("live"), (worker, notice.get("n"))
        if kind == "begin":
            self._open[key] = self.recorder.begin(
                str(notice.get("direction") or "in"), str(notice.get("peer") or ""),
                str(notice.get("local") or ""))
            return
        conversation = self._open.get(key)
        if kind == "end":
            self._open.pop(key, None)
        if conversation is None:
            return
        if kind == "message":
            conversation.message(base64.b64decode(notice.get("mime") or ""),
                                 str(notice.get("sender") or ""),
                                 [str(r) for r in notice.get("recipients") or ()],
                                 int(notice.get("size") or 0))
        elif kind in ("client", "server", "note"):
            getattr(conversation, kind)(str(notice.get("text") or ""))
        elif kind == "end":
            conversation.end()

    def worker_gone(self, worker):
        """End the conversations of a worker that stopped or died."""
        for key in [key for key in self._open if key[0] == worker]:
            conversation = self._open.pop(key)
            if conversation is not None:
                conversation.note("the SMTP worker process ended")
                conversation.end()
