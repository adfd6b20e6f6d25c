"""The embedded queue's storage: one SQLite file, read by one process.

This module owns the rows of ``sqlite:///var/queue.sqlite`` and knows nothing
of kombu (``transport.py``) or of when delayed messages fall due
(``delays.py``). What it guarantees:

* ``put_many`` returns only once its messages are committed (WAL,
  ``synchronous=FULL``: the WAL is fsynced at every commit), so they survive
  ``kill -9`` and a power cut. Concurrent ``put_many`` calls are grouped: one
  writer greenlet takes everything pending, commits it in one transaction on
  a dedicated OS thread (the event loop keeps running during the fsync), then
  wakes every caller of that batch. One fsync per batch, not per message.
* A message handed out by ``get`` stays on disk until ``ack`` deletes it, so
  one delivered but not acknowledged when the process dies is delivered again
  after a restart. Acks need no fsync of their own: they ride on the next
  commit (a lost ack means a duplicate, never a loss).
* FIFO per queue: rows get increasing ids and each queue is read in id order
  through a small read-ahead buffer; ``requeue`` (a reject, or a channel that
  closed with unacked messages) puts a message in front, as RabbitMQ does.
* Delayed messages (``not_before``) wait in their own table until
  ``promote_due`` moves the due ones to the ready table in one transaction.
* After each commit that stored messages, ``on_commit(queues, due)`` is called
  (the queues that got ready messages, the earliest delayed one or None).
* Once a backlog has drained, the writer gives the free pages back to the file
  system a step at a time (``auto_vacuum=INCREMENTAL``) when it is idle.

In-flight state (the read cursor, the read-ahead, what is unacked) lives in
memory, which is only correct if one process reads the file: ``open`` takes an
exclusive ``flock`` on ``<file>.lock`` and refuses a second process with a
clear error. Other processes may write to the file (``writer_only``: no lock,
no reads); row ids are taken from the ``sequence`` table inside each write
transaction, so they grow in commit order whoever writes, and the reader's
cursor never skips a row. ``list_messages`` reads a file read-only, whoever
owns it. ``path=None`` keeps everything in memory (``memory://``, tests).
"""

import collections
import os
import sqlite3
import time

import gevent
from gevent.event import AsyncResult, Event
from gevent.threadpool import ThreadPool

from mailerq_gevent import logs
from mailerq_gevent.broker import sqlfile
from mailerq_gevent.broker.sqlfile import StoreError

__all__ = ["Store", "StoreError", "Stored", "list_messages"]

log = logs.get(__name__)

READ_AHEAD = 256        # rows read from disk per queue at a time
MAX_BATCH = 2000        # messages per commit at most
CHUNK = sqlfile.CHUNK
RECLAIM_EVERY = 10.0    # seconds between checks for free pages to give back
RECLAIM_MIN, RECLAIM_STEP = 256, 2048   # pages (16 KB): start at 4 MB free, 32 MB a step

# A row as ``list_messages`` gives it: ``not_before`` is 0.0 for a ready message
Stored = collections.namedtuple("Stored", "id queue not_before envelope body")


class Store:
    """One queue file; see the module docstring.

    ``before_commit``, when set, is called on the writer thread with the
    ``(ready, delayed, acks)`` rows of every commit before it is made; an
    exception from it fails that commit as a failing disk would (every put
    of the batch raises StoreError, the acks are kept for the next commit).
    The fault tests use it.
    """

    def __init__(self, path, writer_only=False, on_commit=None):
        self.path = path
        self.writer_only, self.on_commit = writer_only, on_commit
        self.before_commit = None
        self._lock_file = None
        self._writing = None        # the file flocked around each write transaction
        self._db = self._reader = None
        self._thread = None
        self._queues = {}           # name -> _QueueState
        self._inflight = {}         # id -> (queue, envelope, body)
        self._puts = []             # ([(queue, envelope, body, not_before)...], AsyncResult)
        self._acks = []
        self._wake_writer = Event()
        self._next_reclaim = 0.0
        self._closing = False
        self._writer = None

    # -- life cycle ---------------------------------------------------------

    def open(self):
        """Open (creating) the file, take its lock, start the writer; raises StoreError."""
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            if not self.writer_only:
                self._lock_file = sqlfile.lock(self.path + ".lock")
            self._writing = open(self.path + ".write-lock", "a+")
            self._thread = ThreadPool(1)
        try:
            self._db = sqlfile.connect(self.path)
            self._reader = self._db if self.path is None or self.writer_only else (
                sqlfile.connect(self.path))
            next_id = sqlfile.start_sequence(self._db, self._writing)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError("%s: %s" % (self.path, exc)) from exc
        self._writer = gevent.spawn(self._writer_loop)
        log.info("queue.store_opened", path=self.path or ":memory:", next_id=next_id,
                 writer_only=self.writer_only)
        return self

    def close(self):
        """Commit pending acks, stop the writer, close the file and its lock."""
        if self._writer is not None and not self._closing:
            self._closing = True
            self._wake_writer.set()
            self._writer.join(timeout=30)
            self._writer.kill()
        for conn in {id(c): c for c in (self._reader, self._db) if c}.values():
            conn.close()
        self._db = self._reader = None
        if self._thread is not None:
            self._thread.kill()
        for handle in (self._writing, self._lock_file):
            if handle is not None:
                handle.close()
        self._writing = self._lock_file = None

    # -- publishing ---------------------------------------------------------

    def put_many(self, rows, timeout=None):
        """Store ``(queue, envelope, body, not_before)`` rows in one transaction:
        all of them or none. Returns once committed; raises StoreError."""
        if self._closing or self._db is None:
            raise StoreError("the queue store is closed")
        done = AsyncResult()
        self._puts.append((rows, done))
        self._wake_writer.set()
        done.get(timeout=timeout)

    def ack(self, message_id):
        """Forget a delivered message (deleted at the next commit)."""
        if self._inflight.pop(message_id, None) is not None:
            self._acks.append(message_id)
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
        """Put a delivered, unacked message back in front of its queue; True if it was."""
        entry = self._inflight.pop(message_id, None)
        if entry is None:
            return False
        queue, envelope, body = entry
        self._queue(queue).front.appendleft((message_id, envelope, body))
        return True

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

    # -- delayed messages ---------------------------------------------------

    def earliest_due(self):
        """The ``not_before`` of the earliest delayed message, or None."""
        return self._reader.execute("SELECT min(not_before) FROM delayed").fetchone()[0]

    def promote_due(self, now):
        """Move up to MAX_BATCH delayed messages due by ``now`` to the ready
        table, in due order, in one transaction; returns their queues."""
        rows = self._reader.execute(
            "SELECT id, queue, envelope, body FROM delayed WHERE not_before <= ?"
            " ORDER BY not_before, id LIMIT ?", (now, MAX_BATCH)).fetchall()
        if rows:
            self._run(self._move, rows)
        return {row[1] for row in rows}

    def _move(self, rows):
        with sqlfile.transaction(self._db, self._writing) as db:
            first = sqlfile.take_ids(db, len(rows))
            sqlfile.insert(db, "messages (id, queue, envelope, body)",
                           [(first + n,) + row[1:] for n, row in enumerate(rows)])
            sqlfile.delete_ids(db, "delayed", [row[0] for row in rows])

    # -- the writer ---------------------------------------------------------

    def _writer_loop(self):
        while True:
            self._wake_writer.wait()
            self._wake_writer.clear()
            while self._puts or self._acks:
                self._commit_batch()
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
            self._failed(exc, puts, acks, len(ready) + len(delayed))
            return
        for _, done in puts:
            done.set(None)
        if (ready or delayed) and self.on_commit is not None:
            self.on_commit({row[0] for row in ready},
                           min(row[1] for row in delayed) if delayed else None)

    def _failed(self, exc, puts, acks, count):
        self._acks[:0] = acks
        error = exc if isinstance(exc, StoreError) else StoreError(
            "cannot commit to %s: %s" % (self.path or ":memory:", exc))
        log.error("queue.commit_failed", path=self.path, error=exc.__class__.__name__,
                  detail=str(exc)[:200], messages=count)
        for _, done in puts:
            done.set_exception(error)
        gevent.sleep(0.1)       # do not spin on a full disk

    def _reclaim(self):
        """Shrink the file a step when many pages are free (a backlog drained)."""
        if self._thread is None or self.writer_only or time.monotonic() < self._next_reclaim:
            return
        self._next_reclaim = time.monotonic() + RECLAIM_EVERY
        free = self._reader.execute("PRAGMA freelist_count").fetchone()[0]
        if free >= RECLAIM_MIN:
            try:
                self._run(sqlfile.vacuum, self._db, self._writing, RECLAIM_STEP)
            except sqlite3.Error as exc:
                log.warning("queue.reclaim_failed", detail=str(exc)[:200])
            else:
                self._next_reclaim = time.monotonic() + (0.5 if free > RECLAIM_STEP else
                                                         RECLAIM_EVERY)

    def _run(self, function, *args):
        """Run a write on the writer thread (file) or inline (memory)."""
        if self._thread is None:
            return function(*args)
        return self._thread.apply(function, args)

    def _write(self, ready, delayed, acks):
        if self.before_commit is not None:
            self.before_commit(ready, delayed, acks)
        # A statement per table, not per row: each SQLite call gives up the GIL
        # and takes it back from the event loop's thread, which stalls it
        with sqlfile.transaction(self._db, self._writing) as db:
            first = sqlfile.take_ids(db, len(ready) + len(delayed))
            if ready:
                sqlfile.insert(db, "messages (id, queue, envelope, body)",
                               [(first + n,) + row for n, row in enumerate(ready)])
            if delayed:
                first += len(ready)
                sqlfile.insert(db, "delayed (id, queue, not_before, envelope, body)",
                               [(first + n,) + row for n, row in enumerate(delayed)])
            if acks:
                sqlfile.delete_ids(db, "messages", acks)

    def _purge_rows(self, queue, cursor, ids):
        with sqlfile.transaction(self._db, self._writing) as db:
            db.execute("DELETE FROM messages WHERE queue = ? AND id > ?", (queue, cursor))
            sqlfile.delete_ids(db, "messages", ids)
            db.execute("DELETE FROM delayed WHERE queue = ?", (queue,))


def list_messages(path, queue=None):
    """Yield what the queue file at ``path`` holds (of ``queue``, or of every
    queue) as ``Stored`` rows: the ready messages in the order they are
    delivered, then the delayed ones in the order they fall due.

    The file is opened read-only, so it may be one another process owns (a
    running daemon); one read transaction gives a consistent picture. Rows are
    streamed, not loaded at once. A ready message that was delivered and not
    yet acknowledged is still listed: only its reader knows it is in flight.
    Raises StoreError when the file cannot be read.
    """
    where, args = ("WHERE queue = ?", (queue,)) if queue is not None else ("", ())
    try:
        db = sqlfile.connect_read_only(path)
    except sqlite3.Error as exc:
        raise StoreError("%s: %s" % (path, exc)) from exc
    try:
        db.execute("BEGIN")
        yield from map(Stored._make, db.execute(
            "SELECT id, queue, 0.0, envelope, body FROM messages %s ORDER BY id" % where, args))
        yield from map(Stored._make, db.execute(
            "SELECT id, queue, not_before, envelope, body FROM delayed %s"
            " ORDER BY not_before, id" % where, args))
    except sqlite3.Error as exc:
        raise StoreError("%s: %s" % (path, exc)) from exc
    finally:
        db.close()


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


class _QueueState:
    __slots__ = ("cursor", "buffer", "front")

    def __init__(self):
        self.cursor = 0                        # highest id read from disk
        self.buffer = collections.deque()      # read ahead, in id order
        self.front = collections.deque()       # requeued: delivered again first
