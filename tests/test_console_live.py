"""The live SMTP view: the Recorder (bounded, sampling, AUTH redacted), the
hooks in the real SMTP server and the real delivery engine, and the console
routes (JSON, pages, the event stream, raw MIME, the sandboxed rendering)."""

import base64
import json
import smtplib
import ssl

import pytest
import requests

from mailerq_gevent import authn
from mailerq_gevent.console import render
from mailerq_gevent.console.live import Recorder
from mailerq_gevent.delivery.sender import Connection
from mailerq_gevent.transcript import SECRET
from tests.clock import FakeClock
from tests.delivery_support import MIME, World
from tests.smtp_sink import SmtpSink, free_port
from tests.smtp_support import Raw, message
from tests.waiting import wait_until

RENDER_CSP = "sandbox; default-src 'none'; img-src data: cid:; frame-ancestors 'self'"
PASSWORD = "Tr0ub4dor&3-live-secret"


def recorded(recorder, direction="in", lines=(), mime=None):
    conversation = recorder.begin(direction, "192.0.2.7", "127.0.0.1")
    for kind, text in lines:
        getattr(conversation, kind)(text)
    if mime is not None:
        conversation.message(mime, "a@example.com", ["b@example.org"])
    return conversation


def everything(recorder):
    """All that the recorder holds, as one string: what a viewer could ever see."""
    parts = []
    for conversation in recorder.recent():
        parts.append(json.dumps(conversation.detail()))
        parts.extend(m.mime.decode("utf-8", "replace") for m in conversation.messages)
    return "\n".join(parts)


# -- the Recorder -------------------------------------------------------------------

def test_unwatched_it_keeps_one_conversation_a_second():
    clock = FakeClock()
    recorder = Recorder(clock=clock)
    assert recorder.begin("in", "192.0.2.1", "") is not None
    assert recorder.begin("in", "192.0.2.2", "") is None
    clock.now += 0.5
    assert recorder.begin("out", "192.0.2.3:25", "") is None
    clock.now += 0.6
    assert recorder.begin("out", "192.0.2.4:25", "") is not None
    clock.now -= 3600       # a clock set back does not stop the sampling
    assert recorder.begin("in", "192.0.2.5", "") is not None
    assert [c.peer for c in recorder.recent()] == ["192.0.2.5", "192.0.2.4:25", "192.0.2.1"]


def test_watched_it_keeps_every_conversation_and_unsubscribing_ends_that():
    recorder = Recorder(clock=FakeClock())
    subscription = recorder.subscribe()
    assert all(recorder.begin("in", "192.0.2.%d" % n, "") for n in range(5))
    recorder.unsubscribe(subscription)
    assert recorder.begin("in", "192.0.2.9", "") is None
    events = [subscription.get(0)[0] for _ in range(5)]
    assert events == ["begin"] * 5


def test_it_keeps_the_last_n_conversations():
    recorder = Recorder(size=3, clock=FakeClock())
    recorder.subscribe()
    made = [recorder.begin("in", "192.0.2.%d" % n, "") for n in range(5)]
    assert [c.id for c in recorder.recent()] == [made[4].id, made[3].id, made[2].id]
    assert recorder.get(made[0].id) is None
    made[0].client(b"EHLO late\r\n")          # an evicted one is inert
    assert made[0].lines == []


def test_lines_messages_and_mime_are_capped_and_marked_truncated():
    recorder = Recorder(max_lines=5, max_mime=10, max_messages=1)
    conversation = recorder.begin("in", "192.0.2.1", "")
    conversation.message(b"0123456789abcdef")
    conversation.message(b"second")
    for n in range(10):
        conversation.client("NOOP %d" % n)
    conversation.client("X" * 5000)
    [kept] = conversation.messages
    assert kept.mime == b"0123456789" and kept.truncated and kept.size == 16
    assert len(conversation.lines) == 5 and conversation.dropped == 8
    summary = conversation.summary()
    assert summary["truncated"] and summary["lines"] == 13
    long_one = Recorder().begin("in", "192.0.2.2", "")
    long_one.client("X" * 5000)
    assert len(long_one.lines[0][2]) < 1010


def test_the_mime_budget_evicts_the_oldest_conversations():
    recorder = Recorder(budget=25, clock=FakeClock())
    recorder.subscribe()
    first = recorded(recorder, mime=b"x" * 10)
    second = recorded(recorder, mime=b"y" * 10)
    third = recorded(recorder, mime=b"z" * 10)
    assert [c.id for c in recorder.recent()] == [third.id, second.id]
    assert recorder.kept_bytes == 20 and first.messages == []


def test_a_slow_viewer_is_told_to_start_over_instead_of_piling_up():
    recorder = Recorder()
    subscription = recorder.subscribe()
    subscription.limit = 3
    for n in range(5):
        recorder.begin("in", "192.0.2.%d" % n, "")
    kinds = []
    while True:
        event = subscription.get(0)
        if event is None:
            break
        kinds.append(event[0])
    assert kinds == ["reset", "begin"]


def test_auth_lines_keep_only_the_mechanism():
    conversation = Recorder().begin("in", "192.0.2.1", "")
    conversation.client(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    conversation.client(b"auth login YWxpY2U=\r\n")
    conversation.client(b"AUTH XOAUTH2\r\n")
    conversation.client(b"AUTH c2VjcmV0LXRva2Vu\r\n")      # not a mechanism: hidden too
    conversation.server(b"334 UGFzc3dvcmQ6\r\n")
    conversation.client(b"c2VjcmV0\r\n")                    # answers a 334: hidden
    conversation.server(b"535 5.7.8 no\r\n")
    conversation.client(b"NOOP\r\n")
    assert [line[2] for line in conversation.lines] == [
        "AUTH PLAIN ****", "auth login ****", "AUTH XOAUTH2", "AUTH ****",
        "334 UGFzc3dvcmQ6", SECRET, "535 5.7.8 no", "NOOP"]


# -- incoming: the real SMTP server ---------------------------------------------------------

def unverified():
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def test_an_incoming_conversation_is_recorded_whole(smtp):
    running = smtp()
    recorder = running.server.recorder = Recorder()
    recorder.subscribe()
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.org", "c@example.org"],
                        message(subject="recorded"))
    wait_until(lambda: recorder.recent() and recorder.recent()[0].ended)
    [conversation] = recorder.recent()
    texts = [text for _, _, text, _ in conversation.lines]
    assert texts[0].startswith("220 ") and texts[1].startswith("ehlo ")
    assert texts[2].startswith("250-mx.test.example") and "PIPELINING" in texts[2]
    assert texts[3] == "mail FROM:<a@example.com> size=%d" % len(message(subject="recorded"))
    assert "rcpt TO:<c@example.org>" in texts and "data" in texts
    assert [kind for _, kind, _, _ in conversation.lines][-4:] == [
        "message", "server", "client", "server"]
    assert texts[-2:] == ["QUIT", "221 2.0.0 Bye"]
    [kept] = conversation.messages
    assert b"Subject: recorded" in kept.mime
    assert (kept.sender, kept.recipients) == ("a@example.com", ["b@example.org", "c@example.org"])
    assert conversation.summary()["direction"] == "in"


@pytest.mark.parametrize("mechanism", ["PLAIN", "PLAIN-initial", "LOGIN", "LOGIN-initial"])
def test_no_credential_is_ever_recorded(smtp, mechanism):
    running = smtp(authenticator=authn.from_spec("hardcoded://alice:%s" % PASSWORD),
                   smtp_auth="hardcoded://alice:%s" % PASSWORD)
    recorder = running.server.recorder = Recorder()
    recorder.subscribe()
    name, _, initial = mechanism.partition("-")
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.starttls(context=unverified())
        client.ehlo()
        client.user, client.password = "alice", "wrong-" + PASSWORD
        method = client.auth_plain if name == "PLAIN" else client.auth_login
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth(name, method, initial_response_ok=bool(initial))
        client.password = PASSWORD
        assert client.auth(name, method, initial_response_ok=bool(initial))[0] == 235
        client.sendmail("alice@example.com", ["b@example.org"], message())
    wait_until(lambda: recorder.recent() and recorder.recent()[0].ended)
    held = everything(recorder)
    for secret in (PASSWORD, "wrong-" + PASSWORD):
        for form in (secret, base64.b64encode(secret.encode()).decode(),
                     base64.b64encode(("\0alice\0" + secret).encode()).decode(),
                     base64.b64encode(("alice\0alice\0" + secret).encode()).decode()):
            assert form not in held
    assert base64.b64encode(b"alice").decode() not in held    # LOGIN's user name too
    texts = [text for _, _, text, _ in recorder.recent()[0].lines]
    assert ("AUTH %s ****" % name if initial else "AUTH " + name) in texts
    assert (SECRET in texts) == (mechanism != "PLAIN-initial")     # answers to a 334
    assert "235 2.7.0 Authentication successful" in texts


def test_without_a_recorder_the_server_records_nothing(smtp):
    running = smtp()
    client = Raw(running.port)
    assert client.send_message(message())[:3] == b"250"
    assert running.server.recorder is None


# -- outgoing: the real delivery engine -------------------------------------------------------

def test_an_outgoing_conversation_is_recorded_through_the_engine(tmp_path):
    recorder = Recorder()
    world = World(tmp_path, recorder=recorder)
    recorder.subscribe()
    world.start()
    try:
        world.inject()
        assert world.sink.wait_for(1)
        wait_until(lambda: recorder.recent() and recorder.recent()[0].messages)
    finally:
        world.stop()            # closes the idle connection: QUIT
    [conversation] = recorder.recent()
    texts = [text for _, _, text, _ in conversation.lines]
    assert conversation.direction == "out"
    assert conversation.peer == "127.0.0.1:%d" % world.sink.port
    assert texts[:2] == ["220 sink.test ESMTP sink", "ehlo mta.test"]
    assert texts[2].startswith("250-sink.test\n250-8BITMIME")
    # recorded, the connection still pipelines (RFC 2920): the three commands, then their replies
    start = texts.index("MAIL FROM:<sender@origin.test>")
    assert texts[start:start + 3] == ["MAIL FROM:<sender@origin.test>",
                                      "RCPT TO:<rcpt@example.test>", "DATA"]
    assert [text[:3] for text in texts[start + 3:start + 6]] == ["250", "250", "354"]
    assert texts[start + 5] == "354 go ahead"
    assert texts[-2:] == ["quit", "221 2.0.0 bye"] and conversation.ended
    [sent] = conversation.messages
    assert sent.mime.startswith(MIME[:40]) and sent.sender == "sender@origin.test"
    assert sent.recipients == ["rcpt@example.test"]


def test_an_outgoing_conversation_over_starttls_is_recorded_in_clear(tmp_path):
    from mailerq_gevent import certificates
    sink = SmtpSink(tls=certificates.server_context("", "", var_dir=str(tmp_path))).start()
    recorder = Recorder()
    recorder.subscribe()
    world = World(tmp_path, sink=sink, recorder=recorder).start()
    try:
        world.inject()
        assert sink.wait_for(1)
        wait_until(lambda: recorder.recent() and recorder.recent()[0].messages)
    finally:
        world.stop()
    [conversation] = recorder.recent()
    texts = [text for _, _, text, _ in conversation.lines]
    assert "STARTTLS" in texts and sink.messages[0].tls
    assert texts.index("RCPT TO:<rcpt@example.test>") > texts.index("STARTTLS")
    assert conversation.messages[0].mime.startswith(MIME[:40])


def test_a_refused_connection_is_recorded_with_why():
    recorder = Recorder()
    recorder.subscribe()
    failed = Connection("127.0.0.1", free_port(), recorder=recorder, connect_timeout=2).open()
    assert failed is not None
    [conversation] = recorder.recent()
    assert conversation.ended and conversation.lines[0][2].startswith("connect: ")


# -- the routes ----------------------------------------------------------------------------

HOSTILE_HTML = (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: =?utf-8?q?H=C3=A9llo?=\r\n"
                b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=XX\r\n\r\n"
                b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain version\r\n"
                b"--XX\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                b"<p>Caf=E9</p><img src=3Dx onerror=3Dalert(1)><script>alert(2)</script>\r\n"
                b"--XX--\r\n")
HOSTILE_TEXT = (b"From: a@example.com\r\nSubject: text\r\nContent-Type: text/plain\r\n\r\n"
                b"</pre><script>alert(1)</script><img src=x onerror=alert(2)>\r\n")


@pytest.fixture
def live(console):
    def make(**conf):
        c = console(**conf)
        c.context.recorder = Recorder()
        c.context.recorder.subscribe()          # record everything
        return c
    return make


def test_the_json_api_lists_and_shows_conversations(live):
    c = live()
    conversation = recorded(c.context.recorder, lines=[("client", "EHLO x"),
                                                       ("server", "250 ok")], mime=HOSTILE_HTML)
    session = c.login()
    listed = session.get(c.url + "/api/live", timeout=10).json()
    assert [item["id"] for item in listed] == [conversation.id]
    shown = session.get(c.url + "/api/live/%d" % conversation.id, timeout=10).json()
    assert [line["text"] for line in shown["dialogue"]] == [
        "EHLO x", "250 ok", "message 1: %d bytes" % len(HOSTILE_HTML)]
    [info] = shown["messages"]
    assert info["subject"] == "Héllo" and info["render"] == "/live/%d/1/render" % conversation.id
    assert session.get(c.url + "/api/live/999", timeout=10).status_code == 404


def test_the_pages_show_the_dialogue_escaped_and_the_sandboxed_frame(live):
    c = live(smtp_threads=1)
    conversation = recorded(c.context.recorder, lines=[("client", "EHLO <b>x</b>")],
                            mime=HOSTILE_HTML)
    session = c.login()
    page = session.get(c.url + "/live", timeout=10)
    assert page.status_code == 200 and 'href="/live/%d"' % conversation.id in page.text
    assert '<script src="/static/js/live.js" defer></script>' in page.text
    detail = session.get(c.url + "/live/%d" % conversation.id, timeout=10).text
    assert "EHLO &lt;b&gt;x&lt;/b&gt;" in detail and "<b>x</b>" not in detail
    assert '<iframe sandbox src="/live/%d/1/render"' % conversation.id in detail
    assert "allow-" not in detail and "style=" not in detail
    assert session.get(c.url + "/live/999", timeout=10).status_code == 404
    assert "worker processes" not in page.text


def test_the_page_says_when_incoming_sessions_are_not_recorded(live):
    c = live(smtp_threads=4)      # the daemon and three SMTP workers
    page = c.login().get(c.url + "/live", timeout=10).text
    assert "Incoming SMTP sessions run in 3 worker processes" in " ".join(page.split())


def test_the_raw_mime_is_plain_text(live):
    c = live()
    conversation = recorded(c.context.recorder, mime=HOSTILE_HTML)
    answer = c.login().get(c.url + "/live/%d/1/mime" % conversation.id, timeout=10)
    assert answer.status_code == 200 and answer.content == HOSTILE_HTML
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Content-Disposition"] == "inline"


def test_the_rendering_has_its_own_sandbox_policy_and_the_decoded_html(live):
    c = live()
    conversation = recorded(c.context.recorder, mime=HOSTILE_HTML)
    answer = c.login().get(c.url + "/live/%d/1/render" % conversation.id, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Security-Policy"] == RENDER_CSP == render.CSP
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "<p>Café</p>" in answer.content.decode("utf-8")     # quoted-printable, latin-1


def test_a_hostile_text_part_is_escaped(live):
    c = live()
    conversation = recorded(c.context.recorder, mime=HOSTILE_TEXT)
    answer = c.login().get(c.url + "/live/%d/1/render" % conversation.id, timeout=10)
    assert answer.headers["Content-Security-Policy"] == RENDER_CSP
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img" in answer.text
    assert "<script>" not in answer.text and "<img" not in answer.text


def test_cid_images_are_inlined_from_the_message_and_nothing_else():
    mime = (b"Content-Type: multipart/related; boundary=R\r\n\r\n--R\r\n"
            b"Content-Type: text/html\r\n\r\n<img src=\"cid:logo@x\"><img src=\"cid:gone\">\r\n"
            b"--R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--R--\r\n")
    shown = render.html_of(mime)
    assert '<img src="data:image/png;base64,iVBORw0K">' in shown
    assert '<img src="cid:gone">' in shown


def test_rendering_is_refused_to_another_user_agent(live):
    c = live(render_useragent="Copernica DevOps")
    conversation = recorded(c.context.recorder, mime=HOSTILE_HTML)
    session = c.login()
    url = c.url + "/live/%d/1/render" % conversation.id
    refused = session.get(url, timeout=10)
    assert refused.status_code == 403 and "Café" not in refused.text
    assert refused.headers["Content-Security-Policy"] == RENDER_CSP
    allowed = session.get(url, headers={"User-Agent": "Copernica DevOps"}, timeout=10)
    assert allowed.status_code == 200 and "Café" in allowed.text
    page = session.get(c.url + "/live/%d" % conversation.id, timeout=10).text
    assert "<iframe" not in page and "render-useragent" in page
    assert session.get(c.url + "/live/%d/1/mime" % conversation.id, timeout=10).ok


def test_unknown_messages_are_404(live):
    c = live()
    conversation = recorded(c.context.recorder, mime=HOSTILE_HTML)
    session = c.login()
    for path in ("/live/%d/2/render", "/live/%d/0/mime", "/live/%d/2/mime"):
        assert session.get(c.url + path % conversation.id, timeout=10).status_code == 404
    assert session.get(c.url + "/live/999/1/render", timeout=10).status_code == 404


def test_everything_needs_a_login(live):
    c = live()
    conversation = recorded(c.context.recorder, mime=HOSTILE_HTML)
    anonymous = c.client()
    for path in ("/live", "/live/%d", "/live/%d/1/mime", "/live/%d/1/render"):
        answer = anonymous.get(c.url + path.replace("%d", str(conversation.id)),
                               allow_redirects=False, timeout=10)
        assert answer.status_code == 303 and answer.headers["Location"] == "/login"
    for path in ("/api/live", "/api/live/%d" % conversation.id, "/api/live/stream"):
        assert anonymous.get(c.url + path, timeout=10).status_code == 401


def read_events(lines, count):
    """The next ``count`` events from the lines of an SSE answer, as (kind, data)."""
    events, kind = [], None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
            if len(events) == count:
                return events
    return events


def test_the_stream_sends_conversations_as_they_happen(live):
    c = live()
    recorder = c.context.recorder = Recorder(keepalive=0.2, stream_lifetime=30)
    session = c.login()
    with session.get(c.url + "/api/live/stream", stream=True, timeout=10) as answer:
        assert answer.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        wait_until(lambda: recorder.watched)
        conversation = recorded(recorder, lines=[("client", "EHLO x")], mime=HOSTILE_TEXT)
        conversation.end()
        events = read_events(answer.iter_lines(decode_unicode=True), 3)
    assert [kind for kind, _ in events] == ["begin", "update", "end"]
    assert events[2][1]["id"] == conversation.id and events[2][1]["messages"] == 1
    wait_until(lambda: not recorder.watched)       # the viewer left: back to sampling


def test_a_conversation_stream_sends_its_lines_and_the_stream_ends(live):
    c = live()
    recorder = c.context.recorder = Recorder(keepalive=0.2, stream_lifetime=1.5)
    conversation = recorder.begin("in", "192.0.2.1", "")
    session = c.login()
    url = c.url + "/api/live/stream?id=%d" % conversation.id
    with session.get(url, stream=True, timeout=10) as answer:
        wait_until(lambda: recorder.watched)
        recorder.begin("in", "192.0.2.2", "").client("NOOP elsewhere")
        conversation.client("EHLO here")
        conversation.message(HOSTILE_TEXT)
        lines = answer.iter_lines(decode_unicode=True)
        events = read_events(lines, 2)
        assert [(kind, data["text"]) for kind, data in events] == [
            ("line", "EHLO here"), ("line", "message 1: %d bytes" % len(HOSTILE_TEXT))]
        assert events[1][1]["message"]["mime"] == "/live/%d/1/mime" % conversation.id
        rest = list(lines)      # keep-alive comments, then the end of the stream
    assert ": keep-alive" in rest
    wait_until(lambda: not recorder.watched)


def test_live_viewers_are_bounded(live):
    c = live()
    c.context.recorder = Recorder(max_streams=1, keepalive=0.2, stream_lifetime=5)
    session = c.login()
    with session.get(c.url + "/api/live/stream", stream=True, timeout=10):
        wait_until(lambda: c.context.recorder.watched)
        second = requests.get(c.url + "/api/live/stream", cookies=session.cookies, timeout=10)
        assert second.status_code == 503


def test_closing_the_recorder_ends_the_open_streams(live):
    c = live()
    recorder = c.context.recorder = Recorder(keepalive=30, stream_lifetime=300)
    session = c.login()
    with session.get(c.url + "/api/live/stream", stream=True, timeout=10) as answer:
        wait_until(lambda: recorder.watched)
        recorder.close()
        assert list(answer.iter_lines(decode_unicode=True))[-2:] == [": live", ""]
    wait_until(lambda: not recorder.watched)
