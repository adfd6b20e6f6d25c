"""The console's login, sessions, CSRF and origin checks, and the headers on
every answer: against the real server with a real HTTP client."""

import pytest

from tests.console_support import PASSWORD, USER


def test_pages_need_a_login(console):
    c = console()
    answer = c.client().get(c.url + "/", allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/login")


def test_login_sets_an_opaque_strict_httponly_cookie_and_shows_the_overview(console):
    c = console()
    client = c.client()
    answer = client.post(c.url + "/login", data={"user": USER, "password": PASSWORD},
                         allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert "mq_session=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie                   # plain HTTP here
    value = cookie.split("mq_session=")[1].split(";")[0]
    assert len(value) >= 40 and USER not in value
    assert "Overview" in client.get(c.url + "/", timeout=10).text


def test_a_new_session_id_at_each_login(console):
    c = console()
    first, second = c.login(), c.login()
    assert first.cookies["mq_session"] != second.cookies["mq_session"]


def test_wrong_password_and_unknown_user_get_the_same_answer(console):
    c = console()
    bad = [c.client().post(c.url + "/login", data=data, timeout=10) for data in
           ({"user": USER, "password": "nope"}, {"user": "ghost", "password": PASSWORD})]
    assert [a.status_code for a in bad] == [401, 401]
    assert bad[0].text == bad[1].text and "mq_session" not in bad[0].headers.get("Set-Cookie", "")


def test_repeated_failures_block_even_the_right_password(console):
    c = console()
    for _ in range(5):
        c.client().post(c.url + "/login", data={"user": USER, "password": "x"}, timeout=10)
    answer = c.client().post(c.url + "/login", data={"user": USER, "password": PASSWORD},
                             allow_redirects=False, timeout=10)
    assert answer.status_code == 401


def test_logout_ends_the_session(console):
    c = console()
    client = c.login()
    stolen = client.cookies["mq_session"]
    client.post(c.url + "/logout", data={"csrf": client.csrf}, timeout=10)
    other = c.client()
    other.cookies.set("mq_session", stolen)
    assert other.get(c.url + "/", allow_redirects=False, timeout=10).status_code == 303


def test_logout_without_the_csrf_token_is_refused(console):
    c = console()
    client = c.login()
    assert client.post(c.url + "/logout", data={}, timeout=10).status_code == 403
    assert client.get(c.url + "/", allow_redirects=False, timeout=10).status_code == 200


def test_a_cross_site_post_is_refused_even_with_the_token(console):
    c = console()
    client = c.login()
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = client.post(c.url + "/logout", data={"csrf": client.csrf}, headers=headers,
                             timeout=10)
        assert answer.status_code == 403
    assert client.get(c.url + "/", allow_redirects=False, timeout=10).status_code == 200


def test_a_cross_site_login_is_refused(console):
    c = console()
    answer = c.client().post(c.url + "/login", data={"user": USER, "password": PASSWORD},
                             headers={"Origin": "https://evil.example"},
                             allow_redirects=False, timeout=10)
    assert answer.status_code == 403 and "Set-Cookie" not in answer.headers


def test_every_answer_carries_the_security_headers(console):
    c = console()
    client = c.login()
    for path in ("/", "/login", "/no-such-page", "/static/css/console.css"):
        headers = client.get(c.url + path, timeout=10).headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(c.url + "/", timeout=10).headers["Cache-Control"] == "no-store"
    static = client.get(c.url + "/static/css/console.css", timeout=10)
    assert static.headers["Cache-Control"] == c.conf.www_cache_control


def test_user_names_are_escaped_in_pages(console):
    c = console(www_auth="hardcoded://<b>x</b>:pw")
    client = c.login("<b>x</b>", "pw")
    page = client.get(c.url + "/", timeout=10).text
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def _https_console(console, tmp_path):
    """A console on HTTPS, with plain HTTP on another port redirecting to it."""
    from mailerq_gevent import certificates
    from tests.smtp_sink import free_port
    tls = certificates.server_context("", "", var_dir=str(tmp_path), name="www")
    return console(tls=tls, www_port=free_port(), www_secure_port=free_port())


def test_https_serves_the_console_and_http_redirects_to_it(console, tmp_path):
    import requests
    c = _https_console(console, tmp_path)
    plain_port, secure_port = c.conf.www_port, c.conf.www_secure_port
    plain = requests.get("http://127.0.0.1:%d/login" % plain_port, allow_redirects=False,
                         timeout=10)
    assert plain.status_code == 301
    assert plain.headers["Location"] == "https://127.0.0.1:%d/login" % secure_port
    login = requests.post("https://127.0.0.1:%d/login" % secure_port, verify=False,
                          data={"user": USER, "password": PASSWORD},
                          allow_redirects=False, timeout=10)
    assert login.status_code == 303 and "Secure" in login.headers["Set-Cookie"]


def test_www_connections_bounds_the_requests_served_at_once(console):
    """A client that holds its connection open takes the one slot; the next is
    not served until that slot is free again."""
    import socket

    import requests
    c = console(www_connections=1)
    holder = socket.create_connection(("127.0.0.1", c.port))
    holder.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n")       # headers never finished
    try:
        with pytest.raises(requests.exceptions.Timeout):
            requests.get(c.url + "/login", timeout=1)
    finally:
        holder.close()
    assert requests.get(c.url + "/login", timeout=10).status_code == 200


def test_www_dir_serves_the_views_and_assets_from_elsewhere(console, tmp_path):
    import shutil

    from mailerq_gevent.console.templates import PACKAGE_ROOT
    other = tmp_path / "www"
    shutil.copytree(PACKAGE_ROOT + "/views", other / "views")
    (other / "static" / "css").mkdir(parents=True)
    (other / "static" / "css" / "console.css").write_text("/* from www-dir */")
    c = console(www_dir=str(other))
    assert c.client().get(c.url + "/static/css/console.css", timeout=10).text == \
        "/* from www-dir */"


def test_the_https_redirect_keeps_the_host_the_browser_asked_for(console, tmp_path):
    import requests
    c = _https_console(console, tmp_path)
    hosts = {"mq.example:8485": "mq.example", "mq.example": "mq.example",
             "192.0.2.1:80": "192.0.2.1", "[2001:db8::1]:8485": "[2001:db8::1]",
             "[2001:db8::1]": "[2001:db8::1]"}
    for header, host in hosts.items():
        answer = requests.get("http://127.0.0.1:%d/tables" % c.conf.www_port,
                              headers={"Host": header}, allow_redirects=False, timeout=10)
        assert answer.status_code == 301, header
        assert answer.headers["Location"] == "https://%s:%d/tables" % (
            host, c.conf.www_secure_port), header
