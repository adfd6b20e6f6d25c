"""Reading the JSON body of a request to the console's API, bounded in size
and in time.

``read_json(limit)`` is the body as a JSON value; ``read_object(limit)`` is
that for the table editors, which also want ``Content-Type:
application/json`` and a JSON object. Refusals are ``answers.ApiError``:

* 413 past ``limit`` bytes, whether Content-Length says so or a chunked body
  turns out longer (at most ``limit + 1`` bytes are read);
* 408 when the body has not all arrived within ``READ_TIMEOUT`` seconds: a
  client that sends its headers and then trickles or stops its body would
  otherwise hold one of the ``www-connections`` request slots for as long as
  it likes. The answer says ``Connection: close`` (RFC 9110 §15.5.9) and the
  request is marked ``ABANDONED``, so that the console's server closes the
  connection instead of reading the rest of that body;
* 400 when the body is not JSON (RFC 8259), or not what ``read_object`` wants.
"""

import json

import bottle
import gevent

from mailerq_gevent.console.answers import ApiError

READ_TIMEOUT = 120.0
ABANDONED = "mq.body_abandoned"     # environ key: the rest of the body is not read


def read_object(limit):
    """The body as a JSON object, sent as ``application/json``."""
    media_type = (bottle.request.content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(400, "send a JSON object (Content-Type: application/json)")
    value = read_json(limit)
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def read_json(limit):
    """The body as a JSON value."""
    data = _read(limit)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ApiError(400, "the body is not JSON: %s" % str(error)[:120]) from None


def _read(limit):
    """The body's bytes (chunked or not), at most ``limit`` of them."""
    request = bottle.request
    if request.content_length > limit:
        raise ApiError(413, "the body is larger than %d bytes" % limit)
    if "bottle.request.body" in request.environ:        # read already (form parsing)
        body = request.body
        body.seek(0)
        data = body.read(limit + 1)
    else:
        data = _receive(request, limit)
    if len(data) > limit:
        raise ApiError(413, "the body is larger than %d bytes" % limit)
    return data


def _receive(request, limit):
    """Up to ``limit + 1`` bytes from the client within READ_TIMEOUT."""
    length = request.content_length
    if length < 0 and not request.chunked:
        return b""
    timeout = gevent.Timeout(READ_TIMEOUT)
    timeout.start()
    try:
        return request.environ["wsgi.input"].read(limit + 1 if length < 0 else length)
    except gevent.Timeout as expired:
        if expired is not timeout:
            raise
        request.environ[ABANDONED] = True
        raise ApiError(408, "the body did not arrive in time",
                       {"Connection": "close"}) from None      # RFC 9110 §15.5.9
    finally:
        timeout.close()
