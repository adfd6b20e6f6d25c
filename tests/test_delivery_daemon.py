"""Delivery inside the real daemon: a kill -9 while messages are being
delivered loses none of them (a duplicate is allowed, a loss is not)."""

import signal

import gevent

from mailerq_gevent.broker import Broker, codec
from tests.daemon_support import write_config
from tests.delivery_support import MIME
from tests.smtp_sink import SmtpSink
from tests.waiting import wait_until

COUNT = 300


def subjects(sink):
    return {m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages}


def test_kill_9_during_delivery_loses_nothing(tmp_path, daemon):
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


def test_mail_received_by_smtp_workers_is_delivered_by_the_daemon(tmp_path, daemon):
    """With smtp-threads 3 the two workers commit into the daemon's queue file
    themselves; their commit notices wake the daemon's senders at once."""
    import smtplib

    from tests.smtp_sink import free_port
    sink = SmtpSink().start()
    port = free_port()
    conf = write_config(tmp_path, "relay: 127.0.0.1:%d\nsmtp-port: %d\nsmtp-ip: 127.0.0.1\n"
                                  "smtp-threads: 3\n" % (sink.port, port))
    conf.write_text(conf.read_text().replace("smtp-port:\n", ""))
    try:
        proc = daemon(conf)
        proc.wait_for("event=smtp.workers_started")
        wait_until(lambda: proc.text().count("event=smtp.worker_started") == 2, timeout=30)
        for number in range(40):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("sender@origin.test", ["rcpt@example.test"],
                                MIME.replace(b"Subject: hello", b"Subject: w%d" % number))
        wait_until(lambda: len(subjects(sink)) == 40, timeout=30)
        assert subjects(sink) == {"w%d" % n for n in range(40)}
        assert proc.stop() == 0
    finally:
        gevent.spawn(sink.stop).join(5)
