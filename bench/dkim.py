"""DKIM signing speed: ``signing.Signer`` beside stock dkimpy, in one process.

    .venv/bin/python bench/dkim.py [--messages 5000] [--runs 3] [--json]

Each run signs ``--messages`` distinct messages of ``--size`` bytes (2 KB:
the usual headers and a text body) with one RSA-2048 key through
``Signer.sign`` (dkimpy canonicalises and hashes, OpenSSL signs, the key
parsed once), then with one Ed25519 key, then ``--dkimpy-messages`` (500) of
them with dkimpy's own ``dkim.sign`` (relaxed/relaxed, the same header set,
its pure-Python RSA). Figures are signatures per second, the median of
``--runs`` runs. The bar is 2,000 RSA-2048 signatures/s in one process.
"""

# This file is named like the ``dkim`` package it measures: take its folder off
# the import path before anything imports ``dkim``.
import os  # noqa: I001
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import dkim  # noqa: E402

from mailerq_gevent import signing  # noqa: E402

BAR = 2000
HEADERS = (b"From: News <news@example.com>\r\nTo: reader%d@example.org\r\n"
           b"Subject: Newsletter number %d\r\nDate: Fri, 15 Jan 2027 08:00:00 +0000\r\n"
           b"Message-ID: <%d@example.com>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"List-Unsubscribe: <mailto:unsubscribe@example.com>\r\n\r\n")
LINE = b"The quick brown fox jumps over the lazy dog, message %d line %d.\r\n"


def messages_of(size, count):
    """``count`` distinct messages of about ``size`` bytes."""
    out = []
    for n in range(count):
        head, body, line = HEADERS % (n, n, n), [], 0
        while len(head) + sum(map(len, body)) < size:
            body.append(LINE % (n, line))
            line += 1
        out.append(head + b"".join(body))
    return out


def rate(sign, messages):
    started = time.perf_counter()
    for message in messages:
        sign(message)
    return len(messages) / (time.perf_counter() - started)


def signer_run(key, messages):
    """A fresh Signer per run: its one key parse is inside the timing."""
    signer = signing.Signer()
    return rate(lambda message: signer.sign(message, [key]), messages)


def dkimpy_run(pem, messages):
    include = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
               b"content-type", b"list-unsubscribe", b"from"]
    return rate(lambda message: dkim.sign(
        message, b"s1", b"example.com", pem, canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include) + message, messages)


def measure(name, run, runs, count):
    rates = [run() for _ in range(runs)]
    return {"signer": name, "messages": count, "runs": [round(r) for r in rates],
            "per_s": statistics.median(rates)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--dkimpy-messages", type=int, default=500)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rsa_pem, _ = signing.generate_key("rsa-sha256", 2048)
    ed_pem, _ = signing.generate_key("ed25519-sha256")
    rsa_key = signing.SigningKey.create("example.com", "s1", rsa_pem, "rsa-sha256")
    ed_key = signing.SigningKey.create("example.com", "e1", ed_pem, "ed25519-sha256")
    messages = messages_of(args.size, args.messages)
    few = messages[:args.dkimpy_messages]
    rows = [
        measure("Signer rsa-sha256 (2048)", lambda: signer_run(rsa_key, messages),
                args.runs, len(messages)),
        measure("Signer ed25519-sha256", lambda: signer_run(ed_key, messages),
                args.runs, len(messages)),
        measure("dkimpy dkim.sign rsa-sha256 (2048)",
                lambda: dkimpy_run(rsa_pem.encode(), few), args.runs, len(few)),
    ]
    ratio = rows[0]["per_s"] / rows[2]["per_s"]
    if args.json:
        print(json.dumps({"rows": rows, "rsa_ratio": ratio, "bar": BAR}, indent=2))
    else:
        report(rows, ratio, args)


def report(rows, ratio, args):
    print("%d-byte messages, one process, relaxed/relaxed; median of %d runs" % (
        args.size, args.runs))
    print("%-36s %9s %12s %10s %s" % ("signer", "messages", "signatures/s", "ms each", "runs"))
    for row in rows:
        print("%-36s %9d %12.0f %10.3f %s" % (row["signer"], row["messages"], row["per_s"],
                                              1000 / row["per_s"], row["runs"]))
    print("Signer / dkimpy (RSA-2048): %.1fx; bar %d RSA-2048 signatures/s: %s" % (
        ratio, BAR, "met" if rows[0]["per_s"] >= BAR else "MISSED"))


if __name__ == "__main__":
    main()
