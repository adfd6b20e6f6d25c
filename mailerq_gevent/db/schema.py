"""Create and upgrade the tables of ``db.tables`` (and ``--purge-database``, as MailerQ's).

``ensure_schema`` runs at every start: a missing table is created with its
indexes; an existing table gets its missing columns (``ALTER TABLE ... ADD
COLUMN``, the column type compiled for the connected dialect) and missing
indexes. Nothing is ever dropped, retyped or renamed there. ``purge`` (the
``--purge-database`` option) drops our tables and creates them anew; other
tables in the same database are left alone.

Both work on SQLite, PostgreSQL and MySQL/MariaDB. Each table is checked in
its own transaction. Several instances starting at once against one server
would race to create the same table, column or index, and MySQL's DDL is not
transactional (a table exists before its indexes do), so the instances take
turns: on PostgreSQL and MySQL an advisory lock of the server
(``pg_advisory_lock`` / ``GET_LOCK``) is held around the whole check. Should
the lock not be had (a server that refuses it, an instance of an older
version racing without it), a failed check is looked at again a few times.
"""

import contextlib

import gevent
from sqlalchemy import exc, inspect
from sqlalchemy.schema import CreateColumn

from mailerq_gevent import logs
from mailerq_gevent.db import tables
from mailerq_gevent.db.engine import describe_error

log = logs.get(__name__)

LOCK_NAME = "mailerq_gevent.schema"
LOCK_KEY = 0x6D71736368656D61      # "mqschema": pg_advisory_lock's bigint key
LOCK_TIMEOUT = 60                  # seconds another instance may hold it
ATTEMPTS = 4


def ensure_schema(engine):
    """Create missing tables, columns and indexes. Returns the changes made,
    as ``(kind, name)`` pairs (``("table", "capacity")``,
    ``("column", "capacity.secure")``, ``("index", "ix_ips_hostname")``)."""
    changes = []
    with _schema_lock(engine):
        for table in tables.metadata.sorted_tables:
            changes.extend(_ensure_one(engine, table))
    log.info("db.schema_checked", tables=len(tables.metadata.tables), changes=len(changes))
    return changes


def purge(engine):
    """Drop every table of ours and create them anew, empty."""
    with _schema_lock(engine):
        tables.metadata.drop_all(engine, checkfirst=True)
        tables.metadata.create_all(engine, checkfirst=True)
    log.info("db.purged", tables=len(tables.metadata.tables))


@contextlib.contextmanager
def _schema_lock(engine):
    """Hold the server's advisory lock for schema changes (nothing on SQLite,
    whose DDL is transactional and whose writers are serialised anyway)."""
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql"):
        yield
        return
    with engine.connect() as conn:
        held = _take_lock(conn, dialect)
        try:
            yield
        finally:
            if held:
                _release_lock(conn, dialect)


def _take_lock(conn, dialect):
    try:
        if dialect == "postgresql":   # a wait past the timeout raises
            conn.exec_driver_sql("SET statement_timeout = %d" % (LOCK_TIMEOUT * 1000))
            conn.exec_driver_sql("SELECT pg_advisory_lock(%d)" % LOCK_KEY)
            return True
        got = conn.exec_driver_sql("SELECT GET_LOCK('%s', %d)" % (LOCK_NAME, LOCK_TIMEOUT)).scalar()
        if got != 1:
            log.warning("db.schema_lock", state="timeout", timeout=LOCK_TIMEOUT)
        return got == 1
    except exc.DBAPIError as error:
        name, detail = describe_error(error)
        log.warning("db.schema_lock", state="unavailable", error=name, detail=detail)
        return False


def _release_lock(conn, dialect):
    if dialect == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_unlock(%d)" % LOCK_KEY)
    else:
        conn.exec_driver_sql("SELECT RELEASE_LOCK('%s')" % LOCK_NAME)
    conn.rollback()


def _ensure_one(engine, table):
    """Check one table in its own transaction; on an error (most likely another
    instance made the same change meanwhile) look again, a few times."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                return _ensure_table(conn, table)
        except exc.DBAPIError as error:
            if attempt == ATTEMPTS:
                raise
            name, detail = describe_error(error)
            log.warning("db.schema_retry", table=table.name, error=name, detail=detail,
                        attempt=attempt)
            gevent.sleep(0.05 * attempt)


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
