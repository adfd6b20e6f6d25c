"""The HTML of the table editors and of the DKIM page.

The server renders the rows (auto-escaped templates: ``views/tables.tpl``,
``table.tpl``, ``dkim.tpl``) as text cells a person can read ("unlimited",
"fall back", "(all)"), and the form's fields from ``table_rows.EDITORS``.
The scripts ``static/js/tables.js`` and ``dkim.js`` send the forms to the
JSON API of ``tables.py`` and reload the page with ``?saved=<id>``,
``?deleted=<id>`` or ``?created=<id>``, which becomes the message shown.
"""

import bottle

from mailerq_gevent.console import table_store
from mailerq_gevent.console.table_rows import REQUIRED
from mailerq_gevent.console.templates import template
from mailerq_gevent.settings import CAPACITY_FIELDS

PAGE_ROWS = 200
_LIMITS = frozenset(CAPACITY_FIELDS) - {"secure"}
_SECURE = {-1: "fall back", 0: "no", 1: "yes", None: "no"}
_SCRIPTS = ["js/common.js"]


def tables(context, summaries, missing=""):
    """The list of the tables with their row counts."""
    return template(context, "tables", title="Settings", tables=summaries,
                    settings=context.reloader.current, missing=missing)


def table(context, editor, rows):
    """One table: its rows (a page of ``PAGE_ROWS``) and the form."""
    pages = max(1, -(-len(rows) // PAGE_ROWS))
    page = min(max(_query_int("page") or 1, 1), pages)
    start = (page - 1) * PAGE_ROWS
    return template(context, "table", title=editor.title, editor=editor,
                    headers=_headers(editor), total=len(rows), page=page, pages=pages,
                    rows=[_cells(editor, row) for row in rows[start:start + PAGE_ROWS]],
                    fields=[] if editor.read_only else fields(context, editor),
                    message=_message(context), scripts=_SCRIPTS + ["js/tables.js"])


def dkim(context, keys):
    """The DKIM keys with their TXT records, the new key first when just made."""
    created = _query_int("created")
    return template(context, "dkim", title="DKIM keys", keys=keys,
                    new=[key for key in keys if key["id"] == created],
                    message="" if created else _message(context),
                    scripts=_SCRIPTS + ["js/dkim.js"])


# -- rows -----------------------------------------------------------------------------

def _headers(editor):
    names = [column.name for column in editor.columns if not column.secret]
    return names + (["DNS record"] if editor.name == "dkim_keys" else [])


def _cells(editor, row):
    cells = [cell(column, row.get(column.name)) for column in editor.columns
             if not column.secret]
    if editor.name == "dkim_keys":
        cells.append(row.get("txt_name", ""))
    return {"id": row["id"], "cells": cells, "problem": row.get("problem")}


def cell(column, value):
    """A stored value as a person reads it."""
    if column.name in _LIMITS:
        return {None: "unlimited", 0: "unlimited", -1: "fall back"}.get(value, str(value))
    if column.name == "secure":
        return _SECURE.get(value, str(value))
    if column.name == "duration" and not value:
        return "1 hour (default)"
    if value is None or value == "":
        return "(all)" if column.default == "" else ""
    return str(value)


# -- the form -------------------------------------------------------------------------

def fields(context, editor):
    """The form's fields: name, widget, kind (int or text), default, choices."""
    return [{"name": column.name, "hint": column.hint, "widget": column.widget,
             "required": column.required, "secret": column.secret,
             "kind": _kind(column), "choices": _choices(context, column),
             "default": "" if column.default in (None, REQUIRED) else column.default}
            for column in editor.columns]


def _kind(column):
    if column.widget == "number" or column.name in ("secure", "key"):
        return "int"
    return "text"


def _choices(context, column):
    if column.name == "key":
        return [(key_id, "%d: %s._domainkey.%s" % (key_id, selector, domain))
                for key_id, domain, selector in table_store.usable_keys(context.database)]
    return list(column.choices)


# -- the query string -----------------------------------------------------------------

def _query_int(name):
    text = bottle.request.query.get(name) or ""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None


def _message(context):
    generation = context.reloader.current.generation
    for name, done in (("saved", "saved"), ("deleted", "deleted")):
        row_id = _query_int(name)
        if row_id is not None:
            return "Row %d %s; the settings were reloaded (generation %d)." % (
                row_id, done, generation)
    return ""
