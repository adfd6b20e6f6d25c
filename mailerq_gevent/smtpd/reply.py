"""SMTP replies as values (RFC 5321 §4.2, enhanced codes per RFC 3463 / RFC 5248).

Policy code returns a ``Reply``; only the session writes it to the socket.
The canned replies below are the server's whole vocabulary: the transcript
tests compare against these bytes.
"""


import functools


class Reply:
    __slots__ = ("code", "enhanced", "text", "close", "_wire")

    def __init__(self, code, enhanced, text, close=False):
        self.code, self.enhanced, self.text, self.close = code, enhanced, text, close
        self._wire = None

    def __repr__(self):
        return "Reply(%d, %r, %r)" % (self.code, self.enhanced, self.text)

    def __eq__(self, other):
        return isinstance(other, Reply) and (self.code, self.enhanced, self.text) == (
            other.code, other.enhanced, other.text)

    __hash__ = None

    def format(self, **fields):
        """A copy with ``{name}`` fields of the text (and enhanced code) filled in."""
        return Reply(self.code, self.enhanced.format(**fields), self.text.format(**fields),
                     self.close)

    def encode(self):
        """The reply as sent (made once per Reply: the canned ones are reused)."""
        if self._wire is None:
            self._wire = self._encode()
        return self._wire

    def _encode(self):
        lines = self.text.split("\n")
        prefix = "%d %s " % (self.code, self.enhanced) if self.enhanced else "%d " % self.code
        if len(lines) == 1:
            return (prefix + lines[0] + "\r\n").encode("utf-8")
        dash = "%d-%s" % (self.code, self.enhanced + " " if self.enhanced else "")
        out = [dash + line for line in lines[:-1]] + [prefix + lines[-1]]
        return ("\r\n".join(out) + "\r\n").encode("utf-8")


def multiline(code, lines):
    """A reply of several lines without enhanced codes (the EHLO response)."""
    return Reply(code, "", "\n".join(lines))


AUTH_MECHANISMS = ("PLAIN", "LOGIN")


@functools.lru_cache(maxsize=64)
def greeting(host):
    """The 220 greeting for ``host`` (made once per name, encoded once)."""
    return GREETING.format(host=host)


@functools.lru_cache(maxsize=64)
def ehlo(host, max_size, starttls, with_auth):
    """The EHLO response: ``host`` and the extensions offered (made once per combination)."""
    offered = [host, "PIPELINING", "SIZE %d" % max_size, "8BITMIME", "SMTPUTF8",
               "ENHANCEDSTATUSCODES", "DSN"]
    if starttls:
        offered.append("STARTTLS")
    if with_auth:
        offered.append("AUTH " + " ".join(AUTH_MECHANISMS))
    return multiline(250, offered)


GREETING = Reply(220, "", "{host} ESMTP mailerq-gevent")
OK = Reply(250, "2.0.0", "OK")
HELO = Reply(250, "", "{host}")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "OK queued as {id}")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_CONTINUE = Reply(334, "", "{challenge}")
VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP "
                           "STARTTLS AUTH")
BYE = Reply(221, "2.0.0", "Bye", close=True)

QUEUE_DOWN = Reply(451, "4.3.0", "Error: queue unavailable, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Error: local error, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
TIMEOUT = Reply(421, "4.4.2", "{host} Error: timeout exceeded", close=True)
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later", close=True)
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Error: too many errors", close=True)
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Error: too many authentication failures",
                               close=True)
BLOCKED = Reply(421, "4.7.0", "Error: too many failed logins from your address, "
                              "try again later", close=True)
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down", close=True)

UNKNOWN_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.0", "Error: line too long")
BAD_CHARACTER = Reply(500, "5.5.2", "Error: bare CR, LF or NUL in command")
SYNTAX = Reply(501, "5.5.4", "Syntax: {usage}")
BAD_ADDRESS = Reply(501, "5.1.{digit}", "Error: {what}")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Error: cannot decode the response")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
TLS_ACTIVE = Reply(503, "5.5.1", "Error: TLS already active")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Error: unsupported authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested "
                                           "authentication mechanism")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
RELAY_DENIED = Reply(550, "5.7.1", "Error: relay access denied")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8")
ACCESS_DENIED = Reply(554, "5.7.1", "Error: {ip} may not connect", close=True)
SYNC_ERROR = Reply(554, "5.5.0", "Error: SMTP protocol synchronization", close=True)
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Error: unsupported parameter {name}")
BAD_PARAMETER = Reply(501, "5.5.4", "Error: bad value for {name}")
