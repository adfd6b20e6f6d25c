"""One delivery attempt's result (``delivery.result``): one factory, three kinds,
the status, and the JSON appended to ``results``."""

import pytest

from mailerq_gevent.delivery import result
from mailerq_gevent.delivery.sender import network_error

NOW = 1_700_000_000


@pytest.mark.parametrize("code, status, kind", [
    (250, "2.0.0", "success"), (251, "2.1.5", "success"), (421, "4.7.0", "transient"),
    (450, "4.2.1", "transient"), (452, "4.2.2", "transient"), (550, "5.1.1", "permanent"),
    (554, "5.0.0", "permanent"), (550, "4.0.0", "permanent"),   # the code decides a reply
    (0, "4.4.2", "transient"), (0, "5.1.2", "permanent"), (0, "", "transient")])
def test_the_kind_is_the_reply_codes_or_without_a_reply_the_status_class(code, status, kind):
    assert result.kind_of(code, status) == kind


def test_a_result_from_a_reply_and_its_json():
    made = result.make("rcpt", 550, b"5.1.1 <user@rcpt.example>:\n user unknown")
    made = made.stamped(NOW + 0.7, "192.0.2.1", "198.51.100.7")
    assert made.as_dict() == {
        "state": "rcpt", "result": "error", "time": NOW, "from": "192.0.2.1",
        "to": "198.51.100.7", "code": 550, "status": "5.1.1",
        "description": "5.1.1 <user@rcpt.example>: user unknown"}
    assert made.kind == "permanent"
    assert result.make("data", 250, "2.0.0 OK queued").as_dict()["result"] == "ok"
    assert result.make("data", 250, "OK queued").status == "2.0.0"     # the class's own


def test_a_result_with_a_status_given():
    made = result.make("data", 452, "mailbox\n full", "4.2.2")
    assert (made.state, made.code, made.status, made.description) == (
        "data", 452, "4.2.2", "mailbox full")
    assert made.kind == "transient" and made.as_dict()["result"] == "error"


def test_a_network_error_has_no_code_a_chosen_status_and_is_transient():
    failed = network_error("connect", ConnectionRefusedError("connection refused"))
    assert (failed.code, failed.status, failed.kind) == (0, "4.4.2", "transient")
    assert failed.description == "ConnectionRefusedError: connection refused"
    assert failed.as_dict()["code"] == 0 and not failed.ok


def test_a_local_error_is_as_permanent_as_its_status_says():
    refused = result.make("local", 0, "no valid recipient address", "5.1.3")
    assert (refused.kind, refused.code, refused.status) == ("permanent", 0, "5.1.3")
    assert result.make("dns", 0, "timed out", "4.4.3").kind == "transient"


def test_stamping_and_describing_make_new_values():
    made = result.make("rcpt", 451, "4.3.0 busy")
    stamped = made.stamped(NOW + 0.9, "192.0.2.1", "198.51.100.7")
    assert (made.time, made.local_ip) == (0, "")
    assert (stamped.time, stamped.local_ip, stamped.remote) == (NOW, "192.0.2.1", "198.51.100.7")
    expired = stamped.described("expired (maxattempts 1 reached): 4.3.0 busy")
    assert expired.as_dict() == dict(stamped.as_dict(), description=expired.description)
    with pytest.raises(AttributeError):
        made.code = 250                     # a value
