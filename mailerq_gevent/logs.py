"""Logs a machine can read: one line per event, ``event=name key=value ...``.

Usage::

    log = logs.get(__name__)
    log.info("reload.done", tables=13, ms=4.2)

Values containing spaces, quotes or ``=`` are quoted. Nothing here ever
formats a password: callers must not pass secrets (AUTH data is redacted
before it reaches a logger).
"""

import logging
import re
import sys
import time

import gevent

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


_NEEDS_QUOTES = re.compile(r'[ "=\t\r\n]')


def _quote(value):
    text = value if type(value) is str else str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\r", "\\r").replace("\n", "\\n")
        return '"%s"' % escaped
    return text


def format_event(event, fields):
    """Return ``event=<event> k=v ...`` for one log line."""
    return " ".join(["event=" + _quote(event)] +
                    [key + "=" + _quote(value) for key, value in fields.items()])


class EventLogger:
    """A thin wrapper over :class:`logging.Logger` taking ``event, **fields``."""

    def __init__(self, name):
        self.logger = logging.getLogger(name)

    def _emit(self, level, event, fields, exc_info=False):
        logger = self.logger
        if not exc_info and _direct is not None and _direct.takes(logger):
            if logger.isEnabledFor(level):
                _direct.write(level, logger.name, format_event(event, fields))
            return
        if logger.isEnabledFor(level):
            # the record is made here, without logging's search of the call
            # stack for the caller (the format does not show it): a daemon
            # logging every message feels the difference
            if exc_info:
                exc_info = sys.exc_info()
            record = logger.makeRecord(logger.name, level, "", 0, format_event(event, fields),
                                       (), exc_info or None)
            logger.handle(record)

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


_direct = None      # the handler ``setup`` installed: lines go straight to it when they may


def get(name):
    """Return the event logger for module ``name``."""
    return EventLogger(name)


FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


class _Formatter(logging.Formatter):
    """The time stamp is formatted once a second, not once a line."""

    _second, _stamp = None, ""

    def formatTime(self, record, datefmt=None):
        return self.stamp(record.created)

    def stamp(self, created):
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S",
                                                             time.localtime(second))
        return "%s,%03d" % (self._stamp, (created - second) * 1000)


class BufferedHandler(logging.StreamHandler):
    """Lines are gathered and written together, at most ``interval`` seconds
    late (a warning or worse, at once), so a daemon logging every message does
    not make a system call per line. A ``kill -9`` loses at most that much."""

    def __init__(self, stream, interval=0.2, limit=1000):
        super().__init__(stream)
        self.interval, self.limit = interval, limit
        self._pending = []
        self._timer = None

    def emit(self, record):
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 - logging must never raise (as logging itself)
            self.handleError(record)
            return
        self._written(record.levelno)

    def takes(self, logger):
        """Whether a line of ``logger`` would reach this handler and nothing else
        (no handler or filter of its own on the way to the root)."""
        root = logging.root
        if len(root.handlers) != 1 or root.handlers[0] is not self:
            return False
        while logger is not root:
            if logger.handlers or logger.filters or not logger.propagate:
                return False
            logger = logger.parent
        return True

    def write(self, level, name, message):
        """The line ``emit`` would write for a record, made without the record:
        logging's LogRecord (thread, process, caller) costs more than the line."""
        self._pending.append(FORMAT % {
            "asctime": self.formatter.stamp(time.time()),
            "levelname": logging.getLevelName(level), "name": name, "message": message,
        } + self.terminator)
        self._written(level)

    def _written(self, level):
        if level >= logging.WARNING or len(self._pending) >= self.limit:
            self.flush()
        elif self._timer is None:
            self._timer = gevent.get_hub().loop.timer(self.interval)
            self._timer.start(self.flush)

    def flush(self):
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._pending:
            data, self._pending = "".join(self._pending), []
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                pass


def setup(level="info", stream=None):
    """Configure the root logger: ``time level logger event=... k=v`` lines.
    Returns the handler it installed (lines go straight to it when they may)."""
    global _direct
    handler = BufferedHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(FORMAT))
    # the format shows no thread or process: do not look them up for every
    # record (under gevent a thread lookup makes a dummy thread per greenlet)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    _direct = handler
    return handler
