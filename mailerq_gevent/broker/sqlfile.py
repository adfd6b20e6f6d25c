"""The embedded queue's SQLite file: its settings, tables and write transactions.

What ``storage.py`` builds on, and nothing it decides: the connection
settings (WAL with ``synchronous=FULL``: every commit is fsynced), the three
tables (``messages`` ready in id order, ``delayed`` with their ``not_before``,
``sequence`` the next row id), write transactions serialised between
processes by an ``flock``, the owner's lock against a second owner, and
multi-row statements (one per table and commit rather than one per row).
"""

import fcntl
import functools
import sqlite3

CHUNK = 500             # rows per INSERT / ids per DELETE statement (SQLite allows 32,766 values)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
    " envelope TEXT NOT NULL, body BLOB)",
    "CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, id)",
    "CREATE TABLE IF NOT EXISTS delayed (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
    " not_before REAL NOT NULL, envelope TEXT NOT NULL, body BLOB)",
    "CREATE INDEX IF NOT EXISTS delayed_due ON delayed (not_before, id)",
    # the next row id, taken inside each write transaction: ids grow in commit
    # order even with several writing processes, and are never used twice
    "CREATE TABLE IF NOT EXISTS sequence (next INTEGER NOT NULL)",
)


class StoreError(Exception):
    """The queue file cannot be used (locked by another process, unreadable, full)."""


def connect(path):
    """A connection to the file at ``path`` (None: in memory), tables made."""
    conn = sqlite3.connect(path or ":memory:", isolation_level=None,
                           check_same_thread=False, timeout=30)
    if path is not None:
        # 16 KB pages hold several 2 KB messages each (4 KB pages hold one);
        # only takes effect when the file is created.
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # a multi-row INSERT keeps a statement journal (to undo just that
        # statement); on disk it was a temp file made and unlinked per commit
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA journal_size_limit=%d" % (64 * 2 ** 20))
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def connect_read_only(path):
    """A read-only connection to an existing file (which another process may own)."""
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, isolation_level=None,
                           timeout=30)


def start_sequence(db, writing=None):
    """The next row id (the ``sequence`` row, made from the highest id of a file without one)."""
    with transaction(db, writing):
        row = db.execute("SELECT next FROM sequence").fetchone()
        if row is not None:
            return row[0]
        highest = db.execute(
            "SELECT max(m) FROM (SELECT max(id) AS m FROM messages"
            " UNION ALL SELECT max(id) FROM delayed)").fetchone()[0] or 0
        db.execute("INSERT INTO sequence (next) VALUES (?)", (highest + 1,))
        return highest + 1


def take_ids(db, count):
    """The first of ``count`` new ids (inside a write transaction); None for none."""
    if not count:
        return None
    return db.execute("UPDATE sequence SET next = next + ? RETURNING next",
                      (count,)).fetchall()[0][0] - count


def insert(db, into, rows):
    """``INSERT INTO <into> VALUES (...), (...)``: up to CHUNK rows a statement."""
    width = len(rows[0])
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        db.execute(_statement("INSERT INTO %s VALUES " % into, width, len(chunk)),
                   [value for row in chunk for value in row])


def delete_ids(db, table, ids):
    """``DELETE FROM <table> WHERE id IN (...)``: up to CHUNK ids a statement."""
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        db.execute(_statement("DELETE FROM %s WHERE id IN " % table, len(chunk), 1), chunk)


@functools.lru_cache(maxsize=256)
def _statement(head, width, count):
    """``head`` followed by ``count`` groups of ``width`` placeholders."""
    group = "(" + ", ".join("?" * width) + ")"
    return head + ", ".join([group] * count)


def vacuum(db, writing, pages):
    """Give ``pages`` free pages back to the file system."""
    # Python's sqlite3 steps a statement without result columns only once,
    # and each step of incremental_vacuum frees one page: hence the loop.
    with transaction(db, writing):
        for _ in range(pages):
            db.execute("PRAGMA incremental_vacuum(1)")


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``) on an autocommit connection.

    ``writing`` (a file) is flocked around it: the processes writing to one
    queue file then queue up in the kernel, which wakes the next one the
    moment the lock is free, instead of in SQLite's busy handler, which
    sleeps 1, 2, 5, 10... milliseconds between tries."""

    def __init__(self, db, writing=None):
        self.db, self.writing = db, writing

    def __enter__(self):
        if self.writing is not None:
            fcntl.flock(self.writing, fcntl.LOCK_EX)
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._unlock()
            raise
        return self.db

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error:
                    self._rollback()
                    raise
            self._rollback()
        finally:
            self._unlock()

    def _unlock(self):
        if self.writing is not None:
            fcntl.flock(self.writing, fcntl.LOCK_UN)

    def _rollback(self):
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")


def lock(path):
    """The owner's exclusive lock on ``path``; StoreError if another process holds it."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreError("%s is in use by another process (one daemon per queue file;"
                         " give each its own rabbitmq-address)" % path) from None
    return handle
