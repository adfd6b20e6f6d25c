"""DKIM keys on the console: making a new key and the DNS TXT record to
publish for each key (RFC 6376 §3.6.1, ``<selector>._domainkey.<domain>``).

A private key goes into ``dkim_keys`` and never comes back out: what the
console shows of a key is the public TXT record, computed from the stored
private key with ``signing.public_txt`` and cached (parsing an RSA key costs
milliseconds of CPU, and a page lists every key). A zone-file line splits
the value into quoted strings of at most 255 characters (RFC 1035 §3.3.14:
an RSA-2048 record does not fit one string).

RSA key generation takes tens to hundreds of milliseconds of CPU: it runs in
gevent's thread pool so the other greenlets (SMTP, deliveries) keep going.
"""

import hashlib
from collections import OrderedDict

import gevent

from mailerq_gevent import signing
from mailerq_gevent.console import table_store
from mailerq_gevent.console.table_rows import EDITORS, Invalid, clean

CACHE_SIZE = 1024
RSA_BITS = (2048, 3072, 4096)
GENERATED = ("rsa-sha256", "ed25519-sha256")
_FIELDS = ("domain", "selector", "algorithm", "expire")

_cache = OrderedDict()      # sha256 of (algorithm, private key) -> TXT value


def txt_name(domain, selector):
    return "%s._domainkey.%s" % (selector, domain)


def txt_value(privatekey, algorithm):
    """The TXT value for a stored key (cached); ValueError if it does not parse."""
    digest = hashlib.sha256(("%s\0%s" % (algorithm, privatekey)).encode()).digest()
    value = _cache.get(digest)
    if value is None:
        value = signing.public_txt(privatekey, algorithm)
        _cache[digest] = value
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    _cache.move_to_end(digest)
    return value


def zone_record(name, value):
    """``name. IN TXT ( "..." "..." )`` with strings of at most 255 characters."""
    strings = " ".join('"%s"' % value[i:i + 255] for i in range(0, len(value), 255))
    return "%s. IN TXT ( %s )" % (name, strings)


def record_fields(row):
    """What to publish for a ``dkim_keys`` row: ``txt_name``, ``txt_value``,
    ``txt_record`` (``txt_error`` instead of the value when the key is broken)."""
    name = txt_name(row.get("domain") or "", row.get("selector") or "")
    try:
        value = txt_value(row.get("privatekey") or "", row.get("algorithm"))
    except ValueError as error:
        return {"txt_name": name, "txt_error": str(error)}
    return {"txt_name": name, "txt_value": value, "txt_record": zone_record(name, value)}


def generate(engine, data):
    """Make a key for the JSON object ``data`` (domain, selector, algorithm,
    expire, bits) and store it; the saved row with its TXT record, no private key."""
    editor = EDITORS["dkim_keys"]
    unknown = [name for name in data if name not in _FIELDS + ("bits",)]
    if unknown:
        raise Invalid({name: "not a field of a key to generate" for name in unknown})
    fields = {name: data[name] for name in _FIELDS if name in data}
    checked = clean(editor, fields, only=_FIELDS)
    algorithm = checked.get("algorithm", "rsa-sha256")
    bits = _bits(data.get("bits", 2048), algorithm)
    pem, _ = gevent.get_hub().threadpool.apply(signing.generate_key, (algorithm, bits))
    row = table_store.insert_row(engine, editor, dict(fields, privatekey=pem))
    return shown(row)


def _bits(bits, algorithm):
    if algorithm not in GENERATED:
        raise Invalid({"algorithm": "new keys are %s" % " or ".join(GENERATED)})
    if algorithm == "rsa-sha256" and (type(bits) is not int or bits not in RSA_BITS):
        raise Invalid({"bits": "an RSA key has %s bits" % ", ".join(map(str, RSA_BITS))})
    return bits


def shown(row):
    """A ``dkim_keys`` row as the console shows it: no private key, a TXT record."""
    public = {name: row.get(name) for name in ("id",) + _FIELDS}
    return dict(public, **record_fields(row))
