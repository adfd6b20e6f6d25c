"""The live view of sessions in SMTP worker processes: forwarded to the daemon's recorder."""

import base64
import json

from mailerq_gevent.console.live import Recorder
from mailerq_gevent.smtpd.live_relay import LiveRelay, RemoteRecorder
from mailerq_gevent.transcript import NULL_TAP, SECRET
from tests.clock import FakeClock


def talk(tap, steps):
    for side, data in steps:
        (tap.received if side == "c" else tap.sent)(data)
    tap.end()


SESSION = [("s", b"220 mx ESMTP\r\n"), ("c", b"EHLO c\r\n"), ("s", b"250 mx\r\n"),
           ("c", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), ("s", b"235 2.7.0 ok\r\n"),
           ("c", b"AUTH LOGIN\r\n"), ("s", b"334 VXNlcm5hbWU6\r\n"), ("c", b"YWxpY2U=\r\n"),
           ("s", b"503 already\r\n"),
           ("c", b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
           ("s", b"250 ok\r\n250 ok\r\n354 go\r\n"), ("c", b"Subject: x\r\n\r\nhi\r\n.\r\n"),
           ("s", b"250 queued\r\n")]


def test_a_worker_session_reaches_the_daemons_recorder_without_its_secrets():
    sent = []
    remote = RemoteRecorder(lambda notice: sent.append(json.loads(json.dumps(notice))))
    talk(remote.tap("in", "192.0.2.9", "127.0.0.1"), SESSION)
    wire = json.dumps(sent)
    assert "AGFsaWNlAHNlY3JldA==" not in wire and "YWxpY2U=" not in wire
    recorder = Recorder()
    relay = LiveRelay(recorder)
    for notice in sent:
        relay.feed(1, notice)
    [conversation] = recorder.recent()
    texts = [text for _, _, text, _ in conversation.lines]
    assert texts[:3] == ["220 mx ESMTP", "EHLO c", "250 mx"]
    assert "AUTH PLAIN ****" in texts and texts[texts.index("334 VXNlcm5hbWU6") + 1] == SECRET
    [kept] = conversation.messages
    assert kept.mime == b"Subject: x\r\n\r\nhi\r\n" and kept.recipients == ["b@example.org"]
    assert (conversation.peer, conversation.direction) == ("192.0.2.9", "in")
    assert conversation.ended is not None


def test_unwatched_a_worker_sends_one_session_a_second_and_watched_all():
    sent, clock = [], FakeClock()
    remote = RemoteRecorder(sent.append, clock=clock)
    assert remote.tap("in", "192.0.2.1", "") is not NULL_TAP
    assert remote.tap("in", "192.0.2.2", "") is NULL_TAP
    clock.now += 1.1
    assert remote.tap("in", "192.0.2.3", "") is not NULL_TAP
    remote.watched = True
    assert all(remote.tap("in", "192.0.2.%d" % n, "") is not NULL_TAP for n in range(5))
    assert [n["peer"] for n in sent if n["live"] == "begin"][:2] == ["192.0.2.1", "192.0.2.3"]


def test_the_recorder_says_when_it_is_watched():
    recorder, seen = Recorder(), []
    recorder.watch_changes(seen.append)
    first, second = recorder.subscribe(), recorder.subscribe()
    recorder.unsubscribe(first)
    recorder.unsubscribe(second)
    assert seen == [True, False]


def test_a_worker_that_goes_away_ends_its_conversations_and_others_go_on():
    recorder = Recorder()
    recorder.subscribe()
    relay = LiveRelay(recorder)
    for worker in (1, 2):
        relay.feed(worker, {"live": "begin", "n": 1, "direction": "in", "peer": "192.0.2.%d"
                            % worker, "local": ""})
    relay.worker_gone(1)
    relay.feed(2, {"live": "client", "n": 1, "text": "NOOP"})
    relay.feed(2, {"live": "message", "n": 1, "mime": base64.b64encode(b"x").decode(),
                   "sender": "", "recipients": ["r@example.org"], "size": 1})
    gone, alive = sorted(recorder.recent(), key=lambda c: c.peer)
    assert gone.ended is not None and "worker" in gone.lines[-1][2]
    assert alive.ended is None and alive.lines[0][2] == "NOOP" and alive.messages[0].mime == b"x"
    relay.feed(3, {"live": "client", "n": 9, "text": "unknown conversation: ignored"})
