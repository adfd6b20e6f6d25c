"""DKIM signing (mailerq_gevent.signing), checked by two real verifiers:
dkimpy's ``dkim.verify`` and Perl's Mail::DKIM (tests/mail_dkim.py), both
served the public keys' TXT records without a network."""

import base64
import logging
import os
import re
import shutil
import subprocess
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from mailerq_gevent import signing
from mailerq_gevent.db import load
from tests import mail_dkim

NOW = int(time.time()) - 60    # verifiers refuse a t= in the future
MESSAGE = (b"From: Alice Example <alice@example.com>\r\n"
           b"To: bob@example.org\r\n"
           b"Cc: carol@example.net\r\n"
           b"Subject: quarterly figures\r\n"
           b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"
           b"Message-ID: <1@example.com>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"List-Unsubscribe: <mailto:unsub@example.com>\r\n"
           b"Received: from nowhere\r\n"
           b"X-Mailer: tests\r\n"
           b"\r\n"
           b"Hello Bob,\r\n\r\nthe figures are attached.\r\n")


def require_nacl():
    """dkimpy verifies ed25519 with PyNaCl; skip without it (fail under CI)."""
    try:
        import nacl.signing  # noqa: F401
    except ImportError:
        message = "dkimpy needs PyNaCl to verify ed25519: pip install pynacl==1.6.2"
        if os.environ.get("CI") == "true":
            pytest.fail("under CI: " + message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def rsa_key():
    return signing.generate_key("rsa-sha256", 2048)


@pytest.fixture(scope="module")
def ed_key():
    return signing.generate_key("ed25519")


def key(pem, selector="s1", algorithm="rsa-sha256", domain="example.com", **extra):
    return signing.SigningKey.create(domain, selector, pem, algorithm, **extra)


def records(*pairs):
    """TXT records for ``(SigningKey, txt)`` pairs."""
    return {"%s._domainkey.%s" % (k.selector, k.domain): txt for k, txt in pairs}


def dkimpy_results(message, txt_records):
    """dkimpy's verdict for each DKIM-Signature of ``message``, top first."""
    served = {(name + ".").encode(): txt.encode() for name, txt in txt_records.items()}

    def dnsfunc(name, timeout=5):
        return served.get(name)
    checker = dkim.DKIM(message)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    return [_dkimpy_one(checker, idx, dnsfunc) for idx in range(count)]


def _dkimpy_one(checker, idx, dnsfunc):
    try:
        return checker.verify(idx, dnsfunc=dnsfunc)
    except dkim.DKIMException:    # as dkim.verify: a broken signature is False
        return False


def tags(message, index=0):
    """The tags of the ``index``-th DKIM-Signature of ``message``."""
    headers, _ = dkim.rfc822_parse(message)
    values = [v for n, v in headers if n.lower() == b"dkim-signature"]
    return dkim.util.parse_tag_value(re.sub(rb"\s+", b"", values[index]))


def signed(rsa_key, message=MESSAGE, **extra):
    k = key(rsa_key[0], **extra)
    return signing.Signer().sign(message, [k], now=NOW), records((k, rsa_key[1]))


# -- both verifiers pass what we sign ----------------------------------------

def test_rsa_2048_signature_verifies_with_dkimpy_and_mail_dkim(rsa_key):
    message, txt = signed(rsa_key)
    assert dkimpy_results(message, txt) == [True]
    assert mail_dkim.verify(message, txt).results == ["pass"]
    fields = tags(message)
    assert fields[b"a"] == b"rsa-sha256" and fields[b"c"] == b"relaxed/relaxed"
    assert fields[b"d"] == b"example.com" and fields[b"s"] == b"s1"
    assert fields[b"t"] == b"%d" % NOW and b"x" not in fields
    assert fields[b"h"].split(b":") == [
        b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
        b"content-type", b"list-unsubscribe", b"from"]


def test_ed25519_signature_verifies_with_dkimpy(ed_key):
    require_nacl()
    k = key(ed_key[0], "e1", "ed25519-sha256")
    message = signing.Signer().sign(MESSAGE, [k], now=NOW)
    assert tags(message)[b"a"] == b"ed25519-sha256"
    assert ed_key[1].startswith("v=DKIM1; k=ed25519; p=")
    assert dkimpy_results(message, records((k, ed_key[1]))) == [True]
    broken = message.replace(b"figures are", b"figures were")
    assert dkimpy_results(broken, records((k, ed_key[1]))) == [False]


def test_ed25519_signature_verifies_with_mail_dkim(ed_key):
    mail_dkim.require()
    if not mail_dkim.supports_ed25519():
        pytest.skip("this Mail::DKIM has no ed25519-sha256 (Debian 12 ships 1.20230212)")
    k = key(ed_key[0], "e1", "ed25519-sha256")
    message = signing.Signer().sign(MESSAGE, [k], now=NOW)
    assert mail_dkim.verify(message, records((k, ed_key[1]))).results == ["pass"]


def test_expire_sets_x_after_t(rsa_key):
    message, txt = signed(rsa_key, expire=86400)
    fields = tags(message)
    assert int(fields[b"x"]) == int(fields[b"t"]) + 86400 == NOW + 86400
    assert mail_dkim.verify(message, txt).result == "pass"


def test_relaxed_canonicalization_survives_header_whitespace_changes(rsa_key):
    message, txt = signed(rsa_key)
    changed = message.replace(b"Subject: quarterly figures", b"subject:   quarterly \r\n\t figures  ")
    changed = changed.replace(b"To: bob@example.org", b"To:\tbob@example.org ")
    changed = changed.replace(b"the figures are", b"the  figures\tare  ")
    assert changed != message
    assert dkimpy_results(changed, txt) == [True]
    assert mail_dkim.verify(changed, txt).results == ["pass"]


def test_multiple_keys_give_one_signature_each_in_order_all_verifying(rsa_key, ed_key):
    second = signing.generate_key()
    keys = [key(rsa_key[0], "s1"), key(second[0], "s2", domain="esp.example", expire=600)]
    txt = records((keys[0], rsa_key[1]), (keys[1], second[1]))
    message = signing.Signer().sign(MESSAGE, keys, now=NOW)
    assert [tags(message, i)[b"s"] for i in range(2)] == [b"s1", b"s2"]
    assert dkimpy_results(message, txt) == [True, True]
    report = mail_dkim.verify(message, txt)
    assert report.results == ["pass", "pass"]
    assert [(d, s) for _, d, s, _ in report.signatures] == [("example.com", "s1"),
                                                            ("esp.example", "s2")]


# -- the checks can fail -----------------------------------------------------

def test_tampered_body_fails_both_verifiers(rsa_key):
    message, txt = signed(rsa_key)
    tampered = message.replace(b"attached", b"lost")
    assert dkimpy_results(tampered, txt) == [False]
    report = mail_dkim.verify(tampered, txt)
    assert report.result == "fail" and "body has been altered" in report.signatures[0][3]


def test_changed_subject_or_added_from_fails(rsa_key):
    message, txt = signed(rsa_key)
    subject = message.replace(b"quarterly figures", b"quarterly figures!")
    assert dkimpy_results(subject, txt) == [False]
    assert mail_dkim.verify(subject, txt).result == "fail"
    head, body = message.split(b"\r\n\r\n", 1)
    second_from = head + b"\r\nFrom: mallory@evil.example\r\n\r\n" + body   # oversigned
    assert dkimpy_results(second_from, txt) == [False]
    assert mail_dkim.verify(second_from, txt).result == "fail"


def test_wrong_public_key_fails(rsa_key):
    message, txt = signed(rsa_key)
    other = {name: signing.generate_key()[1] for name in txt}
    assert dkimpy_results(message, other) == [False]
    assert mail_dkim.verify(message, other).result == "fail"


# -- input forms --------------------------------------------------------------

def test_lf_input_is_signed_in_its_crlf_wire_form(rsa_key):
    message, txt = signed(rsa_key, message=MESSAGE.replace(b"\r\n", b"\n"))
    assert b"\n" not in message.replace(b"\r\n", b"")
    assert message.endswith(MESSAGE)
    assert dkimpy_results(message, txt) == [True]
    assert mail_dkim.verify(message, txt).results == ["pass"]


def test_8bit_utf8_headers_and_body(rsa_key):
    source = MESSAGE.replace(b"quarterly figures", "Quartalszahlen für Jörg".encode())
    source = source.replace(b"Hello Bob,", "Grüße, 日本語のテキスト".encode())
    message, txt = signed(rsa_key, message=source)
    assert message.endswith(source)
    assert dkimpy_results(message, txt) == [True]
    assert mail_dkim.verify(message, txt).results == ["pass"]


def test_message_that_does_not_parse_goes_out_unsigned(rsa_key, caplog):
    broken = b" folded line before any header\nFrom: a@example.com\n\nbody\n"
    with caplog.at_level(logging.WARNING, logger="mailerq_gevent.signing"):
        out = signing.Signer().sign(broken, [key(rsa_key[0])], now=NOW)
    assert out == broken.replace(b"\n", b"\r\n")
    assert "event=dkim.unsigned" in caplog.text


# -- keys ----------------------------------------------------------------------

def test_keys_are_parsed_once_per_signer_and_cache_is_bounded(rsa_key, ed_key):
    signer = signing.Signer(cache_size=2)
    keys = [key(rsa_key[0]), key(ed_key[0], "e1", "ed25519")]
    for _ in range(5):
        signer.sign(MESSAGE, keys, now=NOW)
    assert signer.parses == 2
    third = key(rsa_key[0], "s3", key_id=3)    # same PEM, another row: its own entry
    signer.sign(MESSAGE, [third], now=NOW)
    assert signer.parses == 3
    signer.sign(MESSAGE, [keys[0]], now=NOW)  # dropped as least recently used
    assert signer.parses == 4


def test_broken_keys_are_skipped_with_a_warning_and_never_logged(rsa_key, ed_key, caplog):
    pem = rsa_key[0]
    keys = [key("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", "bad"),
            key(ed_key[0], "wrongtype", "rsa-sha256"),
            key(pem, "good")]
    signer = signing.Signer()
    with caplog.at_level(logging.DEBUG, logger="mailerq_gevent.signing"):
        message = signer.sign(MESSAGE, keys, now=NOW)
        signer.sign(MESSAGE, keys, now=NOW)
    assert message.count(b"DKIM-Signature:") == 1 and tags(message)[b"s"] == b"good"
    assert caplog.text.count("event=dkim.key_unusable") == 2        # once per key
    assert "needs an RSA key" in caplog.text
    body = pem.splitlines()[1]
    assert body not in caplog.text and "not a key" not in caplog.text
    assert "privatekey" not in repr(keys[2]) and body not in repr(keys[2])


def test_rsa_under_1024_bits_is_refused(caplog):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    small = subprocess.run(["openssl", "genrsa", "512"], capture_output=True, text=True,
                           check=True).stdout
    with pytest.raises(ValueError, match="512 bits"):
        signing.load_private_key(small, "rsa-sha256")


def test_legacy_sha1_is_signed_only_when_asked(rsa_key):
    message, txt = signed(rsa_key, algorithm="SHA-1")
    assert tags(message)[b"a"] == b"rsa-sha1"
    assert mail_dkim.verify(message, txt).results == ["pass"]
    assert signing.normalise_algorithm("SHA-256") == signing.normalise_algorithm(None) \
        == "rsa-sha256"
    with pytest.raises(ValueError):
        signing.normalise_algorithm("md5")


def test_ed25519_seed_in_base64_is_accepted(ed_key):
    require_nacl()
    private = signing.load_private_key(ed_key[0], "ed25519-sha256")
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    k = key(base64.b64encode(seed).decode(), "e1", "ed25519")
    message = signing.Signer().sign(MESSAGE, [k], now=NOW)
    assert dkimpy_results(message, records((k, ed_key[1]))) == [True]


def test_generate_key_txt_records():
    pem, txt = signing.generate_key("rsa-sha256", 1024)
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", txt)
    assert signing.public_txt(pem) == txt
    with pytest.raises(ValueError):
        signing.generate_key("rsa-sha256", 512)


# -- which keys ------------------------------------------------------------------

def snapshot(pems):
    rows = {"dkim_keys": [
        {"id": 1, "domain": "example.com", "selector": "pat", "privatekey": pems[0]},
        {"id": 2, "domain": "Example.com", "selector": "dom", "privatekey": pems[0]},
        {"id": 3, "domain": "esp.example", "selector": "esp", "privatekey": pems[1],
         "algorithm": "ed25519-sha256", "expire": 3600}],
        "dkim_patterns": [{"id": 1, "sign": "news@example.com", "type": "exact", "key": 1},
                          {"id": 2, "sign": "*@example.com", "type": "fnmatch", "key": 3}]}
    return load.build_snapshot(rows)


def test_keys_for_patterns_then_domain_then_message_each_once(rsa_key, ed_key):
    settings = snapshot([rsa_key[0], ed_key[0]])
    own = {"domain": "own.example", "selector": "m1", "key": rsa_key[0], "expire": 60}
    same = {"domain": "example.com", "selector": "pat", "key": ed_key[0]}
    keys = signing.keys_for(settings, "news@example.com", [own, same])
    assert [(k.selector, k.key_id) for k in keys] == [("pat", 1), ("esp", 3), ("m1", None)]
    assert keys[1].algorithm == "ed25519-sha256" and keys[1].expire == 3600
    keys = signing.keys_for(settings, "bob@other.example", own)
    assert [k.selector for k in keys] == ["m1"]
    settings = load.build_snapshot({"dkim_keys": [{"id": 2, "domain": "example.com",
                                                   "selector": "dom",
                                                   "privatekey": rsa_key[0]}]})
    assert [k.key_id for k in signing.keys_for(settings, "Bob@EXAMPLE.com", None)] == [2]
    assert signing.keys_for(settings, None, None) == []


def test_message_keys_are_validated_and_used(rsa_key, caplog):
    good = {"domain": "Own.Example.", "selector": "m1", "key": rsa_key[0],
            "headers": ["Subject", "To"]}
    bad = [{"domain": "x.example; h=to", "selector": "m2", "key": rsa_key[0]},
           {"domain": "x.example", "key": rsa_key[0]},
           {"domain": "x.example", "selector": "m3", "key": rsa_key[0], "algorithm": "md5"},
           {"domain": "x.example", "selector": "m4", "key": rsa_key[0], "expire": -5},
           {"domain": "x.example", "selector": "m5", "key": rsa_key[0], "headers": ["a b"]},
           {"domain": "x.example", "selector": "m6"}, "nonsense"]
    with caplog.at_level(logging.WARNING, logger="mailerq_gevent.signing"):
        keys = signing.message_keys([good] + bad)
    assert [k.selector for k in keys] == ["m1"] and keys[0].domain == "own.example"
    assert caplog.text.count("event=dkim.message_key_skipped") == len(bad)
    assert rsa_key[0].splitlines()[1] not in caplog.text
    message = signing.Signer().sign(MESSAGE, keys, now=NOW)
    assert tags(message)[b"h"].split(b":") == [b"from", b"subject", b"to"]
    txt = records((keys[0], rsa_key[1]))
    assert dkimpy_results(message, txt) == [True]
    assert mail_dkim.verify(message, txt).results == ["pass"]


def test_from_address():
    assert signing.from_address(MESSAGE) == "alice@example.com"
    folded = b"Subject: x\nFrom: =?utf-8?q?J=C3=B6rg?=\n <jorg@example.de>, b@example.org\n\nhi"
    assert signing.from_address(folded) == "jorg@example.de"
    assert signing.from_address(b"To: a@example.com\r\n\r\nFrom: b@example.com\r\n") is None
    assert signing.from_address("From: Ünïcode <ü@exämple.com>\n\n") == "ü@exämple.com"
    first = b"X-From: x@example.net\r\nFROM:\r\n  <a@example.com>\r\nFrom: b@example.com\r\n\r\n"
    assert signing.from_address(first) == "a@example.com"
    assert signing.from_address(b"From: group:;\r\nSubject: s\r\n\r\n") is None



def test_crlf_input_is_not_copied_and_lf_input_is_converted():
    crlf = b"From: a@example.com\r\n\r\nbody\r\n"
    assert signing.crlf(crlf) is crlf
    assert signing.crlf(b"From: a@example.com\n\nbody\r\nend\n") == (
        b"From: a@example.com\r\n\r\nbody\r\nend\r\n")


def _random_messages(count, seed):
    """Short messages from the pieces canonicalisation cares about: WSP runs,
    CR and LF alone and together, colons, continuation lines, mbox From."""
    import random
    pieces = [b"a", b"B", b":", b" ", b"\t", b"  \t", b"\r", b"\n", b"\r\n", b"\r\n\r\n",
              b"\r\n ", b"\r\n\t", b"From ", b"X-A:", b"b c", b"\x80"]
    draw = random.Random(seed)
    return [b"".join(draw.choice(pieces) for _ in range(draw.randint(0, 24)))
            for _ in range(count)]


def test_split_and_relaxed_forms_agree_with_dkimpy_on_random_messages():
    from dkim.canonicalization import Relaxed
    for message in _random_messages(30000, seed=13):
        wire = signing.crlf(message)
        try:
            expected = dkim.rfc822_parse(wire)
        except (dkim.MessageFormatError, IndexError):
            with pytest.raises(dkim.MessageFormatError):
                signing._split(wire)
            continue
        headers, body = signing._split(wire)
        assert (headers, body) == ([list(h) for h in expected[0]], expected[1]), wire
        assert signing._relaxed_body(body) == Relaxed.canonicalize_body(body), body
        assert [(name.lower(), signing._relaxed_value(value)) for name, value in headers] == \
            [tuple(h) for h in Relaxed.canonicalize_headers(headers)], headers
        assert signing._relaxed_body(message) == Relaxed.canonicalize_body(message), message
