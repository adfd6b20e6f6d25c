"""The message's ``headers`` property (as MailerQ has it): change the MIME header before sending.

    "headers": {"remove": ["X-Campaign"],
                "prepend": {"X-First": "1"},
                "append": [["X-Last", "2"]],
                "replace": {"Subject": "New subject"}}

``remove`` takes names; ``prepend``, ``append`` and ``replace`` take a
``{name: value}`` object or a list of ``[name, value]`` pairs (or
``{"name": ..., "value": ...}`` objects). ``replace`` puts the new field where
the first one of that name was (at the end of the header when there was
none) and drops the others. Names are compared case-insensitively. This runs
before DKIM signing, so the signature covers the result.

A name that is not a header name (RFC 5322 §3.6.8) or a value with a CR, LF
or NUL (a way to inject headers) is skipped with a warning; the message is
sent anyway (the warning names the message's queue id). Values that are not ASCII are sent as they are (UTF-8, for
SMTPUTF8 servers); long values are folded at spaces.
"""

import re

from mailerq_gevent import logs
from mailerq_gevent.mail import headers as header_block

log = logs.get(__name__)

_NAME = re.compile(r"^[!-9;-~]{1,76}$")       # printable ASCII except ":" (RFC 5322 ftext)
FOLD_AT = 78


def apply(mime, changes, message_id=""):
    """``mime`` (bytes, CRLF) with ``changes`` (the ``headers`` property) applied;
    ``message_id`` (the queue id) for the log."""
    if not isinstance(changes, dict) or not changes:
        return mime
    block, rest = header_block.split(mime)
    fields = header_block.fields(block)
    remove = {name.lower() for name in _names(changes.get("remove"), message_id)}
    replace = _pairs(changes.get("replace"), message_id)
    replaced = {name.lower() for name, _ in replace}
    kept, placed = [], set()
    for lines in fields:
        name = lines[0].split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        if name in replaced:
            if name not in placed:
                placed.add(name)
                kept.extend(_field(n, v) for n, v in replace if n.lower() == name)
            continue
        if name not in remove:
            kept.append(b"".join(lines))
    kept.extend(_field(n, v) for n, v in replace if n.lower() not in placed)
    head = [_field(n, v) for n, v in _pairs(changes.get("prepend"), message_id)]
    tail = [_field(n, v) for n, v in _pairs(changes.get("append"), message_id)]
    return b"".join(head + kept + tail) + rest


def _names(value, message_id):
    names = [value] if isinstance(value, str) else list(value or ()) if isinstance(
        value, (list, tuple)) else []
    good = [name for name in names if isinstance(name, str) and _NAME.match(name)]
    if len(good) != len(names):
        log.warning("delivery.header_skipped", id=message_id, what="remove",
                    count=len(names) - len(good))
    return good


def _pairs(value, message_id):
    """``[(name, value)]`` from an object, a list of pairs or of name/value objects."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(item.get("name"), item.get("value")) if isinstance(item, dict) else
                 tuple(item) if isinstance(item, (list, tuple)) and len(item) == 2 else
                 (None, None) for item in value]
    else:
        items = []
    good = [(name, str(text)) for name, text in items if _valid(name, text)]
    if len(good) != len(items):
        log.warning("delivery.header_skipped", id=message_id, what="add",
                    count=len(items) - len(good))
    return good


def _valid(name, text):
    return (isinstance(name, str) and bool(_NAME.match(name)) and isinstance(
        text, (str, int, float)) and not any(c in str(text) for c in "\r\n\0"))


def _field(name, text):
    """``Name: value`` CRLF, folded at spaces to about FOLD_AT columns."""
    words, lines, line = str(text).split(" "), [], name + ":"
    for word in words:
        if len(line) + 1 + len(word) > FOLD_AT and line.strip() and line != name + ":":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines).encode("utf-8") + b"\r\n"
