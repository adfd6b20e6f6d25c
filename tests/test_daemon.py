"""The daemon as a user runs it: a real child process, its config, its signals."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_support import START_TIMEOUT, write_config
from tests.waiting import wait_until


def tables(path):
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_starts_creates_schema_and_stops_on_signal(tmp_path, daemon, signum):
    proc = daemon(write_config(tmp_path))
    proc.wait_for("event=daemon.started")
    assert {"capacity", "dkim_keys", "deliveries_total", "ips"} <= tables(tmp_path / "db.sqlite")
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM ips").fetchone()[0] >= 1
    assert proc.stop(signum) == 0
    assert "event=daemon.stopped" in proc.text()


def test_bad_config_exits_2_before_anything_starts(tmp_path, daemon):
    conf = write_config(tmp_path, "smtp-maxsize: lots\n")
    proc = daemon(conf)
    assert proc.proc.wait(START_TIMEOUT) == 2
    assert "%s:7: smtp-maxsize: 'lots' is not a size" % conf in proc.text()
    assert not (tmp_path / "db.sqlite").exists()


def test_check_config(tmp_path):
    good = subprocess.run([sys.executable, "-m", "mailerq_gevent", "--config",
                           str(write_config(tmp_path)), "--check-config"],
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    assert good.returncode == 0 and good.stdout.endswith(": ok\n")
    assert not (tmp_path / "db.sqlite").exists()


def test_purge_database_drops_rows(tmp_path, daemon):
    conf = write_config(tmp_path)
    proc = daemon(conf)
    proc.wait_for("event=daemon.started")
    assert proc.stop() == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("INSERT INTO capacity (domain, domain_maxmessages) VALUES ('a.example', 5)")
    proc = daemon(conf)
    proc.wait_for("event=daemon.started")
    assert proc.stop() == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM capacity").fetchone()[0] == 1
    proc = daemon(conf, "--purge-database")
    proc.wait_for("event=daemon.started")
    assert proc.stop() == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM capacity").fetchone()[0] == 0


def test_unreachable_database_keeps_daemon_up(tmp_path, daemon):
    """A database that cannot be reached is logged and retried; the daemon stays up."""
    conf = write_config(tmp_path).read_text().replace(
        "database: sqlite:///%s" % (tmp_path / "db.sqlite"),
        "database: postgresql://nobody@127.0.0.1:1/none")
    path = tmp_path / "broken.conf"
    path.write_text(conf)
    proc = daemon(path)
    proc.wait_for("event=daemon.started")
    proc.wait_for("level=ERROR")
    assert proc.proc.poll() is None
    assert proc.stop() == 0


def test_run_as_module_and_script_agree():
    script = Path(sys.executable).parent / "mailerq-gevent"
    if not script.exists():
        pytest.skip("the console script is installed by `make test` (pip install -e .)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                         timeout=START_TIMEOUT, env=dict(os.environ))
    assert out.returncode == 0 and "--purge-database" in out.stdout


@pytest.mark.parametrize("threads", [1, 3])
def test_the_console_reports_open_connections(tmp_path, daemon, threads):
    """The daemon wires its SMTP server (or its SMTP worker processes, which
    tell it their sessions) and its senders into the console's status."""
    import socket

    import requests

    from tests.smtp_sink import free_port
    www, smtp = free_port(), free_port()
    conf = write_config(tmp_path, "www-port: %d\nwww-ip: 127.0.0.1\nwww-auth: hardcoded://a:b\n"
                                  "www-api-token: t0ken\nsmtp-port: %d\nsmtp-ip: 127.0.0.1\n"
                                  "smtp-threads: %d\n" % (www, smtp, threads))
    conf.write_text(conf.read_text().replace("www-port:\n", "").replace("smtp-port:\n", ""))
    proc = daemon(conf)
    proc.wait_for("event=console.listening")
    if threads > 1:
        proc.wait_for("event=smtp.workers_started count=2")

    def status():
        return requests.get("http://127.0.0.1:%d/api/status" % www, timeout=10,
                            headers={"Authorization": "Bearer t0ken"}).json()["connections"]

    clients = [socket.create_connection(("127.0.0.1", smtp)) for _ in range(3)]
    try:
        for client in clients:
            assert client.recv(100).startswith(b"220")
        wait_until(lambda: status() == {"inbound": 3, "outbound": 0, "idle": 0}, timeout=10)
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: status()["inbound"] == 0, timeout=10)
    assert proc.stop() == 0
