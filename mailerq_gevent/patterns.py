"""The pattern types of the ``type`` columns: ``regex``, ``fnmatch``, ``substr``, ``exact``.

Used by ``locals`` (addresses), ``dkim_patterns`` (From addresses) and
``flood_responses`` (reply texts); MailerQ names the four types. All four
are case-insensitive, because addresses, domains and reply texts are:

- ``regex``    Python ``re`` syntax, *searched* (unanchored, like POSIX
               ``regexec``); anchor with ``^``/``$`` to match a whole text
- ``fnmatch``  shell wildcards ``*``, ``?``, ``[...]`` over the whole text
- ``substr``   the pattern occurs anywhere in the text
- ``exact``    the whole text equals the pattern

An empty or NULL type means ``exact`` (the narrowest reading). An unknown
type, an empty pattern or a regex that does not compile raises
``PatternError``: the loader then skips that row and logs why, rather than
guess (a wrong guess could sign with the wrong key or swallow mail).
Patterns are compiled once, when the snapshot is built.
"""

import fnmatch
import re
from dataclasses import dataclass, field

TYPES = ("regex", "fnmatch", "substr", "exact")


class PatternError(ValueError):
    """A pattern that cannot be used; the text says why."""


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern; ``matches(text)`` is the only operation."""

    text: str
    type: str
    _needle: object = field(repr=False, compare=False)

    def matches(self, value):
        if value is None:
            return False
        if self.type == "exact":
            return value.casefold() == self._needle
        if self.type == "substr":
            return self._needle in value.casefold()
        if self.type == "fnmatch":
            return self._needle.match(value) is not None
        return self._needle.search(value) is not None


def compile_pattern(text, type_=None):
    """A :class:`Pattern` for ``text`` of ``type_``; raises PatternError."""
    kind = str(type_ or "exact").strip().lower()
    if kind not in TYPES:
        raise PatternError("unknown pattern type %r (one of %s)" % (type_, ", ".join(TYPES)))
    text = "" if text is None else str(text)
    if not text:
        raise PatternError("empty pattern")
    return Pattern(text, kind, _needle(text, kind))


def _needle(text, kind):
    if kind in ("exact", "substr"):
        return text.casefold()
    if kind == "fnmatch":
        return re.compile(fnmatch.translate(text), re.IGNORECASE)
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise PatternError("bad regex %r: %s" % (text, exc)) from None


class PatternSet:
    """Many patterns asked one question: does any match? Exact patterns are
    looked up in a frozenset, so a long list of plain addresses stays fast."""

    __slots__ = ("_exact", "_others")

    def __init__(self, patterns=()):
        patterns = tuple(patterns)
        object.__setattr__(self, "_exact", frozenset(
            p.text.casefold() for p in patterns if p.type == "exact"))
        object.__setattr__(self, "_others", tuple(p for p in patterns if p.type != "exact"))

    def __setattr__(self, name, value):
        raise AttributeError("PatternSet is frozen")

    def __len__(self):
        return len(self._exact) + len(self._others)

    def matches(self, value):
        if value is None:
            return False
        if value.casefold() in self._exact:
            return True
        return any(pattern.matches(value) for pattern in self._others)
