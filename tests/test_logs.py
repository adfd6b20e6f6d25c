"""Log lines: ``time level=... logger=... event=... k=v``, the same whether a line
goes straight to the daemon's handler or through logging's records."""

import io
import logging
import re

import pytest

from mailerq_gevent import logs

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} level=INFO logger=mq\.test "
                  r'event=smtp\.queued id=7 who="a b" size=10$')


@pytest.fixture
def configured():
    saved = logging.root.handlers[:], logging.root.level
    stream = io.StringIO()
    handler = logs.setup("info", stream=stream)
    stream.handler = handler
    yield stream
    logging.root.handlers[:], _ = saved[0], logging.root.setLevel(saved[1])


def test_a_line_straight_to_the_handler_has_the_documented_form(configured):
    log = logs.get("mq.test")
    pytest_handlers = logging.root.handlers[:]      # pytest's own capture, for this test
    logging.root.handlers[:] = [configured.handler]
    try:
        assert configured.handler.takes(log.logger)
        log.info("smtp.queued", id=7, who="a b", size=10)
        log.debug("not.shown")
    finally:
        logging.root.handlers[:] = pytest_handlers
    configured.handler.flush()
    assert [LINE.match(line) is not None for line in configured.getvalue().splitlines()] == [True]


def test_with_another_handler_the_record_path_writes_the_same_line(configured):
    other = logging.StreamHandler(io.StringIO())
    logging.root.addHandler(other)
    try:
        log = logs.get("mq.test")
        assert not configured.handler.takes(log.logger)
        log.info("smtp.queued", id=7, who="a b", size=10)
        configured.handler.flush()
    finally:
        logging.root.removeHandler(other)
    assert LINE.match(configured.getvalue().strip())
    assert other.stream.getvalue().strip().endswith('event=smtp.queued id=7 who="a b" size=10')


def test_warnings_are_written_at_once(configured):
    logs.get("mq.test").warning("broker.down", detail="x")
    assert "level=WARNING logger=mq.test event=broker.down detail=x" in configured.getvalue()
