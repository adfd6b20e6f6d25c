"""Delivery status notifications (RFC 3464 / 3461 / 3462): who gets one, and
what the report looks like once parsed back with the ``email`` package."""

import email
import email.policy
import email.utils

import pytest

from mailerq_gevent.delivery import dsn, result as results
from mailerq_gevent.delivery.sender import network_error
from mailerq_gevent.message import Message

NOW = 1_700_000_000
MTA = "mta.test.example"
ORIGINAL = ("Subject: Our newsletter\r\nFrom: news@sender.example\r\n"
            "Message-ID: <n1@sender.example>\r\n\r\nHello \udcc3\udca9 reader\r\n")


def message(**extra):
    base = {"envelope": "bounces@sender.example", "recipient": "user@rcpt.example",
            "mime": ORIGINAL, "queued": NOW - 3600}
    base.update(extra)
    return Message(base)


def failed(code=550, text="5.1.1 user unknown"):
    return results.make("rcpt", code, text).stamped(NOW, "192.0.2.1", "198.51.100.7")


def no_reply(remote="", why="connection refused"):
    return network_error("connect", ConnectionRefusedError(why)).stamped(NOW, "192.0.2.1", remote)


def parse(raw):
    assert b"\n" not in raw.replace(b"\r\n", b"")       # CRLF only
    return email.message_from_bytes(raw, policy=email.policy.default)


def status_blocks(report):
    part = report.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    return part.get_payload()


@pytest.mark.parametrize("notify, kind, wanted", [
    (None, "failure", True), (None, "success", False), (None, "retry", False),
    ("FAILURE", "failure", True), ("SUCCESS", "failure", False),
    ("SUCCESS,FAILURE", "success", True), ("success, delay", "retry", True),
    ("DELAY", "delay", True), ("NEVER", "failure", False), (["FAILURE"], "failure", True),
    ("", "failure", True)])
def test_wants_dsn_parses_notify(notify, kind, wanted):
    dsn_params = {"notify": notify} if notify is not None else {}
    assert dsn.wants_dsn(message(dsn=dsn_params), kind) is wanted


@pytest.mark.parametrize("sender", ["", "<>", None, " "])
def test_a_null_sender_never_gets_a_dsn(sender):
    assert not dsn.wants_dsn(message(envelope=sender, dsn={"notify": "FAILURE"}), "failure")
    assert not dsn.wants_dsn(message(envelope=sender), "failure")


def test_failure_report_structure_and_fields():
    raw = dsn.build_dsn(message(dsn={"envid": "QQ314159", "orcpt": "rfc822;User+2Bx@rcpt.example"}),
                        failed(), MTA, NOW + 60)
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@%s>" % MTA
    assert report["To"] == "bounces@sender.example"
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Message-ID"].endswith("@%s>" % MTA) and report["Date"]
    human, _, original = report.get_payload()
    assert human.get_content_type() == "text/plain"
    assert "550 5.1.1 user unknown" in human.get_content()
    per_message, per_recipient = status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; %s" % MTA
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_message["Arrival-Date"] == email.utils.formatdate(NOW - 3600, usegmt=True)
    assert per_recipient["Original-Recipient"] == "rfc822; User+x@rcpt.example"
    assert per_recipient["Final-Recipient"] == "rfc822; user@rcpt.example"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; 198.51.100.7"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 user unknown"
    assert original.get_content_type() == "text/rfc822-headers"


def test_ret_hdrs_is_the_default_and_returns_only_the_header():
    for params in ({}, {"ret": "HDRS"}, {"ret": "hdrs"}):
        original = parse(dsn.build_dsn(message(dsn=params), failed(), MTA, NOW)).get_payload()[2]
        assert original.get_content_type() == "text/rfc822-headers"
        text = original.get_content()
        assert "Subject: Our newsletter" in text and "Message-ID: <n1@sender.example>" in text
        assert "reader" not in text


def test_ret_full_returns_the_whole_message():
    raw = dsn.build_dsn(message(dsn={"ret": "FULL"}), failed(), MTA, NOW)
    original = parse(raw).get_payload()[2]
    assert original.get_content_type() == "message/rfc822"
    inner = original.get_payload()[0]
    assert inner["Subject"] == "Our newsletter"
    assert "Hello \xe9 reader".encode() in raw          # the 8-bit body kept as it was


def test_ret_full_over_the_limit_returns_the_header_only():
    raw = dsn.build_dsn(message(dsn={"ret": "FULL"}), failed(), MTA, NOW, max_full=10)
    assert parse(raw).get_payload()[2].get_content_type() == "text/rfc822-headers"


@pytest.mark.parametrize("result, kind, action, status", [
    (failed(550, "5.1.1 unknown"), "failure", "failed", "5.1.1"),
    (failed(550, "unknown"), "failure", "failed", "5.0.0"),
    (failed(451, "4.3.0 expired (maxattempts 3 reached): busy"), "failure", "failed", "5.4.7"),
    (no_reply(why="timed out"), "failure", "failed", "5.4.7"),
    (failed(250, "2.1.5 ok"), "success", "delivered", "2.1.5"),
    (failed(250, "ok"), "success", "delivered", "2.0.0"),
    (failed(421, "4.7.0 try later"), "retry", "delayed", "4.7.0"),
])
def test_action_and_status_per_kind(result, kind, action, status):
    report = parse(dsn.build_dsn(message(), result, MTA, NOW, kind=kind))
    per_recipient = status_blocks(report)[1]
    assert (per_recipient["Action"], per_recipient["Status"]) == (action, status)
    assert report["Subject"] == dsn.SUBJECTS[action]


def test_no_diagnostic_code_without_a_reply():
    result = no_reply()
    per_recipient = status_blocks(parse(dsn.build_dsn(message(), result, MTA, NOW)))[1]
    assert per_recipient["Diagnostic-Code"] is None and per_recipient["Remote-MTA"] is None


def test_a_hostile_reply_cannot_add_fields():
    result = dict(failed().as_dict(), to="mx\r\nBcc: victim@example.com",
                  description="no\r\nBcc: victim@example.com\r\n\r\nhi")
    raw = dsn.build_dsn(message(), result, MTA, NOW)
    report = parse(raw)
    assert report["Bcc"] is None and b"\r\nBcc:" not in raw
    assert status_blocks(report)[1]["Bcc"] is None


def test_dsn_message_is_json_from_the_null_sender():
    out = dsn.dsn_message(message(ips=["192.0.2.1"]), failed(), MTA, NOW)
    assert (out["envelope"], out["recipient"], out["ips"]) == (
        "", "bounces@sender.example", ["192.0.2.1"])
    report = email.message_from_string(out["mime"], policy=email.policy.default)
    assert status_blocks(report)[1]["Status"] == "5.1.1"
    assert not dsn.wants_dsn(out, "failure")          # a DSN never gets a DSN
    assert len(out.id) == 14 and out.id != dsn.dsn_message(message(), failed(), MTA, NOW).id
    assert dsn.dsn_message(message(ip="192.0.2.9"), failed(), MTA, NOW)["ips"] == ["192.0.2.9"]


def test_a_result_dict_works_as_well_as_a_result():
    as_dict = failed().as_dict()
    assert status_blocks(parse(dsn.build_dsn(message(), as_dict, MTA, NOW)))[1]["Status"] == "5.1.1"


def test_an_internationalised_recipient():
    raw = dsn.build_dsn(message(recipient="jörg@bücher.example"), failed(), MTA, NOW)
    per_recipient = status_blocks(parse(raw))[1]
    assert per_recipient["Final-Recipient"] == "utf-8; jörg@bücher.example"


# -- passing DSN parameters on to the next hop (RFC 3461 §6.2) ----------------------

@pytest.mark.parametrize("given, mail, rcpt", [
    ({"notify": "SUCCESS,FAILURE", "ret": "hdrs", "envid": "QQ314159",
      "orcpt": "rfc822;b@example.org"},
     ["RET=HDRS", "ENVID=QQ314159"], ["NOTIFY=FAILURE,SUCCESS", "ORCPT=rfc822;b@example.org"]),
    ({"notify": ["delay"], "orcpt": "ann+x@example.com", "envid": "a b=c"},      # raw text
     ["ENVID=a+20b+3Dc"], ["NOTIFY=DELAY", "ORCPT=rfc822;ann+2Bx@example.com"]),
    ({"orcpt": "rfc822;ann+2Bx@example.com"},                                    # xtext already
     [], ["ORCPT=rfc822;ann+2Bx@example.com"]),
    ({"notify": "NEVER"}, [], ["NOTIFY=NEVER"]),
    ({"notify": "NEVER,SUCCESS", "ret": "ALL", "orcpt": "bad type;x@example.com"}, [], []),
    ({"orcpt": "utf-8;jürgen@example.de", "envid": "x" * 101}, [], []),          # left out
    ({"orcpt": "utf-8;j\\x{FC}rgen@example.de"}, [], ["ORCPT=utf-8;j\\x{FC}rgen@example.de"]),
    (None, [], []),
])
def test_smtp_parameters_for_the_next_hop(given, mail, rcpt):
    assert dsn.smtp_parameters(given) == (mail, rcpt)
