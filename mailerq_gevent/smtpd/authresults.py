"""The Authentication-Results header (RFC 8601) for the inbound checks' results.

``format_header(authserv_id, results)`` gives one header field, folded under
78 characters with CRLF line ends, one method a continuation line::

    Authentication-Results: mx.example.org;
    \tspf=pass smtp.mailfrom=example.test;
    \tdkim=pass header.d=example.test header.s=s1;
    \tdmarc=pass (p=reject) header.from=example.test

Values that are not tokens are quoted; spam has no RFC 8601 method and is
left out (a header with nothing else to say is ``none``).
"""

import re

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~@-]+\Z")
FOLD_AT = 77


def format_header(authserv_id, results):
    """The header for ``results`` (see the module docstring)."""
    clauses = _clauses(results) or ["none"]
    lines = ["Authentication-Results: %s;" % _value(authserv_id)]
    for number, clause in enumerate(clauses):
        end = ";" if number < len(clauses) - 1 else ""
        lines.extend(_fold(clause + end))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _clauses(results):
    clauses = []
    found = results.get("spf")
    if found:
        clauses.append("spf=%s smtp.%s=%s" % (found["result"], found["identity"],
                                              _value(found["domain"])))
    if "dkim" in results:
        signatures = results["dkim"] or [{"result": "none", "domain": ""}]
        for entry in signatures:
            text = "dkim=" + entry["result"]
            if entry["domain"]:
                text += " header.d=%s header.s=%s" % (_value(entry["domain"]),
                                                      _value(entry["selector"]))
            clauses.append(text)
    found = results.get("dmarc")
    if found:
        text = "dmarc=" + found["result"]
        if found["policy"]:
            text += " (p=%s)" % found["policy"]
        if found["domain"]:
            text += " header.from=%s" % _value(found["domain"])
        clauses.append(text)
    return clauses


def _value(text):
    """An RFC 8601 value: a token as it is, else a quoted-string (ASCII only)."""
    text = str(text)
    if _TOKEN.match(text):
        return text
    text = re.sub(r"[^\x20-\x7e]", "?", text)
    return '"%s"' % re.sub(r'(["\\])', r"\\\1", text)


def _fold(clause):
    """``clause`` on continuation lines under FOLD_AT characters: the first
    starts with a tab, the others with the space they were split at (so
    unfolding gives the clause back exactly)."""
    words = clause.split(" ")
    lines, line = [], "\t" + words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) > FOLD_AT:
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return lines
