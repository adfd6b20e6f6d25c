"""What the SMTP server queues: the JSON for each x-mq-* header, the outgoing
IP, the queues, and 451 with nothing half-queued when the queue fails."""

import pytest

from mailerq_gevent import config
from mailerq_gevent.broker import BrokerError
from mailerq_gevent.smtpd import message as building
from tests.smtp_support import Raw, message


def send(running, content, recipients=(b"b@example.org",), sender=b"a@example.com"):
    return Raw(running.port).send_message(content, sender=sender, recipients=recipients)


@pytest.mark.parametrize("header, expected", [
    ("x-mq-ip: 192.0.2.7", {"ips": ["192.0.2.7"]}),
    ("X-MQ-IP: 192.0.2.7, 2001:db8::1", {"ips": ["192.0.2.7", "2001:db8::1"]}),
    ("x-mq-envelope: bounces@example.com", {"envelope": "bounces@example.com"}),
    ("x-mq-pool: newsletter", {"pool": "newsletter"}),
    ("x-mq-tag: a, b", {"tags": ["a", "b"]}),
    ("x-mq-key: campaign-17", {"key": "campaign-17"}),
    ("x-mq-delayed: 2030-01-01 00:00:00", {"nextattempt": 1893456000}),
    ("x-mq-delayed: 1893456000", {"nextattempt": 1893456000}),
    ("x-mq-maxdelivertime: 3600", {"maxdelivertime": 3600}),
    ("x-mq-maxattempts: 5", {"maxattempts": 5}),
    ("x-mq-retries: 60,600,3600", {"retries": [60, 600, 3600]}),
    ("x-mq-results: my-results", {"queues": {"results": "my-results"}}),
    ("x-mq-success: ok-queue", {"queues": {"success": "ok-queue"}}),
    ("x-mq-failure: bad-queue", {"queues": {"failure": "bad-queue"}}),
    ("x-mq-retry:", {"queues": {"retry": None}}),
    ("x-mq-dsn-notify: FAILURE", {"dsn": {"notify": "FAILURE"}}),
    ("x-mq-dsn-ret: FULL", {"dsn": {"ret": "FULL"}}),
    ("x-mq-dsn-envid: ENV1", {"dsn": {"envid": "ENV1"}}),
    ("x-mq-dsn-orcpt: rfc822;x@example.org", {"dsn": {"orcpt": "rfc822;x@example.org"}}),
    ("x-mq-campaign: spring sale", {"campaign": "spring sale"}),
    ("x-mq-tag: first\r\n\tsecond", {"tags": ["first", "second"]}),
])
def test_each_x_mq_header_becomes_a_property_and_leaves_the_mime(smtp, header, expected):
    running = smtp()
    reply = send(running, message(extra=header + "\r\n"))
    assert reply.startswith(b"250 ")
    [queued] = running.queued()
    for key, value in expected.items():
        assert queued[key] == value
    assert "x-mq-" not in queued["mime"].lower()
    assert "Subject: test\r\n" in queued["mime"]


@pytest.mark.parametrize("header", ["x-mq-maxattempts: many", "x-mq-retries: 60,soon",
                                    "x-mq-ip: not-an-ip", "x-mq-delayed: someday"])
def test_a_bad_x_mq_value_refuses_the_message(smtp, header):
    running = smtp()
    reply = send(running, message(extra=header + "\r\n"))
    assert reply.startswith(b"554 5.6.0 Error: bad value in the ")
    assert running.queued() == []


def test_every_recipient_carries_the_transactions_queue_id(smtp, caplog):
    running = smtp()
    with caplog.at_level("INFO", logger="mailerq_gevent.smtpd.session"):
        reply = send(running, message(extra="x-mq-id: mine\r\n"),
                     recipients=(b"b@example.org", b"c@example.org"))
    queue_id = reply.split(b"queued as ")[1].strip().decode()
    assert [m["id"] for m in running.queued()] == [queue_id, queue_id]   # x-mq-id cannot change it
    assert "event=smtp.queued id=%s " % queue_id in caplog.text


def test_without_smtp_extract_the_headers_stay(smtp):
    running = smtp(smtp_extract=False)
    send(running, message(extra="x-mq-maxattempts: 5\r\n"))
    [queued] = running.queued()
    assert "maxattempts" not in queued and "x-mq-maxattempts: 5\r\n" in queued["mime"]


def test_x_mq_in_the_body_is_left_alone(smtp):
    running = smtp()
    send(running, message(body="x-mq-maxattempts: 5\r\n"))
    [queued] = running.queued()
    assert "maxattempts" not in queued and queued["mime"].endswith("x-mq-maxattempts: 5\r\n")


def test_one_json_per_recipient_and_8bit_content_survives(smtp):
    running = smtp()
    body = "Grüße\r\n".encode() + b"\xff\xfe raw 8-bit\r\n"
    send(running, message().replace(b"Hello.\r\n", body),
         recipients=(b"b@example.org", b"c@example.org"))
    first, second = running.queued()
    assert (first["recipient"], second["recipient"]) == ("b@example.org", "c@example.org")
    assert first["mime"] == second["mime"]
    assert first["mime"].encode("utf-8", "surrogateescape").endswith(body)
    assert "\tfor <" not in first["mime"]      # several recipients: no "for" clause


def conf(**values):
    return config.defaults().replace(**values)


@pytest.mark.parametrize("settings, local_ip, expected", [
    ({}, "192.0.2.10", ["192.0.2.10"]),                                  # mappable by default
    ({}, "127.0.0.1", []),                                               # loopback: unmappable
    ({"smtp_defaultips": ("198.51.100.1", "198.51.100.2")}, "127.0.0.1",
     ["198.51.100.1", "198.51.100.2"]),
    ({"smtp_mappable_ips": config.KEYS["smtp-mappable-ips"][0]("10.0.0.0/8"),
      "smtp_defaultips": ("198.51.100.1",)}, "192.0.2.10", ["198.51.100.1"]),
    ({"smtp_mappable_ips": config.KEYS["smtp-mappable-ips"][0]("10.0.0.0/8")}, "10.1.2.3",
     ["10.1.2.3"]),
])
def test_outgoing_ip_choice(settings, local_ip, expected):
    assert building.outgoing_ips(local_ip, conf(**settings)) == expected


def test_x_mq_ip_wins_over_the_submitted_address(smtp):
    running = smtp(smtp_defaultips=("198.51.100.1",))
    send(running, message(extra="x-mq-ip: 192.0.2.99\r\n"))
    assert running.queued()[0]["ips"] == ["192.0.2.99"]


def test_a_report_to_a_local_address_goes_to_the_reports_queue(smtp):
    running = smtp(rabbitmq_reports="reports", settings_rows={"locals": [
        {"address": "dmarc@local.example", "type": "exact"}]})
    report = message(extra="Content-Type: multipart/report; report-type=delivery-status;\r\n"
                           " boundary=b\r\n")
    send(running, report, recipients=(b"dmarc@local.example", b"b@example.org"))
    assert [m["recipient"] for m in running.queued("reports")] == ["dmarc@local.example"]
    assert [m["recipient"] for m in running.queued("inbox")] == ["b@example.org"]


class _Down:
    def publish_many(self, items):
        raise BrokerError("down")


def test_a_queue_that_fails_gets_451_and_the_session_goes_on(smtp):
    running = smtp()
    running.server.broker = _Down()
    assert send(running, message()) == b"451 4.3.0 Error: queue unavailable, try again later\r\n"


class _Broken:
    def publish_many(self, items):
        raise RuntimeError("a bug")


def test_an_unexpected_error_is_a_451_and_the_session_goes_on(smtp):
    running = smtp()
    running.server.broker = _Broken()
    client = Raw(running.port)
    assert client.send_message(message()) == b"451 4.3.0 Error: local error, try again later\r\n"
    assert client.command(b"NOOP") == b"250 2.0.0 OK\r\n"


def test_a_failing_commit_queues_no_recipient_at_all(smtp, monkeypatch):
    running = smtp()

    def failing(ready, delayed, acks):
        if ready:
            raise OSError("No space left on device")
    monkeypatch.setattr(running.backend.store, "before_commit", failing)
    reply = send(running, message(), recipients=(b"b@example.org", b"c@example.org"))
    assert reply == b"451 4.3.0 Error: queue unavailable, try again later\r\n"
    monkeypatch.undo()
    assert running.queued() == []
    assert send(running, message()).startswith(b"250 ")
    assert len(running.queued()) == 1


def test_rabbitmq_down_gets_451(smtp):
    running = smtp(rabbitmq_address="amqp://guest:guest@127.0.0.1:1//")
    running.broker.publisher.timeout = 5
    assert send(running, message()) == b"451 4.3.0 Error: queue unavailable, try again later\r\n"


# -- inbound checks (smtp-check) through the server ------------------------------



def test_check_results_reach_the_json_and_the_header_goes_to_local_mail(smtp, dns_zone, spamd):
    from mailerq_gevent.config_values import HostPort
    zone = dns_zone([("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
                     ("_dmarc.sender.test", "TXT", "v=DMARC1; p=reject")])
    running = smtp(smtp_check=("spf", "dkim", "dmarc", "spam"), smtp_auth_results=("local",),
                   dns_server=HostPort(zone.host, zone.port), spamassassin_host="127.0.0.1",
                   spamassassin_port=spamd.port, settings_rows={"locals": [
                       {"address": "info@local.example", "type": "exact"}]})
    from mailerq_gevent.smtpd.checks import InboundChecks
    running.server.checks = InboundChecks(running.conf)
    content = message().replace(b"From: a@example.com", b"From: a@sender.test")
    reply = send(running, content, sender=b"a@sender.test",
                 recipients=(b"info@local.example", b"b@example.org"))
    assert reply.startswith(b"250 ")
    [local] = running.queued("local")
    [remote] = running.queued("inbox")
    for queued in (local, remote):
        assert queued["checks"]["spf"]["result"] == "pass"
        assert queued["checks"]["dkim"] == []
        assert queued["checks"]["dmarc"]["result"] == "pass"       # aligned SPF pass
        assert queued["checks"]["spam"]["result"] == "ham"
    assert "\r\nAuthentication-Results: mx.test.example;" in local["mime"]
    assert "Authentication-Results" not in remote["mime"]


@pytest.mark.parametrize("extra, report", [
    ("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n", True),
    ("Content-Type: application/gzip\r\n", True),
    ("Content-Type: multipart/mixed; boundary=b\r\n", False),
    ("Content-Type: text/plain\r\n", False),
])
def test_reports_are_recognised(extra, report):
    assert building.is_report(message(extra=extra)) is report


def test_a_dmarc_aggregate_report_by_its_subject():
    content = message(subject="Report Domain: example.com Submitter: google.com Report-ID: 1",
                      extra="Content-Type: multipart/mixed; boundary=b\r\n")
    assert building.is_report(content)
