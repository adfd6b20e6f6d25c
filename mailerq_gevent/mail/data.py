"""The content of an SMTP DATA transfer as it was before it was sent (RFC 5321 §4.5.2).

``unstuff(data)`` takes a CRLF, then the message as it went over the wire
(its last line end included, the final ``.CRLF`` not): both readers hold it
so (the server's Wire, and the live view's Transcript), the CRLF in front
letting the first line's dot be found like any other. It returns the message
with dot-stuffing undone and every line ending in CRLF (a bare CR or LF
becomes one).
"""


def unstuff(data):
    """The message in ``data`` (a CRLF, then the message): unstuffed, CRLF line ends."""
    data = data.replace(b"\r\n.", b"\r\n")[2:]
    pairs = data.count(b"\r\n")      # three scans in C, and none more: each is one pass
    if pairs != data.count(b"\n") or pairs != data.count(b"\r"):
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data
