"""SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.

``exchange(session, argument)`` runs the SASL dialogue and returns
``(user, password)``, or a Reply when the client cancelled (``*``) or sent
something that is not base64 of UTF-8. Checking the credentials, counting
failures and logging are the session's; nothing here logs, and the password
never leaves this module except to the authenticator.
"""

import base64
import binascii

from mailerq_gevent.smtpd import reply

MECHANISMS = reply.AUTH_MECHANISMS   # what EHLO offers (reply.ehlo)
USERNAME_PROMPT = base64.b64encode(b"Username:").decode()
PASSWORD_PROMPT = base64.b64encode(b"Password:").decode()


class _Refused(Exception):
    def __init__(self, answer):
        super().__init__(answer.text)
        self.answer = answer


def exchange(session, argument):
    mechanism, _, initial = argument.strip().partition(" ")
    mechanism = mechanism.upper()
    try:
        if mechanism == "PLAIN":
            return _plain(session, initial.strip())
        if mechanism == "LOGIN":
            return _login(session, initial.strip())
    except _Refused as refused:
        return refused.answer
    return reply.UNKNOWN_MECHANISM


def _plain(session, initial):
    response = _decode(initial) if initial else _ask(session, "")
    parts = response.split("\0")
    if len(parts) != 3:
        raise _Refused(reply.AUTH_BAD_RESPONSE)
    authzid, user, password = parts
    if authzid and authzid != user:
        return user, None           # acting for someone else is not supported: a failure
    return user, password


def _login(session, initial):
    user = _decode(initial) if initial else _ask(session, USERNAME_PROMPT)
    return user, _ask(session, PASSWORD_PROMPT)


def _ask(session, challenge):
    line = session.challenge(reply.AUTH_CONTINUE.format(challenge=challenge))
    if line == "*":
        raise _Refused(reply.AUTH_CANCELLED)
    return _decode(line)


def _decode(text):
    if text == "=":
        return ""
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _Refused(reply.AUTH_BAD_RESPONSE) from None
