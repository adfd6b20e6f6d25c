"""Paths and parameters of MAIL FROM / RCPT TO (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531).

``parse_command(arg, keyword)`` splits ``FROM:<path> PARAM=value ...`` into
the address and its parameters. The path may carry a source route
(``<@a,@b:user@domain>``), which RFC 5321 §4.1.1.3 says to accept and ignore:
the address is what follows the colon, and ``routed`` says there was one.

``validate(address, mode, utf8)``: ``strict`` is RFC 5321's Mailbox
(dot-atom or quoted local part of at most 64 octets, a domain of LDH labels
or an address literal, at most 256 octets in all); ``loose`` accepts any
``local@domain`` without spaces or control characters, so a slightly broken
address can be queued and dealt with later (seed 002, "Validating email
addresses"). Non-ASCII needs SMTPUTF8 in both modes.
"""

import functools
import ipaddress
import re

MAX_PATH = 256
MAX_LOCAL = 64
MAX_DOMAIN = 255

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(r"%s+(?:\.%s+)*\Z" % (_ATEXT, _ATEXT))
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-\u0080-\U0010ffff]{1,63}(?<!-)\Z")
_LOOSE = re.compile(r"[^\s<>\x00-\x1f\x7f]+\Z")
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9\-]*)(?:=([\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+))?\Z")


class AddressError(ValueError):
    """A bad path; ``digit`` is the x of the enhanced code 5.1.x (3: syntax, 7: sender)."""

    def __init__(self, what, digit=3):
        super().__init__(what)
        self.what, self.digit = what, digit


class NeedsSmtpUtf8(AddressError):
    """A non-ASCII address in a transaction without SMTPUTF8 (553 5.6.7)."""


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


NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}


def valid_notify(words):
    """Whether a set of upper-case NOTIFY keywords is one RFC 3461 §4.1 allows:
    ``NEVER`` alone, or any of SUCCESS, FAILURE and DELAY."""
    return words == {"NEVER"} or bool(words) and words <= NOTIFY_WORDS


def split(address):
    """``local@domain`` -> ("local", "domain"); a bare name has domain ''."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def validate(address, mode="strict", utf8=False):
    """Raise AddressError unless ``address`` is acceptable (see the module docstring)."""
    if not utf8 and not address.isascii():
        raise NeedsSmtpUtf8("non-ASCII address without SMTPUTF8")
    if mode == "loose":
        if not _LOOSE.match(address) or "@" not in address[1:-1]:
            raise AddressError("bad address syntax")
        return
    local, domain = split(address)
    if not local or not domain:
        raise AddressError("bad address syntax: user@domain expected")
    if len(local.encode("utf-8")) > MAX_LOCAL:
        raise AddressError("local part too long (over %d octets)" % MAX_LOCAL)
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        raise AddressError("bad address syntax in the local part")
    validate_domain(domain)


@functools.lru_cache(maxsize=65536)
def validate_domain(domain):
    """None for a good domain (or address literal), else AddressError; the
    answers are kept, as the same few domains come back message after message."""
    if domain.startswith("[") and domain.endswith("]"):
        return _literal(domain[1:-1])
    labels = domain[:-1].split(".") if domain.endswith(".") else domain.split(".")
    if len(domain) > MAX_DOMAIN or not all(_LABEL.match(label) for label in labels):
        raise AddressError("bad domain %r" % domain[:80])


def _literal(text):
    try:
        if text[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(text[5:])
        else:
            ipaddress.IPv4Address(text)
    except ValueError:
        raise AddressError("bad address literal [%s]" % text[:60]) from None


def is_odd(path):
    """Forms that some MTAs route on (source routes, ``%``, ``!``, a quoted ``@``):
    never accepted from a client that may not relay."""
    local, _ = split(path.address)
    return path.routed or any(char in local for char in "%!@")
