"""Spreading a throttled backlog: how long each message a rate limit sends back waits.

Left alone, a backlog of thousands throttled at once would all come back
after the same wait, be throttled again together, and so on. Instead each
(local IP, domain, limit) keeps the time of its next free turn: a throttled
message waits its own wait or until that turn, whichever is later, and the
turn moves one interval of the limit (60 / per-minute seconds) on, so the
backlog returns at the limit's pace. At most ``limit`` keys are kept; past
that the turns already gone by are dropped.
"""

import time

BACKLOG_LIMIT = 10000


class Spread:
    def __init__(self, clock=time.monotonic, limit=BACKLOG_LIMIT):
        self.clock, self.limit = clock, limit
        self._next_free = {}    # key -> monotonic time of the next free turn

    def __len__(self):
        return len(self._next_free)

    def delay(self, key, wait, per_minute):
        """The seconds a message throttled for ``wait`` seconds by a limit of
        ``per_minute`` (0: none known, the wait as it is) waits in the queue."""
        if not per_minute:
            return wait
        now = self.clock()
        turn = max(self._next_free.get(key, 0.0), now + wait)
        self._next_free[key] = turn + 60.0 / per_minute
        if len(self._next_free) > self.limit:
            self._next_free = {k: t for k, t in self._next_free.items() if t > now}
        return turn - now
