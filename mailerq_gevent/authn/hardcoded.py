"""``hardcoded://user:pass,user2:pass2``: users and plain passwords in the config.

The least safe scheme (the passwords are readable in the config file), kept
for small set-ups and tests. Syntax:

* entries are separated by ``,``; each is ``user:password``, split at the
  first ``:`` (so a password may contain ``:``);
* user and password are percent-decoded (UTF-8), so any character can be
  written: a ``,`` in a password is ``%2C``, a ``%`` is ``%25``, a ``:`` in a
  user name is ``%3A``. A ``%`` not followed by two hex digits is an error
  rather than a silent literal;
* nothing is trimmed (spaces are part of a name or password); an empty
  entry, user or password, or a user listed twice, is an error.

The source documents' example ``username:password,username2,password2`` has a
typo (``,`` for ``:``); it is rejected with a message that does not repeat
the entry, which may be a password.

Comparison: each password is kept only as an HMAC-SHA256 digest under a key
made per instance, and compared with :func:`hmac.compare_digest` on digests
of equal length; an unknown user is compared against a random digest, so it
costs the same as a wrong password. Where it blocks: two SHA-256 over a short
string, microseconds; nothing yields.
"""

import hashlib
import hmac
import os
import re
from urllib.parse import quote, unquote_to_bytes

from mailerq_gevent.authn.base import AuthConfigError, Authenticator, split_spec

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Hardcoded(Authenticator):
    """Users and passwords given in the spec itself."""

    scheme = "hardcoded"

    def __init__(self, users, **kwargs):
        """``users``: a mapping user name -> password (both ``str``)."""
        super().__init__(**kwargs)
        if not users:
            raise AuthConfigError("hardcoded:// lists no users (write hardcoded://user:pass)")
        self._key = os.urandom(32)
        self._digests = {user: self._digest(password.encode("utf-8", "surrogateescape"))
                         for user, password in users.items()}
        self._unknown = os.urandom(32)

    def _digest(self, secret):
        return hmac.new(self._key, secret, hashlib.sha256).digest()

    def _verify(self, username, secret):
        expected = self._digests.get(username, self._unknown)
        same = hmac.compare_digest(self._digest(secret), expected)
        return same and username in self._digests

    def describe(self):
        return "hardcoded://" + ",".join(quote(user, safe="") + ":***"
                                         for user in self._digests)


def from_spec(spec):
    """Build a :class:`Hardcoded` from ``hardcoded://user:pass,...``."""
    return Hardcoded(parse(split_spec(spec)[1]))


def parse(text):
    """``'a:x,b:y'`` -> ``{'a': 'x', 'b': 'y'}`` (see the module docstring)."""
    users = {}
    for number, entry in enumerate(text.split(","), 1):
        user, sep, password = entry.partition(":")
        where = "hardcoded:// entry %d" % number
        if not sep:
            raise AuthConfigError("%s has no ':' between user and password "
                                  "(write hardcoded://user:pass,user2:pass2)" % where)
        user, password = _decode(user, where, "user"), _decode(password, where, "password")
        if not user or not password:
            raise AuthConfigError("%s has an empty %s" % (where, "user" if not user else "password"))
        if user in users:
            raise AuthConfigError("%s lists user %r a second time" % (where, user))
        users[user] = password
    return users


def _decode(text, where, what):
    if _BAD_PERCENT.search(text):
        raise AuthConfigError("%s: the %s has a '%%' not followed by two hex digits "
                              "(write a literal %% as %%25)" % (where, what))
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise AuthConfigError("%s: the %s is not UTF-8 once percent-decoded"
                              % (where, what)) from None
