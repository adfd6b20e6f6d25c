"""The message's ``headers`` property: remove, prepend, append, replace."""

from mailerq_gevent.delivery.headers import apply

MIME = (b"Received: from a\r\n\tby b\r\nFrom: x@origin.test\r\nSubject: old\r\n"
        b"X-Campaign: 7\r\nx-campaign: 8\r\n\r\nbody\r\n")


def test_nothing_to_do_leaves_the_bytes_alone():
    assert apply(MIME, None) is MIME and apply(MIME, {}) is MIME


def test_remove_is_case_insensitive_and_takes_every_field():
    out = apply(MIME, {"remove": ["X-CAMPAIGN"]})
    assert b"campaign" not in out.lower() and out.endswith(b"\r\n\r\nbody\r\n")
    assert out.startswith(b"Received: from a\r\n\tby b\r\n")       # folded field kept whole


def test_prepend_and_append_take_objects_and_pairs():
    out = apply(MIME, {"prepend": {"X-First": "1"}, "append": [["X-Last", "2"],
                                                                {"name": "X-Also", "value": 3}]})
    head = out.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"X-First: 1" and head[-2:] == [b"X-Last: 2", b"X-Also: 3"]


def test_replace_keeps_the_place_of_the_first_and_drops_the_rest():
    out = apply(MIME, {"replace": {"subject": "new one", "X-Campaign": "9", "X-New": "n"}})
    head = out.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[3] == b"subject: new one" and head[4] == b"X-Campaign: 9"
    assert b"x-campaign: 8" not in out and head[-1] == b"X-New: n"


def test_header_injection_and_bad_names_are_skipped():
    out = apply(MIME, {"append": {"X-Evil": "a\r\nBcc: victim@example.com", "Bad Name": "x",
                                  "X-Good": "ok"}})
    assert b"Bcc" not in out and b"Bad Name" not in out and b"X-Good: ok\r\n" in out


def test_long_values_are_folded_at_spaces():
    out = apply(MIME, {"append": {"X-Long": " ".join(["word"] * 60)}})
    field = out.split(b"X-Long:")[1].split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in (b"X-Long:" + field).split(b"\r\n"))
    assert b"\r\n " in field
