"""Perl's Mail::DKIM as a second, independent DKIM verifier for the tests.

``verify(message, records)`` runs ``mail_dkim_verify.pl`` with the message on
stdin and the TXT ``records`` ({"sel._domainkey.example.com": "v=DKIM1; ..."})
served by Net::DNS::Resolver::Mock, and returns a :class:`Report`. When perl
or the modules are missing, ``require()`` skips the test with the command
that installs them; under CI (``CI=true``) it fails instead, so a green CI
means Mail::DKIM really checked the signatures.
"""

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

HOW = "apt-get install libmail-dkim-perl libnet-dns-resolver-mock-perl"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mail_dkim_verify.pl")
MODULES = ("Mail::DKIM::Verifier", "Net::DNS::Resolver::Mock")


@dataclass(frozen=True)
class Report:
    """What Mail::DKIM said: the overall result (``pass``, ``fail``, ``none``,
    ...) and one ``(result, domain, selector, detail)`` per signature, top first."""

    result: str
    signatures: tuple

    @property
    def results(self):
        return [entry[0] for entry in self.signatures]


def _has_module(module):
    return subprocess.run(["perl", "-M" + module, "-e", "1"], capture_output=True,
                          timeout=30).returncode == 0


@functools.lru_cache(maxsize=None)
def missing():
    """Why Mail::DKIM cannot run here, or None when it can."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    absent = [module for module in MODULES if not _has_module(module)]
    return "perl modules missing: %s" % ", ".join(absent) if absent else None


@functools.lru_cache(maxsize=None)
def supports_ed25519():
    """Whether this Mail::DKIM verifies ed25519-sha256 (Debian 12's 1.20230212
    does not; it came with later releases and CryptX)."""
    return _has_module("Mail::DKIM::Algorithm::ed25519_sha256")


def require():
    """Skip (or, under CI, fail) when Mail::DKIM cannot run."""
    why = missing()
    if why is None:
        return
    message = "Mail::DKIM not available (%s); %s" % (why, HOW)
    if os.environ.get("CI") == "true":
        pytest.fail("under CI the Perl verifier must run: " + message)
    pytest.skip(message)


def verify(message, records):
    """Verify every signature of ``message`` (bytes) with Mail::DKIM."""
    require()
    args = ["%s=%s" % (name.rstrip("."), txt) for name, txt in records.items()]
    done = subprocess.run(["perl", SCRIPT] + args, input=message, capture_output=True,
                          timeout=60, check=True)
    signatures, result = [], None
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "signature":
            outcome, domain, selector, detail = (rest.split(" ", 3) + [""])[:4]
            signatures.append((outcome, domain[2:], selector[2:], detail))
        elif kind == "result":
            result = rest
    return Report(result, tuple(signatures))
