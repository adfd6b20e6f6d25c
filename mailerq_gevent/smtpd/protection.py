"""``smtp-protection``: addresses that keep failing to log in are shut out a while.

Every failed AUTH is counted per client address over a sliding window; an
address with ``LIMIT`` failures within ``WINDOW`` seconds is blocked for
``COOL_DOWN`` seconds (new connections get 421 and are closed). The table is
bounded: the oldest entries go first when it is full. The clock is injectable.

With ``smtp-threads`` above 1 each worker process counts its own failures and
also reports each one (``on_failure``) to the daemon, which counts them for
all workers together and tells every worker to ``block`` an address that
reached the limit across them (``smtpd/workers.py``): spreading the attempts
over the workers is no way around the limit.
"""

import collections
import time

LIMIT = 10
WINDOW = 600.0
COOL_DOWN = 600.0
MAX_ADDRESSES = 100000


class FailedLogins:
    def __init__(self, enabled=True, limit=LIMIT, window=WINDOW, cool_down=COOL_DOWN,
                 clock=time.monotonic, on_failure=None):
        self.enabled, self.limit, self.window, self.cool_down = enabled, limit, window, cool_down
        self.clock, self.on_failure = clock, on_failure
        self._failures = collections.OrderedDict()     # ip -> deque of times
        self._blocked = {}                             # ip -> until

    def blocked(self, ip):
        until = self._blocked.get(ip)
        if until is None:
            return False
        if self.clock() < until:
            return True
        del self._blocked[ip]
        return False

    def failed(self, ip):
        """Count a failure; True when the address is now blocked."""
        if not self.enabled:
            return False
        if self.on_failure is not None:
            self.on_failure(ip)
        now = self.clock()
        times = self._failures.pop(ip, None) or collections.deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        self._failures[ip] = times
        if len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        if len(times) >= self.limit:
            self._blocked[ip] = now + self.cool_down
            del self._failures[ip]
            return True
        return False

    def block(self, ip, seconds):
        """Shut ``ip`` out for ``seconds`` (the daemon's word, counted over all workers)."""
        if self.enabled and seconds > 0:
            self._blocked[ip] = max(self._blocked.get(ip, 0.0), self.clock() + seconds)
            self._failures.pop(ip, None)

    def blocks(self):
        """``[(ip, seconds left)]`` of the addresses shut out now."""
        now = self.clock()
        return [(ip, until - now) for ip, until in self._blocked.items() if until > now]
