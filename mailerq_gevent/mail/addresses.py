"""Mail addresses as RFC 5321 and RFC 6531 allow them, for receiving and delivering alike.

``validate(address, mode, utf8)``: ``strict`` is RFC 5321's Mailbox
(dot-atom or quoted local part of at most 64 octets, a domain of LDH labels
or an address literal, at most 256 octets in all); ``loose`` accepts any
``local@domain`` without spaces or control characters, so a slightly broken
address can be queued and dealt with later (MailerQ's ``smtp-validate-address
loose``). Non-ASCII needs SMTPUTF8 in both modes.

``valid_notify(words)``: the DSN NOTIFY keywords RFC 3461 §4.1 allows, for
the RCPT parameter a client sends and the one passed on to the next hop.
"""

import functools
import ipaddress
import re

MAX_LOCAL = 64
MAX_DOMAIN = 255

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(r"%s+(?:\.%s+)*\Z" % (_ATEXT, _ATEXT))
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-\u0080-\U0010ffff]{1,63}(?<!-)\Z")
_LOOSE = re.compile(r"[^\s<>\x00-\x1f\x7f]+\Z")
NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}


class AddressError(ValueError):
    """A bad path; ``digit`` is the x of the enhanced code 5.1.x (3: syntax, 7: sender)."""

    def __init__(self, what, digit=3):
        super().__init__(what)
        self.what, self.digit = what, digit


class NeedsSmtpUtf8(AddressError):
    """A non-ASCII address in a transaction without SMTPUTF8 (553 5.6.7)."""


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
