"""Reading and writing the rows of the configuration tables for the console.

SQLAlchemy Core only, one transaction per change, so it works the same on
SQLite, PostgreSQL and MariaDB. A change is checked inside its transaction:
the row itself (``table_rows.clean``), then what needs the other rows: no
second row with the same unique columns (``Conflict``), a DKIM pattern names
a usable key, a key still named by a pattern is not deleted. Nothing here
reloads the settings; the caller does that after a change.
"""

from sqlalchemy import delete, func, insert, select, update

from mailerq_gevent.console.answers import ApiError
from mailerq_gevent.console.table_rows import EDITORS, Invalid, clean, problem, unique_key
from mailerq_gevent.db import load, tables


class NotFound(ApiError):
    """No row with that id (a 404)."""

    def __init__(self, row_id):
        super().__init__(404, "no row with id %s" % row_id)


class Conflict(ApiError):
    """The change clashes with another row (a 409): ``errors`` for ``column``
    (or ``error``), and ``id``, the other row."""

    def __init__(self, text, column=None, other=None):
        reason = {"errors": {column: text}} if column else {"error": text}
        super().__init__(409, **reason, id=other)


def table_of(editor):
    return tables.metadata.tables[editor.name]


def counts(engine):
    """``{table name: rows}`` for every table the console edits."""
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table_of(editor))).scalar()
                for name, editor in EDITORS.items()}


def all_rows(engine, editor):
    """Every row of the table, by id, as dicts (secret columns included)."""
    with engine.connect() as conn:
        return _all(conn, table_of(editor))


def one_row(engine, editor, row_id):
    with engine.connect() as conn:
        return _one(conn, table_of(editor), row_id)


def with_problems(editor, rows, live_keys=()):
    """``[(row, problem or None)]``: why the loader skips each row, duplicates
    (a later row with the same unique columns) included."""
    seen, result = {}, []
    for row in rows:
        reason = problem(editor, row, live_keys)
        key = unique_key(editor, row)
        if reason is None and key is not None:
            if key in seen:
                reason = "same %s as row %s" % (" and ".join(editor.key), seen[key])
            seen.setdefault(key, row["id"])
        result.append((row, reason))
    return result


def insert_row(engine, editor, data):
    """Check and insert a row from ``data``; the saved row with its id."""
    table = table_of(editor)
    with engine.begin() as conn:
        row = clean(editor, data)
        _check_others(conn, editor, row, None)
        row_id = conn.execute(insert(table).values(**row)).inserted_primary_key[0]
    return dict(row, id=row_id)


def update_row(engine, editor, row_id, data):
    """Check and save ``data`` over the stored row ``row_id``; the saved row."""
    table = table_of(editor)
    with engine.begin() as conn:
        stored = _one(conn, table, row_id)
        if stored is None:
            raise NotFound(row_id)
        row = clean(editor, data, stored)
        _check_others(conn, editor, row, row_id)
        conn.execute(update(table).where(table.c.id == row_id).values(**row))
    return dict(row, id=row_id)


def delete_row(engine, editor, row_id):
    """Delete row ``row_id`` (a DKIM key only when no pattern names it)."""
    table = table_of(editor)
    with engine.begin() as conn:
        if editor.name == "dkim_keys":
            _check_unused(conn, row_id)
        if conn.execute(delete(table).where(table.c.id == row_id)).rowcount == 0:
            raise NotFound(row_id)


def usable_keys(engine):
    """``[(id, domain, selector)]`` of the DKIM keys the loader would use."""
    return [(row["id"], row["domain"], row["selector"])
            for row in all_rows(engine, EDITORS["dkim_keys"]) if _usable(row) is None]


# -- inside a transaction ------------------------------------------------------

def _all(conn, table):
    return [dict(row) for row in conn.execute(select(table).order_by(table.c.id)).mappings()]


def _one(conn, table, row_id):
    found = conn.execute(select(table).where(table.c.id == row_id)).mappings().first()
    return dict(found) if found is not None else None


def _check_others(conn, editor, row, own_id):
    key = unique_key(editor, row)
    if key is not None:
        for other in _all(conn, table_of(editor)):
            if other["id"] != own_id and unique_key(editor, other) == key:
                raise Conflict("row %s has the same %s" % (other["id"], " and ".join(editor.key)),
                               column=editor.key[-1], other=other["id"])
    if editor.name == "dkim_patterns":
        stored = _one(conn, tables.dkim_keys, row["key"])
        reason = "no DKIM key has id %d" % row["key"] if stored is None else _usable(stored)
        if reason:
            raise Invalid({"key": reason})


def _usable(key_row):
    """Why the loader would not use this ``dkim_keys`` row, or None."""
    try:
        load.dkim_key_row(key_row)
    except (ValueError, TypeError, AttributeError) as error:
        return "key %s cannot be used: %s" % (key_row.get("id"), error)
    return None


def _check_unused(conn, key_id):
    patterns = tables.dkim_patterns
    users = conn.execute(select(patterns.c.id).where(patterns.c.key == key_id)
                         .order_by(patterns.c.id)).scalars().all()
    if users:
        raise Conflict("key %d is named by dkim_patterns row %s: change or delete %s first"
                       % (key_id, ", ".join(map(str, users)),
                          "it" if len(users) == 1 else "them"), other=users[0])
