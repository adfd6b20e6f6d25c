"""Create and upgrade the tables of ``db.tables`` (seed 000, "Rebuilding the database").

``ensure_schema`` runs at every start: a missing table is created with its
indexes; an existing table gets its missing columns (``ALTER TABLE ... ADD
COLUMN``, the column type compiled for the connected dialect) and missing
indexes. Nothing is ever dropped, retyped or renamed there. ``purge`` (the
``--purge-database`` option) drops our tables and creates them anew; other
tables in the same database are left alone.

Both work on SQLite, PostgreSQL and MySQL/MariaDB. Each table is checked in
its own transaction. Several instances starting at once against one server
race to create the same table or column; the loser's error is answered by
checking that table once more.
"""

from sqlalchemy import exc, inspect
from sqlalchemy.schema import CreateColumn

from mailerq_gevent import logs
from mailerq_gevent.db import tables
from mailerq_gevent.db.engine import describe_error

log = logs.get(__name__)


def ensure_schema(engine):
    """Create missing tables, columns and indexes. Returns the changes made,
    as ``(kind, name)`` pairs (``("table", "capacity")``,
    ``("column", "capacity.secure")``, ``("index", "ix_ips_hostname")``)."""
    changes = []
    for table in tables.metadata.sorted_tables:
        changes.extend(_ensure_one(engine, table))
    log.info("db.schema_checked", tables=len(tables.metadata.tables), changes=len(changes))
    return changes


def purge(engine):
    """Drop every table of ours and create them anew, empty."""
    tables.metadata.drop_all(engine, checkfirst=True)
    tables.metadata.create_all(engine, checkfirst=True)
    log.info("db.purged", tables=len(tables.metadata.tables))


def _ensure_one(engine, table):
    """Check one table in its own transaction; on an error (most likely another
    instance made the same change meanwhile) look once more."""
    try:
        with engine.begin() as conn:
            return _ensure_table(conn, table)
    except exc.DBAPIError as error:
        name, detail = describe_error(error)
        log.warning("db.schema_retry", table=table.name, error=name, detail=detail)
    with engine.begin() as conn:
        return _ensure_table(conn, table)


def _ensure_table(conn, table):
    inspector = inspect(conn)
    if not inspector.has_table(table.name):
        table.create(conn)
        log.info("db.table_created", table=table.name)
        return [("table", table.name)]
    return _add_columns(conn, inspector, table) + _add_indexes(conn, inspector, table)


def _add_columns(conn, inspector, table):
    present = {column["name"].lower() for column in inspector.get_columns(table.name)}
    added = []
    for column in table.columns:
        if column.name.lower() in present:
            continue
        if column.primary_key:
            log.warning("db.column_missing", table=table.name, column=column.name,
                        reason="a primary key cannot be added; purge or fix by hand")
            continue
        _add_column(conn, table, column)
        added.append(("column", "%s.%s" % (table.name, column.name)))
    return added


def _add_column(conn, table, column):
    preparer = conn.dialect.identifier_preparer
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql("ALTER TABLE %s ADD COLUMN %s" % (preparer.format_table(table), spec))
    log.info("db.column_added", table=table.name, column=column.name)


def _add_indexes(conn, inspector, table):
    present = {index["name"] for index in inspector.get_indexes(table.name)}
    added = []
    for index in table.indexes:
        if index.name not in present:
            index.create(conn)
            log.info("db.index_created", table=table.name, index=index.name)
            added.append(("index", index.name))
    return added
