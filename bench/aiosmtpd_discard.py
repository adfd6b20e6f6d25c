"""The comparison server for bench/inject.py: aiosmtpd accepting and discarding mail.

    .venv/bin/python bench/aiosmtpd_discard.py --port 2526 [--host 127.0.0.1]

A plain asyncio loop serving ``aiosmtpd.smtp.SMTP`` (no ``Controller``, no
thread) with a handler whose ``handle_DATA`` answers "250 OK" and keeps
nothing. Everything else is aiosmtpd's default, with one exception: the
hostname for the greeting is looked up once here rather than by
``socket.getfqdn()`` in every connection, so the reconnect figures measure SMTP
and not this machine's resolver (it only makes aiosmtpd faster).

Prints "ready" once listening. SIGTERM or SIGINT stops it; it then prints
"discarded N" (the messages it answered 250 to) and exits 0.
"""

# bench/ holds queue.py, named like the standard library module asyncio
# imports: take this folder off the import path first.
import os  # noqa: I001
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402

from aiosmtpd.smtp import SMTP  # noqa: E402


class Discard:
    """aiosmtpd handler: accept every message, keep only the count."""

    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


async def serve(host, port):
    loop = asyncio.get_running_loop()
    handler, hostname = Discard(), socket.getfqdn()
    server = await loop.create_server(lambda: SMTP(handler, hostname=hostname, loop=loop),
                                      host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
    print("discarded %d" % handler.count, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
