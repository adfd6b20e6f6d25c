"""The daemon as a user runs it: a real child process, its config, its signals.

``daemon(conf_path, *args)`` (a fixture) starts ``python -m mailerq_gevent``;
``write_config(tmp_path, extra)`` writes a config file for it.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30


def write_config(tmp_path, extra=""):
    path = tmp_path / "mailerq.conf"
    path.write_text(
        "database: sqlite:///%s\n"
        "rabbitmq-address: sqlite:///%s\n"
        "rabbitmq-inbox: outbox\n"
        "smtp-port:\n"
        "www-port:\n"
        "log-level: debug\n%s" % (tmp_path / "db.sqlite", tmp_path / "queue.sqlite", extra))
    return path


class Daemon:
    """``python -m mailerq_gevent`` in a child process, its log in a file."""

    def __init__(self, tmp_path, conf, *args):
        self.log_path = tmp_path / "daemon.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailerq_gevent", "--config", str(conf), *args],
            cwd=tmp_path, stdout=self.log, stderr=subprocess.STDOUT)

    def text(self):
        return self.log_path.read_text()

    def wait_for(self, needle, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                pytest.fail("daemon exited %s before %r:\n%s" % (
                    self.proc.returncode, needle, self.text()))
            time.sleep(0.05)
        pytest.fail("no %r within %ss:\n%s" % (needle, timeout, self.text()))

    def stop(self, signum=signal.SIGTERM, timeout=30):
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def daemon(tmp_path):
    started = []

    def start(conf, *args):
        started.append(Daemon(tmp_path, conf, *args))
        return started[-1]
    yield start
    for proc in started:
        proc.close()
