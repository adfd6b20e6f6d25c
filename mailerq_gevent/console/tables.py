"""The editors of the configuration tables and DKIM keys: the JSON API and
the pages that use it.

    GET    /api/tables                 {"tables": [{name, title, help, rows, live, read_only}]}
    GET    /api/tables/<name>          {table, read_only, columns, rows, total, offset, limit}
    GET    /api/tables/<name>/<id>     one row
    POST   /api/tables/<name>          201 and the saved row
    PUT    /api/tables/<name>/<id>     the saved row (columns left out keep their value;
                                       PATCH is the same)
    DELETE /api/tables/<name>/<id>     {"deleted": id, "table": name}
    POST   /api/dkim/generate          201 and {id, domain, selector, algorithm, expire,
                                       txt_name, txt_value, txt_record}
    GET    /tables, /tables/<name>, /dkim   the pages (``views/tables.tpl``, ``table.tpl``,
                                       ``dkim.tpl``; their scripts in ``static/js/``)

A row is the table's columns plus ``id`` and ``problem`` (why the settings
loader skips it, or null); a DKIM private key is never in an answer or a
page, a key's public TXT record is (``txt_name``, ``txt_value``,
``txt_record``). Refusals: 400 ``{"errors": {column: text}}`` for a bad
value, ``{"error": text}`` for a bad request; 404 for an unknown table or
row; 405 for a change to ``ips``; 409 for a duplicate (or deleting a DKIM
key a pattern names), with the other row's ``id``. Login, CSRF and origin
are checked by ``security.Guard`` first (401/403). A body is a JSON object
sent as ``application/json``, at most ``MAX_BODY`` bytes (``request_body``:
400, 408, 413). Every change reloads the settings at once
(``X-Settings-Generation`` says which snapshot is live).
"""

import bottle

from mailerq_gevent import logs
from mailerq_gevent.console import dkim_records, table_pages, table_store
from mailerq_gevent.console.answers import ApiError, json_route
from mailerq_gevent.console.request_body import read_object
from mailerq_gevent.console.table_rows import EDITORS, REQUIRED, problem, public

log = logs.get(__name__)

MAX_BODY = 64 * 1024
API_LIMIT = 5000


def install(app, context):
    _install_api(app, context)
    _install_pages(app, context)


# -- the JSON API ----------------------------------------------------------------

def _install_api(app, context):
    api = context.guard.require("api")
    engine = context.database

    @app.get("/api/tables")
    @api
    @json_route
    def list_tables():
        return {"tables": summaries(context)}

    @app.get("/api/tables/<name>")
    @api
    @json_route
    def list_rows(name):
        editor = _editor(name)
        offset, limit = _number("offset", 0), _number("limit", API_LIMIT, API_LIMIT)
        rows = shown_rows(context, editor)
        return {"table": name, "read_only": editor.read_only,
                "columns": [_column_json(column) for column in editor.columns],
                "rows": rows[offset:offset + limit], "total": len(rows),
                "offset": offset, "limit": limit}

    @app.get("/api/tables/<name>/<row_id:int>")
    @api
    @json_route
    def get_row(name, row_id):
        editor = _editor(name)
        row = table_store.one_row(engine, editor, row_id)
        if row is None:
            raise table_store.NotFound(row_id)
        return shown(editor, row, problem(editor, row, _live_keys(context)))

    @app.post("/api/tables/<name>")
    @api
    @json_route
    def add_row(name):
        editor = _editor(name, change=True)
        row = table_store.insert_row(engine, editor, read_object(MAX_BODY))
        return _created(context, editor, shown(editor, row))

    @app.route("/api/tables/<name>/<row_id:int>", ["PUT", "PATCH"])
    @api
    @json_route
    def edit_row(name, row_id):
        editor = _editor(name, change=True)
        row = table_store.update_row(engine, editor, row_id, read_object(MAX_BODY))
        _changed(context, editor, "edited", row_id)
        return shown(editor, row)

    @app.delete("/api/tables/<name>/<row_id:int>")
    @api
    @json_route
    def delete_row(name, row_id):
        editor = _editor(name, change=True)
        table_store.delete_row(engine, editor, row_id)
        _changed(context, editor, "deleted", row_id)
        return {"deleted": row_id, "table": name}

    @app.post("/api/dkim/generate")
    @api
    @json_route
    def generate_key():
        key = dkim_records.generate(engine, read_object(MAX_BODY))
        return _created(context, EDITORS["dkim_keys"], key)


def _editor(name, change=False):
    editor = EDITORS.get(name)
    if editor is None:
        raise ApiError(404, "no table %r" % name)
    if change and editor.read_only:
        raise ApiError(405, "%s is read-only: each instance writes its own rows at start-up"
                       % name, {"Allow": "GET"})
    return editor


def _number(name, default, most=None):
    text = bottle.request.query.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or (most is not None and int(text) > most):
        raise ApiError(400, "%s must be a whole number%s" % (
            name, " up to %d" % most if most else ""))
    return int(text)


def _column_json(column):
    return {"name": column.name, "required": column.required, "hint": column.hint,
            "default": None if column.default is REQUIRED else column.default,
            "choices": [value for value, _ in column.choices], "write_only": column.secret}


def _created(context, editor, row):
    """201 with the new row and its ``Location``."""
    _changed(context, editor, "added", row["id"])
    bottle.response.set_header("Location", "/api/tables/%s/%d" % (editor.name, row["id"]))
    return 201, row


def _changed(context, editor, action, row_id):
    """Log a change and reload the settings now, so the change is live."""
    log.info("console.table_changed", table=editor.name, action=action, id=row_id,
             user=bottle.request.environ.get("mq.user"))
    if not context.reloader.reload_now():
        log.warning("console.reload_failed", table=editor.name, id=row_id)
    bottle.response.set_header("X-Settings-Generation",
                               str(context.reloader.current.generation))


# -- rows as shown ------------------------------------------------------------------

def summaries(context):
    """Each table with its rows in the database and in the live settings."""
    rows, live = table_store.counts(context.database), context.reloader.current.counts()
    return [{"name": name, "title": editor.title, "help": editor.help, "rows": rows[name],
             "live": live.get(name), "read_only": editor.read_only}
            for name, editor in EDITORS.items()]


def shown_rows(context, editor):
    """Every row of the table as the API shows it, by id."""
    rows = table_store.all_rows(context.database, editor)
    return [shown(editor, row, reason) for row, reason in
            table_store.with_problems(editor, rows, _live_keys(context))]


def shown(editor, row, reason=None):
    """One row without its secrets, with ``problem`` (and a key's TXT record)."""
    if editor.name == "dkim_keys":
        return dict(dkim_records.shown(row), problem=reason)
    return dict(public(editor, row), problem=reason)


def _live_keys(context):
    return context.reloader.current.dkim_key_rows


# -- the pages ------------------------------------------------------------------------

def _install_pages(app, context):
    page = context.guard.require("page")

    @app.get("/tables")
    @page
    def tables_page():
        return table_pages.tables(context, summaries(context))

    @app.get("/tables/<name>")
    @page
    def table_page(name):
        editor = EDITORS.get(name)
        if editor is None:
            bottle.response.status = 404
            return table_pages.tables(context, summaries(context),
                                      missing="There is no table %r." % name)
        return table_pages.table(context, editor, shown_rows(context, editor))

    @app.get("/dkim")
    @page
    def dkim_page():
        return table_pages.dkim(context, shown_rows(context, EDITORS["dkim_keys"]))
