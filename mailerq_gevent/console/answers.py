"""How the console's JSON API answers, success or refusal: one exception,
one route decorator.

A route decorated with ``json_route`` returns a JSON value (200) or
``(status, value)``, or raises ``ApiError(status, text, headers, **fields)``:
that answer is ``{**fields, "error": text}`` (no ``error`` when ``text`` is
None, as for ``{"errors": {column: text}}``) with the given headers (``Allow``
on a 405, say). Code that is not a JSON route of its own (the login guard,
the 404/405 handler of ``/api/``, the live stream's refusals) answers with
``ApiError(...).answer()``. Every answer is ``application/json``; dates and
datetimes are written in ISO 8601.
"""

import functools
import json
from datetime import date, datetime

import bottle

CONTENT_TYPE = "application/json"


class ApiError(Exception):
    """A refusal: HTTP ``status``, ``{"error": text}`` plus ``fields``, ``headers``."""

    def __init__(self, status, text=None, headers=None, **fields):
        super().__init__(text if text is not None else status)
        self.status, self.text, self.headers, self.fields = status, text, headers or {}, fields

    def payload(self):
        return self.fields if self.text is None else dict(self.fields, error=self.text)

    def answer(self):
        """Set the status and headers on ``bottle.response``; the JSON body."""
        for name, value in self.headers.items():
            bottle.response.set_header(name, value)
        return _send(self.payload(), self.status)


def json_route(callback):
    """Decorator: encode what ``callback`` returns as JSON, its ApiError as a refusal."""
    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            result = callback(*args, **kwargs)
        except ApiError as error:
            return error.answer()
        status, value = result if isinstance(result, tuple) else (200, result)
        return _send(value, status)
    return wrapper


def _send(value, status=200):
    """``value`` as the JSON body of an answer with ``status``."""
    response = bottle.response
    response.status = status
    response.content_type = CONTENT_TYPE
    return json.dumps(value, default=_jsonable)


def _jsonable(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError("%r is not JSON" % type(value))
