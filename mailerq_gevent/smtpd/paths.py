"""Paths and parameters of MAIL FROM / RCPT TO (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531).

``parse_command(arg, keyword)`` splits ``FROM:<path> PARAM=value ...`` into
the address and its parameters. The path may carry a source route
(``<@a,@b:user@domain>``), which RFC 5321 §4.1.1.3 says to accept and ignore:
the address is what follows the colon, and ``routed`` says there was one.
Whether the address itself is acceptable is ``mail.addresses.validate``'s.
"""

import re

from mailerq_gevent.mail.addresses import AddressError, split

MAX_PATH = 256

_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9\-]*)(?:=([\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+))?\Z")


class Path:
    __slots__ = ("address", "routed")

    def __init__(self, address, routed=False):
        self.address, self.routed = address, routed


def parse_command(arg, keyword, strict=True):
    """``"FROM:<a@b> SIZE=10"`` -> (Path, {"SIZE": "10"}); raises AddressError
    (bad path) or ValueError (not ``keyword:`` at all)."""
    head, colon, rest = arg.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ValueError(keyword)
    rest = rest.lstrip(" ")
    if rest.startswith("<"):
        close = _closing_bracket(rest)
        path_text, params_text = rest[1:close], rest[close + 1:]
        if params_text and not params_text.startswith(" "):
            raise AddressError("bad path: text after '>'")
    elif strict:
        raise AddressError("the address must be written <like@this>")
    else:
        path_text, _, params_text = rest.partition(" ")
    return _path(path_text), parse_params(params_text)


def _closing_bracket(text):
    if '"' not in text:
        close = text.find(">")
        if close < 0:
            raise AddressError("bad path: no closing '>'")
        return close
    quoted, escaped = False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    raise AddressError("bad path: no closing '>'")


def _path(text):
    if len(text) > MAX_PATH:
        raise AddressError("path too long (over %d characters)" % MAX_PATH)
    if text.startswith("@"):
        route, colon, address = text.partition(":")
        if not colon or not all(part.startswith("@") and len(part) > 1
                                for part in route.split(",")):
            raise AddressError("bad source route")
        return Path(address, routed=True)
    return Path(text)


def parse_params(text):
    """``" SIZE=10 BODY=8BITMIME"`` -> {"SIZE": "10", "BODY": "8BITMIME"}."""
    params = {}
    for item in text.split():
        match = _PARAM.match(item)
        if not match:
            raise ValueError(item)
        params[match.group(1).upper()] = match.group(2)
    return params


def is_odd(path):
    """Forms that some MTAs route on (source routes, ``%``, ``!``, a quoted ``@``):
    never accepted from a client that may not relay."""
    local, _ = split(path.address)
    return path.routed or any(char in local for char in "%!@")
