"""A real DNS server on loopback for the tests: dnslib's server, in a child
process, answering from records the test gives, over UDP and TCP.

Usage in a test module::

    from tests.dns_server import dns_zone_fixture  # noqa: F401 - the dns_zone fixture

    def test_x(dns_zone):
        zone = dns_zone([("example.test", "TXT", "v=spf1 -all"),
                         ("example.test", "MX", "10 mx.example.test"),
                         ("mx.example.test", "A", "127.0.0.1")])
        resolver = make_resolver(zone.address)

A record is ``(name, type, value)`` with the value as in a zone file (without
quotes for TXT: a long TXT value is split into 255-byte strings, as a DKIM key
must be). Names listed in ``servfail`` answer SERVFAIL. A UDP answer over 512
bytes (or the EDNS0 size the query offers) is truncated, so the client must
retry over TCP, as on the Internet.

:func:`serve_zone` is the same as a context manager, for a fixture of wider
scope. :func:`silent_server` is a UDP port on which nothing ever answers.

Run as a script (``python tests/dns_server.py``) it is the child: it reads the
zone as JSON on stdin, prints its port, and serves until stdin closes.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys

from mailerq_gevent.config_values import HostPort

TTL = 60
UDP_LIMIT = 512


class Zone:
    """A running child DNS server: ``.host``, ``.port``, ``.address`` (a HostPort)."""

    host = "127.0.0.1"

    def __init__(self, records, servfail=()):
        zone = {"records": [list(record) for record in records], "servfail": list(servfail)}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = b""
        try:
            self.proc.stdin.write(json.dumps(zone).encode() + b"\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            self.port = int(line)
        except (OSError, ValueError):
            self.stop()
            raise RuntimeError("the DNS server did not start (it printed %r)" % line) from None

    @property
    def address(self):
        return HostPort(self.host, self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()   # the child's signal to stop
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


@contextlib.contextmanager
def serve_zone(records, servfail=()):
    zone = Zone(records, servfail)
    try:
        yield zone
    finally:
        zone.stop()


@contextlib.contextmanager
def silent_server():
    """A bound UDP and TCP port on loopback that never answers: ``(host, port)``."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp.bind(("127.0.0.1", port))
        tcp.listen(1)
        yield "127.0.0.1", port
    finally:
        udp.close()
        tcp.close()


if __name__ != "__main__":   # the child needs no pytest
    import pytest

    @pytest.fixture(name="dns_zone")
    def dns_zone_fixture():
        """Factory: ``dns_zone(records, servfail=())`` -> a running :class:`Zone`."""
        started = []

        def start(records, servfail=()):
            started.append(Zone(records, servfail))
            return started[-1]

        yield start
        for zone in started:
            zone.stop()


# --- the child -------------------------------------------------------------

def _build(records):
    from dnslib import QTYPE, RR, TXT
    built = []
    for name, rtype, value in records:
        if rtype.upper() == "TXT":
            data = value.encode()
            chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
            built.append(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=TTL))
        else:
            built.extend(RR.fromZone("%s %d IN %s %s" % (name, TTL, rtype.upper(), value)))
    return built


def _resolver_class():
    from dnslib import QTYPE, RCODE
    from dnslib.server import BaseResolver

    class ZoneResolver(BaseResolver):
        def __init__(self, records, servfail):
            self.records = _build(records)
            self.servfail = set(name.lower().rstrip(".") for name in servfail)

        def resolve(self, request, handler):
            reply = request.reply()
            qname, qtype = request.q.qname, request.q.qtype
            if str(qname).lower().rstrip(".") in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            for _ in range(8):   # follow CNAMEs inside the zone
                same = [rr for rr in self.records if rr.rname == qname]
                wanted = [rr for rr in same if rr.rtype == qtype or qtype == QTYPE.ANY]
                cname = [rr for rr in same if rr.rtype == QTYPE.CNAME]
                if wanted or not cname:
                    break
                reply.add_answer(*cname)
                qname = cname[0].rdata.label
            reply.add_answer(*wanted)
            if not reply.rr and not any(rr.rname.matchSuffix(qname) for rr in self.records):
                reply.header.rcode = RCODE.NXDOMAIN
            return reply

    return ZoneResolver


def _serve():
    from dnslib import QTYPE, DNSRecord
    from dnslib.server import DNSHandler, DNSLogger, DNSServer

    class Handler(DNSHandler):
        def get_reply(self, data):
            rdata = super().get_reply(data)
            request = DNSRecord.parse(data)
            limit = max([UDP_LIMIT] + [rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT])
            if self.protocol == "udp" and len(rdata) > limit:
                # dnslib's truncate() drops the question too, which dnspython
                # (rightly) rejects: answer TC with the question kept
                reply = request.reply()
                reply.header.tc = 1
                rdata = reply.pack()
            return rdata

    zone = json.loads(sys.stdin.readline())
    resolver = _resolver_class()(zone["records"], zone["servfail"])
    quiet = DNSLogger(logf=lambda text: None)
    for _ in range(50):   # a free port for both UDP and TCP
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=quiet, handler=Handler)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True,
                            logger=quiet, handler=Handler)
            break
        except OSError:
            udp.server.server_close()
    udp.start_thread()
    tcp.start_thread()
    print(port, flush=True)
    sys.stdin.read()   # until the parent closes it (or dies)
    udp.stop()
    tcp.stop()


if __name__ == "__main__":
    _serve()
