"""The SMTP server: every ``smtp-port`` and ``smtp-secure-port``.

One gevent ``StreamServer`` per listening port (``listener.Listener``), on
``smtp-ip`` or, when that is empty, on every address (IPv6 and IPv4 through
one dual-stack socket where the host has IPv6), all sharing one pool of
session greenlets (``listener.Runners``: a greenlet is used again from one
connection to the next). Ports on ``smtp-secure-port`` speak TLS from the
first byte. A connection runs a ``Session`` once it has an inbound slot of
the ``ConnectionBudget`` (``smtp-connections``, ``smtp-connections-in``); a
client that finds the server full gets ``421`` at once while the sessions
already open carry on.

Besides the sessions, this is where the policy of who may do what lives:
``allowed`` (``smtp-range``), ``relay_check`` (``smtp-auth`` and the local
addresses), ``hostname_for`` (the greeting name: the ``mtanames`` row of the
local address, else ``smtp-hostname``, else its reverse DNS name).
``stop(timeout)`` closes the listeners, lets the sessions finish what they
are doing within ``timeout``, then cuts the rest.
"""

import functools
import ipaddress
import socket

import gevent

from mailerq_gevent import logs, netinfo
from mailerq_gevent.names import canonical_ip
from mailerq_gevent.smtpd import message, paths, reply
from mailerq_gevent.smtpd.listener import Listener, Runners
from mailerq_gevent.smtpd.protection import FailedLogins
from mailerq_gevent.smtpd.session import Session, ShuttingDown

log = logs.get(__name__)

BACKLOG = 1024
REVERSE_DNS_TIMEOUT = 2.0
AUTH_FAILURE_DELAY = 1.0


class SMTPServer:
    def __init__(self, conf, broker, settings, budget, authenticator=None, tls_context=None,
                 listeners=None, checks=None, recorder=None):
        """``settings``: a callable returning the current settings snapshot;
        ``listeners``: ``[(socket, secure)]`` already bound (a worker process's),
        else the server binds its ports itself; ``checks``: the inbound checks
        (``checks.InboundChecks``) when ``smtp-check`` names any; ``recorder``:
        the console's live view (``console.live.Recorder``), or None."""
        self.conf, self.broker, self.settings, self.budget = conf, broker, settings, budget
        self.authenticator, self.tls_context = authenticator, tls_context
        self.checks = checks if checks is not None and checks.enabled else None
        self.recorder = recorder    # the live view: each session asks it for its Wire's tap
        self.protection = FailedLogins(enabled=conf.smtp_protection)
        self.stopping = False
        self._open = {}             # greenlet -> its Session
        self.auth_failure_delay = AUTH_FAILURE_DELAY
        self._servers = []          # listener.Listener, one per port
        self._listeners = listeners
        self._sessions = Runners()
        self._names = {}
        self._ips = {}              # local address -> outgoing ips (the server's are few)

    @property
    def addresses(self):
        """``[(host, port, secure)]`` actually listened on (port 0 becomes a real port)."""
        return [(srv.server_host, srv.server_port, srv.secure) for srv in self._servers]

    def start(self):
        if self.conf.smtp_secure_port and self.tls_context is None:
            raise ValueError("smtp-secure-port needs TLS")
        for listener, secure in self._listeners or listen_all(self.conf):
            server = Listener(listener, self._handle, self._sessions, secure)
            server.start()
            self._servers.append(server)
        for host, port, secure in self.addresses:
            log.info("smtp.listening", address=host, port=port,
                     tls="implicit" if secure else "starttls")

    def stop(self, timeout=30.0):
        """Stop listening; sessions waiting for a command get 421 now (nothing
        they sent was accepted yet, so they will try again), a message being
        received or queued may finish within ``timeout``; what is left then is cut."""
        self.stopping = True
        for server in self._servers:
            server.close()
        self._servers = []
        for runner, session in list(self._open.items()):
            if session.idle:
                self._sessions.throw(runner, ShuttingDown, still=lambda s=session: s.idle)
        self._sessions.join(timeout)
        if len(self._sessions):
            log.warning("smtp.sessions_cut", count=len(self._sessions))
            self._sessions.kill(timeout=5)
        self._sessions.close()

    def sessions(self):
        """The sessions open now (for the console)."""
        return list(self._open.values())

    def inbound(self):
        """How many sessions are open now."""
        return len(self._open)

    # -- connections ----------------------------------------------------------

    def _handle(self, sock, address, secure):
        """One connection (the listener closes ``sock`` after it)."""
        if not self.budget.try_inbound():
            _refuse(sock)
            return
        session = Session(self, sock, _plain_ip(address[0]), _plain_ip(sock.getsockname()[0]),
                          implicit_tls=secure)
        self._open[gevent.getcurrent()] = session
        try:
            session.run()
        finally:
            del self._open[gevent.getcurrent()]
            self.budget.release_inbound()

    # -- policy ---------------------------------------------------------------

    def allowed(self, ip):
        return _in_networks(ip, self.conf.smtp_range)

    def behind_proxy(self, ip):
        """Whether connections from ``ip`` start with a PROXY header (``smtp-proxy``)."""
        return bool(self.conf.smtp_proxy) and _in_networks(ip, self.conf.smtp_proxy)

    def relay_check(self, session, path):
        """None when ``session`` may send to ``path``, else the refusal.

        Without ``smtp-auth`` every client inside ``smtp-range`` may relay.
        With it, an unauthenticated client may only reach local addresses,
        and never through the odd forms some MTAs route on.
        """
        if self.authenticator is None or session.user is not None:
            return None
        if paths.is_odd(path):
            return reply.RELAY_DENIED
        snapshot = session.envelope.snapshot
        if path.address.lower() == "postmaster" or snapshot.is_local(path.address):
            return None
        return reply.AUTH_REQUIRED

    def outgoing_ips(self, local_ip):
        """The ``ips`` of mail submitted to ``local_ip`` (see ``message.outgoing_ips``)."""
        ips = self._ips.get(local_ip)
        if ips is None:
            ips = self._ips[local_ip] = message.outgoing_ips(local_ip, self.conf)
        return ips

    def hostname_for(self, local_ip):
        name = self.settings().mtaname(local_ip) or self.conf.smtp_hostname
        if name:
            return name
        if local_ip not in self._names:
            self._names[local_ip] = _reverse_name(local_ip)
        return self._names[local_ip]


def listen_all(conf, reuse_port=False):
    """``[(listening socket, secure)]`` for every ``smtp-port`` and ``smtp-secure-port``.

    ``reuse_port``: SO_REUSEPORT, so that several worker processes each bind
    their own socket to the same port and the kernel shares the connections
    out evenly among them.
    """
    return ([(netinfo.listen(conf.smtp_ip, port, BACKLOG, reuse_port), False) for port in conf.smtp_port] +
            [(netinfo.listen(conf.smtp_ip, port, BACKLOG, reuse_port), True) for port in conf.smtp_secure_port])


@functools.lru_cache(maxsize=4096)
def _in_networks(ip, networks):
    """Whether ``ip`` is in one of ``networks`` (a tuple from the config); the
    same few clients connect again and again, so the answer is kept."""
    address = ipaddress.ip_address(ip)
    return any(address in network for network in networks)


def _plain_ip(text):
    """``::ffff:1.2.3.4`` (a v4 client on a dual-stack socket) -> ``1.2.3.4``;
    a scope (``fe80::1%eth0``) is left out."""
    return canonical_ip(text.split("%")[0])


def _refuse(sock):
    try:
        sock.sendall(reply.TOO_MANY_CONNECTIONS.encode())
    except OSError:
        pass


def _reverse_name(ip):
    try:
        with gevent.Timeout(REVERSE_DNS_TIMEOUT):
            return socket.gethostbyaddr(ip)[0]
    except (OSError, gevent.Timeout):
        return socket.gethostname()
