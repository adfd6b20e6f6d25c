"""The editors of the configuration tables and the DKIM keys (console/tables.py):
every page and API call against the real server, with its refusals, and each
change checked in the database and in the live settings."""

import pytest
from sqlalchemy import insert, select

from mailerq_gevent import signing
from mailerq_gevent.db import tables

TYPICAL = {
    "capacity": {"localip": "192.0.2.1", "domain": "example.com", "domain_maxmessages": 100},
    "flood_responses": {"pattern": "flood detected", "type": "substr", "duration": 600,
                        "domain_maxmessages": 10},
    "locals": {"address": "postmaster@example.com"},
    "delegates": {"localip": "192.0.2.1", "target": "example.org", "newip": "192.0.2.2"},
    "paused": {"localip": "", "target": "example.net"},
    "mtanames": {"ip": "192.0.2.1", "hostname": "mta1.example.com"},
    "dns": {"domain": "example.com", "address": "127.0.0.1:2525", "priority": 5},
}

BAD = [
    ("capacity", {"localip": "300.1.2.3"}, "localip"),
    ("capacity", {"domain": "not a domain!"}, "domain"),
    ("capacity", {"domain_maxmessages": "ten"}, "domain_maxmessages"),
    ("capacity", {"domain_maxmessages": 1.5}, "domain_maxmessages"),
    ("capacity", {"domain_maxmessages": True}, "domain_maxmessages"),
    ("capacity", {"ip_maxconnections": -5}, "ip_maxconnections"),
    ("capacity", {"secure": 2}, "secure"),
    ("capacity", {"localip": 12}, "localip"),
    ("capacity", {"colour": "red"}, "colour"),
    ("capacity", {"id": 7}, "id"),
    ("flood_responses", {"pattern": "(unclosed", "type": "regex"}, "pattern"),
    ("flood_responses", {"pattern": "x", "type": "glob"}, "type"),
    ("flood_responses", {"pattern": "x", "duration": -1}, "duration"),
    ("flood_responses", {"type": "substr"}, "pattern"),
    ("locals", {"address": "[a-", "type": "regex"}, "address"),
    ("locals", {"address": "   "}, "address"),
    ("delegates", {"newip": "192.0.2.2"}, "target"),
    ("delegates", {"target": "example.org", "newip": "somewhere"}, "newip"),
    ("paused", {"localip": "nope"}, "localip"),
    ("paused", {"target": "bad_domain..com"}, "target"),
    ("mtanames", {"ip": "192.0.2.1", "hostname": "bad host"}, "hostname"),
    ("mtanames", {"hostname": "mta.example.com"}, "ip"),
    ("dns", {"domain": "example.com", "address": "a b"}, "address"),
    ("dns", {"domain": "-bad-.com", "address": "127.0.0.1"}, "domain"),
    ("dns", {"domain": "example.com", "address": "127.0.0.1", "priority": 70000}, "priority"),
    ("dkim_keys", {"domain": "example.com", "selector": "s1", "privatekey": "garbage"},
     "privatekey"),
    ("dkim_keys", {"domain": "example.com", "selector": "a b", "privatekey": "x"}, "selector"),
    ("dkim_keys", {"domain": "example.com", "selector": "s1", "algorithm": "md5",
                   "privatekey": "x"}, "algorithm"),
    ("dkim_patterns", {"sign": "*@example.com", "type": "fnmatch", "key": 999}, "key"),
    ("dkim_patterns", {"sign": "(", "type": "regex", "key": 1}, "sign"),
]


def _api(c, session, method, path, body=None, **headers):
    headers.setdefault("X-CSRF-Token", getattr(session, "csrf", ""))
    return session.request(method, c.url + path, json=body, headers=headers,
                           allow_redirects=False, timeout=30)


def _rows(c, name):
    table = tables.metadata.tables[name]
    with c.database.connect() as conn:
        return [dict(row) for row in conn.execute(select(table).order_by(table.c.id)).mappings()]


def _insert(c, name, **row):
    with c.database.begin() as conn:
        return conn.execute(insert(tables.metadata.tables[name]).values(**row)) \
            .inserted_primary_key[0]


def _generate(c, session, **body):
    body = dict({"domain": "example.com", "selector": "s1"}, **body)
    return _api(c, session, "POST", "/api/dkim/generate", body)


# -- logins, CSRF, origin ---------------------------------------------------------

@pytest.mark.parametrize("path", ["/tables", "/tables/capacity", "/dkim"])
def test_pages_without_a_session_go_to_the_login(console, path):
    c = console()
    answer = c.client().get(c.url + path, allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/login")


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/tables"), ("GET", "/api/tables/capacity"), ("GET", "/api/tables/capacity/1"),
    ("POST", "/api/tables/capacity"), ("PUT", "/api/tables/capacity/1"),
    ("DELETE", "/api/tables/capacity/1"), ("POST", "/api/dkim/generate")])
def test_the_api_without_a_session_answers_401(console, method, path):
    c = console()
    answer = _api(c, c.client(), method, path, {"domain": "example.com"})
    assert answer.status_code == 401 and answer.json() == {"error": "login required"}


@pytest.mark.parametrize("headers", [
    {"X-CSRF-Token": ""}, {"X-CSRF-Token": "wrong"}])
def test_changes_without_the_right_csrf_token_are_refused(console, headers):
    c = console()
    s = c.login()
    row_id = _insert(c, "capacity", domain="keep.example")
    for method, path in (("POST", "/api/tables/capacity"),
                         ("PUT", "/api/tables/capacity/%d" % row_id),
                         ("DELETE", "/api/tables/capacity/%d" % row_id),
                         ("POST", "/api/dkim/generate")):
        answer = _api(c, s, method, path, TYPICAL["capacity"], **headers)
        assert answer.status_code == 403, (method, path)
    assert [row["domain"] for row in _rows(c, "capacity")] == ["keep.example"]
    assert _rows(c, "dkim_keys") == []


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}])
def test_cross_site_changes_are_refused_even_with_the_token(console, headers):
    c = console()
    s = c.login()
    answer = _api(c, s, "POST", "/api/tables/paused", {"target": "example.com"}, **headers)
    assert answer.status_code == 403
    assert _rows(c, "paused") == [] and not c.reloader.current.is_paused("", "example.com")


def test_the_api_token_works_without_a_cookie_or_csrf_token(console):
    c = console(www_api_token="t0ken-for-scripts")
    answer = c.client().post(c.url + "/api/tables/paused", json={"target": "example.com"},
                             headers={"Authorization": "Bearer t0ken-for-scripts"}, timeout=10)
    assert answer.status_code == 201
    assert c.reloader.current.is_paused("192.0.2.9", "example.com")


# -- listing ----------------------------------------------------------------------------

def test_the_tables_page_and_api_list_every_table_with_its_rows(console):
    c = console()
    s = c.login()
    _insert(c, "capacity", domain="a.example")
    _insert(c, "capacity", localip="not-an-ip")           # the loader skips it
    listed = {t["name"]: t for t in _api(c, s, "GET", "/api/tables").json()["tables"]}
    assert set(listed) == set(tables.CONFIG_TABLES) | {"ips"}
    assert listed["capacity"]["rows"] == 2 and listed["capacity"]["live"] == 0
    c.reloader.reload_now()
    listed = {t["name"]: t for t in _api(c, s, "GET", "/api/tables").json()["tables"]}
    assert listed["capacity"]["live"] == 1 and listed["ips"]["read_only"] is True
    page = s.get(c.url + "/tables", timeout=10).text
    assert all('href="/tables/%s"' % name for name in listed)
    assert all('href="/tables/%s"' % name in page for name in listed)


def test_rows_the_loader_skips_are_flagged_with_the_reason(console):
    c = console()
    s = c.login()
    good = _insert(c, "capacity", domain="a.example")
    bad = _insert(c, "capacity", localip="not-an-ip")
    again = _insert(c, "capacity", domain="A.example.")
    rows = {row["id"]: row for row in _api(c, s, "GET", "/api/tables/capacity").json()["rows"]}
    assert rows[good]["problem"] is None
    assert "not an IP address" in rows[bad]["problem"]
    assert "same localip and domain as row %d" % good in rows[again]["problem"]
    page = s.get(c.url + "/tables/capacity", timeout=10).text
    assert "Row %d is skipped by the settings loader" % bad in page


def test_a_row_and_a_page_of_rows(console):
    c = console()
    s = c.login()
    ids = [_insert(c, "paused", target="d%d.example" % n) for n in range(5)]
    answer = _api(c, s, "GET", "/api/tables/paused?offset=1&limit=2").json()
    assert answer["total"] == 5 and [row["id"] for row in answer["rows"]] == ids[1:3]
    assert _api(c, s, "GET", "/api/tables/paused/%d" % ids[0]).json()["target"] == "d0.example"
    assert _api(c, s, "GET", "/api/tables/paused?limit=x").status_code == 400


def test_unknown_tables_and_rows_answer_404(console):
    c = console()
    s = c.login()
    for method, path in (("GET", "/api/tables/nope"), ("POST", "/api/tables/nope"),
                         ("GET", "/api/tables/deliveries_total"),
                         ("GET", "/api/tables/capacity/42"), ("PUT", "/api/tables/capacity/42"),
                         ("DELETE", "/api/tables/capacity/42")):
        answer = _api(c, s, method, path, {})
        assert answer.status_code == 404 and "error" in answer.json(), (method, path)
    assert s.get(c.url + "/tables/nope", timeout=10).status_code == 404


def test_ips_is_read_only(console):
    c = console()
    s = c.login()
    row_id = _insert(c, "ips", ip="192.0.2.1", hostname="mta.example")
    assert _api(c, s, "GET", "/api/tables/ips").json()["rows"][0]["ip"] == "192.0.2.1"
    for method, path in (("POST", "/api/tables/ips"), ("PUT", "/api/tables/ips/%d" % row_id),
                         ("DELETE", "/api/tables/ips/%d" % row_id)):
        answer = _api(c, s, method, path, {"ip": "192.0.2.3"})
        assert answer.status_code == 405 and answer.headers["Allow"] == "GET"
    assert len(_rows(c, "ips")) == 1
    page = s.get(c.url + "/tables/ips", timeout=10).text
    assert "mta.example" in page and 'id="row-form"' not in page


# -- changes ------------------------------------------------------------------------------

def test_a_capacity_row_is_saved_and_live_at_once(console):
    c = console()
    s = c.login()
    answer = _api(c, s, "POST", "/api/tables/capacity", TYPICAL["capacity"])
    assert answer.status_code == 201, answer.text
    row = answer.json()
    assert row["domain_maxmessages"] == 100 and row["ip_maxmessages"] == -1
    assert answer.headers["Location"] == "/api/tables/capacity/%d" % row["id"]
    assert _rows(c, "capacity")[0]["domain_maxmessages"] == 100
    assert c.reloader.current.capacity("192.0.2.1", "example.com").domain_maxmessages == 100
    assert answer.headers["X-Settings-Generation"] == str(c.reloader.current.generation)


def test_an_edit_keeps_the_columns_left_out_and_is_live(console):
    c = console()
    s = c.login()
    row_id = _api(c, s, "POST", "/api/tables/capacity", TYPICAL["capacity"]).json()["id"]
    answer = _api(c, s, "PUT", "/api/tables/capacity/%d" % row_id,
                  {"domain_maxconnections": 3, "secure": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["domain_maxmessages"] == 100 and answer.json()["secure"] == 1
    live = c.reloader.current.capacity("192.0.2.1", "example.com")
    assert (live.domain_maxmessages, live.domain_maxconnections, live.secure) == (100, 3, True)


def test_a_delete_is_live_at_once(console):
    c = console()
    s = c.login()
    row_id = _api(c, s, "POST", "/api/tables/paused", {"target": "example.com"}).json()["id"]
    assert c.reloader.current.is_paused("192.0.2.1", "example.com")
    answer = _api(c, s, "DELETE", "/api/tables/paused/%d" % row_id)
    assert answer.status_code == 200 and answer.json() == {"deleted": row_id, "table": "paused"}
    assert _rows(c, "paused") == [] and not c.reloader.current.is_paused("", "example.com")


@pytest.mark.parametrize("name", sorted(TYPICAL))
def test_each_table_takes_a_typical_row_and_the_settings_use_it(console, name):
    c = console()
    s = c.login()
    answer = _api(c, s, "POST", "/api/tables/" + name, TYPICAL[name])
    assert answer.status_code == 201, answer.text
    assert len(_rows(c, name)) == 1 and answer.json()["problem"] is None
    assert c.reloader.current.counts()[name] == 1


def test_values_are_stored_canonical(console):
    c = console()
    s = c.login()
    row = _api(c, s, "POST", "/api/tables/delegates",
               {"localip": " ::ffff:192.0.2.1 ", "target": "Example.ORG.",
                "newip": "2001:DB8::1"}).json()
    assert (row["localip"], row["target"], row["newip"]) == ("192.0.2.1", "example.org",
                                                             "2001:db8::1")
    assert c.reloader.current.delegate("192.0.2.1", "example.org") == "2001:db8::1"


@pytest.mark.parametrize("name,body,field", BAD)
def test_a_bad_value_is_refused_with_a_message_and_nothing_is_saved(
        console, name, body, field):
    c = console()
    s = c.login()
    before = c.reloader.current.generation
    answer = _api(c, s, "POST", "/api/tables/" + name, body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["errors"] and answer.json()["errors"][field]
    assert _rows(c, name) == [] and c.reloader.current.generation == before


def test_a_bad_edit_is_refused_and_the_row_is_unchanged(console):
    c = console()
    s = c.login()
    row_id = _api(c, s, "POST", "/api/tables/locals", TYPICAL["locals"]).json()["id"]
    answer = _api(c, s, "PUT", "/api/tables/locals/%d" % row_id, {"address": "(", "type": "regex"})
    assert answer.status_code == 400 and "bad regex" in answer.json()["errors"]["address"]
    assert _rows(c, "locals")[0]["address"] == "postmaster@example.com"


@pytest.mark.parametrize("data,content_type", [
    (b"{not json", "application/json"), (b"[1, 2]", "application/json"),
    (b'{"target": "example.com"}', "text/plain"), (b"target=example.com", "")])
def test_the_body_must_be_a_json_object(console, data, content_type):
    c = console()
    s = c.login()
    answer = s.post(c.url + "/api/tables/paused", data=data, timeout=10,
                    headers={"X-CSRF-Token": s.csrf, "Content-Type": content_type})
    assert answer.status_code == 400 and "error" in answer.json()
    assert _rows(c, "paused") == []


def test_a_duplicate_is_refused_with_the_other_row(console):
    c = console()
    s = c.login()
    first = _api(c, s, "POST", "/api/tables/capacity", TYPICAL["capacity"]).json()["id"]
    answer = _api(c, s, "POST", "/api/tables/capacity",
                  {"localip": "192.0.2.1", "domain": "EXAMPLE.com."})
    assert answer.status_code == 409 and answer.json()["id"] == first
    assert "domain" in answer.json()["errors"] and len(_rows(c, "capacity")) == 1


def test_the_overview_can_pause_a_domain_and_an_ip(console):
    c = console()
    s = c.login()
    assert _api(c, s, "POST", "/api/tables/paused", {"target": "example.com"}).status_code == 201
    assert _api(c, s, "POST", "/api/tables/paused", {"localip": "192.0.2.7"}).status_code == 201
    live = c.reloader.current
    assert live.is_paused("192.0.2.1", "example.com") and live.is_paused("192.0.2.7", "b.org")
    assert not live.is_paused("192.0.2.1", "b.org")


def test_changes_work_on_every_database(console, db_url):
    c = console(database=db_url)
    s = c.login()
    domain = "backend-%s.example" % db_url.split(":")[0]
    before = c.reloader.current.capacity("192.0.2.1", domain)
    row = _api(c, s, "POST", "/api/tables/capacity", {"domain": domain, "ip_maxmessages": 7})
    assert row.status_code == 201, row.text
    path = "/api/tables/capacity/%d" % row.json()["id"]
    assert _api(c, s, "PUT", path, {"ip_maxmessages": 8}).status_code == 200
    assert c.reloader.current.capacity("192.0.2.1", domain).ip_maxmessages == 8
    assert _api(c, s, "DELETE", path).status_code == 200
    assert _api(c, s, "GET", path).status_code == 404
    assert c.reloader.current.capacity("192.0.2.1", domain) == before


def test_a_row_that_shows_html_is_escaped_in_the_page(console):
    c = console()
    s = c.login()
    probe = "<img src=x onerror=alert(1)>"
    assert _api(c, s, "POST", "/api/tables/locals", {"address": probe}).status_code == 201
    page = s.get(c.url + "/tables/locals", timeout=10).text
    assert probe not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_page_shows_the_form_and_the_message_after_a_change(console):
    c = console()
    s = c.login()
    page = s.get(c.url + "/tables/capacity?saved=3", timeout=10).text
    assert 'id="row-form"' in page and 'name="domain_maxmessages"' in page
    assert "Row 3 saved" in page and "/static/js/tables.js" in page


# -- DKIM ---------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_generating_a_key_shows_its_txt_record_and_never_the_private_key(
        console, algorithm):
    c = console()
    s = c.login()
    answer = _generate(c, s, algorithm=algorithm, expire=86400)
    assert answer.status_code == 201, answer.text
    key = answer.json()
    stored = _rows(c, "dkim_keys")[0]
    assert "PRIVATE KEY" in stored["privatekey"] and "PRIVATE KEY" not in answer.text
    assert key["txt_name"] == "s1._domainkey.example.com"
    assert key["txt_value"] == signing.public_txt(stored["privatekey"], algorithm)
    assert key["txt_record"].startswith("s1._domainkey.example.com. IN TXT ( \"v=DKIM1;")
    assert all(len(part) <= 255 for part in key["txt_record"].split('"')[1::2])
    assert c.reloader.current.dkim_key_rows.get(key["id"]).selector == "s1"
    for path in ("/api/tables/dkim_keys", "/api/tables/dkim_keys/%d" % key["id"],
                 "/dkim", "/dkim?created=%d" % key["id"], "/tables/dkim_keys"):
        text = s.get(c.url + path, timeout=10).text
        assert "PRIVATE KEY" not in text and stored["privatekey"][40:80] not in text, path
    assert key["txt_value"] in s.get(c.url + "/dkim?created=%d" % key["id"], timeout=10).text


@pytest.mark.parametrize("body,field", [
    ({"domain": ""}, "domain"), ({"selector": "bad selector"}, "selector"),
    ({"algorithm": "rsa-sha1"}, "algorithm"), ({"bits": 512}, "bits"),
    ({"expire": -1}, "expire"), ({"privatekey": "mine"}, "privatekey")])
def test_generating_refuses_bad_input_and_saves_nothing(console, body, field):
    c = console()
    s = c.login()
    answer = _generate(c, s, **body)
    assert answer.status_code == 400 and field in answer.json()["errors"]
    assert _rows(c, "dkim_keys") == []


def test_an_uploaded_key_is_kept_and_never_echoed(console):
    c = console()
    s = c.login()
    pem, txt = signing.generate_key("ed25519-sha256")
    answer = _api(c, s, "POST", "/api/tables/dkim_keys",
                  {"domain": "example.com", "selector": "up", "algorithm": "ed25519",
                   "privatekey": pem})
    assert answer.status_code == 201 and "PRIVATE KEY" not in answer.text
    assert answer.json()["txt_value"] == txt and answer.json()["algorithm"] == "ed25519-sha256"
    key_id = answer.json()["id"]
    edited = _api(c, s, "PUT", "/api/tables/dkim_keys/%d" % key_id, {"expire": 3600})
    assert edited.status_code == 200 and "PRIVATE KEY" not in edited.text
    assert _rows(c, "dkim_keys")[0]["privatekey"] == pem
    assert c.reloader.current.dkim_key_rows.get(key_id).expire == 3600
    wrong = _api(c, s, "PUT", "/api/tables/dkim_keys/%d" % key_id, {"algorithm": "rsa-sha256"})
    assert wrong.status_code == 400 and "privatekey" in wrong.json()["errors"]


def test_a_key_named_by_a_pattern_cannot_be_deleted(console):
    c = console()
    s = c.login()
    key_id = _generate(c, s, algorithm="ed25519-sha256").json()["id"]
    assert 'value="%d"' % key_id in s.get(c.url + "/tables/dkim_patterns", timeout=10).text
    pattern = _api(c, s, "POST", "/api/tables/dkim_patterns",
                   {"sign": "*@example.com", "type": "fnmatch", "key": key_id})
    assert pattern.status_code == 201, pattern.text
    assert [k.id for k in c.reloader.current.dkim_keys_for("news@example.com")] == [key_id]
    refused = _api(c, s, "DELETE", "/api/tables/dkim_keys/%d" % key_id)
    assert refused.status_code == 409 and refused.json()["id"] == pattern.json()["id"]
    assert len(_rows(c, "dkim_keys")) == 1


def test_a_second_key_for_the_same_selector_is_refused(console):
    c = console()
    s = c.login()
    assert _generate(c, s, algorithm="ed25519-sha256").status_code == 201
    answer = _generate(c, s, algorithm="ed25519-sha256", selector="S1")
    assert answer.status_code == 409 and "selector" in answer.json()["errors"]
    assert len(_rows(c, "dkim_keys")) == 1
