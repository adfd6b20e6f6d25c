"""The config file: value types, defaults, and errors naming file and line."""

import ipaddress
import os
from pathlib import Path

import pytest

from mailerq_gevent import config
from mailerq_gevent.config_values import HostPort
from mailerq_gevent.smtpd.workers import worker_processes

ROOT = Path(__file__).resolve().parent.parent


def parse(text):
    return config.parse_text(text, "test.conf")


def error_of(text):
    with pytest.raises(config.ConfigError) as info:
        parse(text)
    return str(info.value)


def test_example_file_documents_every_key_at_its_default():
    example = config.load(str(ROOT / "conf" / "mailerq.conf.example"))
    text = (ROOT / "conf" / "mailerq.conf.example").read_text()
    assert example == config.defaults()
    for key in config.KEYS:
        assert "\n%s:" % key in text, key


def test_run_config_is_valid_and_embedded():
    conf = config.load(str(ROOT / "conf" / "mailerq.conf"))
    assert conf.database.startswith("sqlite:///var/")
    assert conf.rabbitmq_address.startswith("sqlite:///var/")
    assert conf.smtp_port == (2525,) and conf.www_port == 8485
    assert conf.rabbitmq_inbox == conf.rabbitmq_outbox == "outbox"
    assert conf.rabbitmq_results == "" and conf.rabbitmq_retry == ""
    assert conf.smtp_threads == len(os.sched_getaffinity(0))     # auto: every core


@pytest.mark.parametrize("raw, threads", [
    ("auto", len(os.sched_getaffinity(0))), ("AUTO", len(os.sched_getaffinity(0))),
    ("1", 1), ("3", 3)])
def test_smtp_threads_auto_is_one_per_cpu(raw, threads):
    assert parse("smtp-threads: %s\n" % raw).smtp_threads == threads
    assert config.defaults().smtp_threads == len(os.sched_getaffinity(0))


def test_smtp_threads_counts_the_daemon_among_its_processes():
    # the daemon delivers; the others run SMTP sessions; 1 keeps them in the daemon
    assert [worker_processes(n) for n in (1, 2, 4)] == [0, 1, 3]


def test_smtp_threads_error_names_the_line():
    assert error_of("log-level: info\nsmtp-threads: many\n").startswith(
        "test.conf:2: smtp-threads:")


def test_comments_blank_lines_and_spacing():
    conf = parse("# a comment\n\n   smtp-port:    2525   \nSMTP-HOSTNAME: mx.example.com\n")
    assert conf.smtp_port == (2525,)
    assert conf["smtp-hostname"] == "mx.example.com"


def test_unset_keys_keep_defaults():
    conf = parse("log-level: debug\n")
    assert conf.database == "sqlite:///var/mailerq.sqlite"
    assert conf.database_ttl == 600.0
    assert conf.log_level == "debug"


@pytest.mark.parametrize("raw, ports", [
    ("25", (25,)),
    ("25,2525,1024-1026", (25, 2525, 1024, 1025, 1026)),
    ("25, 587", (25, 587)),
    ("", ()),
])
def test_port_lists(raw, ports):
    assert parse("smtp-port: %s\n" % raw).smtp_port == ports


@pytest.mark.parametrize("raw, problem", [
    ("0", "out of range"),
    ("70000", "out of range"),
    ("25-20", "runs backwards"),
    ("abc", "not a whole number"),
    ("25,25", "listed twice"),
    ("25-", "not a port or a range"),
])
def test_bad_port_lists(raw, problem):
    message = error_of("\nsmtp-port: %s\n" % raw)
    assert message.startswith("test.conf:2: smtp-port: ")
    assert problem in message


def test_cidr_lists():
    conf = parse("smtp-range: 10.0.0.0/8; 192.0.2.1 ;2001:db8::/32\n")
    assert conf.smtp_range == (ipaddress.ip_network("10.0.0.0/8"),
                               ipaddress.ip_network("192.0.2.1/32"),
                               ipaddress.ip_network("2001:db8::/32"))
    assert "smtp-range: '10.0.0.300' is not an IP range" in error_of("smtp-range: 10.0.0.300\n")


def test_default_range_is_loopback_only():
    ranges = config.defaults().smtp_range
    assert ranges and all(net.is_loopback for net in ranges)
    assert any(ipaddress.ip_address("127.0.0.1") in net for net in ranges)
    assert any(ipaddress.ip_address("::1") in net for net in ranges)


@pytest.mark.parametrize("raw, size", [
    ("100MB", 100 * 1024 ** 2), ("512", 512), ("64 KB", 65536), ("1G", 1024 ** 3), ("10b", 10)])
def test_sizes(raw, size):
    assert parse("smtp-maxsize: %s\n" % raw).smtp_maxsize == size


def test_bad_size():
    assert "smtp-maxsize: '10 parsecs' is not a size" in error_of("smtp-maxsize: 10 parsecs\n")


@pytest.mark.parametrize("raw, seconds", [
    ("60", 60.0), ("10m", 600.0), ("1h", 3600.0), ("250ms", 0.25), ("1.5s", 1.5), ("2d", 172800.0)])
def test_durations(raw, seconds):
    assert parse("database-ttl: %s\n" % raw).database_ttl == seconds


def test_bad_duration():
    assert "database-ttl: '-5' is not a duration" in error_of("database-ttl: -5\n")


@pytest.mark.parametrize("raw, value", [
    ("true", True), ("yes", True), ("On", True), ("1", True),
    ("false", False), ("no", False), ("off", False), ("0", False)])
def test_booleans(raw, value):
    assert parse("smtp-extract: %s\n" % raw).smtp_extract is value


def test_bad_boolean():
    assert "smtp-extract: 'maybe' is not a boolean" in error_of("smtp-extract: maybe\n")


@pytest.mark.parametrize("raw", [
    "sqlite:///var/x.sqlite", "postgresql://u:p@db.example.com/mailerq",
    "mysql://root@127.0.0.1:3306/test", "postgresql+psycopg2://u@h/d"])
def test_database_urls(raw):
    assert parse("database: %s\n" % raw).database == raw


@pytest.mark.parametrize("raw, problem", [
    ("oracle://u:secret@h/d", "oracle://... is not a URL starting with sqlite://"),
    ("sqlite://relative.db", "three slashes"),
    ("just-a-path", "the value is not a URL"),
])
def test_bad_database_urls(raw, problem):
    message = error_of("database: %s\n" % raw)
    assert message.startswith("test.conf:1: database: ")
    assert problem in message


def test_errors_never_echo_secrets():
    message = error_of("smtp-auth: hardcode://admin:hunter2,bob:pw\n")
    assert "hunter2" not in message and "smtp-auth: hardcode://..." in message
    assert "hunter2" not in error_of("database: oracle://u:hunter2@h/d\n")


@pytest.mark.parametrize("raw", [
    "amqp://guest:guest@127.0.0.1/", "sqlite:///var/queue.sqlite", "memory://"])
def test_queue_addresses(raw):
    assert parse("rabbitmq-address: %s\n" % raw).rabbitmq_address == raw


@pytest.mark.parametrize("raw", [
    "", "hardcoded://u:p,u2:p2", "file:///etc/mailerq/users", "ldap://127.0.0.1/dc=x",
    "radius://secret@127.0.0.1", "users://a,client*", "https://auth.example/check",
    "exec:///usr/local/bin/check"])
def test_auth_specs(raw):
    assert parse("smtp-auth: %s\n" % raw).smtp_auth == raw


@pytest.mark.parametrize("key, raw, value", [
    ("relay", "smtp.example.com", HostPort("smtp.example.com", 25)),
    ("relay", "127.0.0.1:2526", HostPort("127.0.0.1", 2526)),
    ("relay", "[::1]:2526", HostPort("::1", 2526)),
    ("dns-server", "127.0.0.1", HostPort("127.0.0.1", 53)),
    ("dns-server", "127.0.0.1:5353", HostPort("127.0.0.1", 5353)),
    ("relay", "", None),
])
def test_host_ports(key, raw, value):
    assert parse("%s: %s\n" % (key, raw))[key] == value


def test_bad_host_port():
    assert "relay: 'bad host:25' is not host[:port]" in error_of("relay: bad host:25\n")
    assert "out of range" in error_of("dns-server: 127.0.0.1:99999\n")


def test_ip_and_ip_lists():
    conf = parse("smtp-ip: 2001:DB8::1\nsmtp-defaultips: 192.0.2.1, 192.0.2.2\n")
    assert conf.smtp_ip == "2001:db8::1"
    assert conf.smtp_defaultips == ("192.0.2.1", "192.0.2.2")
    assert "smtp-defaultips: '192.0.2' is not an IP address" in error_of(
        "smtp-defaultips: 192.0.2\n")


def test_choices_and_subsets():
    conf = parse("smtp-validate-address: LOOSE\nsmtp-check: spf, dkim,spam\n")
    assert conf.smtp_validate_address == "loose"
    assert conf.smtp_check == ("spf", "dkim", "spam")
    assert "'virus' not among spf, dkim, dmarc, spam" in error_of("smtp-check: spf,virus\n")
    assert "'chatty' is not one of debug" in error_of("log-level: chatty\n")


def test_negative_count_refused():
    assert "smtp-connections-out: -1 is negative" in error_of("smtp-connections-out: -1\n")


def test_unknown_key_names_line_and_suggests():
    message = error_of("# header\nsmtp-prot: 25\n")
    assert message == "test.conf:2: smtp-prot: unknown setting (did you mean smtp-port?)"


def test_line_without_colon():
    assert error_of("\n\nsmtp-port 25\n").startswith('test.conf:3: expected "name: value"')


def test_key_given_twice():
    assert error_of("smtp-port: 25\nlog-level: info\nsmtp-port: 26\n") == (
        "test.conf:3: smtp-port: given twice (first on line 1)")


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError) as info:
        config.load(str(tmp_path / "nope.conf"))
    assert str(info.value) == "%s: cannot read the file: No such file or directory" % (
        tmp_path / "nope.conf")


def test_config_is_frozen_and_replace_copies():
    conf = config.defaults()
    with pytest.raises(AttributeError):
        conf.smtp_port = (26,)
    changed = conf.replace(smtp_port=(2600,))
    assert changed.smtp_port == (2600,) and conf.smtp_port == (25,)
    with pytest.raises(KeyError):
        conf.replace(no_such_key=1)


def test_queue_names():
    conf = parse("rabbitmq-inbox: outbox\nrabbitmq-results:\n")
    assert conf.queue("inbox") == "outbox" and conf.queue("results") == ""
    assert "rabbitmq-outbox" in config.QUEUE_KEYS and "rabbitmq-address" not in config.QUEUE_KEYS
