"""Console logins: server-side sessions and the throttle on failed logins.

A session is an opaque random id (``secrets.token_urlsafe``, 256 bits) in a
cookie; everything about it (user, CSRF token, times) stays in this process.
Nothing is signed or unpickled from the cookie (Bottle's signed cookies
unpickle what they are given). A new id is made at every login (no session
fixation); a session ends after ``IDLE`` seconds without a request, after
``ABSOLUTE`` seconds whatever happens, and at logout.

``LoginThrottle`` counts failures per client address and per user name: past
``LIMIT`` failures within ``WINDOW`` seconds, further attempts are refused
without checking the password until the window has passed. The page shows
one generic message whatever went wrong.
"""

import hmac
import secrets
import time

IDLE = 30 * 60
ABSOLUTE = 12 * 3600
LIMIT = 5
WINDOW = 15 * 60
MAX_SESSIONS = 10000


class Session:
    __slots__ = ("id", "user", "csrf", "created", "seen")

    def __init__(self, user, now):
        self.id = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self.user, self.created, self.seen = user, now, now

    def csrf_matches(self, token):
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


class Sessions:
    def __init__(self, idle=IDLE, absolute=ABSOLUTE, clock=time.monotonic):
        self.idle, self.absolute, self.clock = idle, absolute, clock
        self._sessions = {}

    def start(self, user):
        """A new session for ``user`` (after a successful login)."""
        now = self.clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self.expire()
        session = Session(user, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id):
        """The live session for ``session_id`` (its idle clock restarted), or None."""
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle or now - session.created > self.absolute:
            del self._sessions[session.id]
            return None
        session.seen = now
        return session

    def end(self, session_id):
        self._sessions.pop(session_id or "", None)

    def expire(self):
        now = self.clock()
        for key, session in list(self._sessions.items()):
            if now - session.seen > self.idle or now - session.created > self.absolute:
                del self._sessions[key]


class LoginThrottle:
    def __init__(self, limit=LIMIT, window=WINDOW, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures = {}     # ("ip", address) or ("user", name) -> [times]

    def blocked(self, address, user):
        now = self.clock()
        return any(len(self._recent(key, now)) >= self.limit
                   for key in (("ip", address), ("user", user.lower())))

    def failed(self, address, user):
        now = self.clock()
        for key in (("ip", address), ("user", user.lower())):
            self._failures[key] = self._recent(key, now) + [now]
        if len(self._failures) > MAX_SESSIONS:
            self._failures = {k: v for k, v in self._failures.items()
                              if self._recent(k, now)}

    def succeeded(self, address, user):
        self._failures.pop(("user", user.lower()), None)

    def _recent(self, key, now):
        return [t for t in self._failures.get(key, ()) if now - t < self.window]
