"""A real SpamAssassin ``spamd`` on loopback for the tests.

The ``spamd`` fixture (one per test session) starts Debian's /usr/sbin/spamd
on 127.0.0.1 and a free port, local tests only (``--local``: no network
tests), no per-user config, one child; it waits until spamd answers PING and
stops it at teardown. A test module imports ``spamd_fixture`` (the argument
``spamd`` then does not shadow the import). Without spamd the tests that need
it are skipped with a reason saying how to get it; under CI (``CI=true``)
that is a failure instead, as in ``tests/services.py``.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.smtp_sink import free_port

SPAMD = "/usr/sbin/spamd"
HOW = "apt-get install spamassassin spamd"
START_TIMEOUT = 60.0   # loading the rules can take a while on a cold machine


class Spamd:
    """A running spamd: ``.host``, ``.port``, ``.startup_seconds``."""

    host = "127.0.0.1"

    def __init__(self, proc, port, startup_seconds):
        self.proc, self.port, self.startup_seconds = proc, port, startup_seconds


def unavailable(why):
    """Skip (under CI, fail) because spamd cannot be used."""
    message = "spamd not available (%s); %s" % (why, HOW)
    if os.environ.get("CI") == "true":
        pytest.fail("under CI every service must run: " + message)
    pytest.skip(message)


def ping(port, timeout=2.0):
    """True when spamd answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
            return b"PONG" in sock.recv(100)
    except OSError:
        return False


def command(port, pidfile):
    args = [SPAMD, "--listen", "127.0.0.1:%d" % port, "--max-children", "1",
            "--min-children", "1", "--nouser-config", "--local", "--syslog", "stderr",
            "--pidfile", str(pidfile)]
    if os.geteuid() == 0:   # spamd will not run child processes as root
        args += ["--username", "nobody", "--groupname", "nogroup"]
    return args


def stop(proc):
    """Stop spamd and wait until its children are gone too (they are in the
    process group that spamd leads: ``start_new_session``)."""
    if proc.poll() is None:
        proc.terminate()   # spamd's parent stops its children on SIGTERM
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid):
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="session", name="spamd")
def spamd_fixture(tmp_path_factory):
    """A running :class:`Spamd` (import ``spamd_fixture`` to use ``spamd``)."""
    if not os.access(SPAMD, os.X_OK):
        unavailable("%s is not installed" % SPAMD)
    workdir = tmp_path_factory.mktemp("spamd")
    port, log_path = free_port(), workdir / "spamd.log"
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(command(port, workdir / "spamd.pid"), stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        while not ping(port):
            if proc.poll() is not None or time.monotonic() - started > START_TIMEOUT:
                tail = log_path.read_text(errors="replace")[-500:]
                unavailable("it did not answer on port %d: %s" % (port, tail))
            time.sleep(0.1)
        yield Spamd(proc, port, time.monotonic() - started)
    finally:
        stop(proc)
