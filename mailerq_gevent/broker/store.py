"""The embedded durable queue's storage: one SQLite file, owned by one process.

This is what ``sqlite:///var/queue.sqlite`` means. The kombu side lives in
``embedded.py``; this module knows nothing of kombu. What it guarantees:

* ``put`` returns only once the message is committed (WAL, ``synchronous=FULL``:
  the WAL is fsynced at every commit), so it survives ``kill -9`` and a power
  cut. Concurrent ``put`` calls are grouped: one writer greenlet takes
  everything pending, commits it in one transaction on a dedicated OS thread
  (the event loop keeps running during the fsync), then wakes every caller of
  that batch. One fsync per batch, not per message.
* A message handed out by ``get`` stays on disk until ``ack`` deletes it, so
  one delivered but not acknowledged when the process dies is delivered again
  after a restart. Acks need no fsync of their own: they ride on the next
  commit (a lost ack means a duplicate, never a loss).
* FIFO per queue: rows get increasing ids and each queue is read in id order
  through a small read-ahead buffer; ``requeue`` (a reject, or a channel that
  closed with unacked messages) puts a message in front, as RabbitMQ does.
* Delayed messages (``not_before``, for retries and ``nextattempt``) wait in
  their own table; a timer greenlet sleeps until the earliest is due, then
  moves what is due to the ready table in one transaction. No polling.
* Consumers wait on an event that every commit sets, so they wake at once.
* Once a backlog has drained, the writer gives the free pages back to the file
  system a step at a time (``auto_vacuum=INCREMENTAL``) when it is idle.

In-flight state (the read cursor, the read-ahead, what is unacked) lives in
memory, which is only correct if one process reads the file: ``open`` takes an
exclusive ``flock`` on ``<file>.lock`` and refuses a second process with a
clear error. The daemon's SMTP worker processes write to the same file
(``write_for_owner``): a writer-only store takes no lock, never reads, and
tells the owner after each commit (``committed_elsewhere``), whose consumers
then read what arrived. Row ids are taken from the ``sequence`` table inside
each write transaction, so they grow in commit order whoever writes, and the
owner's read cursor never skips a row. Every kombu connection of the process shares one ``Store`` (see
``acquire``). ``path=None`` keeps everything in memory (``memory://``, tests).
"""

import collections
import fcntl
import functools
import os
import sqlite3
import time

import gevent
from gevent.event import AsyncResult, Event
from gevent.threadpool import ThreadPool

from mailerq_gevent import logs

log = logs.get(__name__)

READ_AHEAD = 256        # rows read from disk per queue at a time
MAX_BATCH = 2000        # messages per commit at most
CHUNK = 500             # rows per INSERT / ids per DELETE statement (SQLite allows 32,766 values)
RECLAIM_EVERY = 10.0    # seconds between checks for free pages to give back
RECLAIM_MIN, RECLAIM_STEP = 256, 2048   # pages (16 KB): start at 4 MB free, 32 MB a step
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


class Store:
    """One queue file; see the module docstring. Use ``acquire``/``release``."""

    def __init__(self, path, writer_only=False, on_commit=None):
        self.path = path
        self.writer_only, self.on_commit = writer_only, on_commit
        self._lock_file = None
        self._writing = None        # the file flocked around each write transaction
        self._db = self._reader = None
        self._thread = None
        self._queues = {}           # name -> _QueueState
        self.consumed = collections.Counter()   # queue -> consumers (commits to others wake none)
        self._inflight = {}         # id -> (queue, envelope, body)
        self._puts = []             # ([(queue, envelope, body, not_before)...], AsyncResult)
        self._acks = []
        self._wake_writer = Event()
        self._written = Event()     # set while nothing waits to be committed
        self._written.set()
        self._arrived = Event()
        self._delay_changed = Event()
        self._next_due = None
        self._next_reclaim = 0.0
        self._closing = False
        self._workers = []

    # -- life cycle ---------------------------------------------------------

    def open(self):
        if self.path is not None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            if not self.writer_only:
                self._lock_file = _lock(self.path + ".lock")
            self._writing = open(self.path + ".write-lock", "a+")
            self._thread = ThreadPool(1)
        try:
            self._db = self._connect()
            self._reader = self._db if self.path is None or self.writer_only else (
                self._connect())
            next_id = self._start_sequence()
            self._next_due = self._earliest_due()
        except sqlite3.Error as exc:
            self.close()
            raise StoreError("%s: %s" % (self.path, exc)) from exc
        self._workers = [gevent.spawn(self._writer_loop)]
        if not self.writer_only:
            self._workers.append(gevent.spawn(self._delay_loop))
        log.info("queue.store_opened", path=self.path or ":memory:", next_id=next_id,
                 writer_only=self.writer_only)
        return self

    def _connect(self):
        conn = sqlite3.connect(self.path or ":memory:", isolation_level=None,
                               check_same_thread=False, timeout=30)
        if self.path is not None:
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

    def close(self):
        """Commit pending acks, stop the greenlets, close the file and its lock."""
        if self._workers and not self._closing:
            self._closing = True
            self._wake_writer.set()
            gevent.joinall(self._workers[:1], timeout=30)
            gevent.killall(self._workers)
        for conn in {id(c): c for c in (self._reader, self._db) if c}.values():
            conn.close()
        self._db = self._reader = None
        if self._thread is not None:
            self._thread.kill()
        for handle in (self._writing, self._lock_file):
            if handle is not None:
                handle.close()
        self._writing = self._lock_file = None

    def _start_sequence(self):
        """The ``sequence`` row (made from the highest id of a file without one)."""
        with _transaction(self._db, self._writing) as db:
            row = db.execute("SELECT next FROM sequence").fetchone()
            if row is not None:
                return row[0]
            highest = db.execute(
                "SELECT max(m) FROM (SELECT max(id) AS m FROM messages"
                " UNION ALL SELECT max(id) FROM delayed)").fetchone()[0] or 0
            db.execute("INSERT INTO sequence (next) VALUES (?)", (highest + 1,))
            return highest + 1

    def _earliest_due(self):
        return self._reader.execute("SELECT min(not_before) FROM delayed").fetchone()[0]

    # -- publishing ---------------------------------------------------------

    def put(self, queue, envelope, body, not_before=0.0, timeout=None):
        """Store one message; returns once it is committed. Raises StoreError."""
        self.put_many([(queue, envelope, body, not_before)], timeout)

    def put_many(self, rows, timeout=None):
        """Store ``(queue, envelope, body, not_before)`` rows in one transaction:
        all of them or none. Returns once committed; raises StoreError."""
        if self._closing or self._db is None:
            raise StoreError("the queue store is closed")
        done = AsyncResult()
        self._puts.append((rows, done))
        self._wake()
        done.get(timeout=timeout)

    def ack(self, message_id):
        """Forget a delivered message (deleted at the next commit)."""
        if self._inflight.pop(message_id, None) is not None:
            self._acks.append(message_id)
            self._wake()

    def sync(self, timeout=None):
        """Wait until every ack so far is committed (puts always are on return)."""
        return self._written.wait(timeout)

    def _wake(self):
        self._written.clear()
        self._wake_writer.set()

    # -- consuming ----------------------------------------------------------

    def get(self, queue):
        """The next ready message ``(id, envelope, body, redelivered)``, or None."""
        state = self._queue(queue)
        if state.front:
            item = state.front.popleft()
            redelivered = True
        else:
            if not state.buffer:
                self._read_ahead(queue, state)
            if not state.buffer:
                return None
            item = state.buffer.popleft()
            redelivered = False
        self._inflight[item[0]] = (queue,) + item[1:]
        return item + (redelivered,)

    def requeue(self, message_id):
        """Put a delivered, unacked message back in front of its queue."""
        entry = self._inflight.pop(message_id, None)
        if entry is not None:
            queue, envelope, body = entry
            self._queue(queue).front.appendleft((message_id, envelope, body))
            self.wake_consumers()

    def arrival(self):
        """An event set at the next commit or requeue. Take it *before* ``get``."""
        return self._arrived

    def size(self, queue):
        """Messages ready in ``queue`` (not delayed, not delivered)."""
        state = self._queue(queue)
        on_disk = self._reader.execute(
            "SELECT count(*) FROM messages WHERE queue = ? AND id > ?",
            (queue, state.cursor)).fetchone()[0]
        return on_disk + len(state.buffer) + len(state.front)

    def delayed_size(self, queue):
        return self._reader.execute(
            "SELECT count(*) FROM delayed WHERE queue = ?", (queue,)).fetchone()[0]

    def purge(self, queue):
        """Drop the ready and delayed messages of ``queue``; returns how many."""
        state = self._queue(queue)
        count = self.size(queue) + self.delayed_size(queue)
        doomed = [item[0] for item in state.front]
        state.front.clear()
        state.buffer.clear()
        self._run(self._purge_rows, queue, state.cursor, doomed)
        return count

    def _queue(self, name):
        state = self._queues.get(name)
        if state is None:
            state = self._queues[name] = _QueueState()
        return state

    def _read_ahead(self, queue, state):
        rows = self._reader.execute(
            "SELECT id, envelope, body FROM messages WHERE queue = ? AND id > ?"
            " ORDER BY id LIMIT ?", (queue, state.cursor, READ_AHEAD)).fetchall()
        if rows:
            state.cursor = rows[-1][0]
            state.buffer.extend(rows)

    def wake_consumers(self):
        """Wake whoever waits in ``arrival()`` (new messages, or room under a prefetch)."""
        arrived, self._arrived = self._arrived, Event()
        arrived.set()

    # -- the writer ---------------------------------------------------------

    def _writer_loop(self):
        while True:
            self._wake_writer.wait()
            self._wake_writer.clear()
            while self._puts or self._acks:
                self._commit_batch()
            self._written.set()
            if self._closing:
                return
            self._reclaim()

    def _take_puts(self):
        """Whole groups of puts, up to about MAX_BATCH rows (a group is never split)."""
        taken, rows = 0, 0
        while taken < len(self._puts) and (rows < MAX_BATCH or taken == 0):
            rows += len(self._puts[taken][0])
            taken += 1
        puts, self._puts = self._puts[:taken], self._puts[taken:]
        return puts

    def _commit_batch(self):
        puts = self._take_puts()
        acks, self._acks = self._acks[:MAX_BATCH], self._acks[MAX_BATCH:]
        ready, delayed = _split(puts)
        try:
            self._run(self._write, ready, delayed, acks)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            self._acks[:0] = acks
            error = exc if isinstance(exc, StoreError) else StoreError(
                "cannot commit to %s: %s" % (self.path or ":memory:", exc))
            log.error("queue.commit_failed", path=self.path, error=exc.__class__.__name__,
                      detail=str(exc)[:200], messages=len(ready) + len(delayed))
            for _, done in puts:
                done.set_exception(error)
            gevent.sleep(0.1)       # do not spin on a full disk
            return
        for _, done in puts:
            done.set(None)
        due = min(row[1] for row in delayed) if delayed else None
        if self.writer_only:
            if (ready or delayed) and self.on_commit is not None:
                self.on_commit(due)
            return
        if due is not None:
            self._schedule(due)
        consumed = self.consumed
        if ready and any(row[0] in consumed for row in ready):
            self.wake_consumers()

    def _reclaim(self):
        """Shrink the file a step when many pages are free (a backlog drained)."""
        if self._thread is None or self.writer_only or time.monotonic() < self._next_reclaim:
            return
        self._next_reclaim = time.monotonic() + RECLAIM_EVERY
        free = self._reader.execute("PRAGMA freelist_count").fetchone()[0]
        if free >= RECLAIM_MIN:
            try:
                self._run(self._vacuum, RECLAIM_STEP)
            except sqlite3.Error as exc:
                log.warning("queue.reclaim_failed", detail=str(exc)[:200])
            else:
                self._next_reclaim = time.monotonic() + (0.5 if free > RECLAIM_STEP else
                                                         RECLAIM_EVERY)

    def _vacuum(self, pages):
        # Python's sqlite3 steps a statement without result columns only once,
        # and each step of incremental_vacuum frees one page: hence the loop.
        with _transaction(self._db, self._writing) as db:
            for _ in range(pages):
                db.execute("PRAGMA incremental_vacuum(1)")

    def _run(self, function, *args):
        """Run a write on the writer thread (file) or inline (memory)."""
        if self._thread is None:
            return function(*args)
        return self._thread.apply(function, args)

    def _write(self, ready, delayed, acks):
        # A statement per table, not per row: each SQLite call gives up the GIL
        # and takes it back from the event loop's thread, which stalls it
        with _transaction(self._db, self._writing) as db:
            first = _take_ids(db, len(ready) + len(delayed))
            if ready:
                _insert(db, "messages (id, queue, envelope, body)",
                        [(first + n,) + row for n, row in enumerate(ready)])
            if delayed:
                first += len(ready)
                _insert(db, "delayed (id, queue, not_before, envelope, body)",
                        [(first + n,) + row for n, row in enumerate(delayed)])
            if acks:
                _delete_ids(db, "messages", acks)

    def _purge_rows(self, queue, cursor, ids):
        with _transaction(self._db, self._writing) as db:
            db.execute("DELETE FROM messages WHERE queue = ? AND id > ?", (queue, cursor))
            _delete_ids(db, "messages", ids)
            db.execute("DELETE FROM delayed WHERE queue = ?", (queue,))

    # -- delayed messages ---------------------------------------------------

    def _schedule(self, not_before):
        if self._next_due is None or not_before < self._next_due:
            self._next_due = not_before
            self._delay_changed.set()

    def _delay_loop(self):
        while not self._closing:
            self._delay_changed.clear()
            due = self._next_due
            wait = None if due is None else max(0.0, due - time.time())
            if wait is None or wait > 0:
                self._delay_changed.wait(wait)
                continue
            try:
                self._promote_due()
            except Exception as exc:  # noqa: BLE001 - retry later, keep the loop alive
                log.error("queue.promote_failed", error=exc.__class__.__name__,
                          detail=str(exc)[:200])
                gevent.sleep(1.0)

    def _promote_due(self):
        now = time.time()
        rows = self._reader.execute(
            "SELECT id, queue, envelope, body FROM delayed WHERE not_before <= ?"
            " ORDER BY not_before, id LIMIT ?", (now, MAX_BATCH)).fetchall()
        if rows:
            self._run(self._move, rows)
            self.wake_consumers()
        self._next_due = self._earliest_due()

    def _move(self, rows):
        with _transaction(self._db, self._writing) as db:
            first = _take_ids(db, len(rows))
            _insert(db, "messages (id, queue, envelope, body)",
                    [(first + n,) + row[1:] for n, row in enumerate(rows)])
            _delete_ids(db, "delayed", [row[0] for row in rows])


def _split(puts):
    """The rows of ``puts`` as ready ``(queue, envelope, body)`` and delayed
    ``(queue, not_before, envelope, body)`` rows, still without ids."""
    ready, delayed, now = [], [], time.time()
    for queue, envelope, body, not_before in (row for rows, _ in puts for row in rows):
        if not_before and not_before > now:
            delayed.append((queue, not_before, envelope, body))
        else:
            ready.append((queue, envelope, body))
    return ready, delayed


def _take_ids(db, count):
    """The first of ``count`` new ids (inside a write transaction); None for none."""
    if not count:
        return None
    return db.execute("UPDATE sequence SET next = next + ? RETURNING next",
                      (count,)).fetchall()[0][0] - count


def _insert(db, into, rows):
    """``INSERT INTO <into> VALUES (...), (...)``: up to CHUNK rows a statement."""
    width = len(rows[0])
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        db.execute(_statement("INSERT INTO %s VALUES " % into, width, len(chunk)),
                   [value for row in chunk for value in row])


def _delete_ids(db, table, ids):
    """``DELETE FROM <table> WHERE id IN (...)``: up to CHUNK ids a statement."""
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        db.execute(_statement("DELETE FROM %s WHERE id IN " % table, len(chunk), 1), chunk)


@functools.lru_cache(maxsize=256)
def _statement(head, width, count):
    """``head`` followed by ``count`` groups of ``width`` placeholders."""
    group = "(" + ", ".join("?" * width) + ")"
    return head + ", ".join([group] * count)


class _QueueState:
    __slots__ = ("cursor", "buffer", "front")

    def __init__(self):
        self.cursor = 0                        # highest id read from disk
        self.buffer = collections.deque()      # read ahead, in id order
        self.front = collections.deque()       # requeued: delivered again first


class _transaction:
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


def _lock(path):
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreError("%s is in use by another process (one daemon per queue file;"
                         " give each its own rabbitmq-address)" % path) from None
    return handle


# -- one Store per file per process --------------------------------------------

_open = {}      # key -> [store, users]
_writer = {}    # set by ``write_for_owner``: this process only writes for the owner


def write_for_owner(on_commit):
    """Make the files this process opens from now on writer-only stores: the
    owner (the daemon, whose SMTP worker this process is) holds the lock and
    reads; ``on_commit(due)`` is called after each commit so that it can wake
    its consumers (``due``: the earliest delayed message committed, or None)."""
    _writer["on_commit"] = on_commit


def acquire(path):
    """The process's Store for ``path`` (None: the in-memory one), opened on first use."""
    key = os.path.realpath(path) if path else None
    entry = _open.get(key)
    if entry is None:
        store = Store(key, writer_only=bool(_writer) and key is not None,
                      on_commit=_writer.get("on_commit"))
        entry = _open[key] = [store.open(), 0]
    entry[1] += 1
    return entry[0]


def committed_elsewhere(path, due=None):
    """A writer process committed to ``path``: wake the owner's consumers
    (and its delay timer for ``due``). Nothing happens for a file not open here."""
    entry = _open.get(os.path.realpath(path))
    if entry is not None and not entry[0].writer_only:
        if due is not None:
            entry[0]._schedule(due)
        entry[0].wake_consumers()


def release(store):
    """Give back a Store from ``acquire``; the last user closes it."""
    entry = _open.get(store.path)
    if entry is None or entry[0] is not store:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _open[store.path]
        store.close()
