"""The header block of a received message, read without parsing the whole MIME.

Content here always has CRLF line ends (``mail.data.unstuff``). The header
block is everything up to the first empty line; a field is its first line
plus the continuation lines that start with a space or a tab (RFC 5322
§2.2.3). The bytes of what is kept are not touched.
"""

import re

HEADER_END = b"\r\n\r\n"
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:[ \t\r\n]*([^;\r\n \t]*)", re.I | re.M)


def split(content):
    """(header block including its last CRLF, the rest from the empty line on)."""
    if content.startswith(b"\r\n"):
        return b"", content
    end = content.find(HEADER_END)
    if end < 0:
        return content, b""
    return content[:end + 2], content[end + 2:]


def fields(block):
    """The fields of a header block as lists of their raw lines (CRLF kept)."""
    grouped = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and grouped:
            grouped[-1].append(line)
        else:
            grouped.append([line])
    return grouped


def name_and_value(lines):
    """The field's name (lower case) and unfolded value, as text."""
    raw = b"".join(lines).decode("utf-8", "surrogateescape")
    name, _, value = raw.partition(":")
    return name.strip().lower(), " ".join(value.split())


def remove(content, prefix):
    """Take out every field whose name starts with ``prefix`` (lower case bytes).

    Returns ``([(name, value)...], content without them)``.
    """
    block, rest = split(content)
    if prefix not in block.lower():
        return [], content
    kept, found = [], []
    for lines in fields(block):
        if lines[0][:len(prefix)].lower() == prefix:
            found.append(name_and_value(lines))
        else:
            kept.extend(lines)
    return found, b"".join(kept) + rest


def field(content, name):
    """The unfolded value of the first ``name`` field (lower-case name), or ''."""
    block, _ = split(content)
    if name.encode() not in block.lower():
        return ""
    for lines in fields(block):
        found, value = name_and_value(lines)
        if found == name:
            return value
    return ""


def content_type(content):
    """The media type of the message (``multipart/report``), lower case; '' if none."""
    block, _ = split(content)
    match = _CONTENT_TYPE.search(block)
    return match.group(1).decode("ascii", "replace").lower() if match else ""
