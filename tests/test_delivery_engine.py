"""The delivery engine end to end: embedded queue -> engine -> real SMTP sinks on
loopback, for each outcome, the result queues, throttles, pausing, routing,
connection reuse, TLS, DKIM and flood responses."""

import dkim
import gevent
import pytest

from mailerq_gevent import certificates, signing
from mailerq_gevent.broker.storage import list_messages
from mailerq_gevent.delivery.routing import Router
from mailerq_gevent.resolver import make_resolver
from tests import mail_dkim
from tests.delivery_support import MIME, World, capacity
from tests.smtp_sink import SmtpSink
from tests.waiting import wait_until


@pytest.fixture
def world(tmp_path):
    worlds = []

    def make(**kwargs):
        made = World(tmp_path / str(len(worlds)), **kwargs)
        worlds.append(made)
        return made.start()
    (tmp_path / "0").mkdir()
    for n in range(1, 4):
        (tmp_path / str(n)).mkdir()
    yield make
    for made in worlds:
        made.stop()


def last_result(message):
    return message["results"][-1]


# -- outcomes -------------------------------------------------------------------

def test_a_message_is_delivered_and_reported_to_results_and_success(world):
    w = world()
    w.inject()
    wait_until(lambda: w.count("success") == 1)
    [got] = w.sink.messages
    assert got.sender == "sender@origin.test" and got.recipients == ("rcpt@example.test",)
    assert got.data == MIME
    assert got.helo == "mta.test"
    [success] = w.queued("success")
    result = last_result(success)
    assert (result["result"], result["code"], result["state"]) == ("ok", 250, "data")
    assert result["to"] == "127.0.0.1" and result["status"] == "2.0.0"
    assert success["queued"] > 0
    assert w.count("results") == 1 and w.count("failure") == 0
    wait_until(lambda: w.count("outbox") == 0)       # the ack is committed just after


def test_every_delivery_log_line_names_the_queue_id(world, caplog):
    w = world()
    w.sink.fault("rcpt", "451 4.3.0 later")
    with caplog.at_level("INFO", logger="mailerq_gevent.delivery.engine"):
        w.inject(id="QID1", retries=[1])
        wait_until(lambda: w.count("retry") == 1)
        w.sink.clear_faults()
        wait_until(lambda: "event=delivery.success" in caplog.text, timeout=10)
    lines = [line for line in caplog.text.splitlines() if "event=delivery." in line]
    assert [line.split("event=")[1].split()[0] for line in lines] == [
        "delivery.retry", "delivery.success"]
    assert all(" id=QID1 " in line for line in lines)
    assert w.queued("success")[0]["id"] == "QID1"


def test_a_4xx_at_rcpt_is_retried_later_per_the_schedule(world):
    w = world()
    w.sink.fault("rcpt", "452 4.2.2 mailbox full")
    w.inject(retries=[120, 300])
    # the retry is published, then the original acked: wait for both
    wait_until(lambda: w.count("retry") == 1 and w.count("outbox") == 1)
    [again] = w.queued("outbox")       # back in the outbox, delayed
    result = last_result(again)
    assert (result["code"], result["status"], result["state"]) == (452, "4.2.2", "rcpt")
    assert again["nextattempt"] - result["time"] == 120
    assert w.sink.messages == [] and w.count("failure") == 0


def test_a_5xx_at_data_fails_with_a_dsn_to_the_sender(world):
    w = world()
    w.sink.fault("dot", "554 5.6.0 content rejected")
    w.inject()
    wait_until(lambda: w.count("failure") == 1)
    result = last_result(w.queued("failure")[0])
    assert (result["code"], result["status"], result["state"]) == (554, "5.6.0", "data")
    [bounce] = w.queued("dsn")
    assert bounce["recipient"] == "sender@origin.test" and bounce["envelope"] == ""
    assert "multipart/report" in bounce["mime"] and "5.6.0" in bounce["mime"]
    wait_until(lambda: w.count("outbox") == 0)       # the ack is committed just after


def test_a_dropped_connection_is_retried(world):
    w = world()
    w.sink.fault("mail", "drop")
    w.inject()
    wait_until(lambda: w.count("retry") == 1 and w.count("outbox") == 1)   # retried, acked
    result = last_result(w.queued("outbox")[0])
    assert result["code"] == 0 and result["result"] == "error"


def test_maxattempts_turns_a_retry_into_a_failure(world):
    w = world()
    w.sink.fault("rcpt", "451 4.3.0 later")
    w.inject(maxattempts=1)
    wait_until(lambda: w.count("failure") == 1)
    assert "expired" in last_result(w.queued("failure")[0])["description"]
    wait_until(lambda: w.count("outbox") == 0)       # the ack is committed just after


def test_per_message_queues_override_and_disable(world):
    w = world()
    w.inject(queues={"success": "mine", "results": None})
    w.broker.publisher.declare("mine")
    wait_until(lambda: w.count("mine") == 1)
    assert w.count("results") == 0 and w.count("success") == 0


def test_nextattempt_in_the_future_holds_the_message(world):
    w = world()
    w.inject(nextattempt="2999-01-01 00:00:00")
    wait_until(lambda: w.count("outbox") == 1 and "queued" in w.queued("outbox")[0])
    assert w.sink.messages == [] and w.count("results") == 0


def test_an_unknown_domain_fails_at_once(world, dns_zone):
    zone = dns_zone([("exists.test", "A", "127.0.0.1")])
    w = world(dns_server=zone.address)
    w.inject(recipient="nobody@missing.test")
    wait_until(lambda: w.count("failure") == 1)
    result = last_result(w.queued("failure")[0])
    assert (result["state"], result["status"]) == ("dns", "5.1.2")


def test_mx_records_are_followed_in_preference_order(world, dns_zone):
    sink = SmtpSink().start()
    zone = dns_zone([("mx.test", "MX", "10 good.mx.test"), ("mx.test", "MX", "5 dead.mx.test"),
                     ("dead.mx.test", "A", "127.0.0.9"), ("good.mx.test", "A", "127.0.0.1")])
    dead = SmtpSink(host="127.0.0.9", port=sink.port).start()
    dead.fault("connect", "554 5.3.2 not accepting mail")
    router = Router(make_resolver(zone.address), mx_port=sink.port)
    w = world(sink=sink, router=router)
    w.inject(recipient="someone@mx.test")
    wait_until(lambda: w.count("success") == 1)
    assert dead.connections == 1 and len(sink.messages) == 1
    assert last_result(w.queued("success")[0])["to"] == "127.0.0.1"
    dead.stop()


# -- routing settings -----------------------------------------------------------

def test_paused_holds_without_failing_then_delivers_when_lifted(world):
    w = world(rows={"paused": [{"localip": "", "target": "example.test"}]})
    w.inject()
    wait_until(lambda: w.count("outbox") == 1)
    assert w.sink.messages == [] and w.count("results") == 0
    assert "results" not in w.queued("outbox")[0]


def test_mtanames_and_delegates_choose_the_source_ip_and_ehlo(world):
    w = world(rows={"mtanames": [{"ip": "127.0.0.2", "hostname": "out2.mta.test"}],
                    "delegates": [{"localip": "127.0.0.1", "target": "example.test",
                                   "newip": "127.0.0.2"}]})
    w.inject(ips=["127.0.0.1"])
    wait_until(lambda: len(w.sink.messages) == 1)
    [got] = w.sink.messages
    assert (got.peer, got.helo) == ("127.0.0.2", "out2.mta.test")


# -- throttles --------------------------------------------------------------------

def test_no_head_of_line_blocking_behind_a_throttled_domain(world):
    other = SmtpSink().start()
    rows = {"capacity": [capacity("example.test", domain_maxmessages=60)],
            "dns": [{"domain": "example.test", "address": "127.0.0.1:%d" % 0, "priority": 1}]}
    w = world(rows={})
    rows["dns"] = [{"domain": "example.test", "address": "127.0.0.1:%d" % w.sink.port,
                    "priority": 1},
                   {"domain": "other.test", "address": "127.0.0.1:%d" % other.port,
                    "priority": 1}]
    w.set_rows(rows)
    for _ in range(300):
        w.inject()
    for _ in range(100):
        w.inject(recipient="rcpt@other.test")
    wait_until(lambda: len(other.messages) == 100, timeout=30)
    assert len(w.sink.messages) <= 2          # 60/min: a token now, the rest wait
    assert w.count("outbox") >= 298           # waiting in the queue, not in the process
    other.stop()


def test_a_throttled_backlog_is_spread_out_at_the_limit(world):
    w = world(rows={"capacity": [capacity("example.test", domain_maxmessages=60)]})
    for _ in range(5):
        w.inject()
    wait_until(lambda: len(w.sink.messages) >= 1 and w.count("outbox") == 4)
    assert len(w.engine.spread) == 1
    # the four held back come back one turn of the limit (a second) apart, not all at once
    due = sorted(row.not_before for row in list_messages(str(w.queue_path), "outbox"))
    assert len(due) == 4 and all(due)
    assert [later - earlier for earlier, later in zip(due, due[1:])] == \
        pytest.approx([1.0, 1.0, 1.0], abs=0.3)


def test_connection_limit_is_never_exceeded(world):
    sink = SmtpSink(greeting_delay=0.05).start()
    w = world(sink=sink, rows={"capacity": [capacity("example.test", domain_maxconnections=2)]})
    for _ in range(20):
        w.inject()
    wait_until(lambda: w.count("success") == 20, timeout=30)
    assert sink.max_open <= 2


def test_consecutive_messages_reuse_one_connection(world):
    w = world()
    for n in range(1, 6):
        w.inject()
        wait_until(lambda: w.count("success") == n)
    assert w.sink.connections == 1
    assert w.engine.pool.open_count == 1 and w.engine.pool.idle_count == 1


@pytest.mark.parametrize("extensions", [("PIPELINING",), ()], ids=["pipelining", "one by one"])
def test_a_refused_recipient_is_reset_before_the_next_message(world, extensions):
    """A delivered message ends its transaction; a refused recipient leaves
    MAIL's open, and the next message on the connection starts with RSET (the
    sink answers a nested MAIL with 503, as Postfix does)."""
    w = world(sink=SmtpSink(advertise=extensions).start())
    _deliver_refuse_deliver(w, then=2)
    assert w.sink.connections == 1 and len(w.sink.messages) == 3
    assert w.count("retry") == 0


def _deliver_refuse_deliver(w, then):
    """One message delivered, one refused at RCPT (550), then ``then`` delivered."""
    w.inject()
    wait_until(lambda: w.count("success") == 1)
    w.sink.fault("rcpt", "550 5.1.1 no such user")
    w.inject()
    wait_until(lambda: w.count("failure") == 1)
    w.sink.clear_faults()
    for n in range(2, 2 + then):
        w.inject()
        wait_until(lambda: w.count("success") == n)


def test_connection_maxmessages_and_idle_expiry(world):
    w = world(rows={"capacity": [capacity("example.test", connection_maxmessages=2,
                                          connection_maxidletime=200)]})
    for n in range(1, 6):
        w.inject()
        wait_until(lambda: w.count("success") == n)
    assert w.sink.connections == 3
    wait_until(lambda: w.sink.open == 0, timeout=5)     # idle past 200 ms: closed


def test_a_flood_reply_switches_the_pair_to_the_flood_capacity(world):
    flood = {"pattern": "too many messages", "type": "substr", "duration": 600}
    flood.update({k: v for k, v in capacity("", domain_maxmessages=1).items()
                  if k not in ("domain", "localip")})
    w = world(rows={"flood_responses": [flood]})
    w.sink.fault("rcpt", "450 4.7.0 too many messages, slow down")
    w.inject()
    wait_until(lambda: w.count("retry") == 1)
    rule = w.engine.throttles.flood_rule(None, "example.test")
    assert rule is not None and rule.capacity.domain_maxmessages == 1


# -- TLS and DKIM -------------------------------------------------------------------

def test_starttls_is_used_when_offered(world, tmp_path):
    context = certificates.server_context("", "", var_dir=str(tmp_path))
    sink = SmtpSink(tls=context).start()
    w = world(sink=sink)
    w.inject()
    wait_until(lambda: len(sink.messages) == 1)
    assert sink.messages[0].tls and sink.starttls_count == 1


def test_secure_capacity_refuses_a_server_without_tls(world):
    w = world(rows={"capacity": [capacity("example.test", secure=1)]})
    w.inject()
    wait_until(lambda: w.count("retry") == 1 and w.count("outbox") == 1)   # retried, acked
    assert w.sink.messages == []
    assert last_result(w.queued("outbox")[0])["status"] == "4.7.5"


def test_messages_are_signed_with_the_matching_dkim_key(world):
    private, txt = signing.generate_key("rsa-sha256")
    w = world(rows={"dkim_keys": [{"domain": "origin.test", "selector": "s1",
                                   "privatekey": private, "algorithm": "rsa-sha256",
                                   "expire": 0}],
                    "dkim_patterns": [{"sign": "*@origin.test", "type": "fnmatch", "key": 1}]})
    w.inject()
    wait_until(lambda: len(w.sink.messages) == 1)
    data = w.sink.messages[0].data
    assert data.startswith(b"DKIM-Signature:")

    def dnsfunc(name, timeout=5):
        return txt.encode() if name == b"s1._domainkey.origin.test." else None
    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert mail_dkim.verify(data, {"s1._domainkey.origin.test": txt}).results == ["pass"]


def test_dsn_parameters_are_passed_on_to_a_next_hop_that_offers_dsn(world):
    """RFC 3461 §6.2: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT, as xtext."""
    sink = SmtpSink(advertise=("PIPELINING", "8BITMIME", "DSN")).start()
    w = world(sink=sink)
    w.inject(dsn={"notify": "SUCCESS,FAILURE", "ret": "HDRS", "envid": "QQ 314159",
                  "orcpt": "rfc822;Ann+list@example.test"})
    wait_until(lambda: len(sink.messages) == 1)
    assert sink.commands == [
        "MAIL FROM:<sender@origin.test> RET=HDRS ENVID=QQ+20314159",
        # a plain "+" is not xtext: it goes as +2B
        "RCPT TO:<rcpt@example.test> NOTIFY=FAILURE,SUCCESS ORCPT=rfc822;Ann+2Blist@example.test"]


def test_dsn_parameters_are_left_out_for_a_next_hop_without_dsn(world):
    w = world()
    w.inject(dsn={"notify": "NEVER", "ret": "FULL", "envid": "QQ314159"})
    wait_until(lambda: len(w.sink.messages) == 1)
    assert w.sink.commands == ["MAIL FROM:<sender@origin.test>", "RCPT TO:<rcpt@example.test>"]


def test_an_8bit_message_to_a_server_without_8bitmime_is_reencoded_and_still_verifies(world):
    private, txt = signing.generate_key("rsa-sha256")
    sink = SmtpSink(advertise=("PIPELINING",)).start()
    w = world(sink=sink, rows={
        "dkim_keys": [{"domain": "origin.test", "selector": "s1", "privatekey": private,
                       "algorithm": "rsa-sha256", "expire": 0}],
        "dkim_patterns": [{"sign": "*@origin.test", "type": "fnmatch", "key": 1}]})
    body = "Grüße aus Köln, " * 80        # 8-bit, and one line over 998 octets
    w.inject(mime=MIME.replace(b"Hello there.", body.encode()))
    wait_until(lambda: len(sink.messages) == 1)
    data = sink.messages[0].data
    assert data.isascii() and max(len(line) for line in data.split(b"\r\n")) <= 998
    assert mail_dkim.verify(data, {"s1._domainkey.origin.test": txt}).results == ["pass"]


# -- statistics -------------------------------------------------------------------

def test_outcomes_are_counted_per_minute_in_the_deliveries_tables(world, tmp_path):
    from sqlalchemy import text

    from mailerq_gevent.db import schema
    from mailerq_gevent.db.engine import make_engine
    from mailerq_gevent.delivery.stats import Stats
    engine = make_engine("sqlite:///%s" % (tmp_path / "stats.sqlite"))
    schema.ensure_schema(engine)
    w = world()
    w.engine.stats = Stats(engine)
    w.inject()
    w.inject(recipient="rcpt@other.test")
    # counted just after the outcome is published and the message acked
    wait_until(lambda: sum(v[0] for k, v in w.engine.stats.pending().items()
                           if k[0] == "deliveries_total") == 2)
    w.engine.stats.flush()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT sum(success) FROM deliveries_total")).scalar() == 2
        domains = dict(conn.execute(text("SELECT domain, success FROM deliveries_domain")).all())
        ips = dict(conn.execute(text("SELECT remoteip, success FROM deliveries_ip")).all())
    assert domains == {"example.test": 1, "other.test": 1} and ips == {"127.0.0.1": 2}


def test_the_headers_property_changes_the_mime_before_signing(world):
    w = world()
    w.inject(headers={"remove": ["Message-ID"], "prepend": {"X-Mailer": "mq"}})
    wait_until(lambda: len(w.sink.messages) == 1)
    data = w.sink.messages[0].data
    assert data.startswith(b"X-Mailer: mq\r\n") and b"Message-ID" not in data


# -- RabbitMQ ---------------------------------------------------------------------

def test_delivery_over_rabbitmq_with_a_retry_through_its_delay_queue(tmp_path, rabbit_url):
    """The same engine on RabbitMQ: delivered, and a 4xx retried through the
    ``<queue>.delay.<s>`` holding queue back into the outbox."""
    import uuid

    import kombu

    from mailerq_gevent import config
    from mailerq_gevent.broker import Broker, codec
    from mailerq_gevent.connections import ConnectionBudget
    from mailerq_gevent.db import load
    from mailerq_gevent.delivery.engine import DeliveryEngine
    from tests.rows import numbered
    tag = uuid.uuid4().hex[:8]
    outbox, retry = "t_outbox_" + tag, "t_retry_" + tag
    sink = SmtpSink().start()
    conf = config.defaults().replace(rabbitmq_address=rabbit_url, rabbitmq_outbox=outbox,
                                     rabbitmq_results="", rabbitmq_success="",
                                     rabbitmq_failure="", rabbitmq_retry=retry,
                                     rabbitmq_dsn="", smtp_hostname="mta.test")
    broker = Broker(rabbit_url)
    broker.start([outbox, retry])
    snapshot = load.build_snapshot(numbered({"dns": [
        {"domain": "example.test", "address": "127.0.0.1:%d" % sink.port, "priority": 1}]}))
    engine = DeliveryEngine(conf, broker, lambda: snapshot, ConnectionBudget(),
                            make_resolver(None), command_timeout=5, connect_timeout=5).start()
    try:
        message = {"envelope": "a@origin.test", "recipient": "b@example.test",
                   "mime": MIME.decode()}
        broker.publish(outbox, codec.encode(message))
        wait_until(lambda: len(sink.messages) == 1)
        sink.fault("rcpt", "451 4.3.0 later")
        broker.publish(outbox, codec.encode(dict(message, retries=[1])))
        wait_until(lambda: broker.depth(retry) == 1)
        sink.clear_faults()
        wait_until(lambda: len(sink.messages) == 2, timeout=20)   # back after ~1 s
        wait_until(lambda: broker.depth(outbox) == 0)
    finally:
        engine.stop(5)
        broker.stop(5)
        sink.stop()
        with kombu.Connection(rabbit_url) as conn:
            channel = conn.channel()
            for name in (outbox, retry, outbox + ".delay.1"):
                try:
                    channel.queue_delete(name)
                except Exception:  # noqa: BLE001 - cleanup only: it may not exist
                    channel = conn.channel()


def test_a_pipelining_server_gets_mail_rcpt_and_data_in_one_write_rset_only_when_needed(world):
    """RFC 2920: the commands of a transaction go together; the replies are
    read in order; a refused recipient does not desynchronise the session.
    A forwarder between the engine and the sink records what each write held."""
    import socket as sockets

    from gevent.server import StreamServer
    w = world()
    chunks = []

    def forward(client, _address):
        upstream = sockets.create_connection(("127.0.0.1", w.sink.port))

        def pump(source, target, record):
            while True:
                data = source.recv(65536)
                if not data:
                    target.close()
                    return
                if record:
                    chunks.append(data)
                target.sendall(data)
        back = gevent.spawn(pump, upstream, client, False)
        pump(client, upstream, True)
        back.join(5)
    proxy = StreamServer(("127.0.0.1", 0), forward)
    proxy.start()
    w.set_rows({"dns": [{"domain": "example.test", "priority": 1,
                         "address": "127.0.0.1:%d" % proxy.server_port}]})
    try:
        _deliver_refuse_deliver(w, then=1)
    finally:
        proxy.stop(1)
    together = [c for c in chunks if b"MAIL FROM:" in c]
    assert len(together) == 3 and all(b"RCPT TO:" in c and b"DATA\r\n" in c for c in together)
    # a delivered message leaves the server reset (RFC 5321 §4.1.1.4); the
    # refused recipient leaves MAIL's transaction open, so RSET ends it first
    assert together[0].startswith(b"MAIL FROM:") and together[1].startswith(b"MAIL FROM:")
    assert together[2].startswith(b"RSET\r\nMAIL FROM:")
    assert w.sink.connections == 1 and len(w.sink.messages) == 2
