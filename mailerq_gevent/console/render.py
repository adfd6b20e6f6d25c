"""A recorded message (``Message``, kept by ``live.Conversation``): its raw
MIME, and its HTML rendered in a sandbox, as MailerQ's console renders emails.

``GET /live/<id>/<n>/mime``: the message as it went over the wire, as
``text/plain``, ``inline`` (``X-Content-Type-Options: nosniff`` comes with
every console answer): the browser shows it, never runs it.

``GET /live/<id>/<n>/render``: the message's HTML part (else its text part,
escaped, in a ``<pre>``), decoded from its transfer encoding and charset by
the ``email`` package, for the console to embed as ``<iframe sandbox>``.
The answer carries its own Content-Security-Policy (replacing the
console's): ``sandbox`` (no script, an opaque origin, no forms, no popups),
``default-src 'none'`` (nothing is loaded) except images that are inline
(``data:``, ``cid:``), so a tracking pixel or any remote resource of the
mail is never fetched, by the browser nor by the server (the server fetches
nothing; parts referenced by ``cid:`` are inlined from the message itself as
``data:`` URLs). ``frame-ancestors 'self'`` lets the console's own pages
frame it: the console sends ``X-Frame-Options: DENY`` on every answer, and
browsers obey that header unless the policy has a ``frame-ancestors``
directive; no other site may frame it.

When ``render-useragent`` is set, a browser whose ``User-Agent`` is not
exactly that is refused (403): the people who look at mails use a browser
their tracking servers know to ignore.
"""

import base64
import email
import email.parser
import email.policy
import html
import re
from urllib.parse import unquote

import bottle

from mailerq_gevent import logs

log = logs.get(__name__)

CSP = "sandbox; default-src 'none'; img-src data: cid:; frame-ancestors 'self'"
INLINE_LIMIT = 2 << 20          # bytes of cid: images inlined into one rendering
_CID = re.compile(r"""cid:([^"'\s)>]+)""", re.IGNORECASE)
_PAGE = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>%s</body></html>"


class Message:
    """One message recorded by ``live.Conversation.message`` (its MIME capped)."""

    __slots__ = ("n", "size", "sender", "recipients", "mime", "truncated")

    def __init__(self, n, size, sender, recipients, mime, truncated):
        self.n, self.size, self.sender, self.recipients = n, size, sender, recipients
        self.mime, self.truncated = mime, truncated

    def as_json(self, conversation_id):
        base = "/live/%d/%d/" % (conversation_id, self.n)
        return {"n": self.n, "size": self.size, "sender": self.sender,
                "recipients": self.recipients, "truncated": self.truncated,
                "subject": subject_of(self.mime), "mime": base + "mime", "render": base + "render"}


def install(app, context):
    guard = context.guard

    @app.get("/live/<number:int>/<n:int>/mime")
    @guard.require("page")
    def raw_mime(number, n):
        message = _message(context, number, n)
        if message is None:
            bottle.abort(404, "No such message (only the most recent ones are kept).")
        response = bottle.response
        response.content_type = "text/plain; charset=utf-8"
        response.set_header("Content-Disposition", "inline")
        return message.mime.decode("utf-8", "replace").encode("utf-8")

    @app.get("/live/<number:int>/<n:int>/render")
    @guard.require("page")
    def rendered(number, n):
        wanted = context.conf.render_useragent
        if wanted and bottle.request.get_header("User-Agent", "") != wanted:
            log.info("console.render_refused", user=bottle.request.environ.get("mq.user"))
            return _answer(403, _PAGE % "<p>Rendering refused: this browser's user agent is "
                                        "not the one set as render-useragent.</p>")
        message = _message(context, number, n)
        if message is None:
            return _answer(404, _PAGE % "<p>No such message.</p>")
        try:
            return _answer(200, html_of(message.mime))
        except Exception:  # noqa: BLE001 - a mail the parser chokes on is not a console error
            log.exception("console.render_failed", conversation=number, message=n)
            return _answer(200, _PAGE % "<p>This message could not be parsed.</p>")


def _message(context, number, n):
    conversation = context.recorder.get(number) if context.recorder else None
    return conversation.find_message(n) if conversation is not None else None


def _answer(status, body):
    response = bottle.response
    response.status = status
    response.content_type = "text/html; charset=utf-8"
    response.set_header("Content-Security-Policy", CSP)
    return body.encode("utf-8")


def html_of(mime):
    """The HTML to show for ``mime``: its HTML part as is, or its text escaped."""
    message = email.message_from_bytes(mime, policy=email.policy.default)
    part = message.get_body(preferencelist=("html", "plain"))
    if part is None:
        return _PAGE % "<p>(no text or HTML part)</p>"
    content = _content(part)
    if part.get_content_type() == "text/html":
        return _inline_images(message, content)
    return _PAGE % ("<pre>%s</pre>" % html.escape(content))


def _content(part):
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError):    # unknown charset, broken encoding
        return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")


def _inline_images(message, text):
    """``cid:`` references to images of the message itself, as ``data:`` URLs."""
    if not _CID.search(text):
        return text
    images, budget = {}, INLINE_LIMIT
    for part in message.walk():
        cid = part.get("Content-ID")
        if not cid or part.get_content_maintype() != "image":
            continue
        data = part.get_payload(decode=True) or b""
        if len(data) > budget:
            break
        budget -= len(data)
        images[str(cid).strip().strip("<>")] = "data:%s;base64,%s" % (
            part.get_content_type(), base64.b64encode(data).decode("ascii"))
    return _CID.sub(lambda found: images.get(unquote(found.group(1)), found.group(0)), text)


def subject_of(mime):
    """The decoded Subject of ``mime`` (for the lists), or ''."""
    head = mime.split(b"\r\n\r\n", 1)[0][:65536]
    try:
        parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        return str(parsed.get("Subject", ""))[:300]
    except Exception:  # noqa: BLE001 - a broken header is shown as no subject
        return ""
