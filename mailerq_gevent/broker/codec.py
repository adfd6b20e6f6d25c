"""The message JSON on the wire (MailerQ's message format): dict <-> UTF-8 bytes.

MailerQ's message is one JSON object per recipient. Encoding is compact and
keeps non-ASCII text as UTF-8; text that cannot be UTF-8 (lone surrogates, as
``surrogateescape`` makes from 8-bit MIME) falls back to ``\\uXXXX`` escapes,
which decode to the same string.
"""

import json

import orjson

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"


class CodecError(ValueError):
    """A queued body that is not a JSON object."""


def encode(message):
    """``dict`` -> bytes (orjson, several times quicker than json; json when the
    text holds lone surrogates, which orjson refuses)."""
    try:
        return orjson.dumps(message)
    except TypeError:
        return json.dumps(message, separators=(",", ":")).encode("ascii")


def encode_text(text):
    """One string as JSON bytes (for a MIME encoded once for several messages)."""
    try:
        return orjson.dumps(text)
    except TypeError:
        return json.dumps(text).encode("ascii")


def encode_with_mime(message, mime_json):
    """``message`` plus ``"mime": <mime_json>`` (an already encoded JSON string,
    as bytes: not decoded and encoded again, which costs a copy or two of a
    large MIME), so a large MIME is encoded once for all the recipients of a
    message."""
    head = encode(message)
    separator = b"," if len(head) > 2 else b""
    return b"".join((head[:-1], separator, b'"mime":', mime_json, b"}"))


def decode(body):
    """bytes -> ``dict``; raises CodecError for anything but a JSON object."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            message = json.loads(body)      # lone surrogates (8-bit MIME) orjson refuses
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError("not JSON: %s" % exc) from None
    if not isinstance(message, dict):
        raise CodecError("not a JSON object but %s" % type(message).__name__)
    return message
