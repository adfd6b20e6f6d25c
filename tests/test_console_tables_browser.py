"""The table editors and the DKIM page in a real headless Chromium: a person
adds, edits and deletes rows through the forms, the change is in the database
and in the live settings, and the pages run under the strict CSP without a
single console error."""

import pytest
from sqlalchemy import select

from mailerq_gevent import signing
from mailerq_gevent.db import tables
from tests.browser import login, screenshot
from tests.console_support import PASSWORD, USER


@pytest.fixture
def page(browser, console):
    """A logged-in page (``page.c`` is the console) that records console errors."""
    c = console()
    opened = browser.new_page()
    opened.c, opened.errors = c, []
    opened.on("console", lambda m: m.type == "error" and not m.text.startswith(
        "Failed to load resource") and opened.errors.append(m.text))
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.on("response", lambda r: r.status == 404 and "favicon" not in r.url
              and opened.errors.append("404 " + r.url))
    login(opened, c.url, USER, PASSWORD)
    yield opened
    opened.close()
    assert opened.errors == []


def _rows(c, name):
    table = tables.metadata.tables[name]
    with c.database.connect() as conn:
        return [dict(row) for row in conn.execute(select(table).order_by(table.c.id)).mappings()]


def _submit(page, saved=True):
    page.click("#save")
    if saved:
        page.wait_for_url("**/tables/*?saved=*")


def test_add_edit_and_delete_a_capacity_row(page):
    c = page.c
    page.goto(c.url + "/tables")
    screenshot(page, "tables")
    page.click("a[href='/tables/capacity']")
    page.fill("#row-form [name=localip]", "192.0.2.1")
    page.fill("#row-form [name=domain]", "example.com")
    page.fill("#row-form [name=domain_maxmessages]", "100")
    _submit(page)
    assert "example.com" in page.text_content("#rows") and "Row 1 saved" in page.text_content(
        "#message")
    assert _rows(c, "capacity")[0]["domain_maxmessages"] == 100
    assert c.reloader.current.capacity("192.0.2.1", "example.com").domain_maxmessages == 100
    screenshot(page, "table")

    page.click("#rows button.edit[data-id='1']")
    page.wait_for_function("document.getElementById('save').textContent === 'Save'")
    assert page.input_value("#row-form [name=domain]") == "example.com"
    page.select_option("#row-form [name=secure]", "1")
    page.fill("#row-form [name=domain_maxconnections]", "4")
    _submit(page)
    live = c.reloader.current.capacity("192.0.2.1", "example.com")
    assert (live.domain_maxmessages, live.domain_maxconnections, live.secure) == (100, 4, True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#rows button.delete[data-id='1']")
    page.wait_for_url("**/tables/capacity?deleted=1")
    assert _rows(c, "capacity") == [] and "No rows." in page.content()


def test_a_bad_value_shows_its_message_beside_the_field(page):
    c = page.c
    page.goto(c.url + "/tables/locals")
    page.fill("#row-form [name=address]", "[unclosed")
    page.select_option("#row-form [name=type]", "regex")
    _submit(page, saved=False)
    error = page.locator(".field-error[data-for=address]")
    error.wait_for()
    assert "bad regex" in error.text_content()
    assert _rows(c, "locals") == []


def test_generate_a_dkim_key_and_see_the_record_to_publish(page):
    c = page.c
    page.goto(c.url + "/dkim")
    page.fill("#generate-form [name=domain]", "example.com")
    page.fill("#generate-form [name=selector]", "mq1")
    page.click("#generate-form button[type=submit]")
    page.wait_for_selector("#new-key")
    stored = _rows(c, "dkim_keys")[0]
    assert page.text_content("#new-key .txt-name") == "mq1._domainkey.example.com"
    assert page.text_content("#new-key .txt-value") == signing.public_txt(
        stored["privatekey"], "rsa-sha256")
    assert "PRIVATE KEY" not in page.content()
    assert c.reloader.current.dkim_key_rows.get(stored["id"]) is not None
    screenshot(page, "dkim")
