"""Every table of the database as SQLAlchemy Core ``Table`` objects on one ``metadata``.

Column names are those of MailerQ's configuration database, so scripts written for MailerQ
keep working. Portable types only: an integer ``id`` primary key on every
table, no foreign keys or constraints, booleans as integers, IP addresses as
text (``String(45)`` holds any IPv6 form), text in UTF-8 (``utf8mb4`` on
MySQL). Times are naive UTC ``DateTime`` values.

Capacity-like columns (see ``CAPACITY_COLUMNS``) are nullable integers that
default to ``-1``: ``NULL`` and ``0`` mean unlimited, ``-1`` means "use the
value of the less specific row" (MailerQ declares them ``int DEFAULT -1``). The default
makes an operator's ``INSERT`` that names only some limits fall back for the
others, and makes a column added by a schema upgrade fall back on old rows.
"""

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, text

metadata = MetaData()

# The limits of a capacity row, in the order ``settings.Capacity`` keeps them.
# Rates are per minute, ``connection_maxidletime`` is in milliseconds.
CAPACITY_COLUMNS = (
    "domain_maxmessages", "domain_maxconnects", "domain_maxconnections",
    "ip_maxmessages", "ip_maxconnects", "ip_maxconnections",
    "connection_maxmessages", "connection_maxidletime",
)

# The tables ``db.load`` reads into the in-memory snapshot.
CONFIG_TABLES = ("capacity", "flood_responses", "dkim_keys", "dkim_patterns",
                 "locals", "delegates", "paused", "mtanames", "dns")
STATS_TABLES = ("deliveries_total", "deliveries_domain", "deliveries_ip")

_MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _table(name, *columns):
    return Table(name, metadata,
                 Column("id", Integer, primary_key=True, autoincrement=True),
                 *columns, **_MYSQL)


def _ip(name):
    return Column(name, String(45))


def _domain(name="domain"):
    return Column(name, String(255))


def _limits():
    """The capacity columns plus ``secure`` (a boolean), all defaulting to -1."""
    columns = [Column(name, Integer, server_default=text("-1")) for name in CAPACITY_COLUMNS]
    return columns + [Column("secure", Integer, server_default=text("-1"))]


def _counters():
    return [Column(name, Integer, nullable=False, server_default=text("0"))
            for name in ("success", "failures", "retries")]


capacity = _table("capacity", _ip("localip"), _domain(), *_limits())

flood_responses = _table(
    "flood_responses",
    Column("pattern", Text),
    Column("type", String(16)),      # regex / fnmatch / substr / exact
    Column("duration", Integer),     # seconds
    *_limits())

ips = _table(
    "ips", _ip("ip"), _domain("hostname"),
    Column("vhost", String(255)), Column("exchange", String(255)),
    Column("outbox", String(255)), Column("updated", DateTime),
    Index("ix_ips_hostname", "hostname"))

dkim_keys = _table(
    "dkim_keys", _domain(), Column("selector", String(255)),
    Column("privatekey", Text),
    Column("algorithm", String(32)),  # rsa-sha256, ed25519-sha256 (older: SHA-256, SHA-1)
    Column("expire", Integer))       # seconds a signature is valid; NULL/0: no x= tag

dkim_patterns = _table(
    "dkim_patterns", Column("sign", Text), Column("type", String(16)),
    Column("key", Integer))          # a dkim_keys.id

# ``locals_``: the trailing underscore keeps the builtin ``locals`` visible.
locals_ = _table("locals", Column("address", Text), Column("type", String(16)))

delegates = _table("delegates", _ip("localip"), _domain("target"), _ip("newip"))

paused = _table("paused", _ip("localip"), _domain("target"))

mtanames = _table("mtanames", _ip("ip"), _domain("hostname"))

dns = _table("dns", _domain(), Column("address", String(255)), Column("priority", Integer))

# Per-minute counters for the console's charts. ``time`` is the minute (seconds
# 00). The ``*_time`` index serves a time range and the flusher's look-up of
# the row of one minute; the second index serves a chart of one domain / IP.
deliveries_total = _table(
    "deliveries_total", Column("time", DateTime, nullable=False), _ip("localip"),
    *_counters(),
    Index("ix_deliveries_total_time", "time", "localip"))

deliveries_domain = _table(
    "deliveries_domain", Column("time", DateTime, nullable=False), _ip("localip"),
    _domain(), *_counters(),
    Index("ix_deliveries_domain_time", "time", "localip", "domain"),
    Index("ix_deliveries_domain_domain", "domain", "time"))

deliveries_ip = _table(
    "deliveries_ip", Column("time", DateTime, nullable=False), _ip("localip"),
    _ip("remoteip"), *_counters(),
    Index("ix_deliveries_ip_time", "time", "localip", "remoteip"),
    Index("ix_deliveries_ip_remoteip", "remoteip", "time"))
