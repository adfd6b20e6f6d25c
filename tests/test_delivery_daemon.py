"""Delivery inside the real daemon: a kill -9 while messages are being
delivered loses none of them (a duplicate is allowed, a loss is not)."""

import signal

import gevent

from mailerq_gevent.broker import Broker, codec
from tests.delivery_support import MIME
from tests.smtp_sink import SmtpSink
from tests.test_daemon import daemon, write_config  # noqa: F401 - the daemon fixture
from tests.waiting import wait_until

COUNT = 300


def subjects(sink):
    return {m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages}


def test_kill_9_during_delivery_loses_nothing(tmp_path, daemon):  # noqa: F811
    sink = SmtpSink(data_delay=0.02).start()
    broker = Broker("sqlite:///%s" % (tmp_path / "queue.sqlite"))
    broker.start(["outbox"])
    for number in range(COUNT):
        mime = MIME.replace(b"Subject: hello", b"Subject: m%d" % number)
        broker.publish("outbox", codec.encode({
            "envelope": "sender@origin.test", "recipient": "rcpt@example.test",
            "mime": mime.decode()}))
    broker.stop(5)        # the daemon must have the queue file to itself
    conf = write_config(tmp_path, "relay: 127.0.0.1:%d\nsmtp-connections-out: 20\n" % sink.port)
    try:
        first = daemon(conf)
        wait_until(lambda: len(sink.messages) >= COUNT // 4, timeout=30)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert len(subjects(sink)) < COUNT          # killed in the middle
        second = daemon(conf)
        wait_until(lambda: len(subjects(sink)) == COUNT, timeout=60)
        assert subjects(sink) == {"m%d" % n for n in range(COUNT)}
        assert second.stop() == 0
    finally:
        gevent.spawn(sink.stop).join(5)
