"""The SMTP server inside the real daemon: swaks into it puts JSON in the queue,
and a kill -9 right after 250 replies loses none of those messages."""

import json
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess

import gevent
import pytest

from tests.smtp_support import message
from tests.test_daemon import daemon, write_config  # noqa: F401 - the daemon fixture


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(tmp_path, daemon):  # noqa: F811
    port = free_port()
    conf = write_config(tmp_path, "smtp-port: %d\nsmtp-ip: 127.0.0.1\n" % port)
    conf.write_text(conf.read_text().replace("smtp-port:\n", "").replace(
        "rabbitmq-inbox: outbox\n", "rabbitmq-inbox: inbox\n"))
    proc = daemon(conf)
    proc.wait_for("event=smtp.listening")
    return proc, port


def queued(tmp_path):
    with sqlite3.connect(str(tmp_path / "queue.sqlite")) as conn:
        rows = conn.execute("SELECT body FROM messages WHERE queue = 'inbox'").fetchall()
    return [json.loads(row[0]) for row in rows]


def test_swaks_into_the_daemon_queues_json(tmp_path, daemon):  # noqa: F811
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed; install it: apt-get install swaks")
    proc, port = start(tmp_path, daemon)
    out = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--from",
                          "a@example.com", "--to", "b@example.org", "--header",
                          "X-MQ-Tag: swaks"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    assert proc.stop() == 0
    [queued_json] = queued(tmp_path)
    assert queued_json["recipient"] == "b@example.org" and queued_json["tags"] == ["swaks"]


def test_kill_9_right_after_250_loses_nothing(tmp_path, daemon):  # noqa: F811
    proc, port = start(tmp_path, daemon)
    accepted = []

    def inject(worker):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for number in range(10000):
                try:
                    client.sendmail("a@example.com", ["b@example.org"],
                                    message(subject="w%d-%d" % (worker, number)))
                except (smtplib.SMTPException, OSError):
                    return
                accepted.append("w%d-%d" % (worker, number))
    workers = [gevent.spawn(inject, worker) for worker in range(10)]
    while len(accepted) < 500:
        gevent.sleep(0.01)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)
    gevent.joinall(workers, timeout=30)
    subjects = {m["mime"].split("Subject: ")[1].split("\r\n")[0] for m in queued(tmp_path)}
    assert set(accepted) <= subjects
    assert len(accepted) >= 500
