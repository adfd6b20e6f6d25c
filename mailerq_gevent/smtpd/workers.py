"""``smtp-threads``: the SMTP sessions in worker processes.

MailerQ sizes its SMTP threads close to the number of CPUs; under CPython
threads share one core, so here they are processes, and the daemon counts as
one of them: it delivers (its senders, the queue's consumers, the console),
so ``smtp-threads: N`` is the daemon and N - 1 SMTP workers
(``worker_processes``), and ``auto`` (one per CPU) gives every core one
process. Measured on two cores (``bench/relay.py``, 2 KB, interleaved runs):
the daemon with one worker relayed 2,840-3,030 msg/s at 0.51-0.55 CPU ms a
message, with two workers 1,790-2,340 at 0.66-0.71: three busy processes on
two cores starve the delivering one. ``smtp-threads: 1`` keeps the sessions
in the daemon itself. Every worker
(``worker.py``, a fresh interpreter that inherits only one UNIX socket to the
daemon) binds the SMTP ports itself with SO_REUSEPORT, so the kernel shares
the connections out evenly (one shared listening socket would let the
quickest worker take most of them). The daemon binds them once at start to
report a port in use before any worker runs. Each worker publishes on its
own (into the daemon's embedded queue file, or to RabbitMQ) and answers 250
once its own commit is done; the daemon hears of each commit to the file over
the worker's channel (``worker_channel``) and passes it on (``on_commit``, the
daemon's ``EmbeddedQueue.committed_elsewhere``), which wakes its consumers.

The connection limits are shared out: each worker gets ``smtp-connections``
and ``smtp-connections-in`` divided by the number of workers (rounded up).
Each worker tells the daemon how many sessions it has open as soon as it
listens and then whenever that changes (looked at every
``worker.INBOUND_EVERY`` seconds): the console's status counts them all.
``start`` returns once every worker has said its first count (or after
``READY_TIMEOUT``), so the daemon says it has started only when all of them
listen: connections kept open from the first second (a bulk sender's) are
shared out by the kernel among all the workers, not all given to the one
that was up first. Failed logins (``smtp-protection``) are counted by each
worker and, for all of them together, here: an address that reaches the
limit across the workers is blocked in every one (and in a worker started
later). A worker that dies is started again after a second; ``stop`` asks every worker to finish
(SIGTERM: stop accepting, finish what is in flight), waits, then kills.
A worker whose daemon dies exits by itself (its channel closes).
"""

import functools
import json
import os
import signal
import socket
import subprocess
import sys

import gevent
from gevent.event import Event

from mailerq_gevent import logs
from mailerq_gevent.smtpd import worker_channel
from mailerq_gevent.smtpd.live_relay import LiveRelay
from mailerq_gevent.smtpd.protection import FailedLogins
from mailerq_gevent.smtpd.server import listen_all

log = logs.get(__name__)

RESTART_DELAY = 1.0
READY_TIMEOUT = 60.0        # seconds for every worker to listen, at start


class _Worker:
    __slots__ = ("index", "proc", "channel", "greenlets", "inbound", "listening")

    def __init__(self, index, proc, channel):
        self.index, self.proc, self.channel = index, proc, channel
        self.greenlets = []
        self.inbound = 0            # its open SMTP sessions, as it last said
        self.listening = Event()    # set by its first count

    def counted(self, inbound):
        self.inbound = inbound
        self.listening.set()


def worker_processes(threads):
    """The SMTP worker processes for ``smtp-threads: threads``: the daemon is one
    of the ``threads`` processes, so one fewer; none for 1 (sessions in the daemon)."""
    return max(threads - 1, 0)


class WorkerPool:
    """``count`` workers; ``on_commit(due)`` for each commit notice of a worker;
    ``recorder``: the console's live view, which the workers' sessions reach."""

    def __init__(self, conf, count, var_dir="var", on_commit=None, recorder=None):
        if not conf.path:
            raise ValueError("smtp-threads above 1 needs the daemon to run from a config file")
        self.conf, self.count, self.var_dir = conf, count, var_dir
        self.on_commit = on_commit or (lambda due: None)
        self.workers = {}
        self.stopping = False
        self.protection = FailedLogins(enabled=conf.smtp_protection)   # all workers' failures
        self.recorder, self.live = recorder, LiveRelay(recorder) if recorder else None
        if recorder is not None:
            recorder.watch_changes(lambda watched: self._tell_all({"watch": watched}))

    def start(self):
        ports = []
        for listener, _ in listen_all(self.conf, reuse_port=True):     # a port in use: fail now
            ports.append(str(listener.getsockname()[1]))
            listener.close()
        for index in range(self.count):
            self._spawn(index)
        waiting = [worker.listening for worker in self.workers.values()]
        ready = len(gevent.wait(waiting, timeout=READY_TIMEOUT))
        if ready < self.count:
            log.warning("smtp.workers_slow", listening=ready, count=self.count,
                        waited=READY_TIMEOUT)
        log.info("smtp.workers_started", count=self.count, ports=",".join(ports))

    def _spawn(self, index):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "mailerq_gevent.smtpd.worker",
                   "--config", self.conf.path, "--index", str(index),
                   "--workers", str(self.count), "--channel", str(theirs.fileno()),
                   "--var-dir", self.var_dir]
        proc = subprocess.Popen(command, pass_fds=[theirs.fileno()])
        theirs.close()
        worker = self.attach(index, ours, proc)
        worker.greenlets.append(gevent.spawn(self._watch, worker))

    def attach(self, index, sock, proc=None):
        """Worker number ``index`` (its process ``proc``) talks to us over ``sock``,
        the daemon's end of its channel: served from now on, in a greenlet."""
        worker = self.workers[index] = _Worker(index, proc, None)
        worker.greenlets = [gevent.spawn(self._serve, worker, sock)]
        return worker

    def _serve(self, worker, sock):
        worker.channel = worker_channel.FrameSocket(sock)
        for ip, seconds in self.protection.blocks():        # a restarted worker knows them too
            _tell(worker, {"block": ip, "seconds": seconds})
        on_live = None
        if self.live is not None:
            if self.recorder.watched:
                _tell(worker, {"watch": True})
            on_live = functools.partial(self.live.feed, worker.index)
        try:
            worker_channel.serve_channel(worker.channel, self.on_commit, self._auth_failed,
                                         on_live, worker.counted)
        finally:
            worker.inbound = 0
            worker.channel.close()
            if self.live is not None:
                self.live.worker_gone(worker.index)

    def inbound(self):
        """The SMTP sessions open in all the workers (each says so when it changes)."""
        return sum(worker.inbound for worker in self.workers.values())

    def _auth_failed(self, ip):
        """A worker saw a failed login: count it with the others' and, when
        that blocks the address, tell every worker."""
        if self.protection.failed(ip):
            log.warning("smtp.blocked", client=ip, seconds=self.protection.cool_down,
                        reason="failed logins across the smtp-threads workers")
            self._tell_all({"block": ip, "seconds": self.protection.cool_down})

    def _watch(self, worker):
        status = worker.proc.wait()
        if self.stopping:
            return
        log.error("smtp.worker_died", index=worker.index, status=status,
                  restart_in=RESTART_DELAY)
        gevent.sleep(RESTART_DELAY)
        if not self.stopping:
            self._spawn(worker.index)

    def settings_changed(self, snapshot=None):
        """Tell every worker to reload its settings now (a console edit, a cluster notice)."""
        self._tell_all({"reload": True})

    def _tell_all(self, notice):
        for worker in list(self.workers.values()):
            _tell(worker, notice)

    def stop(self, timeout=30.0):
        self.stopping = True
        procs = [worker.proc for worker in self.workers.values() if worker.proc is not None]
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        deadline = gevent.Timeout(timeout)
        deadline.start()
        try:
            for proc in procs:
                proc.wait()
        except gevent.Timeout:
            log.warning("smtp.workers_killed", after=timeout)
            for proc in procs:
                _signal(proc, signal.SIGKILL)
        finally:
            deadline.close()
        for worker in self.workers.values():
            gevent.killall(worker.greenlets, block=False)
            if worker.channel is not None:
                worker.channel.close()
        self.workers = {}


def _tell(worker, notice):
    if worker.channel is not None:
        try:
            worker.channel.send(json.dumps(notice).encode())
        except (OSError, worker_channel.ChannelClosed):
            pass


def _signal(proc, signum):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass
