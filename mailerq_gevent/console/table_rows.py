"""The configuration tables (capacity, flood_responses, dkim_keys, ...) as the
console edits them: their columns, how each value is checked, and the checks
on a whole row.

``EDITORS[name]`` describes one table: its ``Column``s (a parser turning a
JSON value into what is stored, or raising ValueError with the reason; the
value used when one is left out; how the page asks for it), the loader's
converter from ``db.load`` and the columns whose values together must stay
unique (where the loader skips a later duplicate, or where a second row
would be a mistake: two ``paused`` rows alike, two keys of one selector).

``clean(editor, data, stored)`` returns the row to save or raises ``Invalid``
with one message per column (answered as 400 ``{"errors": {column: text}}``).
The loader's own converter runs last on the cleaned row, so the console
refuses every row the loader would skip, and a little more: domains that
are not domain names, limits below -1, private keys that do not parse, a
DKIM selector used twice for one domain. The checks that need the database
(duplicates, the key a DKIM pattern names) are in ``table_store.py``.
"""

import re
from dataclasses import dataclass

from mailerq_gevent import signing
from mailerq_gevent.console.answers import ApiError
from mailerq_gevent.db import load
from mailerq_gevent.names import canonical_domain, canonical_ip, host_key
from mailerq_gevent.patterns import TYPES, PatternError, compile_pattern
from mailerq_gevent.settings import CAPACITY_FIELDS

REQUIRED = object()
INT_MAX = 2 ** 31 - 1
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


class Invalid(ApiError):
    """A row that cannot be saved: ``errors`` maps a column to the reason (a 400)."""

    def __init__(self, errors):
        super().__init__(400, errors=errors)


# -- value parsers: each returns the stored value or raises ValueError -------

def _text(value, limit=255):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be text")
    value = value.strip()
    if len(value) > limit:
        raise ValueError("longer than %d characters" % limit)
    return value


def _required(text):
    if not text:
        raise ValueError("required")
    return text


def domain_name(value, ascii_only=False):
    """``value`` as a lower-case domain (UTF-8 kept); ValueError if it is not one."""
    name = canonical_domain(_text(value))
    try:
        encoded = name.encode("idna").decode("ascii")
    except UnicodeError:
        encoded = None
    if (encoded is None or len(encoded) > 253 or (ascii_only and not name.isascii())
            or not all(_LABEL.match(label) for label in encoded.split("."))):
        raise ValueError("%r is not a %s" % (value, "host name" if ascii_only else "domain name"))
    return name


def ip_address(value):
    text = _required(_text(value, 64))
    address = canonical_ip(text)
    if address is None:
        raise ValueError("%r is not an IP address" % text)
    return address


def optional(parse):
    """``parse`` for a column where empty means "all": None or "" -> ""."""
    def parse_optional(value):
        return parse(value) if _text(value) else ""
    return parse_optional


def target(value):
    """A domain or an IP address (``delegates``/``paused`` targets)."""
    text = _required(_text(value))
    return canonical_ip(text) or domain_name(text)


def hostname(value):
    return domain_name(_required(_text(value)), ascii_only=True)


def whole(low, high, nullable=True):
    """Parser for a JSON integer in ``low..high`` (None allowed if ``nullable``)."""
    def parse(value):
        if value is None:
            if nullable:
                return None
            raise ValueError("required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
        if not low <= value <= high:
            raise ValueError("must be between %d and %d" % (low, high))
        return value
    return parse


def limit(value):
    """A capacity column: -1 falls back, NULL or 0 is unlimited."""
    if isinstance(value, int) and not isinstance(value, bool) and value < -1:
        raise ValueError("use -1 (fall back), 0 (unlimited) or a positive number")
    return whole(-1, INT_MAX)(value)


def secure(value):
    if isinstance(value, bool):
        return int(value)
    if value is not None and value not in (-1, 0, 1):
        raise ValueError("use -1 (fall back), 0 (no) or 1 (yes)")
    return whole(-1, 1)(value)


def pattern_text(value):
    return _required(_text(value, 2000))


def pattern_type(value):
    kind = _text(value, 16).lower() or "exact"
    if kind not in TYPES:
        raise ValueError("must be one of %s" % ", ".join(TYPES))
    return kind


def algorithm(value):
    return signing.normalise_algorithm(_text(value, 32))


def private_key(value):
    """PEM text (kept with LF line ends and a final newline), or base64."""
    text = _required(_text(value, 20000)).replace("\r\n", "\n")
    return text + "\n" if text.startswith("-----BEGIN") else text


def dns_address(value):
    text = _required(_text(value))
    load.parse_dns_address(text)
    return text


# -- columns and tables ------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One editable column. ``widget``: text, number, select or textarea;
    a ``secret`` column is written but never read back (a DKIM private key)."""

    name: str
    parse: object
    default: object = REQUIRED
    hint: str = ""
    widget: str = "text"
    choices: tuple = ()      # (value, label) for a select
    secret: bool = False

    @property
    def required(self):
        return self.default is REQUIRED


@dataclass(frozen=True)
class Editor:
    """How the console edits one table (see the module docstring)."""

    name: str
    title: str
    help: str
    columns: tuple
    convert: object = None       # db.load's converter of one row
    key: tuple = ()              # columns whose values together must be unique
    pattern: str = ""            # the column holding a pattern (with ``type``)
    read_only: bool = False

    def column(self, name):
        return next((c for c in self.columns if c.name == name), None)


_SECURE = ((-1, "fall back"), (0, "no"), (1, "yes (STARTTLS required)"))
_TYPES = tuple((kind, kind) for kind in TYPES)
_ALGORITHMS = (("rsa-sha256", "rsa-sha256"), ("ed25519-sha256", "ed25519-sha256"))
_ALL_IPS, _ALL_DOMAINS = "empty: every local IP", "empty: every domain"


def _ip_column(name, hint="", required=False):
    parse = ip_address if required else optional(ip_address)
    return Column(name, parse, REQUIRED if required else "", hint)


_LIMIT_HINTS = {"maxmessages": "messages per minute", "maxconnects": "new connections per minute",
                "maxconnections": "connections at once", "maxidletime": "milliseconds"}


def _limits():
    """The capacity columns (-1 by default: fall back) and ``secure``."""
    columns = tuple(Column(name, limit, -1, _limit_hint(name), "number")
                    for name in CAPACITY_FIELDS if name != "secure")
    return columns + (Column("secure", secure, -1, "", "select", _SECURE),)


def _limit_hint(name):
    if name == "connection_maxmessages":
        return "messages per connection"
    return _LIMIT_HINTS[name.split("_")[1]]


def _pattern(name, hint):
    return (Column(name, pattern_text, REQUIRED, hint, "textarea"),
            Column("type", pattern_type, "exact", "", "select", _TYPES))


def _dkim_pattern(row):
    return load.dkim_pattern_row(row, {row["key"]})


EDITORS = {editor.name: editor for editor in (
    Editor("capacity", "Capacity", "Delivery limits per local IP and domain: the most specific "
           "row wins. -1 falls back to the less specific row, 0 or empty is unlimited.",
           (_ip_column("localip", _ALL_IPS), Column("domain", optional(domain_name), "",
                                                    _ALL_DOMAINS)) + _limits(),
           load.capacity_row, ("localip", "domain")),
    Editor("flood_responses", "Flood responses", "When a reply matches, these limits replace "
           "the normal ones for the pair (local IP, domain) for duration seconds.",
           _pattern("pattern", "matched against the remote server's reply")
           + (Column("duration", whole(0, INT_MAX), None, "seconds (empty: one hour)",
                     "number"),) + _limits(),
           load.flood_row, pattern="pattern"),
    Editor("dkim_keys", "DKIM keys", "Signing keys. Generate or upload them on the DKIM page; "
           "the private key is never shown again.",
           (Column("domain", lambda v: domain_name(_required(_text(v)))),
            Column("selector", lambda v: domain_name(_required(_text(v)), ascii_only=True)),
            Column("algorithm", algorithm, "rsa-sha256", "", "select", _ALGORITHMS),
            Column("expire", whole(0, INT_MAX), 0, "seconds a signature is valid (0: no x= tag)",
                   "number"),
            Column("privatekey", private_key, REQUIRED, "PEM; write-only", "textarea", (), True)),
           load.dkim_key_row, ("domain", "selector")),
    Editor("dkim_patterns", "DKIM patterns", "Which key signs mail from which From address.",
           _pattern("sign", "matched against the From address")
           + (Column("key", whole(1, INT_MAX, nullable=False), REQUIRED,
                     "the DKIM key (generate one on the DKIM page)",
                     "select"),),
           _dkim_pattern, pattern="sign"),
    Editor("locals", "Local addresses", "Mail to these addresses is accepted without "
           "authentication and published to the local queue.",
           _pattern("address", "an address pattern"), load.local_row, pattern="address"),
    Editor("delegates", "Delegates", "Send from another local IP than planned.",
           (_ip_column("localip", "the planned IP; " + _ALL_IPS),
            Column("target", target, REQUIRED, "a domain or a remote IP"),
            _ip_column("newip", "the IP to send from instead", required=True)),
           load.delegate_row, ("localip", "target")),
    Editor("paused", "Paused", "Deliveries on hold. An empty column matches all: both empty "
           "pauses every delivery.",
           (_ip_column("localip", _ALL_IPS),
            Column("target", optional(target), "", "a domain or a remote IP; empty: all")),
           load.paused_row, ("localip", "target")),
    Editor("mtanames", "MTA names", "The EHLO name of a local IP.",
           (_ip_column("ip", required=True), Column("hostname", hostname)),
           load.mtaname_row, ("ip",)),
    Editor("dns", "DNS overrides", "Deliver a domain's mail to these addresses instead of "
           "its MX records.",
           (Column("domain", lambda v: domain_name(_required(_text(v)))),
            Column("address", dns_address, REQUIRED, "IP, IP:port, [v6]:port or host[:port]"),
            Column("priority", whole(0, 65535), 0, "lower is tried first", "number")),
           load.dns_row),
    Editor("ips", "IP addresses", "The addresses of each running instance, written at "
           "start-up for other programs to read.",
           tuple(Column(name, None, "") for name in
                 ("ip", "hostname", "vhost", "exchange", "outbox", "updated")),
           read_only=True),
)}


# -- a whole row -------------------------------------------------------------

def clean(editor, data, stored=None, only=None):
    """The row to save from the JSON object ``data`` (merged over ``stored``,
    the row being edited, when given); raises ``Invalid``. With ``only`` (column
    names), just those columns are checked and no whole-row check is made."""
    columns = [c for c in editor.columns if only is None or c.name in only]
    errors = {name: ("the id is chosen by the database" if name == "id" else
                     "not a column of %s" % editor.name)
              for name in data if editor.column(name) is None}
    row = {}
    for column in columns:
        try:
            row[column.name] = column.parse(_value(column, data, stored))
        except ValueError as error:
            errors[column.name] = str(error)
    if not errors and only is None:
        errors = _row_errors(editor, row)
    if errors:
        raise Invalid(errors)
    return row


def _value(column, data, stored):
    if column.secret and stored is not None and not data.get(column.name):
        return stored.get(column.name)      # an empty secret keeps the stored one
    if column.name in data:
        return data[column.name]
    if stored is not None:
        return stored.get(column.name)
    if column.required:
        raise ValueError("required")
    return column.default


def _row_errors(editor, row):
    """What is wrong with the row as a whole (patterns, keys, the loader's view)."""
    if editor.pattern:
        try:
            compile_pattern(row[editor.pattern], row["type"])
        except PatternError as error:
            return {editor.pattern: str(error)}
    if editor.name == "dkim_keys":
        try:
            signing.load_private_key(row["privatekey"], row["algorithm"])
        except ValueError as error:
            return {"privatekey": str(error)}
    try:
        editor.convert(dict(row, id=0))
    except (ValueError, TypeError, AttributeError) as error:
        return {"row": str(error)}
    return {}


def problem(editor, row, live_keys=()):
    """Why the loader skips the stored ``row``, or None (``live_keys``: the ids
    of the DKIM keys the live settings hold, for ``dkim_patterns``)."""
    if editor.read_only:
        return None
    try:
        if editor.name == "dkim_patterns":
            load.dkim_pattern_row(row, live_keys)
        else:
            editor.convert(row)
    except (ValueError, TypeError, AttributeError) as error:
        return str(error)
    return None


def unique_key(editor, row):
    """The values of ``row`` that must be unique in its table (compared as the
    loader compares them: canonical IPs, lower-case domains), or None."""
    if not editor.key:
        return None
    return tuple(host_key(row.get(name)) for name in editor.key)


def public(editor, row):
    """``row`` as the API and the pages show it: secret columns left out."""
    hidden = {c.name for c in editor.columns if c.secret}
    return {name: value for name, value in row.items() if name not in hidden}
