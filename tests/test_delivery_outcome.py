"""What a result means for the message (``delivery.outcome``): result queues,
retries, give-up and DSNs."""

import email
import email.policy
import json

import pytest

from mailerq_gevent import config
from mailerq_gevent.delivery import result
from mailerq_gevent.delivery.outcome import decide, first_delay
from mailerq_gevent.delivery.sender import network_error as connection_failed
from mailerq_gevent.message import Message, set_from_text

NOW = 1_700_000_000
CONF = config.defaults().replace(smtp_hostname="mta.test.example")


def message(**extra):
    base = {"envelope": "bounces@sender.example", "recipient": "user@rcpt.example",
            "mime": "Subject: hi\r\n\r\nbody\r\n", "queued": NOW, "tag": "kept"}
    base.update(extra)
    return Message(base)


def reply(code, text="", state="rcpt"):
    return result.make(state, code, text).stamped(NOW, "192.0.2.1", "198.51.100.7")


def network_error():
    refused = connection_failed("connect", ConnectionRefusedError("connection refused"))
    return refused.stamped(NOW, "192.0.2.1", "198.51.100.7")


def published(decision):
    return [(queue, json.loads(body)) for queue, body in decision.queues]


def test_a_network_error_has_no_code_and_is_retried():
    decision = decide(message(), network_error(), NOW, CONF)
    assert decision.kind == "retry" and decision.message["results"][-1]["code"] == 0


def test_a_local_error_keeps_its_words_and_its_status_with_code_0():
    refused = result.make("local", 0, "no valid recipient address", "5.1.3").stamped(NOW)
    assert refused.kind == "permanent"
    decision = decide(message(), refused, NOW, CONF)
    assert decision.kind == "failure"
    assert decision.message["results"][-1] == {
        "state": "local", "result": "error", "time": NOW, "from": "", "to": "", "code": 0,
        "status": "5.1.3", "description": "no valid recipient address"}


def test_success_goes_to_results_and_success_with_the_result_appended():
    decision = decide(message(), reply(250, "2.0.0 ok", "data"), NOW, CONF)
    assert (decision.kind, decision.delay) == ("success", 0)
    assert [queue for queue, _ in decision.queues] == ["results", "success"]
    body = published(decision)[0][1]
    assert body["tag"] == "kept" and body["results"][-1]["code"] == 250
    assert body["results"][-1]["state"] == "data"


def test_failure_goes_to_results_and_failure_and_a_dsn():
    decision = decide(message(), reply(550, "5.1.1 no such user"), NOW, CONF)
    assert decision.kind == "failure"
    assert [queue for queue, _ in decision.queues] == ["results", "failure", "dsn"]
    dsn = published(decision)[2][1]
    assert (dsn["envelope"], dsn["recipient"]) == ("", "bounces@sender.example")
    report = email.message_from_string(dsn["mime"], policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert "MAILER-DAEMON@mta.test.example" in report["From"]
    assert dsn_action(decision) == "failed"


def test_the_reporting_mta_names_the_dsn_sender():
    decision = decide(message(), reply(550), NOW, CONF, reporting_mta="mx9.sender.example")
    body = published(decision)[2][1]
    assert "MAILER-DAEMON@mx9.sender.example" in body["mime"]


def test_the_input_message_is_not_changed():
    original = message(results=[{"code": 421}])
    decide(original, reply(421, "4.7.0 later"), NOW, CONF)
    assert original["results"] == [{"code": 421}] and "nextattempt" not in original


@pytest.mark.parametrize("previous, delay", [(0, 600), (1, 600), (2, 1800), (3, 3600),
                                             (4, 3600), (9, 3600)])
def test_default_retry_schedule_the_last_value_repeats(previous, delay):
    earlier = [{"code": 421}] * previous
    decision = decide(message(results=earlier), reply(421, "4.7.0 later"), NOW, CONF)
    assert (decision.kind, decision.delay) == ("retry", delay)
    assert [queue for queue, _ in decision.queues] == ["results", "retry"]
    assert decision.message["nextattempt"] == NOW + delay
    assert len(decision.message["results"]) == previous + 1


def test_the_message_retries_schedule_is_used():
    custom = message(retries=[5, 60], results=[{}] * 3)
    assert decide(custom, network_error(), NOW, CONF).delay == 60
    assert decide(message(retries=[5, 60]), network_error(), NOW, CONF).delay == 5
    assert decide(message(retries="junk"), network_error(), NOW, CONF).delay == 600


def test_maxattempts_turns_the_last_retry_into_a_failure():
    two_tries = message(maxattempts=2)
    assert decide(two_tries, reply(451), NOW, CONF).kind == "retry"
    decision = decide(dict(two_tries, results=[{}]), reply(451, "4.3.0 busy"), NOW, CONF)
    assert decision.kind == "failure" and decision.delay == 0
    last = decision.message["results"][-1]
    assert last["description"].startswith("expired (maxattempts 2 reached)")
    assert (last["code"], last["status"]) == (451, "4.3.0")
    assert [queue for queue, _ in decision.queues] == ["results", "failure", "dsn"]


def test_maxattempts_zero_is_no_limit():
    decision = decide(message(maxattempts=0, results=[{}] * 50), reply(451), NOW, CONF)
    assert decision.kind == "retry"


def test_maxdelivertime_defaults_to_a_day_after_queued():
    young = message(queued=NOW - 86400 + 601)
    assert decide(young, reply(421), NOW, CONF).kind == "retry"
    old = message(queued=NOW - 86400 + 599)
    decision = decide(old, reply(421), NOW, CONF)
    assert decision.kind == "failure"
    assert "maxdelivertime" in decision.message["results"][-1]["description"]


def test_maxdelivertime_in_seconds_or_as_a_time():
    assert decide(message(maxdelivertime=300), reply(421), NOW, CONF).kind == "failure"
    assert decide(message(maxdelivertime="3600"), reply(421), NOW, CONF).kind == "retry"
    assert decide(message(maxdelivertime=NOW + 700), reply(421), NOW, CONF).kind == "retry"
    assert decide(message(maxdelivertime="2023-11-14 22:20:00"), reply(421), NOW,
                  CONF).kind == "failure"      # NOW is 22:13:20 UTC: 600 s later is past it


def test_queued_is_set_on_first_sight():
    fresh = message()
    del fresh["queued"]
    assert fresh.mark_queued(NOW + 0.5) and fresh.queued == NOW
    assert not fresh.mark_queued(NOW + 99) and fresh.queued == NOW
    fresh = message()
    del fresh["queued"]
    assert decide(fresh, reply(421), NOW, CONF).message["queued"] == NOW


def test_per_message_queues_override_and_disable():
    queues = {"results": "", "success": "my-success", "failure": None}
    decision = decide(message(queues=queues), reply(250), NOW, CONF)
    assert [queue for queue, _ in decision.queues] == ["my-success"]
    decision = decide(message(queues=queues), reply(550), NOW, CONF)
    assert [queue for queue, _ in decision.queues] == ["dsn"]


def test_config_queue_names_and_a_disabled_config_queue():
    conf = CONF.replace(rabbitmq_results="res", rabbitmq_retry="", rabbitmq_dsn="bounces")
    assert [q for q, _ in decide(message(), reply(421), NOW, conf).queues] == ["res"]
    assert [q for q, _ in decide(message(), reply(550), NOW, conf).queues] == [
        "res", "failure", "bounces"]


def test_no_dsn_for_a_null_sender_or_notify_never():
    for quiet in (message(envelope=""), message(dsn={"notify": "NEVER"})):
        decision = decide(quiet, reply(550), NOW, CONF)
        assert [queue for queue, _ in decision.queues] == ["results", "failure"]


def dsn_action(decision):
    (body,) = [json.loads(body) for queue, body in decision.queues if queue == "dsn"]
    report = email.message_from_string(body["mime"], policy=email.policy.default)
    return report.get_payload()[1].get_payload()[1]["Action"]


def test_dsn_on_success_and_once_on_delay_when_asked():
    asked = message(dsn={"notify": "SUCCESS,DELAY"})
    assert dsn_action(decide(asked, reply(250), NOW, CONF)) == "delivered"
    assert dsn_action(decide(asked, reply(421), NOW, CONF)) == "delayed"
    later = dict(asked, results=[{}])
    assert "dsn" not in [q for q, _ in decide(later, reply(421), NOW, CONF).queues]
    assert "dsn" not in [q for q, _ in decide(asked, reply(550), NOW, CONF).queues]


@pytest.mark.parametrize("value, delay", [
    (None, 0), (NOW + 120, 120), (NOW - 5, 0), (str(NOW + 60), 60),
    ("2023-11-14 22:15:20", 120), ("2023-11-14T22:15:20Z", 120),
    ("2023-11-14T23:15:20+01:00", 120), ("Tue, 14 Nov 2023 22:15:20 +0000", 120),
    ("not a time", 0)])
def test_first_delay_from_nextattempt(value, delay):
    assert first_delay(message(nextattempt=value), NOW) == delay


def test_first_delay_agrees_with_the_x_mq_delayed_header():
    for text in ("2023-11-14 22:15:20", "1700000120", "Tue, 14 Nov 2023 22:15:20 +0000"):
        extracted = {}
        set_from_text(extracted, "delayed", text)
        assert first_delay(message(**extracted), NOW) == 120
        assert first_delay(message(nextattempt=text), NOW) == 120
