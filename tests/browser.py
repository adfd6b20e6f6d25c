"""A real headless Chromium for the console's end-to-end tests: Debian's
``chromium`` driven by Playwright (its Python package; no browser download).
The ``browser`` fixture is registered for every test by ``tests/conftest.py``:

    def test_x(browser, console):
        page = browser.new_page()
        page.goto(c.url + "/login")

Without /usr/bin/chromium (or Playwright) the tests skip with how to get it;
under CI (``CI=true``) that is a failure: ``.ci/run`` installs chromium.
Screenshots for a person to look at go to ``tests/artefacts/`` (not
committed): ``screenshot(page, "overview")``.
"""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTEFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artefacts")
HOW = "install it: apt-get install chromium (and pip install -r requirements-test.txt)"


def _missing():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return "%s not found" % CHROMIUM
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


@pytest.fixture(scope="session")
def browser():
    problem = _missing()
    if problem:
        message = "headless Chromium not available (%s); %s" % (problem, HOW)
        if os.environ.get("CI") == "true":
            pytest.fail("under CI the browser tests must run: " + message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def screenshot(page, name):
    os.makedirs(ARTEFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTEFACTS, name + ".png"), full_page=True)


def login(page, url, user, password):
    """Log in through the form, as a person would; returns the page."""
    page.goto(url + "/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    return page
