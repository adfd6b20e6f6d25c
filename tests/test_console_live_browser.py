"""The live SMTP view in a real headless Chromium: conversations appear while
mail is injected into a real SMTP server, without reloading the page; a
hostile mail rendered in the sandboxed frame runs no script and fetches no
remote image."""

import re
import smtplib
from email.message import EmailMessage

import pytest
from gevent.pywsgi import WSGIServer

from mailerq_gevent.console.live import Recorder
from tests.browser import login, screenshot
from tests.console_support import PASSWORD, USER
from tests.smtp_support import Raw

AGENT = "mailerq-gevent live test browser"


class Pixel:
    """A tiny HTTP server counting every request: a remote image must never reach it."""

    def __init__(self):
        self.hits = []
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None)
        self.server.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_port

    def _app(self, environ, start_response):
        self.hits.append(environ.get("PATH_INFO"))
        start_response("200 OK", [("Content-Type", "image/gif")])
        return [b"GIF89a"]


@pytest.fixture
def pixel():
    made = Pixel()
    yield made
    made.server.stop(timeout=1)


def hostile_mail(pixel_url):
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@example.com", "b@example.org", "Probe"
    mail.set_content("The text part.")
    mail.add_alternative(
        "<html><head><title>mail</title>"
        "<link rel=\"stylesheet\" href=\"%(url)s/style.css\"></head><body>"
        "<p id=\"greeting\">Hello from the mail</p>"
        "<img src=x onerror=\"window.parent.document.title='pwned'\">"
        "<script>window.parent.document.title='pwned'; document.title='pwned'</script>"
        "<script>document.body.setAttribute('data-ran','1')</script>"
        "<img src=\"%(url)s/pixel\">"
        "<div style=\"background-image:url(%(url)s/background)\">styled</div>"
        "</body></html>" % {"url": pixel_url}, subtype="html")
    return mail.as_bytes().replace(b"\n", b"\r\n")


@pytest.fixture
def setup(browser, console, smtp):
    c = console(render_useragent=AGENT)
    c.context.recorder = Recorder()
    running = smtp()
    running.server.recorder = c.context.recorder
    context = browser.new_context(user_agent=AGENT)
    page = context.new_page()
    page.console_problems = []      # the console's own pages: none (CSP, script errors)
    page.on("console", lambda m: m.type == "error" and "/render" not in m.location["url"]
            and page.console_problems.append(m.text))
    page.on("pageerror", lambda error: page.console_problems.append(str(error)))
    login(page, c.url, USER, PASSWORD)
    yield c, running, page
    context.close()
    assert page.console_problems == []


def test_a_conversation_appears_in_the_live_list_as_it_happens(setup):
    c, running, page = setup
    page.goto(c.url + "/live")
    page.wait_for_selector("#live-status[data-state=live]")
    page.evaluate("window.notReloaded = true")
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("live@example.com", ["watcher@example.org"], b"Subject: hi\r\n\r\nhi\r\n")
    row = page.wait_for_selector("#live-list tbody tr[data-id]:has-text('live@example.com')")
    page.wait_for_selector("#live-list tbody tr:has-text('ended')")
    assert "watcher@example.org" in row.text_content() and "incoming" in row.text_content()
    assert page.evaluate("window.notReloaded") is True
    assert page.is_hidden("#live-empty")
    screenshot(page, "live")


def test_a_hostile_mail_renders_in_the_sandbox_without_running_anything(setup, pixel):
    c, running, page = setup
    client = Raw(running.port)
    client.hello()
    conversation = c.context.recorder.recent()[0]
    page.goto(c.url + "/live/%d" % conversation.id)
    title = page.title()
    page.wait_for_selector("#live-status[data-state=live]")
    stuffed = re.sub(rb"(?m)^\.", b"..", hostile_mail(pixel.url))      # the raw client does not
    assert client.send_message(stuffed)[:3] == b"250"
    frame_element = page.wait_for_selector("iframe.render")     # added live by the script
    assert frame_element.get_attribute("sandbox") == ""
    page.wait_for_selector("#dialogue li.message")
    client.command(b"QUIT")
    page.wait_for_selector("#live-status[data-state=ended]")
    frame = frame_element.content_frame()
    frame.wait_for_selector("#greeting")
    page.wait_for_timeout(500)                  # time for anything that would run or load
    assert frame.text_content("#greeting") == "Hello from the mail"
    assert frame.get_attribute("body", "data-ran") is None
    assert frame.title() == "mail" and page.title() == title != "pwned"
    assert pixel.hits == []
    assert [f.url for f in page.frames if f.url.endswith("/render")] == [
        c.url + "/live/%d/1/render" % conversation.id]
    assert "window.parent.document.title" in frame.content()     # the mail arrived whole
    page.set_viewport_size({"width": 1280, "height": 1700})    # the frame shows in a full-page
    screenshot(page, "render")                                 # shot only inside the viewport


def test_the_same_rendering_is_refused_to_another_user_agent(setup, browser):
    c, running, page = setup
    with smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.org"], hostile_mail("http://192.0.2.1"))
    conversation = c.context.recorder.recent()[0]
    other = browser.new_context()
    try:
        stranger = other.new_page()
        login(stranger, c.url, USER, PASSWORD)
        stranger.goto(c.url + "/live/%d" % conversation.id)
        assert stranger.query_selector("iframe") is None
        assert "render-useragent" in stranger.text_content("#messages")
        answer = stranger.goto(c.url + "/live/%d/1/render" % conversation.id)
        assert answer.status == 403
    finally:
        other.close()
