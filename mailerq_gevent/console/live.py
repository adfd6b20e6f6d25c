"""The live view of SMTP conversations, as MailerQ's console shows them.

``Recorder`` keeps the most recent conversations, incoming (the SMTP
server's sessions) and outgoing (the delivery's connections), each with its
dialogue as it happens (commands, replies, the messages sent with DATA).

How: a tee. ``tap()`` gives a new connection a ``transcript.Transcript`` into
a new ``Conversation`` (the Wire of an incoming session and the socket of an
outgoing connection tell it every chunk they read and write), or
``transcript.NULL_TAP`` when the connection is not recorded. While a viewer is
connected (an event stream open) every conversation is recorded, otherwise at
most one a second, so the page has recent ones. Bounds: the last ``size``
conversations, ``budget`` bytes of MIME in all; each keeps ``max_lines``
entries of ``MAX_LINE`` characters and ``max_messages`` messages of
``max_mime`` bytes (the rest counted, marked truncated). AUTH: never a
credential; an AUTH command keeps its mechanism only (``AUTH PLAIN ****``)
and a line answering a ``334`` is ``****``. Worker mode (``smtp-threads`` >
1): the sessions of the worker processes come over their channels
(``smtpd/live_relay.py``), and ``watch_changes`` tells those processes when
to send every session.

Routes (behind the console login): ``/live`` (the list, kept up to date),
``/live/<id>`` (a dialogue and its messages; their MIME and sandboxed
rendering are ``render.py``'s), ``/api/live``, ``/api/live/<id>``, and
``/api/live/stream[?id=<id>]``: server-sent events (``begin``/``update``/
``end`` of conversations, or one's ``line`` events; ``reset`` when a viewer
fell behind), for ``stream_lifetime`` seconds (the browser reconnects), a
comment every ``keepalive`` seconds; each holds a ``www-connections`` slot,
so at most ``max_streams`` are open, and ``close()`` ends them all when the
daemon stops.
"""

import collections
import itertools
import json
import re
import time

import bottle
from gevent.queue import Empty, Queue

from mailerq_gevent.console.answers import ApiError, json_route
from mailerq_gevent.console.render import Message
from mailerq_gevent.console.templates import template
from mailerq_gevent.smtpd.workers import worker_processes
from mailerq_gevent.transcript import NULL_TAP, Redactor, Sampler, Transcript, as_text

MAX_LINE = 1000
QUEUE_LIMIT = 2000          # events waiting for one slow viewer before it is reset
_PATH = re.compile(r"^(MAIL\s+FROM|RCPT\s+TO)\s*:\s*<?([^>\s]*)", re.IGNORECASE)


class TooManyStreams(Exception):
    pass


class Conversation:
    """One SMTP connection's dialogue; what a Transcript (or a worker's notices) tells it."""

    def __init__(self, recorder, number, direction, peer, local, started):
        self.recorder, self.id = recorder, number
        self.direction, self.peer, self.local = direction, str(peer), str(local or "")
        self.started, self.ended = started, None
        self.lines = []             # (seconds since start, kind, text, message number)
        self.dropped = 0            # entries beyond max_lines
        self.messages = []
        self.sender, self.recipients = None, []     # of the transaction under way
        self._redactor = Redactor()

    # -- the hooks ---------------------------------------------------------------

    def client(self, line):
        """A command line from the client (AUTH data redacted: ``Redactor``)."""
        text = as_text(line)
        shown = self._redactor.client(text)
        if shown is text:
            self._track(text)
        self._add("client", shown)

    def server(self, reply):
        """A whole reply, as it went over the wire (all its lines)."""
        text = as_text(reply)
        self._redactor.server(text)
        self._add("server", text)

    def note(self, text):
        self._add("note", as_text(text))

    def message(self, mime, sender=None, recipients=None, size=None):
        """The content sent with DATA (bytes), with its envelope when known;
        ``size``: its whole size, when ``mime`` is only its beginning."""
        if self.ended is not None:
            return
        recorder = self.recorder
        n, size = len(self.messages) + 1, len(mime) if size is None else size
        if n > recorder.max_messages:
            return self._add("note", "message of %d bytes (not kept: %d per conversation)"
                             % (size, recorder.max_messages))
        kept = bytes(mime[:recorder.max_mime])
        message = Message(n, size, self.sender if sender is None else sender,
                          list(self.recipients if recipients is None else recipients),
                          kept, len(kept) < size)
        self.messages.append(message)
        self._add("message", "message %d: %d bytes%s" % (
            n, message.size, " (truncated)" if message.truncated else ""), n)
        recorder._kept(len(kept))

    def end(self):
        if self.ended is None:
            self.ended = self.recorder.clock()
            self.recorder._publish("end", self)

    # -- what the routes show ----------------------------------------------------------

    def summary(self):
        first = self.messages[0] if self.messages else None
        return {"id": self.id, "direction": self.direction, "peer": self.peer,
                "local": self.local, "started": self.started, "ended": self.ended,
                "lines": len(self.lines) + self.dropped, "truncated": bool(self.dropped),
                "messages": len(self.messages),
                "sender": first.sender if first else self.sender,
                "recipients": first.recipients if first else list(self.recipients),
                "last_reply": self._last_reply()}

    def detail(self):
        data = self.summary()
        data["dialogue"] = [_line_json(n, entry) for n, entry in enumerate(self.lines, 1)]
        data["dropped"] = self.dropped
        data["messages"] = [message.as_json(self.id) for message in self.messages]
        return data

    def find_message(self, n):
        return self.messages[n - 1] if 0 < n <= len(self.messages) else None

    # -- inside ------------------------------------------------------------------

    def _add(self, kind, text, n=0):
        if self.ended is not None:
            return
        if len(self.lines) >= self.recorder.max_lines:
            self.dropped += 1
            return
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + " …"
        entry = (round(self.recorder.clock() - self.started, 3), kind, text, n)
        self.lines.append(entry)
        self.recorder._line(self, len(self.lines), entry)

    def _track(self, text):
        found = _PATH.match(text)
        if found is None:
            if text[:4].upper() in ("RSET", "EHLO", "HELO"):
                self.sender, self.recipients = None, []
        elif found.group(1)[0] in "mM":
            self.sender, self.recipients = found.group(2), []
        elif len(self.recipients) < 100:
            self.recipients.append(found.group(2))

    def _last_reply(self):
        for _, kind, text, _ in reversed(self.lines):
            if kind == "server":
                return text.rsplit("\n", 1)[-1][:200]
        return ""


class Subscription:
    """One viewer's events: ``get(timeout)`` -> ``(kind, payload)`` or None."""

    def __init__(self, only=None, limit=QUEUE_LIMIT):
        self.only, self.limit = only, limit
        self.queue = Queue()

    def wants(self, kind, conversation_id):
        if self.only is None:
            return kind != "line"
        return conversation_id == self.only and kind in ("line", "end")

    def push(self, event):
        if self.queue.qsize() >= self.limit:        # fell behind: start over from the list
            while not self.queue.empty():
                self.queue.get_nowait()
            event = ("reset", {})
        self.queue.put_nowait(event)

    def get(self, timeout):
        try:
            return self.queue.get(timeout=timeout)
        except Empty:
            return None


class Recorder:
    def __init__(self, size=200, clock=time.time, sample_every=1.0, max_lines=200,
                 max_mime=1 << 20, max_messages=10, budget=32 << 20, max_streams=8,
                 stream_lifetime=300.0, keepalive=15.0):
        self.size, self.clock = size, clock
        self._sampler = Sampler(sample_every, clock)
        self.max_lines, self.max_mime, self.max_messages = max_lines, max_mime, max_messages
        self.budget, self.max_streams = budget, max_streams
        self.stream_lifetime, self.keepalive = stream_lifetime, keepalive
        self.kept_bytes = 0
        self._conversations = collections.OrderedDict()
        self._subscribers = []
        self._ids = itertools.count(1)
        self._watchers = []        # called with ``watched`` when it changes

    @classmethod
    def from_config(cls, conf):
        """Live streams may take half of the ``www-connections`` request slots."""
        return cls(max_streams=max(1, conf.www_connections // 2) if conf.www_connections else 8)

    @property
    def watched(self):
        return bool(self._subscribers)

    def tap(self, direction, peer, local):
        """The tee for a new connection: a ``Transcript`` into a new Conversation,
        or ``NULL_TAP`` when this one is not sampled (see ``begin``)."""
        conversation = self.begin(direction, peer, local)
        if conversation is None:
            return NULL_TAP
        return Transcript(conversation, inbound=direction == "in", keep=self.max_mime)

    def begin(self, direction, peer, local):
        """A new Conversation to record into, or None (not sampled)."""
        now = self._sampler.take(self.watched)
        if now is None:
            return None
        conversation = Conversation(self, next(self._ids), direction, peer, local, now)
        self._conversations[conversation.id] = conversation
        self._evict()
        self._publish("begin", conversation)
        return conversation

    def recent(self):
        """The conversations kept, newest first."""
        return list(reversed(self._conversations.values()))

    def get(self, number):
        return self._conversations.get(number)

    def subscribe(self, only=None):
        """A Subscription to the list's events, or ``only`` one conversation's lines."""
        if len(self._subscribers) >= self.max_streams:
            raise TooManyStreams()
        subscription = Subscription(only)
        self._subscribers.append(subscription)
        if len(self._subscribers) == 1:
            self._tell_watchers()
        return subscription

    def unsubscribe(self, subscription):
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
            if not self._subscribers:
                self._tell_watchers()

    def watch_changes(self, callback):
        """Call ``callback(watched)`` whenever ``watched`` changes (the SMTP
        worker processes record every session while somebody watches)."""
        self._watchers.append(callback)

    def _tell_watchers(self):
        for callback in self._watchers:
            callback(self.watched)

    def close(self):
        """End every open stream now (the daemon is stopping: no viewer holds it up)."""
        for subscription in list(self._subscribers):
            subscription.queue.put_nowait(("close", None))

    # -- from the conversations --------------------------------------------------------

    def _publish(self, kind, conversation):
        payload = None
        for subscription in self._subscribers:
            if subscription.wants(kind, conversation.id):
                payload = payload or conversation.summary()
                subscription.push((kind, payload))

    def _line(self, conversation, n, entry):
        if not self._subscribers:
            return
        payload = None
        for subscription in self._subscribers:
            if subscription.wants("line", conversation.id):
                payload = payload or _line_event(conversation, n, entry)
                subscription.push(("line", payload))
        if entry[1] == "message":
            self._publish("update", conversation)

    def _kept(self, size):
        self.kept_bytes += size
        self._evict()

    def _evict(self):
        while self._conversations and (len(self._conversations) > self.size
                                       or self.kept_bytes > self.budget):
            _, old = self._conversations.popitem(last=False)
            self.kept_bytes -= sum(len(message.mime) for message in old.messages)
            old.messages = []
            old.ended = old.ended or self.clock()   # what it is told is dropped from now on


# -- helpers ---------------------------------------------------------------------

def _line_json(n, entry):
    seconds, kind, text, message = entry
    return {"n": n, "t": seconds, "kind": kind, "text": text, "message": message}


def _line_event(conversation, n, entry):
    payload = dict(_line_json(n, entry), id=conversation.id)
    if entry[3]:
        payload["message"] = conversation.find_message(entry[3]).as_json(conversation.id)
    return payload


def clock_text(seconds):
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds else ""


# -- routes ------------------------------------------------------------------------

def install(app, context):
    guard = context.guard

    @app.get("/live")
    @guard.require("page")
    def live_page():
        recorder, threads = context.recorder, context.conf.smtp_threads
        return template(context, "live", title="Live SMTP", scripts=["js/live.js"],
                        conversations=_summaries(recorder), recording=recorder is not None,
                        size=recorder.size if recorder else 0, clock_text=clock_text,
                        workers=worker_processes(threads))

    @app.get("/live/<number:int>")
    @guard.require("page")
    def conversation_page(number):
        conversation = _find(context, number)
        wanted = context.conf.render_useragent
        return template(context, "conversation", title="Conversation %d" % number,
                        scripts=["js/live.js"], c=conversation.detail(), clock_text=clock_text,
                        can_render=not wanted or
                        bottle.request.get_header("User-Agent", "") == wanted)

    @app.get("/api/live")
    @guard.require("api")
    @json_route
    def live_list():
        return _summaries(context.recorder)

    @app.get("/api/live/stream")
    @guard.require("api")
    def live_stream():
        return _stream(context.recorder, bottle.request.query.get("id"))

    @app.get("/api/live/<number:int>")
    @guard.require("api")
    @json_route
    def live_one(number):
        return _find(context, number, api=True).detail()


def _summaries(recorder):
    return [c.summary() for c in recorder.recent()] if recorder else []


def _find(context, number, api=False):
    conversation = context.recorder.get(number) if context.recorder else None
    if conversation is None:
        if api:
            raise ApiError(404, "no such conversation")
        bottle.abort(404, "No such conversation (only the most recent ones are kept).")
    return conversation


def _stream(recorder, only):
    if recorder is None:
        return ApiError(503, "the live view is not recording in this process").answer()
    try:
        subscription = recorder.subscribe(int(only) if only and only.isdigit() else None)
    except TooManyStreams:
        return ApiError(503, "too many live viewers; try again later").answer()
    bottle.response.content_type = "text/event-stream; charset=utf-8"
    bottle.response.set_header("X-Accel-Buffering", "no")
    return _events(recorder, subscription)


def _events(recorder, subscription):
    """The SSE body: events as they come, a comment when idle, for a bounded time."""
    deadline = time.monotonic() + recorder.stream_lifetime
    try:
        yield b"retry: 2000\n: live\n\n"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event = subscription.get(min(recorder.keepalive, left))
            if event is None:
                yield b": keep-alive\n\n"
                continue
            kind, payload = event
            if kind == "close":
                return
            yield ("event: %s\ndata: %s\n\n" % (kind, json.dumps(payload))).encode()
    finally:
        recorder.unsubscribe(subscription)
