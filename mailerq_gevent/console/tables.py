"""The editors of the configuration tables and DKIM keys (SPEC §5, §9): the
JSON API and the pages that use it.

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
are checked by ``security.Guard`` first (401/403). Every change reloads the
settings at once (``X-Settings-Generation`` says which snapshot is live).
"""

import functools
import json
from datetime import date, datetime

import bottle

from mailerq_gevent import logs
from mailerq_gevent.console import dkim_records, table_pages, table_store
from mailerq_gevent.console.table_rows import EDITORS, REQUIRED, Invalid, problem, public

log = logs.get(__name__)

MAX_BODY = 64 * 1024
API_LIMIT = 5000


class Refusal(Exception):
    """An answer other than success: ``status`` and the JSON ``payload``."""

    def __init__(self, status, payload, headers=None):
        super().__init__(payload)
        self.status, self.payload, self.headers = status, payload, headers or {}


def install(app, context):
    _install_api(app, context)
    _install_pages(app, context)


# -- the JSON API ----------------------------------------------------------------

def _install_api(app, context):
    api = context.guard.require("api")
    engine = context.database

    @app.get("/api/tables")
    @api
    @answers_json
    def list_tables():
        return {"tables": summaries(context)}

    @app.get("/api/tables/<name>")
    @api
    @answers_json
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
    @answers_json
    def get_row(name, row_id):
        editor = _editor(name)
        row = table_store.one_row(engine, editor, row_id)
        if row is None:
            raise table_store.NotFound(row_id)
        return shown(editor, row, problem(editor, row, _live_keys(context)))

    @app.post("/api/tables/<name>")
    @api
    @answers_json
    def add_row(name):
        editor = _editor(name, change=True)
        row = table_store.insert_row(engine, editor, json_body())
        return _created(context, editor, shown(editor, row))

    @app.route("/api/tables/<name>/<row_id:int>", ["PUT", "PATCH"])
    @api
    @answers_json
    def edit_row(name, row_id):
        editor = _editor(name, change=True)
        row = table_store.update_row(engine, editor, row_id, json_body())
        _changed(context, editor, "edited", row_id)
        return shown(editor, row)

    @app.delete("/api/tables/<name>/<row_id:int>")
    @api
    @answers_json
    def delete_row(name, row_id):
        editor = _editor(name, change=True)
        table_store.delete_row(engine, editor, row_id)
        _changed(context, editor, "deleted", row_id)
        return {"deleted": row_id, "table": name}

    @app.post("/api/dkim/generate")
    @api
    @answers_json
    def generate_key():
        key = dkim_records.generate(engine, json_body())
        return _created(context, EDITORS["dkim_keys"], key)


def answers_json(callback):
    """Encode what ``callback`` returns as JSON; turn its refusals into answers."""
    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        response = bottle.response
        try:
            payload = callback(*args, **kwargs)
        except Refusal as refusal:
            response.status, payload = refusal.status, refusal.payload
            for header, value in refusal.headers.items():
                response.set_header(header, value)
        except Invalid as invalid:
            response.status, payload = 400, {"errors": invalid.errors}
        except table_store.Conflict as conflict:
            payload = ({"errors": {conflict.column: str(conflict)}} if conflict.column
                       else {"error": str(conflict)})
            response.status, payload["id"] = 409, conflict.other
        except table_store.NotFound as missing:
            response.status, payload = 404, {"error": "no row with id %s" % missing}
        response.content_type = "application/json"
        return json.dumps(payload, default=_jsonable)
    return wrapper


def _jsonable(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError("%r is not JSON" % type(value))


def json_body():
    """The request's JSON object; a Refusal when it is missing, too big or not JSON."""
    request = bottle.request
    if (request.content_type or "").split(";")[0].strip().lower() != "application/json":
        raise Refusal(400, {"error": "send a JSON object (Content-Type: application/json)"})
    if request.content_length > MAX_BODY:
        raise Refusal(413, {"error": "the body is larger than %d bytes" % MAX_BODY})
    text = request.body.read(MAX_BODY + 1)
    if len(text) > MAX_BODY:
        raise Refusal(413, {"error": "the body is larger than %d bytes" % MAX_BODY})
    try:
        data = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, {"error": "the body is not valid JSON"}) from None
    if not isinstance(data, dict):
        raise Refusal(400, {"error": "the body must be a JSON object"})
    return data


def _editor(name, change=False):
    editor = EDITORS.get(name)
    if editor is None:
        raise Refusal(404, {"error": "no table %r" % name})
    if change and editor.read_only:
        raise Refusal(405, {"error": "%s is read-only: each instance writes its own rows at "
                                     "start-up" % name}, {"Allow": "GET"})
    return editor


def _number(name, default, most=None):
    text = bottle.request.query.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or (most is not None and int(text) > most):
        raise Refusal(400, {"error": "%s must be a whole number%s" % (
            name, " up to %d" % most if most else "")})
    return int(text)


def _column_json(column):
    return {"name": column.name, "required": column.required, "hint": column.hint,
            "default": None if column.default is REQUIRED else column.default,
            "choices": [value for value, _ in column.choices], "write_only": column.secret}


def _created(context, editor, row):
    _changed(context, editor, "added", row["id"])
    bottle.response.status = 201
    bottle.response.set_header("Location", "/api/tables/%s/%d" % (editor.name, row["id"]))
    return row


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
