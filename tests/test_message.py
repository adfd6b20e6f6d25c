"""The queued message (``mailerq_gevent.message``): its accessors, times, the values
x-mq-* headers give, what a message must have to be queued, and queue ids."""

import pytest

from mailerq_gevent.broker import codec
from mailerq_gevent.message import (
    BadValue, Message, as_time, check, new_id, parse_time, set_from_text)

NOW = 1_700_000_000
GOOD = {"envelope": "a@example.com", "recipient": "b@example.org", "mime": "Subject: x\r\n\r\n"}


def test_a_message_is_its_json_object_and_unknown_properties_pass_through():
    message = Message(GOOD, custom={"x": "ü"}, tags=["t"])
    assert codec.decode(codec.encode(message)) == message
    assert message["custom"] == {"x": "ü"} and isinstance(Message(message), Message)


def test_the_envelope_properties():
    message = Message(GOOD, id="ABC123", mime="Subject: \udcc3\udca9\r\n\r\n")
    assert (message.id, message.envelope, message.recipient) == (
        "ABC123", "a@example.com", "b@example.org")
    assert message.mime == b"Subject: \xc3\xa9\r\n\r\n"         # the 8-bit bytes again
    assert message.recipient_domain == "example.org"
    empty = Message()
    assert (empty.id, empty.envelope, empty.recipient, empty.mime) == ("", "", "", b"")


@pytest.mark.parametrize("recipient", ["", "nobody", "@example.org", "user@", None, 7])
def test_a_recipient_without_local_and_domain_has_no_domain(recipient):
    assert Message(recipient=recipient).recipient_domain == ""


@pytest.mark.parametrize("properties, ips", [
    ({"ips": ["192.0.2.1", "192.0.2.2"]}, ["192.0.2.1", "192.0.2.2"]),
    ({"ip": "192.0.2.9"}, ["192.0.2.9"]),
    ({"ips": [], "ip": ["192.0.2.9"]}, ["192.0.2.9"]),
    ({"ips": {"not": "a list"}}, []),
    ({}, []),
])
def test_ips_or_ip(properties, ips):
    assert Message(properties).ips == ips


def test_labels_and_the_properties_delivery_passes_on():
    message = Message(key="campaign-7", tags=["a", 2], dkim={"domain": "x"}, smarthost="mx:2525",
                      headers={"remove": ["X"]}, dsn={"notify": "NEVER"},
                      queues={"results": None})
    assert (message.key, message.tags, message.smarthost) == ("campaign-7", ["a", "2"], "mx:2525")
    assert message.dkim == {"domain": "x"} and message.headers == {"remove": ["X"]}
    assert message.dsn == {"notify": "NEVER"} and message.queues == {"results": None}


def test_a_value_of_the_wrong_type_reads_as_absent():
    message = Message(tags="a,b", dsn="FAILURE", queues=["x"], headers=["X"], results={},
                      maxattempts="many", retries="600", nextattempt="someday", queued="then",
                      smarthost="")
    assert (message.tags, message.dsn, message.queues, message.headers) == ([], {}, {}, None)
    assert (message.results, message.maxattempts, message.retries) == ([], 0, None)
    assert (message.nextattempt, message.queued, message.smarthost) == (None, None, None)


@pytest.mark.parametrize("retries, schedule", [
    ([60, "600", 3600.0], [60, 600, 3600]), ([], None), ([60, -1], None), ([60, "x"], None),
    ([True], None)])
def test_retries(retries, schedule):
    assert Message(retries=retries).retries == schedule


def test_maxattempts():
    assert Message(maxattempts=3).maxattempts == 3
    assert Message(maxattempts="4").maxattempts == 4
    assert Message(maxattempts=-2).maxattempts == 0
    assert Message().maxattempts == 0


@pytest.mark.parametrize("maxdelivertime, deadline", [
    (None, NOW + 86400), (0, NOW + 86400), (300, NOW + 300), ("3600", NOW + 3600),
    (NOW + 700, NOW + 700),                                  # above 10^9: a time, not seconds
    ("2023-11-14 22:20:00", NOW + 400), ("junk", NOW + 86400)])
def test_the_deadline_from_maxdelivertime(maxdelivertime, deadline):
    message = Message(queued=NOW)
    if maxdelivertime is not None:
        message["maxdelivertime"] = maxdelivertime
    assert message.deadline(86400) == deadline


def test_queued_is_marked_once():
    message = Message()
    assert message.mark_queued(NOW + 0.5) and message.queued == NOW
    assert not message.mark_queued(NOW + 60) and message.queued == NOW


@pytest.mark.parametrize("text, when", [
    ("1700000120", NOW + 120), ("1700000120.7", NOW + 120), ("2023-11-14 22:15:20", NOW + 120),
    ("2023-11-14T22:15:20Z", NOW + 120), ("2023-11-14T23:15:20+01:00", NOW + 120),
    ("Tue, 14 Nov 2023 22:15:20 +0000", NOW + 120)])
def test_parse_time(text, when):
    assert parse_time(text) == when and Message(nextattempt=text).nextattempt == when


def test_as_time_takes_numbers_and_text_and_refuses_the_rest():
    assert as_time(NOW) == NOW and as_time(" %d " % NOW) == NOW
    assert [as_time(value) for value in (None, "", True, "not a time")] == [None] * 4
    with pytest.raises(ValueError):
        parse_time("someday")


# -- what a message must have ------------------------------------------------------------

def test_check_returns_the_message_with_everything_it_had():
    checked = check(dict(GOOD, custom=1))
    assert isinstance(checked, Message) and checked == dict(GOOD, custom=1)
    assert check(dict(GOOD, envelope="")).envelope == ""          # the null sender


@pytest.mark.parametrize("data, problem", [
    ("text", "a message must be a JSON object"),
    ({"recipient": "r@example.com", "mime": "x"}, "envelope must be a string"),
    (dict(GOOD, recipient=None), "recipient must be a string"),
    (dict(GOOD, mime=7), "mime must be a string"),
    (dict(GOOD, mime=""), "mime must not be empty"),
    (dict(GOOD, recipient=""), "recipient must be an address (user@domain)"),
    (dict(GOOD, recipient="r@example.com\r\nRCPT TO:<x@y>"), "recipient must be an address"),
    (dict(GOOD, envelope="not an address"), "envelope must be an address"),
])
def test_check_says_what_is_wrong(data, problem):
    with pytest.raises(BadValue) as refused:
        check(data)
    assert str(refused.value).startswith(problem)


# -- values from text (x-mq-* headers) ---------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("ip", "192.0.2.7, 2001:DB8::1", {"ips": ["192.0.2.7", "2001:db8::1"]}),
    ("tags", "a b;c", {"tags": ["a", "b", "c"]}),
    ("delayed", "1893456000", {"nextattempt": 1893456000}),
    ("nextattempt", "2030-01-01 00:00:00", {"nextattempt": 1893456000}),
    ("maxdelivertime", "3600", {"maxdelivertime": 3600}),
    ("maxdelivertime", "2030-01-01 00:00:00", {"maxdelivertime": 1893456000}),
    ("maxattempts", "5", {"maxattempts": 5}),
    ("retries", "60,600", {"retries": [60, 600]}),
    ("failure", "bad-queue", {"queues": {"failure": "bad-queue"}}),
    ("retry", "", {"queues": {"retry": None}}),
    ("dsn-envid", "ENV1", {"dsn": {"envid": "ENV1"}}),
    ("dsn-other", "x", {"dsn-other": "x"}),
    ("campaign", "spring sale", {"campaign": "spring sale"}),
])
def test_a_value_from_text(key, value, expected):
    properties = {}
    set_from_text(properties, key, value)
    assert properties == expected


def test_tags_from_text_add_up():
    properties = {}
    set_from_text(properties, "tag", "a")
    set_from_text(properties, "tags", "b, c")
    assert properties == {"tags": ["a", "b", "c"]}


@pytest.mark.parametrize("key, value", [
    ("ip", "not-an-ip"), ("maxattempts", "many"), ("maxattempts", "-1"),
    ("retries", "60,soon"), ("delayed", "someday"), ("maxdelivertime", "later")])
def test_a_value_that_cannot_be_used_is_refused(key, value):
    with pytest.raises(ValueError):
        set_from_text({}, key, value)


def test_queue_ids_are_fresh_and_shaped_as_the_smtp_servers():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(found) == 14 and int(found, 16) >= 0 and found == found.upper()
               for found in ids)
