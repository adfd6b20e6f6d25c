"""DKIM signatures for outgoing mail (RFC 6376, RFC 8301, RFC 8463).

Owns which keys sign a message and the signing itself. The message is split
and put in relaxed form here, with whole-buffer ``bytes`` operations (the
same bytes as dkimpy's line-by-line ``rfc822_parse`` and ``Relaxed``, nine
times quicker for 2 KB); dkimpy (``dkim``) hashes the signed headers; the
private key operation is ``cryptography``'s (OpenSSL), because dkimpy's own
RSA is pure Python and about 30 times slower. Private keys are parsed once
and kept in a bounded cache inside the :class:`Signer`, never once per
message.

Public API::

    Signer(cache_size=1024)
        .sign(mime, keys, now=None) -> bytes   # CRLF message, signatures on top
        .signatures(mime, keys, now=None) -> (headers, crlf_mime)
        .parses                                # private keys parsed so far
    keys_for(settings, from_address, message_dkim=None) -> [SigningKey]
    SigningKey.from_row(dkim_key_row) -> SigningKey   # raises ValueError
    message_keys(message_dkim) -> [SigningKey]        # the JSON ``dkim`` property
    from_address(mime) -> str | None                  # the first From mailbox
    normalise_algorithm(name) -> "rsa-sha256" | "rsa-sha1" | "ed25519-sha256"
    generate_key(algorithm="rsa-sha256", bits=2048) -> (private_pem, dns_txt_value)
    public_txt(private_pem, algorithm="rsa-sha256") -> dns_txt_value

Keys, in order (``keys_for``): the keys of every matching ``dkim_patterns``
row; when no pattern matches, the ``dkim_keys`` rows whose domain is the From
domain; then the message's own keys (its ``dkim`` property: one object or a list
of ``{"domain", "selector", "key", "algorithm"?, "expire"?, "headers"?}``).
A (domain, selector) pair signs once, the first key wins: one DNS record can
hold only one public key. A broken key (bad fields, a PEM that does not parse,
a key of the wrong type, RSA under 1024 bits) is skipped with a warning;
signing never fails a delivery: a message that cannot be parsed goes out
unsigned, with a warning.

Each signature: ``a=`` from the key (rsa-sha256 by default; rsa-sha1 only
when a key asks for it, RFC 8301 §3.1), ``c=relaxed/relaxed``, ``t=`` now,
``x=`` now + ``expire`` when ``expire`` > 0, ``h=`` the headers of
``SIGNED_HEADERS`` present (each instance) plus one more ``from`` so that no
From can be added (or the key's own ``headers`` list, ``from`` always in it).
Signatures go on top in the order of ``keys``. Ed25519 (RFC 8463) signs the
SHA-256 digest of the header hash; its key is PKCS#8 PEM or the base64 of the
32-byte seed (dkimpy's ``dknewkey`` form); its TXT record has ``k=ed25519``.

Where it runs: ``sign`` is CPU work in the calling process, about 360 us
for an RSA-2048 signature of a 2 KB message on a quick machine (``openssl
speed rsa2048``: 3,630 signatures/s a core; 260 us of it OpenSSL's private
key operation, 17 us the split and relaxed body, the rest the headers and
their hash), 0.9-1.3 ms on a slow one (1,230 signatures/s a core); it does
no I/O. ``signers.SignerPool`` runs it in helper processes, which the
daemon uses with ``smtp-threads`` above 1. Two other places for the RSA
operation alone were built and measured (``bench/relay.py --dkim --variants
dkim``, interleaved runs against signing in the delivery greenlet) and are
slower:

* a gevent ``ThreadPool`` (``cryptography`` releases the GIL around it):
  948 against 1,122 msg/s (1.37-1.46 against 1.06-1.09 CPU ms a message) on
  the quick machine, 310-396 against 344-423 msg/s (3.4-3.9 against 2.8-3.2
  ms) on the slow one: the hand-over and the two threads' contention for the
  GIL cost more than the signature;
* the SMTP worker processes, over their channels (the digest and the key
  out, the signature back; at most 4 or 8 in flight a worker, the rest
  signed here, or waiting for a worker): 344-416 against 378-436 msg/s, and
  always more CPU a message (3.1-3.8 against 2.7-3.0 ms): during the
  injection the worker's core is busy receiving, and its signatures hold its
  event loop, so receiving slows (inject 756-1,303 against 1,547-1,678 msg/s).
"""

import base64
import binascii
import email.utils
import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import Relaxed

from mailerq_gevent import logs

log = logs.get(__name__)

ALGORITHMS = {
    "": "rsa-sha256", "rsa-sha256": "rsa-sha256", "sha-256": "rsa-sha256",
    "sha256": "rsa-sha256", "rsa-sha1": "rsa-sha1", "sha-1": "rsa-sha1", "sha1": "rsa-sha1",
    "ed25519-sha256": "ed25519-sha256", "ed25519": "ed25519-sha256",
}
ED25519 = "ed25519-sha256"
_HASHES = {"rsa-sha256": hashlib.sha256, "rsa-sha1": hashlib.sha1, ED25519: hashlib.sha256}
_PREHASHED = {"rsa-sha256": utils.Prehashed(hashes.SHA256()),
              "rsa-sha1": utils.Prehashed(hashes.SHA1())}     # legacy (RFC 8301): on request
_PKCS1 = padding.PKCS1v15()

SIGNED_HEADERS = frozenset((
    b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
    b"in-reply-to", b"references", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post"))
MIN_RSA_BITS = 1024         # RFC 8301 §3.2
CACHE_SIZE = 1024
_WIDTH = 76                 # folded header lines, CRLF not counted
_NAME = b"DKIM-Signature"
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN = re.compile(r"%s(?:\.%s)*\Z" % (_LABEL, _LABEL))
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_NEWLINE = re.compile(rb"\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"([\x21-\x7e]+?):")
_FROM_FIELD = re.compile(rb"^from:(.*(?:\n[ \t].*)*)", re.I | re.M)   # with its folded lines
_WSP_RUN = re.compile(rb" ?\t[\t ]*|  [\t ]*")     # every run of WSP but a lone space


def normalise_algorithm(name):
    """The canonical ``a=`` value for a ``dkim_keys.algorithm`` spelling."""
    algorithm = ALGORITHMS.get(str(name or "").strip().lower())
    if algorithm is None:
        raise ValueError("unknown algorithm %r" % name)
    return algorithm


def _dns_name(text, what):
    """``text`` as a lower-case ASCII DNS name (IDNA for non-ASCII): the value
    goes into a header, so nothing else may pass."""
    name = str(text or "").strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise ValueError("%s %r is not a domain name" % (what, text)) from None
    if not _DOMAIN.match(name):
        raise ValueError("%s %r is not a domain name" % (what, text))
    return name


@dataclass(frozen=True)
class SigningKey:
    """One key to sign with; ``privatekey`` (PEM text) is left out of ``repr``.
    ``headers`` None means the default set; ``key_id`` is the row id (None for
    a message's own key)."""

    domain: str
    selector: str
    privatekey: str = field(repr=False)
    algorithm: str = "rsa-sha256"
    expire: int = 0
    headers: tuple = None
    key_id: int = None

    @classmethod
    def create(cls, domain, selector, privatekey, algorithm=None, expire=0, headers=None,
               key_id=None):
        """A validated key; raises ValueError saying what is wrong."""
        if not isinstance(privatekey, str) or not privatekey.strip():
            raise ValueError("no private key")
        if isinstance(expire, bool) or not isinstance(expire or 0, int) or (expire or 0) < 0:
            raise ValueError("expire %r is not a number of seconds" % (expire,))
        return cls(_dns_name(domain, "domain"), _dns_name(selector, "selector"), privatekey,
                   normalise_algorithm(algorithm), expire or 0, _header_list(headers), key_id)

    @classmethod
    def from_row(cls, row):
        """The key of a ``settings.DkimKey`` row."""
        return cls.create(row.domain, row.selector, row.privatekey, row.algorithm, row.expire,
                          key_id=row.id)


def _header_list(names):
    """A key's own ``h=`` list: lower case, From always signed."""
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or \
            not all(isinstance(n, str) and _HEADER_NAME.match(n) for n in names):
        raise ValueError("headers must be a list of header names")
    wanted = tuple(n.lower().encode("ascii") for n in names)
    return wanted if b"from" in wanted else (b"from",) + wanted


def message_keys(value):
    """The valid keys of a message's ``dkim`` property; the others are skipped
    with a warning."""
    if not value:
        return []
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        log.warning("dkim.message_keys_skipped", reason="dkim is not an object or a list")
        return []
    keys = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            keys.append(SigningKey.create(item.get("domain"), item.get("selector"),
                                          item.get("key"), item.get("algorithm"),
                                          item.get("expire"), item.get("headers")))
        except ValueError as error:
            log.warning("dkim.message_key_skipped", index=index, reason=str(error))
    return keys


def _row_keys(rows):
    keys = []
    for row in rows:
        try:
            keys.append(SigningKey.from_row(row))
        except ValueError as error:
            log.warning("dkim.key_skipped", key=row.id, reason=str(error))
    return keys


def keys_for(settings, from_address, message_dkim=None):
    """The keys to sign a message from ``from_address`` with, in order
    (module docstring); each (domain, selector) once."""
    rows = settings.dkim_keys_for(from_address) if from_address else ()
    if not rows and from_address and "@" in from_address:
        rows = settings.dkim_keys_for_domain(from_address.rpartition("@")[2])
    unique = {}
    for key in _row_keys(rows) + message_keys(message_dkim):
        unique.setdefault((key.domain, key.selector), key)
    return list(unique.values())


def from_address(mime):
    """The address of the first mailbox of the first From header, or None."""
    if isinstance(mime, str):
        mime = mime.encode("utf-8", "surrogateescape")
    found = _FROM_FIELD.search(_HEAD_END.split(mime, 1)[0])
    if found is None:
        return None
    value = found.group(1).decode("utf-8", "replace").replace("\r", "")
    for _name, address in email.utils.getaddresses([value]):
        if "@" in address:
            return address
    return None


def load_private_key(text, algorithm):
    """A ``cryptography`` private key from PEM text (or base64 DER, or an
    Ed25519 seed in base64); raises ValueError when it cannot sign for
    ``algorithm``."""
    data = text.strip().encode("ascii", "replace")
    try:
        if b"-----BEGIN" in data:
            private = serialization.load_pem_private_key(data, password=None)
        else:
            raw = base64.b64decode(b"".join(data.split()), validate=True)
            if algorithm == ED25519 and len(raw) in (32, 64):
                private = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
            else:
                private = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error) as error:
        raise ValueError("private key does not parse: %s" % error) from None
    _check_type(private, algorithm)
    return private


def _check_type(private, algorithm):
    if algorithm == ED25519:
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise ValueError("%s needs an Ed25519 key" % algorithm)
    elif not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("%s needs an RSA key" % algorithm)
    elif private.key_size < MIN_RSA_BITS:
        raise ValueError("RSA key of %d bits (at least %d)" % (private.key_size, MIN_RSA_BITS))


class _Message:
    """One message prepared once for all its signatures: the CRLF wire form,
    its headers and the body hash per hash function."""

    __slots__ = ("wire", "headers", "names", "body", "_body_hashes")

    def __init__(self, mime):
        self.wire = crlf(mime)
        self.headers, body = _split(self.wire)
        self.names = [name.lower() for name, _value in self.headers]
        self.body = _relaxed_body(body)
        self._body_hashes = {}

    def relaxed_headers(self, include):
        """The relaxed form of every instance of the headers named in ``include``
        (only those: a message may carry many Received lines)."""
        wanted = set(include)
        return [(name, _relaxed_value(value))
                for (_field, value), name in zip(self.headers, self.names) if name in wanted]

    def body_hash(self, algorithm):
        hasher = _HASHES[algorithm]
        if hasher not in self._body_hashes:
            self._body_hashes[hasher] = base64.b64encode(hasher(self.body).digest())
        return self._body_hashes[hasher]

    def include(self, key):
        """The ``h=`` list for ``key``: its own, or the defaults and From again."""
        if key.headers is not None:
            return key.headers
        return [name for name in self.names if name in SIGNED_HEADERS] + [b"from"]


class Signer:
    """Signs messages; holds the parsed private keys (at most ``cache_size``,
    the least recently used dropped first). Built once, shared by the senders."""

    def __init__(self, cache_size=CACHE_SIZE):
        self.cache_size = cache_size
        self.parses = 0
        self._keys = OrderedDict()  # (key id, algorithm, PEM) -> key, or the error text

    def sign(self, mime, keys, now=None):
        """``mime`` in CRLF form with one DKIM-Signature per usable key on top."""
        headers, wire = self.signatures(mime, keys, now)
        return headers + wire

    def signatures(self, mime, keys, now=None):
        """``(headers, wire)``: the DKIM-Signature lines to put on top (empty
        when nothing signs) and ``mime`` in CRLF form."""
        if isinstance(mime, str):
            mime = mime.encode("utf-8", "surrogateescape")
        try:
            message = _Message(mime)
        except (dkim.MessageFormatError, IndexError) as error:
            log.warning("dkim.unsigned", reason="message does not parse: %s" % error)
            return b"", crlf(mime)
        now = int(time.time() if now is None else now)
        headers = [self._signature(message, key, now) for key in keys]
        return b"".join(h for h in headers if h), message.wire

    def stop(self, timeout=None):
        """Nothing to stop: it signs in the caller (``signers.SignerPool`` has helpers)."""

    def _signature(self, message, key, now):
        private = self._private(key)
        if private is None:
            return None
        include = message.include(key)
        value = _fold(_tags(key, now, include, message.body_hash(key.algorithm)))
        hasher = _HASHES[key.algorithm]()
        dkim.hash_headers(hasher, Relaxed, message.relaxed_headers(include), include,
                          (_NAME, value), None)
        if key.algorithm == ED25519:
            signature = private.sign(hasher.digest())
        else:
            signature = private.sign(hasher.digest(), _PKCS1, _PREHASHED[key.algorithm])
        return _NAME + b":" + value + _fold_b(base64.b64encode(signature)) + b"\r\n"

    def _private(self, key):
        """The parsed key (cached), or None when it cannot sign (warned once)."""
        cache_key = (key.key_id, key.algorithm, key.privatekey)
        entry = self._keys.get(cache_key)
        if entry is None:
            entry = self._load(key)
            self._keys[cache_key] = entry
            while len(self._keys) > self.cache_size:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(cache_key)
        return None if isinstance(entry, str) else entry

    def _load(self, key):
        self.parses += 1
        try:
            return load_private_key(key.privatekey, key.algorithm)
        except ValueError as error:
            log.warning("dkim.key_unusable", key=key.key_id, domain=key.domain,
                        selector=key.selector, reason=str(error))
            return str(error)


def _split(wire):
    """``(headers, body)`` of a CRLF message as ``dkim.rfc822_parse`` gives
    them (``[name, value + CRLF]`` pairs, a continuation line kept in its
    header's value, an mbox ``From `` line skipped), but looking at the header
    block alone: the body is a slice, not 1,300 lines split and joined again
    for 100 KB. Raises ``dkim.MessageFormatError`` where it does."""
    if not wire or wire.startswith(b"\r\n"):
        return [], wire[2:]
    end = wire.find(b"\r\n\r\n")
    head, body = (wire, b"") if end < 0 else (wire[:end], wire[end + 4:])
    headers = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b"\t", b" "):
            if not headers:
                raise dkim.MessageFormatError("a continuation line before any header")
            headers[-1][1] += line + b"\r\n"
        elif (match := _FIELD.match(line)) is not None:
            headers.append([match.group(1), line[match.end():] + b"\r\n"])
        elif line and not line.startswith(b"From "):
            raise dkim.MessageFormatError("Unexpected characters in RFC822 header: %r" % line)
    return headers, body


def _relaxed_body(body):
    """The relaxed body (RFC 6376 §3.4.4): runs of WSP one space, none at the
    end of a line, no empty lines at the end, CRLF after the last."""
    body = _one_space(body).replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    body = body[:end + 2] if end < len(body) else body + b"\r\n"
    return b"" if body == b"\r\n" else body


def _relaxed_value(value):
    """A header value in relaxed form (RFC 6376 §3.4.2), as dkimpy's
    ``Relaxed.canonicalize_headers`` makes it: unfolded, WSP runs one space,
    stripped, CRLF (the name, lower case, is the caller's)."""
    return _one_space(value.replace(b"\r\n", b"")).strip() + b"\r\n"


def _one_space(text):
    """``text`` with every run of WSP one space; the regex (about 30 ns a
    byte) only where a tab or two spaces are."""
    if b"\t" in text or b"  " in text:
        return _WSP_RUN.sub(b" ", text)
    return text


def crlf(mime):
    """``mime`` with every line ending CRLF; the same object when it already is
    (two scans in C instead of a copy: delivery's MIME hygiene made it so)."""
    if mime.count(b"\n") == mime.count(b"\r\n"):
        return mime
    return _NEWLINE.sub(b"\r\n", mime)


def _tags(key, now, include, body_hash):
    """The tags of the signature, ``b=`` last and empty (RFC 6376 §3.5)."""
    tags = [b"v=1", b"a=" + key.algorithm.encode(), b"c=relaxed/relaxed",
            b"d=" + key.domain.encode(), b"s=" + key.selector.encode(), b"t=%d" % now]
    if key.expire:
        tags.append(b"x=%d" % (now + key.expire))
    tags += [b"h=" + b": ".join(include), b"bh=" + body_hash, b"b="]
    return b"; ".join(tags)


def _fold(text):
    """``text`` folded at its spaces into lines of at most _WIDTH columns after
    the header name; starts with the space after the colon."""
    out, column = [], len(_NAME) + 1
    for word in text.split(b" "):
        if out and column + 1 + len(word) > _WIDTH:
            out.append(b"\r\n ")
            column = 1
        else:
            out.append(b" ")
            column += 1
        out.append(word)
        column += len(word)
    return b"".join(out)


def _fold_b(signature):
    """The ``b=`` value on lines of its own (FWS is allowed inside it)."""
    step = _WIDTH - 1
    return b"".join(b"\r\n " + signature[i:i + step] for i in range(0, len(signature), step))


def public_txt(private_pem, algorithm="rsa-sha256"):
    """The DNS TXT value (``v=DKIM1; k=...; p=...``) to publish at
    ``<selector>._domainkey.<domain>`` for a private key. An RSA-2048 value is
    longer than 255 bytes: it goes in one record as several strings."""
    algorithm = normalise_algorithm(algorithm)
    public = load_private_key(private_pem, algorithm).public_key()
    if algorithm == ED25519:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def generate_key(algorithm="rsa-sha256", bits=2048):
    """A new key: ``(private_pem, dns_txt_value)``. RSA keys are PKCS#1 PEM of
    ``bits`` bits (at least 1024; 2048 advised by RFC 8301); Ed25519 keys
    PKCS#8 PEM (``bits`` ignored)."""
    algorithm = normalise_algorithm(algorithm)
    if algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
        form = serialization.PrivateFormat.PKCS8
    else:
        if bits < MIN_RSA_BITS:
            raise ValueError("RSA keys have at least %d bits" % MIN_RSA_BITS)
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        form = serialization.PrivateFormat.TraditionalOpenSSL
    pem = private.private_bytes(serialization.Encoding.PEM, form,
                                serialization.NoEncryption()).decode("ascii")
    return pem, public_txt(pem, algorithm)
