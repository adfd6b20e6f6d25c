"""Tests for ``mailerq_gevent.authn``: the spec registry, ``hardcoded://`` and
``file://`` (with real hashes from passlib and, where installed, openssl)."""

import hmac
import logging
import os
import shutil
import subprocess
import sys
import time

import gevent
import pytest
from passlib.hash import bcrypt, md5_crypt, sha256_crypt, sha512_crypt

from mailerq_gevent import authn
from mailerq_gevent.authn import hardcoded
from mailerq_gevent.authn.base import Authenticator
from mailerq_gevent.authn.passwd_file import PasswdFile
from tests.clock import FakeClock

SECRET = "S3cret-pass!word"


def write_users(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    # Make sure the stamp changes even on a coarse-mtime file system.
    stamp = time.time_ns() + 10 ** 9 * write_users.bump
    os.utime(path, ns=(stamp, stamp))
    write_users.bump += 1


write_users.bump = 1


def open_file(path, clock=None):
    return PasswdFile.open(str(path), clock=clock or FakeClock())


@pytest.fixture
def log_text(caplog):
    caplog.set_level(logging.DEBUG)
    return lambda: caplog.text


# -- the registry -------------------------------------------------------------

def test_empty_spec_means_no_auth():
    assert authn.from_spec("") is None


@pytest.mark.parametrize("spec", [
    "ldap://ldap.example.com/dc=example,dc=com", "ldaps://ldap.example.com/dc=x",
    "radius://secret@radius.example.com", "users://user1,mailerq,client*",
    "http://auth.example.com/check", "https://auth.example.com/check", "exec:///usr/bin/check",
])
def test_schemes_not_built_yet_are_refused_by_name(spec):
    scheme = spec.split(":")[0]
    with pytest.raises(authn.AuthConfigError) as err:
        authn.from_spec(spec)
    assert str(err.value).startswith(scheme + ":// is not supported yet by this build")
    assert "hardcoded://" in str(err.value) and "file://" in str(err.value)
    assert "secret" not in str(err.value)


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(authn.AuthConfigError, match="'pam' is not an authentication scheme"
                       ".*ldap://.*available in this build: hardcoded://, file://"):
        authn.from_spec("pam://login")


@pytest.mark.parametrize("spec", ["hardcoded", "user:pass", "://x"])
def test_a_spec_without_scheme_is_refused(spec):
    with pytest.raises(authn.AuthConfigError, match="not an authentication scheme URL"):
        authn.from_spec(spec)


def test_scheme_is_case_insensitive():
    assert authn.from_spec("HardCoded://alice:pw").check("alice", "pw")


# -- hardcoded:// --------------------------------------------------------------

def test_hardcoded_accepts_right_pairs_only():
    auth = authn.from_spec("hardcoded://alice:wonderland,bob:builder")
    assert auth.check("alice", "wonderland")
    assert auth.check("bob", "builder")
    assert not auth.check("alice", "builder")
    assert not auth.check("alice", "wonderlan")
    assert not auth.check("alice", "wonderland2")
    assert not auth.check("carol", "wonderland")
    assert not auth.check("Alice", "wonderland")


def test_hardcoded_password_may_contain_colons():
    auth = authn.from_spec("hardcoded://alice:a:b:c")
    assert auth.check("alice", "a:b:c")
    assert not auth.check("alice", "a")


def test_hardcoded_percent_decoding():
    auth = authn.from_spec("hardcoded://al%40ice%3A1:p%2Cw%25%20x,%C3%A9mile:caf%C3%A9")
    assert auth.check("al@ice:1", "p,w% x")
    assert auth.check("émile", "café")
    assert not auth.check("al%40ice%3A1", "p%2Cw%25%20x")


@pytest.mark.parametrize("spec, message", [
    ("hardcoded://username:password,username2,password2", "entry 2 has no ':'"),
    ("hardcoded://", "entry 1 has no ':'"),
    ("hardcoded://alice:pw,", "entry 2 has no ':'"),
    ("hardcoded://:password9", "entry 1 has an empty user"),
    ("hardcoded://alice:", "entry 1 has an empty password"),
    ("hardcoded://alice:pw1,alice:password9", "entry 2 lists user 'alice' a second time"),
    ("hardcoded://alice:100%password9", "'%' not followed by two hex digits"),
    ("hardcoded://alice:%ffpassword9", "not UTF-8"),
])
def test_hardcoded_malformed_specs(spec, message):
    with pytest.raises(authn.AuthConfigError) as err:
        authn.from_spec(spec)
    assert message in str(err.value)
    for secret in ("password2", "password9"):
        assert secret not in str(err.value)


def test_hardcoded_describe_redacts_passwords():
    auth = authn.from_spec("hardcoded://alice:wonderland,b%2Cob:builder")
    assert auth.describe() == "hardcoded://alice:***,b%2Cob:***"
    assert "wonderland" not in repr(auth) and "builder" not in repr(auth)


def test_hardcoded_unknown_user_costs_a_comparison_too(monkeypatch):
    auth = authn.from_spec("hardcoded://alice:wonderland")
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hardcoded.hmac, "compare_digest", spy)
    assert not auth.check("nobody", "wonderland")
    assert not auth.check("alice", "x")
    assert compared == [(32, 32), (32, 32)]


# -- the base contract ---------------------------------------------------------

@pytest.mark.parametrize("username, password", [
    ("", "pw"), ("alice", ""), ("a\0lice", "pw"), ("alice", "p\0w"),
    ("x" * 257, "pw"), ("alice", "p" * 1025), ("alice", "\ud800"),
])
def test_implausible_input_fails_without_error(username, password):
    assert not authn.from_spec("hardcoded://alice:pw").check(username, password)


def test_arguments_must_be_text():
    auth = authn.from_spec("hardcoded://alice:pw")
    with pytest.raises(TypeError):
        auth.check(b"alice", "pw")
    with pytest.raises(TypeError):
        auth.check("alice", b"pw")


class _Slow(Authenticator):
    scheme = "slow"

    def _verify(self, username, secret):
        gevent.sleep(5)
        return True


class _Broken(Authenticator):
    scheme = "broken"

    def _verify(self, username, secret):
        raise ValueError("boom " + secret.decode())


def test_check_is_bounded_by_timeout(log_text):
    started = time.monotonic()
    assert not _Slow(timeout=0.05).check("alice", SECRET)
    assert time.monotonic() - started < 1
    assert "event=authn.timeout scheme=slow seconds=0.05" in log_text()


def test_outer_timeout_is_not_swallowed():
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            _Slow(timeout=10).check("alice", SECRET)


def test_unexpected_error_fails_closed_and_logs_type_only(log_text):
    assert not _Broken().check("alice", SECRET)
    assert "event=authn.error scheme=broken error=ValueError" in log_text()
    assert SECRET not in log_text()


def test_failure_log_names_user_and_scheme_never_password(log_text):
    auth = authn.from_spec("hardcoded://alice:" + SECRET)
    assert not auth.check("alice", SECRET + "x")
    assert not auth.check("mallory with space", SECRET)
    assert auth.check("alice", SECRET)
    text = log_text()
    assert "event=authn.failed user=alice scheme=hardcoded" in text
    assert 'event=authn.failed user="mallory with space" scheme=hardcoded' in text
    assert SECRET not in text
    assert text.count("authn.failed") == 2


# -- file:// -------------------------------------------------------------------

PASSLIB_HASHERS = {
    "sha512_crypt": sha512_crypt.using(rounds=5000),
    "sha512_crypt_rounds": sha512_crypt.using(rounds=6000),
    "sha256_crypt": sha256_crypt.using(rounds=5000),
    "md5_crypt": md5_crypt,
    "bcrypt_2b": bcrypt.using(rounds=4, ident="2b"),
    "bcrypt_2y": bcrypt.using(rounds=4, ident="2y"),
    "bcrypt_2a": bcrypt.using(rounds=4, ident="2a"),
}


@pytest.mark.parametrize("kind", sorted(PASSLIB_HASHERS))
def test_file_with_each_passlib_hash(tmp_path, kind):
    hashed = PASSLIB_HASHERS[kind].hash(SECRET)
    path = tmp_path / "users"
    write_users(path, ["alice:" + hashed])
    auth = authn.from_spec("file://" + str(path))
    assert auth.check("alice", SECRET)
    assert not auth.check("alice", SECRET + "x")
    assert not auth.check("bob", SECRET)


@pytest.mark.parametrize("flag, prefix", [("-6", "$6$"), ("-5", "$5$"), ("-1", "$1$")])
def test_file_with_openssl_passwd_hashes(tmp_path, flag, prefix):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no openssl passwd hashes to test with")
    hashed = subprocess.run(["openssl", "passwd", flag, "-stdin"], input=SECRET + "\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    assert hashed.startswith(prefix)
    path = tmp_path / "users"
    write_users(path, ["carol:" + hashed])
    auth = authn.from_spec("file://" + str(path))
    assert auth.check("carol", SECRET)
    assert not auth.check("carol", "wrong")


def test_file_mixed_hashes_comments_and_blank_lines(tmp_path):
    path = tmp_path / "users"
    write_users(path, [
        "# mailerq users",
        "",
        "   ",
        "alice:" + sha512_crypt.using(rounds=5000).hash("alice-pw"),
        "  # indented comment",
        "  bob : " + bcrypt.using(rounds=4).hash("bob-pw") + "  ",
        "carol:" + md5_crypt.hash("carol-pw"),
    ])
    auth = open_file(path)
    assert auth.users == {"alice", "bob", "carol"}
    assert auth.check("alice", "alice-pw")
    assert auth.check("bob", "bob-pw")
    assert auth.check("carol", "carol-pw")
    assert not auth.check("alice", "bob-pw")
    assert not auth.check("# mailerq users", "x")


def test_file_non_ascii_password(tmp_path):
    path = tmp_path / "users"
    write_users(path, ["émile:" + sha256_crypt.using(rounds=5000).hash("café ☕")])
    auth = open_file(path)
    assert auth.check("émile", "café ☕")
    assert not auth.check("émile", "cafe ☕")


@pytest.mark.parametrize("bad_line, message", [
    ("plaintext-password9", "expected one 'user:hash' per line"),
    ("dave:password9", "unknown hash format; use sha512-crypt $6$"),
    ("dave:$apr1$password9$abc", "unknown hash format"),
    ("dave:$6$password9$tooshort", "malformed sha512_crypt hash"),
    ("dave:$6$password9", "hash has no checksum part"),
    ("dave:" + "$6$x$" + "a" * 86 + ":1000:0", "expected one 'user:hash'"),
    (":$1$abc$" + "a" * 22, "expected one 'user:hash'"),
])
def test_file_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "users.txt"
    write_users(path, ["# header", "alice:" + md5_crypt.hash("x"), bad_line])
    with pytest.raises(authn.AuthConfigError) as err:
        authn.from_spec("file://" + str(path))
    assert str(err.value).startswith("%s:3: " % path)
    assert message in str(err.value)
    assert "password9" not in str(err.value)


def test_file_duplicate_user(tmp_path):
    path = tmp_path / "users"
    write_users(path, ["alice:" + md5_crypt.hash("a"), "bob:" + md5_crypt.hash("b"),
                       "alice:" + md5_crypt.hash("c")])
    with pytest.raises(authn.AuthConfigError, match=r":3: user 'alice' listed again "
                                                    r"\(first on line 1\)"):
        open_file(path)


def test_file_rounds_above_limit_are_refused(tmp_path):
    hashed = sha512_crypt.using(rounds=6000).hash("x").replace("rounds=6000", "rounds=5000000")
    path = tmp_path / "users"
    write_users(path, ["alice:" + hashed])
    with pytest.raises(authn.AuthConfigError, match="rounds 5000000 above the limit 1000000"):
        open_file(path)


def test_file_missing_unreadable_or_not_utf8(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(authn.AuthConfigError, match="%s: cannot read the user file: "
                                                    "No such file" % missing):
        authn.from_spec("file://" + str(missing))
    with pytest.raises(authn.AuthConfigError, match="cannot read the user file: Is a directory"):
        authn.from_spec("file://" + str(tmp_path))
    latin = tmp_path / "latin1"
    latin.write_bytes(b"\xe9mile:" + md5_crypt.hash("x").encode() + b"\n")
    with pytest.raises(authn.AuthConfigError, match="latin1: not UTF-8"):
        open_file(latin)


@pytest.mark.parametrize("spec", ["file://users.txt", "file://host/etc/users", "file://"])
def test_file_spec_needs_absolute_path(spec):
    with pytest.raises(authn.AuthConfigError, match="three slashes"):
        authn.from_spec(spec)


def test_file_spec_forms_and_describe(tmp_path):
    path = tmp_path / "my users"
    write_users(path, ["alice:" + md5_crypt.hash("pw")])
    for spec in ("file://%s" % path, "file://localhost%s" % path,
                 "file://%s" % str(path).replace(" ", "%20")):
        auth = authn.from_spec(spec)
        assert auth.check("alice", "pw")
        assert auth.describe() == "file://%s" % path
    assert "$1$" not in repr(auth)


def test_empty_file_accepts_nobody(tmp_path):
    path = tmp_path / "users"
    write_users(path, ["# nobody yet"])
    auth = open_file(path)
    assert auth.users == frozenset()
    assert not auth.check("alice", "pw")


def test_file_reload_on_change_at_most_once_per_second(tmp_path, log_text):
    clock = FakeClock()
    path = tmp_path / "users"
    alice = "alice:" + md5_crypt.hash("alice-pw")
    write_users(path, [alice])
    auth = open_file(path, clock)
    assert auth.check("alice", "alice-pw") and not auth.check("bob", "bob-pw")
    write_users(path, [alice, "bob:" + sha512_crypt.using(rounds=5000).hash("bob-pw")])
    clock.now += 0.5
    assert not auth.check("bob", "bob-pw")   # not looked at yet: within the second
    clock.now += 0.5
    assert auth.check("bob", "bob-pw")
    assert auth.check("alice", "alice-pw")
    write_users(path, ["bob:" + md5_crypt.hash("new-pw")])
    clock.now += 0.9
    assert auth.check("alice", "alice-pw")   # next look only a second after the last
    clock.now += 0.1
    assert not auth.check("alice", "alice-pw")   # removed users go away too
    assert auth.check("bob", "new-pw") and not auth.check("bob", "bob-pw")
    assert log_text().count("event=authn.reloaded file=%s" % path) == 2


def test_file_replaced_by_rename_is_reloaded(tmp_path):
    clock = FakeClock()
    path = tmp_path / "users"
    write_users(path, ["alice:" + md5_crypt.hash("old")])
    auth = open_file(path, clock)
    fresh = tmp_path / "users.new"
    write_users(fresh, ["alice:" + md5_crypt.hash("new")])
    os.utime(fresh, ns=(os.stat(path).st_mtime_ns,) * 2)   # same mtime, other inode
    os.replace(fresh, path)
    clock.now += 1
    assert auth.check("alice", "new")


def test_broken_reload_keeps_last_good_copy(tmp_path, log_text):
    clock = FakeClock()
    path = tmp_path / "users"
    alice = "alice:" + sha256_crypt.using(rounds=5000).hash("alice-pw")
    write_users(path, [alice])
    auth = open_file(path, clock)
    write_users(path, [alice, "bob:" + SECRET])   # a plain password by mistake
    for _ in range(3):
        clock.now += 1
        assert auth.check("alice", "alice-pw")
        assert not auth.check("bob", SECRET)
    text = log_text()
    assert text.count("event=authn.reload_failed") == 1   # once per change of the file
    assert "%s:2: unknown hash format" % path in text
    assert SECRET not in text
    write_users(path, [alice, "bob:" + md5_crypt.hash("bob-pw")])
    clock.now += 1
    assert auth.check("bob", "bob-pw")


def test_deleted_file_keeps_last_good_copy(tmp_path, log_text):
    clock = FakeClock()
    path = tmp_path / "users"
    write_users(path, ["alice:" + md5_crypt.hash("alice-pw")])
    auth = open_file(path, clock)
    path.unlink()
    clock.now += 1
    assert auth.check("alice", "alice-pw")
    clock.now += 1
    assert auth.check("alice", "alice-pw")
    assert log_text().count("event=authn.reload_failed") == 1
    assert "cannot stat the user file" in log_text()


def test_unknown_user_and_wrong_password_both_fail_and_log_alike(tmp_path, log_text):
    path = tmp_path / "users"
    write_users(path, ["alice:" + sha512_crypt.using(rounds=5000).hash(SECRET)])
    auth = open_file(path)
    assert not auth.check("alice", "wrong")
    assert not auth.check("mallory", SECRET)
    assert not auth.check("mallory", "wrong")
    text = log_text()
    assert "event=authn.failed user=alice scheme=file" in text
    assert "event=authn.failed user=mallory scheme=file" in text
    assert SECRET not in text and "$6$" not in text


def _best_of(runs, func, *args):
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        func(*args)
        best = min(best, time.perf_counter() - started)
    return best


def test_unknown_user_costs_as_much_as_wrong_password(tmp_path):
    path = tmp_path / "users"
    write_users(path, ["alice:" + sha512_crypt.using(rounds=100_000).hash(SECRET),
                       "bob:" + sha512_crypt.using(rounds=100_000).hash("bob-pw"),
                       "carol:" + md5_crypt.hash("carol-pw")])
    auth = open_file(path)
    wrong_password = _best_of(3, auth.check, "alice", "wrong")
    unknown_user = _best_of(3, auth.check, "mallory", "wrong")
    assert wrong_password > 0.005   # the hash really ran
    assert 0.5 < unknown_user / wrong_password < 2


def test_bcrypt_runs_off_the_event_loop(tmp_path):
    path = tmp_path / "users"
    write_users(path, ["alice:" + bcrypt.using(rounds=11).hash(SECRET)])
    auth = open_file(path)
    gaps, done = [], []

    def ticker():
        while not done:
            started = time.perf_counter()
            gevent.sleep(0.005)
            gaps.append(time.perf_counter() - started)

    tick = gevent.spawn(ticker)
    gevent.sleep(0.02)
    started = time.perf_counter()
    checks = [gevent.spawn(auth.check, "alice", SECRET) for _ in range(2)]
    gevent.joinall(checks, raise_error=True)
    elapsed = time.perf_counter() - started
    done.append(True)
    tick.join()
    assert all(check.value for check in checks)
    assert elapsed > 0.05                        # cost 11 takes a while...
    assert max(gaps) < min(0.05, elapsed / 2)    # ...and the loop kept running


def test_bcrypt_backend_loads_without_a_logged_traceback():
    # passlib 1.7.4 logs "(trapped) error reading bcrypt version" with a
    # traceback under bcrypt >= 4.1; requirements.txt pins a version that loads cleanly.
    code = ("import logging; logging.basicConfig(level=logging.DEBUG)\n"
            "from passlib.hash import bcrypt\n"
            "assert bcrypt.verify('pw', bcrypt.using(rounds=4).hash('pw'))\n")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "trapped" not in result.stderr and "Traceback" not in result.stderr
