"""The SMTP server inside the real daemon: swaks into it puts JSON in the queue,
and a kill -9 right after 250 replies loses none of those messages."""

import json
import shutil
import signal
import smtplib
import subprocess

import gevent
import pytest

from mailerq_gevent.broker.storage import list_messages
from tests.daemon_support import write_config
from tests.smtp_sink import free_port
from tests.smtp_support import message
from tests.waiting import wait_until


def start(tmp_path, daemon):
    port = free_port()
    conf = write_config(tmp_path, "smtp-port: %d\nsmtp-ip: 127.0.0.1\n" % port)
    conf.write_text(conf.read_text().replace("smtp-port:\n", "").replace(
        "rabbitmq-inbox: outbox\n", "rabbitmq-inbox: inbox\n"))
    proc = daemon(conf)
    proc.wait_for("event=smtp.listening")
    return proc, port


def queued(tmp_path):
    """The inbox's ready messages in the daemon's queue file (read-only: the daemon owns it)."""
    return [json.loads(row.body) for row in list_messages(str(tmp_path / "queue.sqlite"), "inbox")
            if not row.not_before]


def test_swaks_into_the_daemon_queues_json(tmp_path, daemon):
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


def test_kill_9_right_after_250_loses_nothing(tmp_path, daemon):
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


def start_workers(tmp_path, daemon, extra=""):
    port = free_port()
    conf = write_config(tmp_path, "smtp-port: %d\nsmtp-ip: 127.0.0.1\nsmtp-threads: 3\n%s"
                        % (port, extra))
    text = conf.read_text().replace("smtp-port:\n", "").replace(
        "rabbitmq-inbox: outbox\n", "rabbitmq-inbox: inbox\n")
    if "www-port: " in extra:
        text = text.replace("www-port:\n", "")
    conf.write_text(text)
    proc = daemon(conf)
    proc.wait_for("event=smtp.workers_started")
    # the daemon says its workers started once every one of them listens
    assert "event=smtp.worker_started index=0" in proc.text()
    assert "event=smtp.worker_started index=1" in proc.text()
    return proc, port


def worker_pids(proc):
    out = subprocess.run(["pgrep", "-P", str(proc.proc.pid), "-f", "smtpd.worker"],
                         capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def send_many(port, count, tag):
    accepted = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for number in range(count):
            client.sendmail("a@example.com", ["b@example.org"],
                            message(subject="%s-%d" % (tag, number)))
            accepted.append("%s-%d" % (tag, number))
    return accepted


def test_smtp_threads_run_sessions_in_worker_processes(tmp_path, daemon):
    proc, port = start_workers(tmp_path, daemon)
    assert len(worker_pids(proc)) == 2
    greenlets = [gevent.spawn(send_many, port, 30, "c%d" % n) for n in range(6)]
    gevent.joinall(greenlets, raise_error=True)
    assert proc.stop() == 0
    assert worker_pids(proc) == []
    subjects = sorted(m["mime"].split("Subject: ")[1].split("\r\n")[0] for m in queued(tmp_path))
    assert subjects == sorted(s for g in greenlets for s in g.value)
    assert "event=smtp.worker_stopped index=0" in proc.text()


def test_a_worker_that_dies_is_started_again(tmp_path, daemon):
    proc, port = start_workers(tmp_path, daemon)
    victim = worker_pids(proc)[0]
    subprocess.run(["kill", "-9", str(victim)], check=True)
    proc.wait_for("event=smtp.worker_died")
    deadline = gevent.Timeout(30)
    with deadline:
        while len(worker_pids(proc)) < 2 or victim in worker_pids(proc):
            gevent.sleep(0.1)
    assert send_many(port, 5, "after") and proc.stop() == 0
    assert len(queued(tmp_path)) == 5


def test_workers_exit_when_the_daemon_is_killed(tmp_path, daemon):
    proc, port = start_workers(tmp_path, daemon)
    workers = worker_pids(proc)
    accepted = send_many(port, 20, "before")
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)
    with gevent.Timeout(30):
        while any(subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0
                  for pid in workers):
            gevent.sleep(0.1)
    subjects = {m["mime"].split("Subject: ")[1].split("\r\n")[0] for m in queued(tmp_path)}
    assert set(accepted) <= subjects


def test_sessions_in_worker_processes_reach_the_live_view(tmp_path, daemon):
    import requests
    www = free_port()
    proc, port = start_workers(tmp_path, daemon, "www-port: %d\nwww-ip: 127.0.0.1\n"
                               "www-auth: hardcoded://a:b\nwww-api-token: t0ken\n" % www)
    api, auth = "http://127.0.0.1:%d/api/live" % www, {"Authorization": "Bearer t0ken"}
    proc.wait_for("event=console.listening")
    with requests.get(api + "/stream", headers=auth, stream=True, timeout=30) as stream:
        assert stream.status_code == 200        # somebody watches: every session is sent
        for index in (0, 1):
            proc.wait_for("event=smtp.live_watched index=%d watched=True" % index)
        sent = [send_many(port, 1, "live-%d" % n)[0] for n in range(4)]

        def incoming():
            listed = requests.get(api, headers=auth, timeout=10).json()
            return [c for c in listed if c["direction"] == "in" and c["ended"]]
        wait_until(lambda: len(incoming()) == 4)
    details = [requests.get(api + "/%d" % c["id"], headers=auth, timeout=10).json()
               for c in incoming()]
    subjects = sorted(d["messages"][0]["subject"] for d in details)
    assert subjects == sorted(sent)
    assert all(d["messages"][0]["recipients"] == ["b@example.org"] for d in details)
    assert proc.stop() == 0
