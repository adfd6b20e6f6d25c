"""The console in a real headless Chromium: logging in works, and a wrong
password shows the one generic message."""

from tests.browser import login, screenshot
from tests.console_support import PASSWORD, USER


def test_log_in_and_out_in_a_real_browser(browser, console):
    c = console()
    page = browser.new_page()
    login(page, c.url, USER, PASSWORD)
    assert page.text_content("h1") == "Overview"
    screenshot(page, "overview")
    page.click("header .logout button")
    page.wait_for_url(c.url + "/login")
    page.close()


def test_a_wrong_password_shows_the_generic_message(browser, console):
    c = console()
    page = browser.new_page()
    page.goto(c.url + "/login")
    page.fill("input[name=user]", USER)
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.text_content(".error")
    page.close()
