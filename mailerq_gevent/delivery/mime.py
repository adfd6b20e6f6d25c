"""Outgoing MIME hygiene, before DKIM signing (RFC 5321 §2.3.8, §4.5.3.1.6; RFC 2045; RFC 6152).

``prepare(mime, eight_bit_ok)`` makes a message fit to send:

* every line ends in CRLF: a bare CR or LF becomes CRLF (RFC 5321 §2.3.8);
* no line is longer than 998 octets without its CRLF (RFC 5321 §4.5.3.1.6):
  a too long header line is folded at its white space (or, when it has none,
  broken with CRLF SP), a too long body line gets its part re-encoded;
* with ``eight_bit_ok`` False (the server did not offer 8BITMIME, RFC 6152) a
  part whose body has 8-bit octets is re-encoded.

Re-encoding touches only the leaf parts that need it (in a single-part
message, in every level of ``multipart/*`` and inside ``message/rfc822``):
``text/*`` becomes quoted-printable, anything else base64 (a part already in
base64 stays base64), with its Content-Transfer-Encoding header replaced in
place (or added last, with MIME-Version on a message that has none). Every
other byte, the headers and their order included, is kept. A preamble or
epilogue that would need work is dropped (RFC 2046 §5.1.1: to be ignored).
8-bit octets in header fields are left alone: that is SMTPUTF8's business
(RFC 6532), not a transfer encoding's.

Most messages need nothing, and this runs for each one: ``prepare`` first
scans with C-speed ``bytes`` methods (count, rfind, isascii) and returns the
very same bytes when all is well. Dot-stuffing is not done here:
``smtplib.SMTP.data`` does it (``_quote_periods``). It fixes line ends only
for ``str`` messages; bytes go out as they are, hence the CRLF work here.
"""

import base64
import binascii
import email
import email.policy
import re

from mailerq_gevent.mail import headers
from mailerq_gevent.mail.data import crlf_only

MAX_LINE = 998
FOLD_WIDTH = 78
_EOL = re.compile(rb"\r\n?|\n")
_FOLD_POINT = re.compile(rb"(?=[ \t])")
_IDENTITY = ("", "7bit", "8bit", "binary")


def prepare(mime, eight_bit_ok):
    """``mime`` (bytes) ready for DATA (see the module docstring)."""
    if isinstance(mime, str):
        mime = mime.encode("utf-8", "surrogateescape")
    line_ends_ok = crlf_only(mime)
    if line_ends_ok and (eight_bit_ok or mime.isascii()) and not _has_long_line(mime):
        return mime
    if not line_ends_ok:
        mime = _EOL.sub(b"\r\n", mime)
        if not _needs_work(mime, eight_bit_ok):
            return mime
    return _entity(mime, eight_bit_ok, "text/plain", top=True)


def has_8bit(mime):
    """Whether ``mime`` (bytes or str) holds anything but 7-bit ASCII."""
    return not mime.isascii()


def needs_smtputf8(envelope, recipient):
    """Whether the envelope needs the SMTPUTF8 extension (RFC 6531): an
    address with non-ASCII characters."""
    return not ((envelope or "").isascii() and (recipient or "").isascii())


def _has_long_line(data):
    """Whether a line of ``data`` (CRLF line ends only) is over MAX_LINE
    octets without its CRLF. Window by window rather than line by line: the
    last LF within MAX_LINE + 2 octets of a line's start ends every line up
    to it, and none means that line is too long. About 100 ``rfind`` calls
    for 100 KB, where splitting it into lines took four times as long."""
    size, start = len(data), 0
    while size - start > MAX_LINE:
        end = data.rfind(b"\n", start, start + MAX_LINE + 2)
        if end < 0:
            return True
        start = end + 1
    return False


def _needs_work(data, eight_bit_ok):
    return _has_long_line(data) or not (eight_bit_ok or data.isascii())


def _entity(data, ok, default_type, top=False):
    """One MIME entity (a message or a part: header block + body), fixed."""
    head, body = headers.split(data)
    head = _fold_header(head)
    media, boundary, cte = _content_info(head, default_type)
    if media.startswith("multipart/") and boundary and cte in _IDENTITY:
        child_type = "message/rfc822" if media == "multipart/digest" else "text/plain"
        body = _multipart(body, boundary.encode("ascii", "surrogateescape"), ok, child_type)
    elif media in ("message/rfc822", "message/global") and cte in _IDENTITY and body:
        body = b"\r\n" + _entity(body[2:], ok, "text/plain", top=True)
    elif _needs_work(body, ok):
        new_cte = "base64" if cte == "base64" or not media.startswith("text/") else (
            "quoted-printable")
        body = b"\r\n" + _encode(_decode(body[2:], cte), new_cte)
        return _set_cte(head, new_cte, top) + body
    if cte in ("8bit", "binary") and not ok and body.isascii():
        head = _set_cte(head, "7bit", top)
    return head + body


def _content_info(head, default_type):
    """(media type, boundary or None, transfer encoding) of a header block."""
    parsed = email.message_from_bytes(head + b"\r\n", policy=email.policy.compat32)
    parsed.set_default_type(default_type)
    cte = str(parsed.get("content-transfer-encoding", "")).strip().lower()
    return parsed.get_content_type(), parsed.get_boundary(), cte


def _multipart(body, boundary, ok, child_type):
    """The body of a multipart with each part fixed; the delimiter lines kept."""
    delimiter = re.compile(rb"(?:^|\r\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|\Z)")
    matches = list(delimiter.finditer(body))
    if not matches:
        return body
    out = [_filler(body[:matches[0].start()], ok)]
    for match, following in zip(matches, matches[1:] + [None]):
        out.append(match.group(0))
        if match.group(1):      # the close delimiter: the epilogue follows
            out.append(_filler(body[match.end():], ok))
            break
        part = body[match.end():following.start() if following else len(body)]
        out.append(b"\r\n" + _entity(part[2:], ok, child_type) if part[:2] == b"\r\n" else part)
    return b"".join(out)


def _filler(text, ok):
    """A preamble or epilogue: kept, or dropped when it would need work."""
    if not _needs_work(text, ok):
        return text
    return b"\r\n" if text.startswith(b"\r\n") else b""


def _decode(content, cte):
    """The octets a part's body stands for."""
    if cte == "base64":
        try:
            return binascii.a2b_base64(content)
        except binascii.Error:      # broken base64: sent as the octets it is
            return content
    if cte == "quoted-printable":
        return binascii.a2b_qp(content)
    return content


def _encode(octets, cte):
    if cte == "base64":
        return base64.encodebytes(octets).replace(b"\n", b"\r\n")
    return binascii.b2a_qp(_EOL.sub(b"\r\n", octets), istext=True)


def _set_cte(head, cte, top):
    """The header block with Content-Transfer-Encoding set to ``cte``."""
    line = b"Content-Transfer-Encoding: " + cte.encode("ascii") + b"\r\n"
    kept, replaced, has_version = [], False, False
    for lines in headers.fields(head):
        name = lines[0].split(b":", 1)[0].strip().lower()
        if name == b"content-transfer-encoding":
            if not replaced:
                kept.append(line)
            replaced = True
            continue
        has_version = has_version or name == b"mime-version"
        kept.extend(lines)
    if top and not has_version:
        kept.append(b"MIME-Version: 1.0\r\n")
    if not replaced:
        kept.append(line)
    return b"".join(kept)


def _fold_header(head):
    """The header block with every line over 998 octets folded."""
    if not _has_long_line(head):
        return head
    lines = head.split(b"\r\n")
    return b"\r\n".join(_fold_line(line) if len(line) > MAX_LINE else line for line in lines)


def _fold_line(line):
    """Fold at white space into lines of at most FOLD_WIDTH where possible
    (RFC 5322 §2.2.3); a longer run without white space is broken with CRLF SP."""
    folded, current = [], b""
    for token in _FOLD_POINT.split(line):
        if current.strip() and token.strip() and len(current) + len(token) > FOLD_WIDTH:
            folded.append(current)
            current = b""
        current += token
        while len(current) > MAX_LINE:
            folded.append(current[:MAX_LINE])
            current = b" " + current[MAX_LINE:]
    folded.append(current)
    return b"\r\n".join(folded)
