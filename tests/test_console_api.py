"""The console's JSON API (console/api.py, console/charts.py) against the real
server: statistics from the deliveries_* tables, queue depths, reload,
inject into the embedded queue, cluster links, and who may call it."""

import calendar
import json
import socket
import time
from datetime import datetime

import pytest
from sqlalchemy import insert

from mailerq_gevent.broker.storage import list_messages
from mailerq_gevent.console import api, charts
from mailerq_gevent.db import schema, tables
from mailerq_gevent.db.engine import make_engine
from mailerq_gevent.delivery.stats import Stats, minute_time

MESSAGE = {"envelope": "sender@example.org", "recipient": "rcpt@example.com",
           "mime": "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"}


def queued(c, queue="outbox"):
    """The JSON messages in ``queue`` of the console's embedded queue file."""
    path = c.conf.rabbitmq_address[len("sqlite:///"):]
    return [json.loads(row.body) for row in list_messages(path, queue) if not row.not_before]


def post(client, c, path, body=None, **kwargs):
    headers = dict({"X-CSRF-Token": getattr(client, "csrf", "")}, **kwargs.pop("headers", {}))
    return client.post(c.url + path, json=body, headers=headers, timeout=10, **kwargs)


def count(c, moments):
    """Count deliveries: ``[(unix time, kind, localip, domain), ...]``, flushed."""
    for moment, kind, localip, domain in moments:
        stats = Stats(c.database, clock=lambda moment=moment: moment)
        stats.count(kind, localip, domain, "198.51.100.7")
        assert stats.flush()


# -- statistics ------------------------------------------------------------------------

def test_stats_of_the_last_hour_per_minute(console):
    c = console()
    now = time.time()
    five_ago = int(now) // 60 * 60 - 300
    count(c, [(five_ago + 5, "success", "192.0.2.1", "example.com")] * 3
          + [(five_ago + 9, "failure", "192.0.2.1", "example.com"),
             (five_ago + 20, "retry", "192.0.2.2", "example.net"),
             (now - 7200, "success", "192.0.2.1", "old.example")])
    answer = c.login().get(c.url + "/api/stats?range=hour", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    series = body["series"]
    assert body["range"] == "hour" and body["step"] == 60 and len(series["times"]) == 60
    index = series["times"].index(five_ago)
    assert [series[k][index] for k in ("success", "failures", "retries")] == [3, 1, 1]
    assert body["totals"] == {"success": 3, "failures": 1, "retries": 1}
    assert [row["domain"] for row in body["domains"]] == ["example.com", "example.net"]
    assert body["domains"][0] == {"domain": "example.com", "success": 3, "failures": 1,
                                  "retries": 0, "paused": False}
    assert [row["localip"] for row in body["localips"]] == ["192.0.2.1", "192.0.2.2"]


def test_stats_of_the_last_day_by_quarter_hour(console):
    c = console()
    now = time.time()
    count(c, [(now - 3 * 3600, "success", "192.0.2.1", "example.com"),
              (now - 3 * 3600, "failure", "192.0.2.1", "example.com"),
              (now - 60, "success", "192.0.2.1", "example.com"),
              (now - 2 * 86400, "success", "192.0.2.1", "example.com")])
    body = c.login().get(c.url + "/api/stats?range=day", timeout=10).json()
    assert body["step"] == 900 and len(body["series"]["times"]) == 96
    assert body["totals"] == {"success": 2, "failures": 1, "retries": 0}
    bucket = int(now - 3 * 3600) // 900 * 900
    index = body["series"]["times"].index(bucket)
    assert body["series"]["success"][index] == 1 and body["series"]["failures"][index] == 1


def test_stats_sum_the_rows_of_one_minute(console):
    c = console()
    minute = minute_time(int(time.time()) // 60 * 60 - 120)
    rows = [{"time": minute, "localip": "192.0.2.1", "success": 2, "failures": 0, "retries": 1}] * 2
    with c.database.begin() as conn:
        conn.execute(insert(tables.deliveries_total), rows)
    body = c.login().get(c.url + "/api/stats", timeout=10).json()
    assert body["range"] == "hour" and body["totals"] == {"success": 4, "failures": 0,
                                                          "retries": 2}


def test_top_lists_say_what_is_paused(console):
    c = console()
    now = time.time()
    count(c, [(now - 60, "success", "192.0.2.1", "example.com"),
              (now - 60, "success", "192.0.2.2", "example.net")])
    with c.database.begin() as conn:
        conn.execute(insert(tables.paused), [{"localip": "", "target": "Example.COM"},
                                             {"localip": "192.0.2.2", "target": None}])
    body = c.login().get(c.url + "/api/stats", timeout=10).json()
    assert {row["domain"]: row["paused"] for row in body["domains"]} == {
        "example.com": True, "example.net": False}
    assert {row["localip"]: row["paused"] for row in body["localips"]} == {
        "192.0.2.1": False, "192.0.2.2": True}


def test_the_chart_queries_run_on_every_database(db_url):
    engine = make_engine(db_url)
    try:
        schema.ensure_schema(engine)
        now = time.time()
        for kind, localip, domain in [("success", "192.0.2.1", "example.com"),
                                      ("success", "", "example.com"),
                                      ("failure", "192.0.2.1", "example.net")]:
            stats = Stats(engine, clock=lambda: now - 60)
            stats.count(kind, localip, domain, "198.51.100.7")
            assert stats.flush()
        with engine.begin() as conn:
            conn.execute(insert(tables.paused), [{"localip": "", "target": "example.net"}])
        for range_name in ("hour", "day"):
            body = charts.statistics(engine, range_name, now)
            assert body["totals"] == {"success": 2, "failures": 1, "retries": 0}
            assert [(row["domain"], row["paused"]) for row in body["domains"]] == [
                ("example.com", False), ("example.net", True)]
            assert [row["localip"] for row in body["localips"]] == ["192.0.2.1", ""]
    finally:
        engine.dispose()


def test_an_unknown_range_is_a_400(console):
    c = console()
    answer = c.login().get(c.url + "/api/stats?range=week", timeout=10)
    assert answer.status_code == 400 and "range" in answer.json()["error"]


def test_stats_without_a_database_are_a_503(console, tmp_path):
    c = console()
    c.context.database = make_engine("sqlite:///%s/missing/db.sqlite" % tmp_path)
    try:
        answer = c.login().get(c.url + "/api/stats", timeout=10)
    finally:
        c.context.database.dispose()
        c.context.database = c.database
    assert answer.status_code == 503 and answer.json() == {"error": "the database is unavailable"}


# -- status and reload ----------------------------------------------------------------------

def test_status_shows_queue_depths_connections_and_settings(console):
    c = console(rabbitmq_dsn="")
    c.broker.publish("outbox", MESSAGE)
    c.broker.publish("outbox", MESSAGE)
    client = c.login()
    body = client.get(c.url + "/api/status", timeout=10).json()
    queues = {row["key"]: row for row in body["queues"]}
    assert queues["outbox"] == {"key": "outbox", "name": "outbox", "depth": 2, "state": "ok"}
    assert queues["dsn"]["state"] == "disabled" and queues["dsn"]["depth"] is None
    assert len(queues) == 9 and body["connections"] is None
    assert body["settings"]["generation"] == c.reloader.current.generation
    assert body["settings"]["loaded"] is True and body["hostname"] == socket.gethostname()
    c.context.status = lambda: {"inbound": 3, "outbound": 5, "idle": 2}
    body = client.get(c.url + "/api/status", timeout=10).json()
    assert body["connections"] == {"inbound": 3, "outbound": 5, "idle": 2}


def test_status_says_unavailable_when_the_broker_is_down(console):
    c = console()
    c.broker.stop(2)
    answer = c.login().get(c.url + "/api/status", timeout=10)
    assert answer.status_code == 200
    assert {row["state"] for row in answer.json()["queues"]} == {"unavailable"}


def test_reload_loads_a_new_generation(console):
    c = console()
    before = c.reloader.current.generation
    answer = post(c.login(), c, "/api/reload")
    assert answer.status_code == 200
    body = answer.json()
    assert body["reloaded"] is True and body["generation"] == before + 1
    assert c.reloader.current.generation == before + 1 and body["loaded_at"] > 0


# -- inject ------------------------------------------------------------------------------

def test_inject_one_message_puts_it_durably_in_the_outbox(console):
    c = console()
    message = dict(MESSAGE, tags=["campaign-7"], maxattempts=3, custom={"x": "ü"})
    answer = post(c.login(), c, "/api/inject", message)
    assert answer.status_code == 202 and answer.json() == {"queued": 1}
    [got] = queued(c)
    assert len(got.pop("id")) == 14 and got == message      # a fresh queue id added
    post(c.login(), c, "/api/inject", dict(message, id="MINE1"))
    assert queued(c)[1]["id"] == "MINE1"                     # one given is kept


def test_inject_a_list_of_messages(console):
    c = console()
    messages = [dict(MESSAGE, recipient="r%d@example.com" % n) for n in range(3)]
    answer = post(c.login(), c, "/api/inject", messages)
    assert answer.status_code == 202 and answer.json() == {"queued": 3}
    assert [m["recipient"] for m in queued(c)] == ["r0@example.com", "r1@example.com",
                                                    "r2@example.com"]


def test_a_bad_message_in_a_list_queues_none(console):
    c = console()
    messages = [MESSAGE, dict(MESSAGE, recipient="no-at-sign")]
    answer = post(c.login(), c, "/api/inject", messages)
    assert answer.status_code == 400 and answer.json()["error"].startswith("message 1:")
    assert queued(c) == []


@pytest.mark.parametrize("body, problem", [
    ({"recipient": "r@example.com", "mime": "x"}, "envelope must be a string"),
    ({"envelope": "", "mime": "x"}, "recipient must be a string"),
    ({"envelope": "", "recipient": "r@example.com"}, "mime must be a string"),
    ({"envelope": "", "recipient": "r@example.com", "mime": ""}, "mime must not be empty"),
    (dict(MESSAGE, recipient="r@example.com\r\nRCPT TO:<x@y>"), "recipient must be an address"),
    (dict(MESSAGE, envelope="not an address"), "envelope must be an address"),
    (dict(MESSAGE, mime=7), "mime must be a string"),
    ([], "a non-empty list"),
    ("text", "a message object"),
    ([MESSAGE, 3], "message 1: a message must be a JSON object"),
])
def test_inject_refuses_what_is_not_a_message(console, body, problem):
    c = console()
    answer = post(c.login(), c, "/api/inject", body)
    assert answer.status_code == 400 and problem in answer.json()["error"]
    assert queued(c) == []


def test_inject_accepts_the_null_sender(console):
    c = console()
    answer = post(c.login(), c, "/api/inject", dict(MESSAGE, envelope=""))
    assert answer.status_code == 202 and queued(c)[0]["envelope"] == ""


def test_inject_refuses_a_body_that_is_not_json(console):
    c = console()
    client = c.login()
    answer = client.post(c.url + "/api/inject", data=b'{"envelope": ', timeout=10,
                         headers={"X-CSRF-Token": client.csrf,
                                  "Content-Type": "application/json"})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]


def test_inject_refuses_a_body_over_the_limit(console, monkeypatch):
    c = console()
    monkeypatch.setattr(api, "INJECT_LIMIT", 1000)
    client = c.login()
    big = dict(MESSAGE, mime="x" * 2000)
    assert post(client, c, "/api/inject", big).status_code == 413
    chunks = iter([json.dumps(big).encode()[:1500], json.dumps(big).encode()[1500:]])
    answer = client.post(c.url + "/api/inject", data=chunks, timeout=10,
                         headers={"X-CSRF-Token": client.csrf,
                                  "Content-Type": "application/json"})
    assert answer.status_code == 413 and "larger than 1000 bytes" in answer.json()["error"]
    small = iter([json.dumps(MESSAGE).encode()])        # chunked, within the limit
    answer = client.post(c.url + "/api/inject", data=small, timeout=10,
                         headers={"X-CSRF-Token": client.csrf})
    assert answer.status_code == 202
    assert [dict(m, id=None) for m in queued(c)] == [dict(MESSAGE, id=None)]


def test_inject_with_the_broker_down_is_a_503(console):
    c = console()
    client = c.login()
    c.broker.stop(2)
    answer = post(client, c, "/api/inject", MESSAGE)
    assert answer.status_code == 503 and "nothing was queued" in answer.json()["error"]
    c.start_broker()                # the queue as the daemon finds it when it starts again
    assert queued(c) == []


def test_inject_with_the_outbox_disabled_is_a_503(console):
    c = console(rabbitmq_outbox="")
    answer = post(c.login(), c, "/api/inject", MESSAGE)
    assert answer.status_code == 503 and "disabled" in answer.json()["error"]


# -- cluster -------------------------------------------------------------------------------

def test_cluster_lists_the_instances_with_links(console):
    c = console(www_url="https://console.example:8485")
    me = socket.gethostname()
    updated = datetime(2026, 1, 2, 3, 4, 5)
    with c.database.begin() as conn:
        conn.execute(insert(tables.ips), [
            {"ip": "192.0.2.1", "hostname": me, "updated": updated},
            {"ip": "192.0.2.9", "hostname": "mq2.example", "updated": updated},
            {"ip": "2001:db8::9", "hostname": "mq2.example", "updated": updated},
            {"ip": "192.0.2.66", "hostname": "bad/host\"><x", "updated": updated}])
    body = c.login().get(c.url + "/api/cluster", timeout=10).json()
    by_name = {entry["hostname"]: entry for entry in body["instances"]}
    assert body["instances"][0]["hostname"] == me and by_name[me]["self"] is True
    assert by_name[me]["url"] == "https://console.example:8485"
    assert by_name["mq2.example"]["url"] == "http://mq2.example:%d/" % c.port
    assert by_name["mq2.example"]["ips"] == ["192.0.2.9", "2001:db8::9"]
    assert by_name["mq2.example"]["updated"] == calendar.timegm(updated.timetuple())
    assert by_name["bad/host\"><x"]["url"] is None


def test_cluster_links_to_this_console_without_www_url(console):
    c = console()
    body = c.login().get(c.url + "/api/cluster", timeout=10).json()
    assert body["instances"] == [{"hostname": socket.gethostname(), "self": True, "ips": [],
                                  "updated": None, "url": c.url + "/"}]


# -- who may call it ----------------------------------------------------------------------

ROUTES = [("GET", "/api/stats"), ("GET", "/api/status"), ("GET", "/api/cluster"),
          ("POST", "/api/reload"), ("POST", "/api/inject")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_the_api_needs_a_session_or_a_token(console, method, path):
    c = console(www_api_token="t0ken")
    anonymous = c.client().request(method, c.url + path, json=MESSAGE, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json() == {"error": "login required"}
    wrong = c.client().request(method, c.url + path, json=MESSAGE, timeout=10,
                               headers={"Authorization": "Bearer t0kem"})
    assert wrong.status_code == 401


def test_a_bearer_token_needs_no_csrf_token(console):
    c = console(www_api_token="t0ken")
    client = c.client()
    client.headers["Authorization"] = "Bearer t0ken"
    assert client.get(c.url + "/api/stats", timeout=10).status_code == 200
    answer = client.post(c.url + "/api/inject", json=MESSAGE, timeout=10)
    assert answer.status_code == 202
    assert [dict(m, id=None) for m in queued(c)] == [dict(MESSAGE, id=None)]
    assert client.post(c.url + "/api/reload", timeout=10).status_code == 200


def test_a_bearer_token_is_refused_when_none_is_configured(console):
    c = console()
    answer = c.client().post(c.url + "/api/inject", json=MESSAGE, timeout=10,
                             headers={"Authorization": "Bearer "})
    assert answer.status_code == 401 and queued(c) == []


@pytest.mark.parametrize("path", ["/api/inject", "/api/reload"])
def test_a_post_without_the_csrf_token_is_refused(console, path):
    c = console()
    client = c.login()
    answer = client.post(c.url + path, json=MESSAGE, timeout=10)
    assert answer.status_code == 403 and "CSRF" in answer.json()["error"]
    answer = post(client, c, path, MESSAGE, headers={"X-CSRF-Token": "wrong"})
    assert answer.status_code == 403 and queued(c) == []


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_a_cross_site_inject_is_refused_even_with_the_token(console, headers):
    c = console()
    client = c.login()
    answer = post(client, c, "/api/inject", MESSAGE, headers=headers)
    assert answer.status_code == 403 and "cross" in answer.json()["error"]
    assert queued(c) == []
