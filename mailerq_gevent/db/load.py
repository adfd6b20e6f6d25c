"""Read the configuration tables into a ``settings.Settings`` snapshot; write ``ips``.

``load_snapshot`` reads every table of ``tables.CONFIG_TABLES`` in one short
read transaction (a consistent snapshot on every backend) and hands the rows
to ``build_snapshot``, which validates them. A row that cannot be used (an
address that is not an IP, a bad regex, an unknown pattern type, a DKIM
pattern naming a missing key, a duplicate of an earlier row, ...) is skipped
and logged as ``event=settings.row_skipped table=... id=... reason=...``;
it never fails the load. A database error does (the reloader keeps the last
good snapshot).

Row rules beyond MailerQ's own: ``localip``/``domain``/``target`` NULL or empty
mean "all"; for duplicate keys the row with the lowest id wins; a flood row
with NULL or 0 ``duration`` lasts ``DEFAULT_FLOOD_DURATION``; any negative
limit reads as -1 (fall back). ``dns.address`` is ``ip``, ``ip:port``,
``[v6]:port``, ``host`` or ``host:port``.
"""

import re
import time
from datetime import datetime, timezone
from types import MappingProxyType

from sqlalchemy import delete, insert, select

from mailerq_gevent import config_values, logs, settings, signing
from mailerq_gevent.db import tables
from mailerq_gevent.patterns import PatternSet, compile_pattern
from mailerq_gevent.names import canonical_domain, canonical_ip, host_key

log = logs.get(__name__)

DEFAULT_FLOOD_DURATION = 3600
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d+))?")
_HOST_PORT = re.compile(r"([^:\s\[\]]+)(?::(\d+))?")


def load_snapshot(engine, now=None, generation=1):
    """Read the configuration tables and build a loaded snapshot."""
    return build_snapshot(read_rows(engine), generation=generation, loaded_at=now)


def read_rows(engine):
    """``{table name: [row dict, ...]}`` for the configuration tables, by id."""
    with engine.connect() as conn:
        if conn.dialect.name in ("postgresql", "mysql"):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")  # pysqlite would not begin one for reads
            return {name: _select_all(conn, tables.metadata.tables[name])
                    for name in tables.CONFIG_TABLES}


def _select_all(conn, table):
    result = conn.execute(select(table).order_by(table.c.id))
    return [dict(row) for row in result.mappings()]


def build_snapshot(rows, generation=1, loaded_at=None):
    """A snapshot from ``{table name: [row dict, ...]}`` (missing tables are empty)."""
    keys = _keyed("dkim_keys", rows.get("dkim_keys", ()), dkim_key_row)
    return settings.Settings(
        generation=generation, loaded=True,
        loaded_at=time.time() if loaded_at is None else loaded_at,
        capacity_rows=_keyed("capacity", rows.get("capacity", ()), capacity_row),
        flood_rows=tuple(_valid("flood_responses", rows.get("flood_responses", ()), flood_row)),
        local_patterns=PatternSet(_valid("locals", rows.get("locals", ()), local_row)),
        dkim_key_rows=keys,
        dkim_domain_rows=_group((key.domain, key) for key in keys.values()),
        dkim_pattern_rows=tuple(_valid("dkim_patterns", rows.get("dkim_patterns", ()),
                                       lambda row: dkim_pattern_row(row, keys))),
        paused_rows=frozenset(_valid("paused", rows.get("paused", ()), paused_row)),
        delegate_rows=_keyed("delegates", rows.get("delegates", ()), delegate_row),
        mtaname_rows=_keyed("mtanames", rows.get("mtanames", ()), mtaname_row),
        dns_rows=_dns(rows.get("dns", ())))


def record_ips(engine, addresses, hostname, vhost="", exchange="", outbox="", now=None):
    """Replace this host's rows of ``ips`` by one row per address (as MailerQ
    does: for other programs to read; the daemon itself never reads them)."""
    updated = now or datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [{"ip": canonical_ip(address) or address, "hostname": hostname, "vhost": vhost,
             "exchange": exchange, "outbox": outbox, "updated": updated}
            for address in dict.fromkeys(addresses)]
    with engine.begin() as conn:
        conn.execute(delete(tables.ips).where(tables.ips.c.hostname == hostname))
        if rows:
            conn.execute(insert(tables.ips), rows)
    log.info("db.ips_recorded", hostname=hostname, count=len(rows))


def parse_dns_address(text):
    """``(host, port or None)`` from a ``dns.address``; raises ValueError."""
    text = str(text or "").strip()
    if canonical_ip(text) and not text.startswith("["):
        return canonical_ip(text), None
    bracketed, plain = _BRACKETED.fullmatch(text), _HOST_PORT.fullmatch(text)
    if bracketed and canonical_ip(bracketed.group(1)):
        host, port = canonical_ip(bracketed.group(1)), bracketed.group(2)
    elif plain:
        host, port = plain.group(1), plain.group(2)
        host = canonical_ip(host) or config_values.hostname(host).lower()
    else:
        raise ValueError("address %r is not ip, ip:port, [v6]:port or host[:port]" % text)
    return host, (config_values.port(port) if port else None)


# -- validation helpers: each converter raises ValueError with the reason ---

def _valid(table, rows, convert):
    """``convert(row)`` for each row; a row that raises is logged and skipped."""
    for row in rows:
        try:
            yield convert(row)
        except (ValueError, TypeError, AttributeError) as error:
            log.warning("settings.row_skipped", table=table, id=row.get("id"), reason=str(error))


def _keyed(table, rows, convert):
    """A frozen mapping from rows converted to ``(key, value)``; first id wins."""
    result = {}
    for row in rows:
        for key, value in _valid(table, [row], convert):
            if key in result:
                log.warning("settings.row_skipped", table=table, id=row.get("id"),
                            reason="duplicate of a row with a lower id")
            else:
                result[key] = value
    return MappingProxyType(result)


def _group(pairs):
    grouped = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return MappingProxyType({key: tuple(values) for key, values in grouped.items()})


def _int(row, column):
    value = row.get(column)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("%s %r is not a whole number" % (column, value)) from None


def _ip(row, column, required=False):
    value = row.get(column)
    if value is None or not str(value).strip():
        if required:
            raise ValueError("%s is empty" % column)
        return ""
    address = canonical_ip(value)
    if address is None:
        raise ValueError("%s %r is not an IP address" % (column, value))
    return address


def _text(row, column):
    value = row.get(column)
    value = "" if value is None else str(value).strip()
    if not value:
        raise ValueError("%s is empty" % column)
    return value


def _limits(row):
    """The raw limits in ``settings.CAPACITY_FIELDS`` order (None, -1 or >= 0)."""
    values = (_int(row, name) for name in settings.CAPACITY_FIELDS)
    return tuple(value if value is None or value >= 0 else -1 for value in values)


# -- one converter per table: public, so that the console checks a row -----
# -- with the very function the loader uses ----------------------------------

def capacity_row(row):
    """A ``capacity`` row as ``((localip, domain), raw limits)``."""
    return (_ip(row, "localip"), canonical_domain(row.get("domain"))), _limits(row)


def flood_row(row):
    """A ``flood_responses`` row as a ``settings.FloodRow``."""
    duration = _int(row, "duration")
    if duration is not None and duration < 0:
        raise ValueError("duration %d is negative" % duration)
    pattern = compile_pattern(row.get("pattern"), row.get("type"))
    return settings.FloodRow(row["id"], pattern, duration or DEFAULT_FLOOD_DURATION, _limits(row))


def local_row(row):
    """A ``locals`` row as its compiled pattern."""
    return compile_pattern(row.get("address"), row.get("type"))


def dkim_key_row(row):
    """A ``dkim_keys`` row as ``(id, settings.DkimKey)``."""
    algorithm = signing.normalise_algorithm(row.get("algorithm"))
    expire = _int(row, "expire") or 0
    key = settings.DkimKey(row["id"], canonical_domain(_text(row, "domain")),
                           _text(row, "selector"), _text(row, "privatekey"),
                           algorithm, max(expire, 0))
    return key.id, key


def dkim_pattern_row(row, keys):
    """A ``dkim_patterns`` row as ``(pattern, key id)``; ``keys``: the usable key ids."""
    key = _int(row, "key")
    if key not in keys:
        raise ValueError("key %r is not the id of a usable dkim_keys row" % key)
    return compile_pattern(row.get("sign"), row.get("type")), key


def paused_row(row):
    """A ``paused`` row as ``(localip or "", target or "")``."""
    return _ip(row, "localip"), host_key(row.get("target"))


def delegate_row(row):
    """A ``delegates`` row as ``((localip, target), newip)``."""
    target = host_key(_text(row, "target"))
    return (_ip(row, "localip"), target), _ip(row, "newip", required=True)


def mtaname_row(row):
    """A ``mtanames`` row as ``(ip, hostname)``."""
    return _ip(row, "ip", required=True), _text(row, "hostname")


def dns_row(row):
    """A ``dns`` row as ``(domain, (priority, id, settings.DnsTarget))``."""
    host, port = parse_dns_address(row.get("address"))
    priority = _int(row, "priority") or 0
    target = settings.DnsTarget(host, port, priority)
    return canonical_domain(_text(row, "domain")), (priority, row["id"], target)


def _dns(rows):
    grouped = _group(_valid("dns", rows, dns_row))
    return MappingProxyType({domain: tuple(item[2] for item in sorted(items, key=lambda i: i[:2]))
                             for domain, items in grouped.items()})
