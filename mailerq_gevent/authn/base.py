"""The contract every authentication scheme follows, and what they share.

An :class:`Authenticator` answers one question, "is this user name and
password right?", with ``True`` or ``False``. The base class owns the parts
that must be the same for every scheme:

* the arguments are ``str``; the password is handed to the scheme as UTF-8
  bytes (``surrogateescape``, so a client's non-UTF-8 bytes decoded by the
  caller with that handler reach the hash unchanged);
* implausible input (empty, too long, a NUL) fails at once, without touching
  the scheme: that costs the same whoever the user is, so it reveals nothing;
* every check runs under a ``gevent.Timeout``; a timeout or an unexpected
  error fails closed;
* a failure is logged as ``event=authn.failed user=<name> scheme=<scheme>``
  and nothing more. The password never reaches a logger, not even inside an
  exception message: errors are logged by type only. The client address and
  the rate limit per address belong to the caller (the SMTP session, the console).

Where the code blocks: the base class itself does not; see each scheme.
"""

import gevent

from mailerq_gevent import logs

log = logs.get(__name__)

MAX_USERNAME = 256   # characters
MAX_PASSWORD = 1024  # bytes, after UTF-8 encoding
SHOWN_USERNAME = 64  # characters of a user name written to the log
DEFAULT_TIMEOUT = 10.0


class AuthConfigError(Exception):
    """A spec that cannot be used: malformed, or a scheme not built yet.

    The message is meant for the operator (the daemon refuses to start with
    it) and never contains a password or a hash.
    """


def split_spec(spec):
    """``'file:///x'`` -> ``('file', '/x')``: the scheme (lower case) and the rest."""
    scheme, sep, rest = spec.partition("://")
    if not sep or not scheme:
        raise AuthConfigError("%s is not an authentication scheme URL "
                              "(expected scheme://..., e.g. file:///etc/mailerq/users)"
                              % ("the value" if spec else "an empty value"))
    return scheme.lower(), rest


class Authenticator:
    """Base class: subclasses set ``scheme`` and implement :meth:`_verify`.

    ``timeout`` bounds each :meth:`check` (seconds). It can only interrupt a
    scheme that yields to the gevent hub (network I/O, a thread-pool wait);
    pure CPU work in the calling greenlet runs to its end.
    """

    scheme = ""

    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = timeout

    def check(self, username, password):
        """Return True when ``username``/``password`` (both ``str``) are accepted."""
        if not isinstance(username, str) or not isinstance(password, str):
            raise TypeError("username and password must be str")
        secret = _plausible_secret(username, password)
        accepted = secret is not None and self._bounded_verify(username, secret)
        if not accepted:
            log.info("authn.failed", user=username[:SHOWN_USERNAME], scheme=self.scheme)
        return accepted

    def describe(self):
        """The spec for logs and the console, with every secret left out."""
        return self.scheme + "://"

    def _verify(self, username, secret):
        """Scheme-specific check; ``secret`` is the password as bytes."""
        raise NotImplementedError

    def _bounded_verify(self, username, secret):
        timeout = gevent.Timeout(self.timeout)
        timeout.start()
        try:
            return bool(self._verify(username, secret))
        except gevent.Timeout as exc:
            if exc is not timeout:
                raise
            log.warning("authn.timeout", scheme=self.scheme, seconds=self.timeout)
        except Exception as exc:  # fail closed; the type only, never the message
            log.error("authn.error", scheme=self.scheme, error=type(exc).__name__)
        finally:
            timeout.close()
        return False

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self.describe())


def _plausible_secret(username, password):
    """The password as bytes, or None when the pair cannot be right for anyone."""
    if not 0 < len(username) <= MAX_USERNAME or "\0" in username or "\0" in password:
        return None
    try:
        secret = password.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    return secret if 0 < len(secret) <= MAX_PASSWORD else None
