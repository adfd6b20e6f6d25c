"""The inbound checks (smtpd/checks.py) against a real DNS server on loopback
(tests/dns_server.py) and a real spamd (tests/spamd.py): SPF, DKIM, DMARC,
spam, the Authentication-Results header, and how failures are bounded."""

import base64
import socket
import time

import dkim
import gevent
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailerq_gevent import config
from mailerq_gevent.config_values import HostPort
from mailerq_gevent.resolver import TemporaryError, make_resolver, resolve, txt
from mailerq_gevent.smtpd.checks import CheckResults, InboundChecks, SpamdError, parse_spamd_reply
from tests.dns_server import serve_zone, silent_server

PEER = "127.0.0.1"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SPF_LOCAL = "v=spf1 ip4:127.0.0.1 -all"


def make_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


@pytest.fixture(scope="module")
def key():
    return make_key()


@pytest.fixture(scope="module")
def zone(key):
    _, public = key
    records = [
        # SPF
        ("pass.test", "TXT", SPF_LOCAL),
        ("fail.test", "TXT", "v=spf1 ip4:192.0.2.1 -all"),
        ("soft.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all"),
        ("nospf.test", "A", "192.0.2.1"),
        ("broken.test", "TXT", "v=spf1 ip4:127.0.0.1 bogus:x -all"),
        ("include.test", "TXT", "v=spf1 include:pass.test -all"),
        ("mx.test", "TXT", "v=spf1 mx -all"),
        ("mx.test", "MX", "10 smtp.mx.test"),
        ("smtp.mx.test", "A", "127.0.0.1"),
        ("helo.test", "TXT", "v=spf1 a -all"),
        ("helo.test", "A", "127.0.0.1"),
        # DKIM keys (2048 bits: the TXT answer is over 512 bytes, so over TCP)
        ("s1._domainkey.example.test", "TXT", public),
        ("s2._domainkey.example.test", "TXT", public),
        ("s1._domainkey.other.test", "TXT", public),
        ("bad._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=bm90IGEga2V5"),
        ("s1._domainkey.down.test", "TXT", public),
        # DMARC
        ("example.test", "TXT", SPF_LOCAL),
        ("mail.example.test", "TXT", SPF_LOCAL),
        ("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=quarantine"),
        ("other.test", "TXT", SPF_LOCAL),
        ("strict.test", "TXT", SPF_LOCAL),
        ("mail.strict.test", "TXT", SPF_LOCAL),
        ("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject; aspf=s; adkim=s"),
        ("_dmarc.twice.test", "TXT", "v=DMARC1; p=reject"),
        ("_dmarc.twice.test", "TXT", "v=DMARC1; p=none"),
        ("_dmarc.malformed.test", "TXT", "v=DMARC1; p=maybe"),
        ("_dmarc.notdmarc.test", "TXT", "some other text"),
    ]
    with serve_zone(records, servfail=["down.test", "s1._domainkey.down.test",
                                       "_dmarc.down-dmarc.test"]) as running:
        yield running


@pytest.fixture(scope="module")
def resolver(zone):
    return make_resolver(zone.address, lifetime=3)


def conf(checks, **values):
    return config.defaults().replace(smtp_check=tuple(checks), **values)


def checker(resolver, *checks, **values):
    return InboundChecks(conf(checks or ("spf", "dkim", "dmarc"), **values), resolver=resolver)


def message(sender="a@example.test", body="Hello there.\r\n", extra=""):
    return ("From: Someone <%s>\r\nTo: b@dest.test\r\nSubject: a test\r\n"
            "Date: Tue, 25 Nov 2025 12:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n"
            "%s\r\n%s" % (sender, extra, body)).encode()


def signed(key, content, domain="example.test", selector="s1"):
    header = dkim.sign(content, selector.encode(), domain.encode(), key[0],
                       include_headers=[b"from", b"to", b"subject", b"date"])
    return header + content


# -- the resolver and the DNS server -----------------------------------------

def test_resolver_reads_long_txt_records(zone, resolver, key):
    assert txt(resolver, "s1._domainkey.example.test") == [key[1].encode()]
    assert txt(resolver, "nothing.test") == []


def test_resolver_retries_a_truncated_answer_over_tcp(dns_zone):
    value = "".join("%04d" % n for n in range(500))   # 2000 bytes: over EDNS0's 1232
    served = dns_zone([("big.test", "TXT", value)])
    assert txt(make_resolver(served.address), "big.test") == [value.encode()]


def mx(resolver, name):
    return sorted((rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
                  for rdata in resolve(resolver, name, "MX"))


def addresses(resolver, name, rdtype="A"):
    return [rdata.address for rdata in resolve(resolver, name, rdtype)]


def test_dns_zone_fixture_serves_mx_cname_and_servfail(dns_zone):
    served = dns_zone([("example.test", "MX", "20 b.example.test"),
                       ("example.test", "MX", "10 a.example.test"),
                       ("a.example.test", "A", "192.0.2.10"),
                       ("b.example.test", "CNAME", "a.example.test"),
                       ("a.example.test", "AAAA", "2001:db8::10")], servfail=["bad.test"])
    asking = make_resolver(served.address, lifetime=2)
    assert mx(asking, "example.test") == [(10, "a.example.test"), (20, "b.example.test")]
    assert addresses(asking, "b.example.test") == ["192.0.2.10"]
    assert addresses(asking, "a.example.test", "AAAA") == ["2001:db8::10"]
    assert mx(asking, "a.example.test") == [] and mx(asking, "nowhere.test") == []
    with pytest.raises(TemporaryError):
        mx(asking, "bad.test")


def test_unanswered_dns_is_a_temporary_error_within_the_lifetime():
    with silent_server() as (host, port):
        quick = make_resolver(HostPort(host, port), lifetime=1)
        started = time.monotonic()
        with pytest.raises(TemporaryError):
            txt(quick, "example.test")
        assert time.monotonic() - started < 2


def test_dns_waits_are_cooperative():
    ticks = []

    def tick():
        while True:
            ticks.append(1)
            gevent.sleep(0.05)

    with silent_server() as (host, port):
        ticker = gevent.spawn(tick)
        with pytest.raises(TemporaryError):
            txt(make_resolver(HostPort(host, port), lifetime=1), "example.test")
        ticker.kill()
    assert len(ticks) >= 10


# -- SPF ------------------------------------------------------------------------

@pytest.mark.parametrize("sender, expected", [
    ("a@pass.test", "pass"),
    ("a@fail.test", "fail"),
    ("a@soft.test", "softfail"),
    ("a@nospf.test", "none"),
    ("a@unknown.test", "none"),
    ("a@broken.test", "permerror"),
    ("a@include.test", "pass"),
    ("a@mx.test", "pass"),
    ("a@down.test", "temperror"),
])
def test_spf(resolver, sender, expected):
    results = checker(resolver, "spf").run(PEER, "client.test", sender, message()).results
    assert results == {"spf": {"result": expected, "domain": sender.split("@")[1],
                               "identity": "mailfrom"}}


def test_spf_fails_for_another_client_address(resolver):
    results = checker(resolver, "spf").run("192.0.2.99", "x.test", "a@pass.test", message())
    assert results.results["spf"]["result"] == "fail"


def test_spf_checks_the_helo_name_for_a_null_sender(resolver):
    results = checker(resolver, "spf").run(PEER, "helo.test", "", message()).results
    assert results["spf"] == {"result": "pass", "domain": "helo.test", "identity": "helo"}


def test_spf_none_without_any_identity_even_when_it_finishes_first(resolver, key):
    # SPF needs no DNS here, so it is done while DKIM still waits for its key
    results = checker(resolver, "spf", "dkim").run(PEER, "", "", signed(key, message())).results
    assert results["spf"] == {"result": "none", "domain": "", "identity": "helo"}
    assert results["dkim"][0]["result"] == "pass"


def test_spf_gives_temperror_when_dns_does_not_answer():
    with silent_server() as (host, port):
        quick = make_resolver(HostPort(host, port), lifetime=1)
        started = time.monotonic()
        results = checker(quick, "spf").run(PEER, "x.test", "a@pass.test", message()).results
        assert time.monotonic() - started < 3
    assert results["spf"]["result"] == "temperror"


def test_each_check_is_bounded_by_its_timeout():
    with silent_server() as (host, port):
        slow = make_resolver(HostPort(host, port), lifetime=30)
        checks = InboundChecks(conf(["spf"]), resolver=slow, timeout=0.5)
        started = time.monotonic()
        results = checks.run(PEER, "x.test", "a@pass.test", message()).results
        assert time.monotonic() - started < 1.5
    assert results["spf"]["result"] == "temperror"


# -- DKIM -----------------------------------------------------------------------

def test_dkim_pass(resolver, key):
    results = checker(resolver, "dkim").run(PEER, "x.test", "", signed(key, message())).results
    assert results == {"dkim": [{"result": "pass", "domain": "example.test", "selector": "s1"}]}


def test_dkim_fail_for_a_changed_body(resolver, key):
    content = signed(key, message()).replace(b"Hello there.", b"Hello world.")
    results = checker(resolver, "dkim").run(PEER, "x.test", "", content).results
    assert results["dkim"] == [{"result": "fail", "domain": "example.test", "selector": "s1"}]


def test_dkim_fail_for_a_changed_signed_header(resolver, key):
    content = signed(key, message()).replace(b"Subject: a test", b"Subject: a trick")
    results = checker(resolver, "dkim").run(PEER, "x.test", "", content).results
    assert results["dkim"][0]["result"] == "fail"


def test_dkim_none_when_unsigned(resolver):
    assert checker(resolver, "dkim").run(PEER, "x.test", "", message()).results == {"dkim": []}


@pytest.mark.parametrize("selector, domain, expected", [
    ("missing", "example.test", "permerror"),   # no key record
    ("bad", "example.test", "permerror"),       # a record that is not a key
    ("s1", "down.test", "temperror"),           # the key's server fails
])
def test_dkim_key_problems(resolver, key, selector, domain, expected):
    content = signed(key, message(), domain=domain, selector=selector)
    results = checker(resolver, "dkim").run(PEER, "x.test", "", content).results
    assert results["dkim"] == [{"result": expected, "domain": domain, "selector": selector}]


def test_dkim_checks_every_signature(resolver, key):
    content = signed(key, signed(key, message(), selector="s2"), domain="other.test")
    results = checker(resolver, "dkim").run(PEER, "x.test", "", content).results
    assert results["dkim"] == [
        {"result": "pass", "domain": "other.test", "selector": "s1"},
        {"result": "pass", "domain": "example.test", "selector": "s2"},
    ]


def test_dkim_permerror_for_a_malformed_signature(resolver):
    content = message(extra="DKIM-Signature: v=1; a=rsa-sha256; d=example.test\r\n")
    results = checker(resolver, "dkim").run(PEER, "x.test", "", content).results
    assert results["dkim"] == [{"result": "permerror", "domain": "example.test", "selector": ""}]


def test_dkim_permerror_for_an_unparsable_signature(resolver):
    content = message(extra="DKIM-Signature: v=1; a\r\n")
    results = checker(resolver, "dkim").run(PEER, "x.test", "", content).results
    assert results["dkim"] == [{"result": "permerror", "domain": "", "selector": ""}]


# -- DMARC ----------------------------------------------------------------------

def dmarc(resolver, content, sender="bounce@other.test"):
    return checker(resolver).run(PEER, "x.test", sender, content).results["dmarc"]


def test_dmarc_pass_by_aligned_dkim(resolver, key):
    found = dmarc(resolver, signed(key, message()), sender="bounce@other.test")
    assert found == {"result": "pass", "policy": "reject", "domain": "example.test"}


def test_dmarc_pass_by_aligned_spf(resolver):
    found = dmarc(resolver, message(), sender="bounce@mail.example.test")
    assert found == {"result": "pass", "policy": "reject", "domain": "example.test"}


def test_dmarc_fail_when_nothing_is_aligned(resolver, key):
    content = signed(key, message(), domain="other.test")
    results = checker(resolver).run(PEER, "x.test", "bounce@other.test", content).results
    assert results["spf"]["result"] == "pass" and results["dkim"][0]["result"] == "pass"
    assert results["dmarc"] == {"result": "fail", "policy": "reject", "domain": "example.test"}


def test_dmarc_fail_when_spf_fails(resolver):
    results = checker(resolver).run("192.0.2.99", "x", "a@example.test", message()).results
    assert results["spf"]["result"] == "fail"
    assert results["dmarc"]["result"] == "fail"


def test_dmarc_none_without_a_record(resolver):
    found = dmarc(resolver, message(sender="a@other.test"))
    assert found == {"result": "none", "policy": None, "domain": "other.test"}


def test_dmarc_subdomain_uses_the_organizational_record_and_sp(resolver, key):
    found = dmarc(resolver, signed(key, message(sender="a@news.example.test")))
    assert found == {"result": "pass", "policy": "quarantine", "domain": "news.example.test"}


def test_dmarc_strict_alignment(resolver):
    found = dmarc(resolver, message(sender="a@strict.test"), sender="x@mail.strict.test")
    assert found == {"result": "fail", "policy": "reject", "domain": "strict.test"}
    found = dmarc(resolver, message(sender="a@strict.test"), sender="x@strict.test")
    assert found["result"] == "pass"


@pytest.mark.parametrize("sender, expected", [
    ("a@twice.test", "none"),         # two records: as if none (RFC 7489 6.6.3)
    ("a@notdmarc.test", "none"),      # a TXT record that is not DMARC
    ("a@malformed.test", "permerror"),
    ("a@down-dmarc.test", "temperror"),
])
def test_dmarc_record_problems(resolver, sender, expected):
    assert dmarc(resolver, message(sender=sender))["result"] == expected


def test_dmarc_permerror_without_a_single_from_domain(resolver):
    content = message().replace(b"From: Someone <a@example.test>",
                                b"From: a@example.test, b@other.test")
    assert dmarc(resolver, content) == {"result": "permerror", "policy": None, "domain": None}


# -- the Authentication-Results header ---------------------------------------

def test_header_for_passing_checks(resolver, key):
    results = checker(resolver).run(PEER, "x.test", "bounce@example.test", signed(key, message()))
    assert results.header("mx.example.org") == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=pass smtp.mailfrom=example.test;\r\n"
        b"\tdkim=pass header.d=example.test header.s=s1;\r\n"
        b"\tdmarc=pass (p=reject) header.from=example.test\r\n")


def test_header_for_failing_checks(resolver):
    results = checker(resolver).run("192.0.2.99", "helo.test", "", message())
    assert results.header("mx.example.org") == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=fail smtp.helo=helo.test;\r\n"
        b"\tdkim=none;\r\n"
        b"\tdmarc=fail (p=reject) header.from=example.test\r\n")


def test_header_quotes_client_text_and_stays_folded(resolver):
    helo = 'evil; dkim=pass "x" ' + " ".join(["word"] * 40) + "\x01"
    header = checker(resolver, "spf").run(PEER, helo, "", message()).header("mx.example.org")
    lines = header.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) < 78 for line in lines)
    assert all(line[:1] in (b"\t", b" ") for line in lines[1:-1])
    unfolded = header.replace(b"\r\n", b"")
    assert b'spf=none smtp.helo="evil; dkim=pass \\"x\\" word word' in unfolded
    assert unfolded.endswith(b' word?"') and unfolded.count(b"dkim=") == 1


def test_header_is_none_when_only_spam_ran():
    found = {"result": "ham", "score": 1.0, "threshold": 5.0}
    assert CheckResults({"spam": found}).header("mx") == \
        b"Authentication-Results: mx;\r\n\tnone\r\n"


# -- spam -----------------------------------------------------------------------

def spam_checker(port, **values):
    return InboundChecks(conf(["spam"], spamassassin_host="127.0.0.1", spamassassin_port=port),
                         **values)


def test_gtube_is_spam(spamd):
    results = spam_checker(spamd.port).run(PEER, "x", "a@x.test", message(body=GTUBE + "\r\n"))
    found = results.results["spam"]
    assert found["result"] == "spam" and found["score"] >= 1000 and found["threshold"] == 5.0


def test_a_plain_message_is_ham(spamd):
    found = spam_checker(spamd.port).run(PEER, "x", "a@x.test", message()).results["spam"]
    assert found["result"] == "ham" and found["score"] < found["threshold"] == 5.0


def test_spam_error_quickly_when_spamd_is_down():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]   # closed again below: nothing listens
    started = time.monotonic()
    found = spam_checker(port).run(PEER, "x", "a@x.test", message()).results["spam"]
    assert time.monotonic() - started < 1
    assert found == {"result": "error", "score": None, "threshold": None}


def test_spam_error_when_spamd_does_not_answer():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        checks = spam_checker(listener.getsockname()[1], timeout=0.5)
        started = time.monotonic()
        found = checks.run(PEER, "x", "a@x.test", message()).results["spam"]
        assert time.monotonic() - started < 1.5
    assert found["result"] == "error"


def test_spamd_replies_are_parsed_strictly():
    assert parse_spamd_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.5 / 5.0\r\n\r\n") == \
        {"result": "ham", "score": -0.5, "threshold": 5.0}
    for reply in (b"", b"SPAMD/1.0 76 Bad header line\r\n", b"SPAMD/1.1 0 EX_OK\r\n\r\n"):
        with pytest.raises(SpamdError):
            parse_spamd_reply(reply)


# -- all together ---------------------------------------------------------------

def test_all_checks_together(resolver, key, spamd):
    checks = InboundChecks(conf(["spf", "dkim", "dmarc", "spam"], spamassassin_host="127.0.0.1",
                                spamassassin_port=spamd.port), resolver=resolver)
    results = checks.run(PEER, "x.test", "bounce@example.test", signed(key, message())).results
    assert list(results) == ["spf", "dkim", "dmarc", "spam"]
    found = [results["spf"]["result"], results["dkim"][0]["result"],
             results["dmarc"]["result"], results["spam"]["result"]]
    assert found == ["pass", "pass", "pass", "ham"]


def test_disabled_without_smtp_check():
    assert InboundChecks(config.defaults()).enabled is False
    assert InboundChecks(conf(["spam"])).enabled is True

