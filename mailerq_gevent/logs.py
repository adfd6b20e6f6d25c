"""Logs a machine can read: one line per event, ``event=name key=value ...``.

Usage::

    log = logs.get(__name__)
    log.info("reload.done", tables=13, ms=4.2)

Values containing spaces, quotes or ``=`` are quoted. Nothing here ever
formats a password: callers must not pass secrets (AUTH data is redacted
before it reaches a logger).
"""

import logging
import sys

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _quote(value):
    text = str(value)
    if text == "" or any(c in text for c in ' "=\t\r\n'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\r", "\\r").replace("\n", "\\n")
        return '"%s"' % escaped
    return text


def format_event(event, fields):
    """Return ``event=<event> k=v ...`` for one log line."""
    parts = ["event=" + _quote(event)]
    parts.extend("%s=%s" % (key, _quote(value)) for key, value in fields.items())
    return " ".join(parts)


class EventLogger:
    """A thin wrapper over :class:`logging.Logger` taking ``event, **fields``."""

    def __init__(self, name):
        self.logger = logging.getLogger(name)

    def _emit(self, level, event, fields, exc_info=False):
        if self.logger.isEnabledFor(level):
            self.logger.log(level, format_event(event, fields), exc_info=exc_info)

    def debug(self, event, **fields):
        self._emit(logging.DEBUG, event, fields)

    def info(self, event, **fields):
        self._emit(logging.INFO, event, fields)

    def warning(self, event, **fields):
        self._emit(logging.WARNING, event, fields)

    def error(self, event, **fields):
        self._emit(logging.ERROR, event, fields)

    def exception(self, event, **fields):
        """Log at ERROR with the current traceback."""
        self._emit(logging.ERROR, event, fields, exc_info=True)


def get(name):
    """Return the event logger for module ``name``."""
    return EventLogger(name)


def setup(level="info", stream=None):
    """Configure the root logger: ``time level logger event=... k=v`` lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
