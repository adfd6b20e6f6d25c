"""``file:///path``: users and password hashes in a text file.

The file has one ``user:hash`` per line, like ``/etc/passwd``; lines that are
blank or start with ``#`` are skipped, and surrounding spaces are trimmed.
Hashes are crypt(3) strings, verified with passlib:

* ``$6$`` sha512-crypt (``mkpasswd -m sha-512``, ``openssl passwd -6``)
* ``$5$`` sha256-crypt (``openssl passwd -5``)
* ``$1$`` md5-crypt (``openssl passwd -1``; weak, accepted for old files)
* ``$2b$``, ``$2y$``, ``$2a$`` bcrypt (``htpasswd -B``, ``mkpasswd -m bcrypt``)

The file is read when the authenticator is opened: a malformed line, an
unknown hash format, a user listed twice or an unreadable file raises
:class:`AuthConfigError` naming the file and line (never the line's text,
which may be a plain password typed by mistake). Afterwards the file's
mtime, size and inode are checked at most once per ``interval`` (1 s) on a
login, and the file is read again when they change, so users can be added
without a restart. A re-read that fails keeps the last good copy and logs
``event=authn.reload_failed`` once per change of the file.

Timing: a user not in the file is verified against a dummy hash made like
the file's most common hash (same scheme and rounds), so an unknown user
costs the same as a wrong password.

Where it blocks:

* sha-crypt and md5-crypt run in the calling greenlet and hold the event
  loop for the whole hash: openssl's 5,000 sha512 rounds take ~1.3 ms,
  passlib's default 656,000 ~170 ms (on Python 3.13+, without the stdlib
  ``crypt``, passlib's own code takes ~4 ms for 5,000). Python's ``crypt`` module does not
  release the GIL, so the thread pool would not help (measured: the loop
  stalled just as long, at ~1 ms more per check);
* bcrypt releases the GIL, so it runs in gevent's thread pool, where a
  ``gevent.Timeout`` can also end the wait (measured with 20 concurrent
  cost-10 checks on 2 cores: loop stall 1,140 ms inline, 9 ms in the pool);
* rounds are capped when the file is read (sha-crypt 1,000,000, bcrypt cost
  14) so one login cannot stall the server for seconds;
* reading the file (at open and on change) and the ``stat`` once a second
  are blocking file-system calls, as is making the dummy hash (once per
  scheme and rounds per process).
"""

import collections
import functools
import os
import secrets
import time
from dataclasses import dataclass
from urllib.parse import unquote

import gevent
from passlib.context import CryptContext

from mailerq_gevent import logs
from mailerq_gevent.authn.base import AuthConfigError, Authenticator, split_spec

log = logs.get(__name__)

_CONTEXT = CryptContext(schemes=["sha512_crypt", "sha256_crypt", "md5_crypt", "bcrypt"])
_PREFIXES = {"$6$": "sha512_crypt", "$5$": "sha256_crypt", "$1$": "md5_crypt",
             "$2b$": "bcrypt", "$2y$": "bcrypt", "$2a$": "bcrypt"}
_MAX_ROUNDS = {"sha512_crypt": 1_000_000, "sha256_crypt": 1_000_000, "bcrypt": 14}
_IN_THREAD_POOL = frozenset({"bcrypt"})  # releases the GIL; crypt(3) does not
_FORMATS = ("sha512-crypt $6$ (mkpasswd -m sha-512, openssl passwd -6), sha256-crypt $5$, "
            "md5-crypt $1$ or bcrypt $2b$/$2y$/$2a$")


@dataclass(frozen=True)
class Table:
    """One good reading of the file: user -> (passlib scheme, hash), and the dummy."""

    users: dict
    dummy: tuple
    stamp: tuple


class PasswdFile(Authenticator):
    """Checks against a ``user:hash`` file, re-read when it changes."""

    scheme = "file"

    def __init__(self, path, table, clock=time.monotonic, interval=1.0, **kwargs):
        """Use :meth:`open`; this takes an already loaded :class:`Table`."""
        super().__init__(**kwargs)
        self.path = path
        self._table = table
        self._clock = clock
        self._interval = interval
        self._next_stat = clock() + interval
        self._seen_stamp = table.stamp

    @classmethod
    def open(cls, path, **kwargs):
        """Read ``path`` now (blocking) and return the authenticator."""
        return cls(path, load(path), **kwargs)

    def describe(self):
        return "file://" + self.path

    @property
    def users(self):
        """The user names of the copy in use (no hashes)."""
        return frozenset(self._table.users)

    def _verify(self, username, secret):
        self._refresh()
        table = self._table
        scheme, hashed = table.users.get(username, table.dummy)
        if scheme in _IN_THREAD_POOL:
            matched = gevent.get_hub().threadpool.apply(_verify_hash, (secret, hashed))
        else:
            matched = _verify_hash(secret, hashed)
        return matched and username in table.users

    def _refresh(self):
        """Re-read the file if it changed; at most once per interval."""
        now = self._clock()
        if now < self._next_stat:
            return
        self._next_stat = now + self._interval
        stamp = _stamp(self.path)
        if stamp == self._seen_stamp:
            return
        self._seen_stamp = stamp
        try:
            if stamp is None:
                raise AuthConfigError("%s: cannot stat the user file" % self.path)
            self._table = load(self.path)
        except AuthConfigError as exc:
            log.error("authn.reload_failed", file=self.path, error=str(exc))
            return
        self._seen_stamp = self._table.stamp
        log.info("authn.reloaded", file=self.path, users=len(self._table.users))


def from_spec(spec):
    """Open ``file:///absolute/path`` (the path is percent-decoded)."""
    rest = split_spec(spec)[1]
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost") or not slash:
        raise AuthConfigError("file:// needs an absolute path: file:///path/to/users "
                              "(three slashes)")
    return PasswdFile.open(unquote("/" + path))


def load(path):
    """Read and check the whole file; returns a :class:`Table`."""
    try:
        with open(path, "rb") as handle:
            stamp = _stamp_of(os.fstat(handle.fileno()))
            data = handle.read()
        text = data.decode("utf-8")
    except OSError as exc:
        raise AuthConfigError("%s: cannot read the user file: %s" % (path, _reason(exc))) from None
    except UnicodeDecodeError as exc:
        raise AuthConfigError("%s: not UTF-8 (byte %d)" % (path, exc.start)) from None
    users = parse(path, text)
    return Table(users, _dummy_for(users.values()), stamp)


def parse(path, text):
    """``user:hash`` lines -> {user: (scheme, hash)}; errors name ``path:line``."""
    users, first_line = {}, {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = "%s:%d" % (path, number)
        user, hashed = _split_line(line, where)
        if user in users:
            raise AuthConfigError("%s: user %r listed again (first on line %d)"
                                  % (where, user, first_line[user]))
        users[user], first_line[user] = (_check_hash(hashed, where), hashed), number
    return users


def _split_line(line, where):
    fields = line.split(":")
    if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
        raise AuthConfigError("%s: expected one 'user:hash' per line" % where)
    return fields[0].strip(), fields[1].strip()


def _check_hash(hashed, where):
    """The passlib scheme of ``hashed``; raises unless it is complete and sane."""
    scheme = next((name for prefix, name in _PREFIXES.items() if hashed.startswith(prefix)), None)
    if scheme is None:
        raise AuthConfigError("%s: unknown hash format; use %s" % (where, _FORMATS))
    try:
        parsed = _CONTEXT.handler(scheme).from_string(hashed)
    except ValueError as exc:
        raise AuthConfigError("%s: malformed %s hash: %s" % (where, scheme, exc)) from None
    if not parsed.checksum:
        raise AuthConfigError("%s: %s hash has no checksum part (only a salt)" % (where, scheme))
    rounds = getattr(parsed, "rounds", None)
    if rounds is not None and rounds > _MAX_ROUNDS[scheme]:
        raise AuthConfigError("%s: %s rounds %d above the limit %d (each login would stall "
                              "the server)" % (where, scheme, rounds, _MAX_ROUNDS[scheme]))
    return scheme


def _dummy_for(entries):
    """(scheme, hash) like the most common scheme and rounds among ``entries``."""
    kinds = collections.Counter(
        (scheme, getattr(_CONTEXT.handler(scheme).from_string(hashed), "rounds", None))
        for scheme, hashed in entries)
    scheme, rounds = kinds.most_common(1)[0][0] if kinds else ("sha512_crypt", 5000)
    return scheme, _dummy_hash(scheme, rounds)


@functools.lru_cache(maxsize=16)
def _dummy_hash(scheme, rounds):
    handler = _CONTEXT.handler(scheme)
    if rounds is not None:
        try:
            handler = handler.using(rounds=rounds)
        except ValueError:  # outside what passlib will make: keep its default
            pass
    return handler.hash(secrets.token_hex(16))


def _verify_hash(secret, hashed):
    return _CONTEXT.verify(secret, hashed)


def _stamp(path):
    """The file's identity and version, or None when it cannot be stat'ed."""
    try:
        return _stamp_of(os.stat(path))
    except OSError:
        return None


def _stamp_of(status):
    return (status.st_mtime_ns, status.st_size, status.st_ino, status.st_dev)


def _reason(exc):
    """An OS error's text without the file name (the caller names the file)."""
    return exc.strerror or type(exc).__name__
