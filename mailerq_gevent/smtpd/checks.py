"""Inbound checks of ``smtp-check``: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489) and spam.

``InboundChecks(conf).run(peer_ip, helo, mail_from, content)`` returns a
:class:`CheckResults`; its ``results`` go into the message JSON, and its
``header(authserv_id)`` is the RFC 8601 Authentication-Results header that
``smtp-auth-results`` asks for. Only the configured checks run and appear.

``results`` (every key present only when its check is configured)::

    {"spf":   {"result": "pass", "domain": "example.com", "identity": "mailfrom"},
     "dkim":  [{"result": "pass", "domain": "example.com", "selector": "s1"}],
     "dmarc": {"result": "pass", "policy": "reject", "domain": "example.com"},
     "spam":  {"result": "ham", "score": 1.2, "threshold": 5.0}}

- spf (RFC 7208): result is pass, fail, softfail, neutral, none, temperror or
  permerror; domain is the MAIL FROM domain, or the HELO name when MAIL FROM
  is empty (identity "helo" instead of "mailfrom").
- dkim (RFC 6376): one entry per DKIM-Signature, top first, at most
  ``MAX_SIGNATURES``; ``[]`` when the message is not signed. result is pass,
  fail (the signature or body hash does not verify), permerror (a bad
  signature field or tag, no key or a malformed key in DNS) or temperror (DNS
  failed). domain and selector are the d= and s= tags ("" when unreadable).
- dmarc (RFC 7489): result is pass (SPF or DKIM passed for a domain aligned
  with the From domain), fail, none (no DMARC record), temperror or permerror
  (malformed record, or no single From domain); policy is the requested
  policy (p=, or sp= when the record is the organizational domain's) or null
  when there is no record; domain is the From domain (null when none).
- spam: result is ham, spam, error (spamd down, timed out or answered
  nonsense) or skipped (the message is over ``SPAM_MAX_SIZE``, as spamc
  skips them); score and threshold are spamd's numbers (null unless ham/spam).

The header: each method on a continuation line that starts with a tab,
folded below 78 characters, CRLF line ends::

    Authentication-Results: mx.example.com;
            spf=pass smtp.mailfrom=example.com;
            dkim=pass header.d=example.com header.s=s1;
            dmarc=pass (p=reject) header.from=example.com

Spam has no RFC 8601 method and is left out (alone, it gives ``none``).
Values that are not RFC 2045 tokens are quoted: HELO names are client text.

dkimpy verifies DKIM and pyspf evaluates SPF, both asking our resolver
(``resolver.py``: ``dns-server``, bounded lifetimes): dkimpy through its
``dnsfunc``; pyspf has no such argument but calls ``spf.DNSLookup``, which
:func:`_install_spf_hook` replaces by a function using the resolver of the
check in the current greenlet (a ``ContextVar``), else pyspf's own lookup.

DMARC is evaluated here from the SPF and DKIM results, a ``_dmarc`` TXT
lookup and the organizational domain from ``publicsuffixlist`` (parsed once,
~30 ms, at construction; 2 µs a lookup). Not authheaders: it re-reads and
re-parses its public suffix list on every organizational-domain call (~35 ms,
up to five times a message, blocking the event loop), its DNS hook returns one
string so "several records means none" (RFC 7489 §6.6.3) is lost, and it
checks ``np=`` with a TXT query. Discovery, alignment and p/sp are short;
pct/rua/ruf/fo are not used (nothing is rejected here).

Each check is bounded by ``timeout`` (``gevent.Timeout``); any error gives
temperror/permerror (spam: error) and a log line, never an exception: checks
never stop mail. SPF and spam run in greenlets beside DKIM; DMARC waits.
Where it blocks: DKIM hashes the body of a signed message (CPU, in proportion
to its size; unsigned messages are read no further than the header block).
Nothing is cached across messages.
"""

import contextvars
import email.utils
import re
import socket
import time

import dkim
import gevent
import spf
from publicsuffixlist import PublicSuffixList

from mailerq_gevent import logs
from mailerq_gevent import resolver as dnsutil
from mailerq_gevent.mail import headers
from mailerq_gevent.smtpd import authresults

log = logs.get(__name__)

CHECK_TIMEOUT = 10.0           # seconds for each check
MAX_SIGNATURES = 5             # DKIM-Signature fields verified per message
SPAM_MAX_SIZE = 500 * 1024     # spamc's default: larger messages are not sent
SPAM_REPLY_LIMIT = 64 * 1024
POLICIES = ("none", "quarantine", "reject")
CHECKS = ("spf", "dkim", "dmarc", "spam")   # in the order of ``results``


class CheckTimeout(Exception):
    """A check ran out of its time."""


class SpamdError(Exception):
    """spamd answered something other than a result."""


class CheckResults:
    """What the checks found for one message (see the module docstring)."""

    __slots__ = ("results",)

    def __init__(self, results):
        self.results = results

    def header(self, authserv_id):
        """One ``Authentication-Results: ...\\r\\n`` header field, folded."""
        return authresults.format_header(authserv_id, self.results)


class InboundChecks:
    """The checks of ``smtp-check``; ``enabled`` is False when there are none."""

    def __init__(self, conf, resolver=None, timeout=CHECK_TIMEOUT):
        self.checks = tuple(conf["smtp-check"])
        self.enabled = bool(self.checks)
        self.timeout = timeout
        self.spamd = (conf["spamassassin-host"], conf["spamassassin-port"])
        self.resolver, self._psl = resolver, None
        if set(self.checks) - {"spam"}:
            if resolver is None:
                self.resolver = dnsutil.make_resolver(conf["dns-server"])
            _install_spf_hook()
        if "dmarc" in self.checks:
            self._psl = PublicSuffixList()

    def run(self, peer_ip, helo, mail_from, content):
        """Run the configured checks on one message -> :class:`CheckResults`."""
        started, checks, jobs, found = time.monotonic(), self.checks, {}, {}
        if "spam" in checks:
            jobs["spam"] = gevent.spawn(self.check_spam, content)
        if "spf" in checks or "dmarc" in checks:   # DMARC needs SPF and DKIM
            jobs["spf"] = gevent.spawn(self.check_spf, peer_ip, helo, mail_from)
        try:
            if "dkim" in checks or "dmarc" in checks:
                block, _ = headers.split(content)
                fields = [headers.name_and_value(lines) for lines in headers.fields(block)]
                found["dkim"] = self.check_dkim(content, fields)
            if "spf" in jobs:
                found["spf"] = jobs["spf"].get()
            if "dmarc" in checks:
                found["dmarc"] = self.check_dmarc(fields, found["spf"], found["dkim"])
            if "spam" in jobs:
                found["spam"] = jobs["spam"].get()
        finally:
            for job in jobs.values():
                job.kill(block=False)
        results = {name: found[name] for name in CHECKS if name in checks}
        log.debug("checks.done", ms="%.1f" % ((time.monotonic() - started) * 1000),
                  **{name: _summary(value) for name, value in results.items()})
        return CheckResults(results)

    def check_spf(self, peer_ip, helo, mail_from):
        identity = "mailfrom" if mail_from else "helo"
        domain = (mail_from.rpartition("@")[2] if mail_from else helo or "").lower()
        found = {"result": "temperror", "domain": domain, "identity": identity}
        if not domain:
            return dict(found, result="none")

        def evaluate():
            token = _SPF_RESOLVER.set(self.resolver)
            try:
                result, why = spf.check2(peer_ip, mail_from or "", helo or "",
                                         timeout=self.timeout, querytime=self.timeout)
            finally:
                _SPF_RESOLVER.reset(token)
            _note("spf", result, domain=domain, reason=why)
            return dict(found, result=result)

        return self._bounded("spf", found, evaluate)

    def check_dkim(self, content, fields):
        count = sum(1 for name, _ in fields if name == "dkim-signature")
        if not count:
            return []
        failed = [{"result": "temperror", "domain": "", "selector": ""}]
        return self._bounded("dkim", failed, self._verify_all, content,
                             min(count, MAX_SIGNATURES))

    def _verify_all(self, content, count):
        try:
            verifier = dkim.DKIM(content, logger=_QUIET, timeout=self.timeout)
        except dkim.DKIMException:
            return [{"result": "permerror", "domain": "", "selector": ""} for _ in range(count)]
        return [self._verify_one(verifier, index) for index in range(count)]

    def _verify_one(self, verifier, index):
        lookup = _KeyLookup(self.resolver)
        verifier.signature_fields = {}
        try:
            result = "pass" if verifier.verify(idx=index, dnsfunc=lookup) else lookup.failure()
        except dnsutil.TemporaryError:
            result = "temperror"
        except dkim.ValidationError:
            # before the key lookup: a bad signature field; after: a bad hash
            result = "permerror" if lookup.name is None else "fail"
        except dkim.DKIMException:
            result = "permerror"
        tags = verifier.signature_fields
        found = {"result": result, "domain": _tag(tags, b"d").lower(),
                 "selector": _tag(tags, b"s")}
        _note("dkim", result, domain=found["domain"], selector=found["selector"])
        return found

    def check_dmarc(self, fields, spf_result, dkim_results):
        domain = _from_domain(fields)
        found = {"result": "permerror", "policy": None, "domain": domain}
        if domain is None:
            return found
        return self._bounded("dmarc", dict(found, result="temperror"), self._dmarc,
                             domain, spf_result, dkim_results)

    def _dmarc(self, domain, spf_result, dkim_results):
        found = {"result": "none", "policy": None, "domain": domain}
        organizational = self.organizational_domain(domain)
        try:
            record = _dmarc_record(self.resolver, domain)
            subdomain = record is None and organizational != domain
            if subdomain:
                record = _dmarc_record(self.resolver, organizational)
        except dnsutil.TemporaryError as exc:
            _note("dmarc", "temperror", domain=domain, error=str(exc))
            return dict(found, result="temperror")
        except ValueError as exc:
            _note("dmarc", "permerror", domain=domain, error=str(exc))
            return dict(found, result="permerror")
        if record is None:
            return found
        policy = record.get("sp", record["p"]) if subdomain else record["p"]
        aligned = (self._spf_aligned(domain, record, spf_result)
                   or self._dkim_aligned(domain, record, dkim_results))
        return dict(found, result="pass" if aligned else "fail", policy=policy)

    def _spf_aligned(self, domain, record, spf_result):
        if not spf_result or spf_result["result"] != "pass":
            return False
        return self._aligned(domain, spf_result["domain"], record.get("aspf", "r"))

    def _dkim_aligned(self, domain, record, dkim_results):
        mode = record.get("adkim", "r")
        return any(entry["result"] == "pass" and self._aligned(domain, entry["domain"], mode)
                   for entry in dkim_results or ())

    def _aligned(self, domain, other, mode):
        other = other.lower().rstrip(".")
        if mode == "s":
            return other == domain
        return self.organizational_domain(other) == self.organizational_domain(domain)

    def organizational_domain(self, domain):
        """RFC 7489 §3.2: public suffix + one label (else the domain itself)."""
        return self._psl.privatesuffix(domain) or domain

    def check_spam(self, content):
        if len(content) > SPAM_MAX_SIZE:
            return {"result": "skipped", "score": None, "threshold": None}
        failed = {"result": "error", "score": None, "threshold": None}
        return self._bounded("spam", failed, self._ask_spamd, content)

    def _ask_spamd(self, content):
        with socket.create_connection(self.spamd, timeout=self.timeout) as sock:
            sock.sendall(b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(content))
            sock.sendall(content)
            sock.shutdown(socket.SHUT_WR)
            with sock.makefile("rb") as answer:
                reply = answer.read(SPAM_REPLY_LIMIT)   # spamd closes after it
        return parse_spamd_reply(reply)

    def _bounded(self, name, fallback, function, *args):
        """``function(*args)`` within ``timeout``; ``fallback`` on any error."""
        started = time.monotonic()
        try:
            with gevent.Timeout(self.timeout, CheckTimeout("no result in %gs" % self.timeout)):
                return function(*args)
        except (CheckTimeout, OSError, SpamdError, dnsutil.TemporaryError) as exc:
            log.warning("check.failed", check=name, error="%s: %s" % (type(exc).__name__, exc),
                        ms="%.0f" % ((time.monotonic() - started) * 1000))
        except Exception:  # noqa: BLE001 - a check must never stop mail
            log.exception("check.crashed", check=name)
        return fallback


def _note(check, result, **fields):
    """Log an error result: temperror (warning), permerror: the sender's (info)."""
    if result == "temperror":
        log.warning("check.temperror", check=check, **fields)
    elif result == "permerror":
        log.info("check.permerror", check=check, **fields)


# -- pyspf's DNS hook -----------------------------------------------------

_SPF_RESOLVER = contextvars.ContextVar("mailerq_spf_resolver", default=None)
_PYSPF_LOOKUP = spf.DNSLookup


def _install_spf_hook():
    """Make pyspf ask the resolver of the running check (idempotent)."""
    spf.DNSLookup = _spf_lookup


def _spf_lookup(name, qtype, strict=True, timeout=30):
    """pyspf's ``DNSLookup`` contract: ``[((name, qtype), value)]``."""
    resolver = _SPF_RESOLVER.get()
    if resolver is None:   # not one of our checks: pyspf as it was
        return _PYSPF_LOOKUP(name, qtype, strict, timeout)
    try:
        rdatas = dnsutil.resolve(resolver, name, qtype, lifetime=timeout)
    except dnsutil.TemporaryError as exc:
        raise spf.TempError("DNS %s" % exc) from exc
    return [((name, qtype), _spf_value(qtype, rdata)) for rdata in rdatas]


def _spf_value(qtype, rdata):
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return rdata.preference, rdata.exchange.to_text(omit_final_dot=True)
    if qtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.strings   # TXT, SPF


# -- DKIM helpers ---------------------------------------------------------

class _KeyLookup:
    """dkimpy's ``dnsfunc``, remembering what it found to tell dkimpy's False
    apart (no key, bad key, bad signature). ``TemporaryError`` goes through
    dkimpy (its own timeout error it would turn into False)."""

    def __init__(self, resolver):
        self.resolver = resolver
        self.name, self.record = None, None

    def __call__(self, name, timeout=5):
        self.name = name
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            return None
        records = dnsutil.txt(self.resolver, text, lifetime=timeout)
        self.record = records[0] if records else None
        return self.record

    def failure(self):
        if self.record is None:
            return "permerror"
        try:
            dkim.evaluate_pk(self.name, self.record)
        except (dkim.DKIMException, ValueError, TypeError):
            return "permerror"
        return "fail"


class _Quiet:
    """dkimpy's logger: its lines are not ``key=value``, and its errors are
    the sender's (the result says them)."""

    def debug(self, *args, **kwargs):
        pass

    info = warning = error = exception = debug


_QUIET = _Quiet()


def _tag(tags, name):
    return tags.get(name, b"").decode("ascii", "replace").strip()


# -- DMARC helpers --------------------------------------------------------

_DMARC_START = re.compile(rb"^v\s*=\s*DMARC1\s*(;|$)")


def _dmarc_record(resolver, domain):
    """The tags of the one DMARC record at ``_dmarc.<domain>``; None when
    there is none or more than one (RFC 7489 §6.6.3). ValueError: malformed."""
    found = [text for text in dnsutil.txt(resolver, "_dmarc." + domain)
             if _DMARC_START.match(text)]
    if len(found) != 1:
        return None
    tags = {}
    for part in found[0].decode("ascii", "replace").split(";"):
        name, sep, value = part.partition("=")
        if part.strip() and not sep:
            raise ValueError("DMARC tag without a value: %r" % part.strip())
        tags.setdefault(name.strip().lower(), value.strip().lower())
    for name in ("p", "sp"):
        if name in tags and tags[name] not in POLICIES:
            raise ValueError("DMARC %s=%s is not a policy" % (name, tags[name]))
    if "p" not in tags:
        raise ValueError("DMARC record without p=")
    return tags


def _from_domain(fields):
    """The one domain of the From field(s), or None (RFC 7489 §6.6.1)."""
    values = [value for name, value in fields if name == "from"]
    addresses = [address for _, address in email.utils.getaddresses(values)]
    domains = {address.rpartition("@")[2].lower().rstrip(".") for address in addresses}
    if len(values) != 1 or len(domains) != 1 or not all("@" in a for a in addresses):
        return None
    return domains.pop() or None


# -- spamd ----------------------------------------------------------------

_SPAM_LINE = re.compile(rb"^Spam:\s*(\w+)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)\s*$", re.M | re.I)


def parse_spamd_reply(reply):
    """``SPAMD/1.1 0 EX_OK`` + ``Spam: True ; 15.0 / 5.0`` -> the spam result."""
    status, _, rest = reply.partition(b"\r\n")
    parts = status.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"SPAMD/") or parts[1] != b"0":
        raise SpamdError("spamd answered %r" % status[:100])
    match = _SPAM_LINE.search(rest)
    if not match:
        raise SpamdError("no Spam: line in spamd's answer")
    verdict = match.group(1).lower() in (b"true", b"yes")
    return {"result": "spam" if verdict else "ham",
            "score": float(match.group(2)), "threshold": float(match.group(3))}


def _summary(value):
    if isinstance(value, list):
        return ",".join(entry["result"] for entry in value) or "none"
    return value["result"]
