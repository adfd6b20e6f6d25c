"""Enhanced mail system status codes (RFC 3463, RFC 2034): ``class.subject.detail``.

``class`` is 2 (success), 4 (persistent transient failure) or 5 (permanent
failure); subject and detail have up to three digits. A reply that carries
one says it first in its text (``250 2.0.0 Ok``, RFC 2034 §4).
"""

import re

_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_LEADING = re.compile(r"([245])\.\d{1,3}\.\d{1,3}\b")


def is_status(text):
    """Whether ``text`` is exactly an enhanced status code."""
    return bool(_STATUS.fullmatch(text or ""))


def leading(text):
    """The enhanced status code that starts ``text``, or ''."""
    found = _LEADING.match(text or "")
    return found.group(0) if found else ""


def split(text):
    """``"5.1.1 no such user"`` -> ("5.1.1", "no such user"); ("", text) without one."""
    status = leading(text)
    return (status, text[len(status):].strip()) if status else ("", text)


def for_code(code):
    """The generic status of a reply code: 2.0.0, 5.0.0, or 4.0.0 for anything else."""
    if 200 <= code < 300:
        return "2.0.0"
    if 500 <= code < 600:
        return "5.0.0"
    return "4.0.0"
