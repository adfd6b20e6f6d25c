"""TLS and AUTH with real clients: Python's smtplib and swaks (Debian package)."""

import base64
import logging
import os
import shutil
import smtplib
import ssl
import subprocess

import pytest
from passlib.hash import sha512_crypt

from mailerq_gevent import authn
from mailerq_gevent.smtpd.protection import FailedLogins
from tests.smtp_support import Raw, message

PASSWORD = "Tr0ub4dor&3-secret"


def unverified():
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users"
    path.write_text("alice:%s\n" % sha512_crypt.using(rounds=5000).hash(PASSWORD))
    return path


@pytest.fixture
def guarded(smtp, users_file):
    return smtp(authenticator=authn.from_spec("file://%s" % users_file),
                smtp_secure_port=(0,), smtp_auth="file://%s" % users_file)


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode())


def test_smtplib_starttls_and_send(smtp):
    running = smtp()
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.starttls(context=unverified())
        client.ehlo()
        refused = client.sendmail("a@example.com", ["b@example.org"], message())
    assert refused == {}
    assert "with ESMTPS id" in running.queued()[0]["mime"]


def test_implicit_tls_port(guarded):
    with smtplib.SMTP_SSL("127.0.0.1", guarded.secure_port(), timeout=10,
                          context=unverified()) as client:
        code, features = client.ehlo()
        assert code == 250 and b"STARTTLS" not in features and b"AUTH PLAIN LOGIN" in features
        client.login("alice", PASSWORD)
        client.sendmail("alice@example.com", ["b@example.org"], message())
    assert "with ESMTPSA id" in guarded.queued()[0]["mime"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_after_starttls(guarded, mechanism):
    with smtplib.SMTP("127.0.0.1", guarded.port, timeout=10) as client:
        client.starttls(context=unverified())
        client.ehlo()
        client.user, client.password = "alice", PASSWORD
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, text = client.auth(mechanism, method, initial_response_ok=False)
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        assert client.sendmail("alice@example.com", ["b@example.org"], message()) == {}


def test_auth_is_not_offered_before_tls(guarded):
    client = Raw(guarded.port)
    assert b"AUTH" not in client.hello()
    assert client.command(b"AUTH PLAIN " + plain("alice", PASSWORD)) == (
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(b"RCPT TO:<b@example.org>") == b"530 5.7.0 Authentication required\r\n"


def test_plaintext_auth_on_loopback_when_allowed(smtp):
    running = smtp(authenticator=authn.from_spec("hardcoded://bob:pw"),
                   smtp_auth_plaintext=True)
    client = Raw(running.port)
    assert client.hello().endswith(b"250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
    assert client.command(b"AUTH PLAIN " + plain("bob", "pw")) == (
        b"235 2.7.0 Authentication successful\r\n")


def tls_client(port):
    client = Raw(port)
    client.hello()
    client.command(b"STARTTLS")
    client.starttls()
    client.hello()
    return client


def test_unknown_user_and_wrong_password_get_the_same_reply(guarded):
    client = tls_client(guarded.port)
    wrong = client.command(b"AUTH PLAIN " + plain("alice", "nope"))
    unknown = client.command(b"AUTH PLAIN " + plain("mallory", "nope"))
    assert wrong == unknown == b"535 5.7.8 Authentication credentials invalid\r\n"


def test_login_exchange_and_cancel(guarded):
    client = tls_client(guarded.port)
    assert client.command(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert client.command(base64.b64encode(b"alice")) == b"334 UGFzc3dvcmQ6\r\n"
    assert client.command(b"*") == b"501 5.0.0 Authentication cancelled\r\n"
    assert client.command(b"AUTH PLAIN") == b"334 \r\n"
    assert client.command(b"!!notbase64") == b"501 5.5.2 Error: cannot decode the response\r\n"
    assert client.command(b"AUTH CRAM-MD5") == (
        b"504 5.5.4 Error: unsupported authentication mechanism\r\n")


def test_three_failures_end_the_session(guarded):
    client = tls_client(guarded.port)
    for _ in range(2):
        assert client.command(b"AUTH PLAIN " + plain("alice", "bad")).startswith(b"535 ")
    assert client.command(b"AUTH PLAIN " + plain("alice", "bad")) == (
        b"421 4.7.0 Error: too many authentication failures\r\n")
    assert client.is_closed()


def test_an_address_that_keeps_failing_is_blocked(guarded):
    guarded.server.protection = FailedLogins(limit=4, window=60, cool_down=60)
    for _ in range(2):
        client = tls_client(guarded.port)
        client.command(b"AUTH PLAIN " + plain("alice", "bad"))
        client.command(b"AUTH PLAIN " + plain("alice", "bad"))
        client.close()
    blocked = Raw(guarded.port, greeting=False)
    assert blocked.reply() == (b"421 4.7.0 Error: too many failed logins from your address, "
                               b"try again later\r\n")


def test_passwords_never_reach_the_log(guarded, caplog):
    caplog.set_level(logging.DEBUG)
    client = tls_client(guarded.port)
    client.command(b"AUTH PLAIN " + plain("alice", "wrong-" + PASSWORD))
    client.command(b"AUTH PLAIN " + plain("alice", PASSWORD))
    assert "smtp.auth_failed" in caplog.text and "smtp.auth_ok" in caplog.text
    assert PASSWORD not in caplog.text
    assert plain("alice", PASSWORD).decode() not in caplog.text


def test_authenticated_clients_may_relay(guarded):
    client = tls_client(guarded.port)
    client.command(b"AUTH PLAIN " + plain("alice", PASSWORD))
    client.command(b"MAIL FROM:<alice@example.com>")
    assert client.command(b"RCPT TO:<b@example.org>") == b"250 2.1.5 Recipient OK\r\n"
    assert client.command(b"AUTH PLAIN " + plain("alice", PASSWORD)) == (
        b"503 5.5.1 Error: already authenticated\r\n")


# -- swaks, as users inject -----------------------------------------------------

@pytest.fixture
def swaks():
    path = shutil.which("swaks")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("under CI swaks must be installed (.ci/run installs it)")
        pytest.skip("swaks is not installed; install it: apt-get install swaks")

    def run(port, *args):
        out = subprocess.run([path, "--server", "127.0.0.1", "--port", str(port),
                              "--from", "alice@example.com", "--to", "b@example.org",
                              "--helo", "swaks.example", "--timeout", "10", *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout
    return run


def test_swaks_plain(smtp, swaks):
    running = smtp()
    transcript = swaks(running.port)
    assert "<-  250 2.0.0 OK queued as" in transcript
    assert running.queued()[0]["recipient"] == "b@example.org"


def test_swaks_starttls_auth_plain(guarded, swaks):
    transcript = swaks(guarded.port, "-tls", "-a", "PLAIN", "-au", "alice", "-ap", PASSWORD)
    assert "235 2.7.0 Authentication successful" in transcript
    assert len(guarded.queued()) == 1


def test_swaks_implicit_tls_auth_login(guarded, swaks):
    transcript = swaks(guarded.secure_port(), "--tlsc", "-a", "LOGIN", "-au", "alice",
                       "-ap", PASSWORD)
    assert "235 2.7.0 Authentication successful" in transcript
    assert "with ESMTPSA" in guarded.queued()[0]["mime"]


def test_swaks_pipelining(smtp, swaks):
    running = smtp()
    transcript = swaks(running.port, "--pipeline")
    assert "250 2.0.0 OK queued as" in transcript
    assert len(running.queued()) == 1
