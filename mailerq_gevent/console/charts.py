"""The SQL behind the overview's charts and top lists (the ``deliveries_*`` tables).

``statistics(engine, range_name, now)`` answers ``GET /api/stats``: the
success / failures / retries of ``deliveries_total`` summed per bucket
(``hour``: the last 60 minutes, one bucket a minute; ``day``: the last 24
hours, one bucket per 15 minutes), the top domains (``deliveries_domain``)
and top local IPs (``deliveries_total``) over the same span, the totals, and
whether each top domain or IP is paused (a ``paused`` row with the other
column empty, as the overview's Pause button writes it).

Rows are summed with one ``GROUP BY`` per question, portable to SQLite,
PostgreSQL and MariaDB; several rows of one minute (two instances inserting
the same key) simply add up. ``time`` is a naive UTC minute (see
``delivery.stats.minute_time``); bucket times go out as UNIX seconds.
"""

from datetime import datetime, timezone

from sqlalchemy import and_, func, literal_column, or_, select

from mailerq_gevent.db import tables
from mailerq_gevent.delivery.stats import COUNTERS, minute_time
from mailerq_gevent.names import canonical_ip

# name -> (bucket seconds, number of buckets)
RANGES = {"hour": (60, 60), "day": (900, 96)}
TOP = 10


def statistics(engine, range_name, now):
    """The ``/api/stats`` answer for ``range_name`` (a key of RANGES) at ``now``."""
    step, count = RANGES[range_name]
    first = int(now) // step * step - (count - 1) * step
    last_minute = int(now) // 60 * 60
    start, end = minute_time(first), minute_time(last_minute)
    with engine.connect() as conn:
        series = _series(conn, start, end, first, step, count)
        domains = _top(conn, tables.deliveries_domain, "domain", start, end)
        localips = _top(conn, tables.deliveries_total, "localip", start, end)
        paused = _paused(conn)
    _mark_paused(domains, "domain", {target for ip, target in paused if not ip})
    _mark_paused(localips, "localip", {ip for ip, target in paused if not target})
    totals = {name: sum(series[name]) for name in COUNTERS}
    return {"range": range_name, "step": step, "start": first, "end": last_minute,
            "series": series, "totals": totals,
            "domains": domains, "localips": localips}


def _series(conn, start, end, first, step, count):
    """``{"times": [...], "success": [...], ...}``: ``count`` buckets from ``first``."""
    table = tables.deliveries_total
    sums = [func.coalesce(func.sum(table.c[name]), 0) for name in COUNTERS]
    query = (select(table.c.time, *sums)
             .where(table.c.time >= start, table.c.time <= end)
             .group_by(table.c.time))
    series = {name: [0] * count for name in COUNTERS}
    for row in conn.execute(query):
        index = (_seconds(row[0]) - first) // step
        if 0 <= index < count:
            for position, name in enumerate(COUNTERS, 1):
                series[name][index] += int(row[position])
    series["times"] = [first + index * step for index in range(count)]
    return series


def _top(conn, table, column, start, end, limit=TOP):
    """The ``limit`` keys of ``column`` with the most deliveries in the span."""
    key = func.coalesce(table.c[column], literal_column("''"))   # one text for GROUP BY
    sums = [func.coalesce(func.sum(table.c[name]), 0).label(name) for name in COUNTERS]
    total = sum((table.c[name] for name in COUNTERS[1:]), table.c[COUNTERS[0]])
    query = (select(key.label(column), *sums, func.sum(total).label("total"))
             .where(table.c.time >= start, table.c.time <= end)
             .group_by(key)
             .order_by(func.sum(total).desc(), key)
             .limit(limit))
    return [dict({column: row[0]}, **{name: int(row._mapping[name]) for name in COUNTERS})
            for row in conn.execute(query)]


def _paused(conn):
    """``{(localip, target)}`` of the paused rows that pause a whole domain or IP."""
    table = tables.paused
    empty_ip = or_(table.c.localip.is_(None), table.c.localip == "")
    empty_target = or_(table.c.target.is_(None), table.c.target == "")
    query = select(table.c.localip, table.c.target).where(
        or_(and_(empty_ip, ~empty_target), and_(~empty_ip, empty_target)))
    return {(canonical_ip(ip) or (ip or "").strip(), (target or "").strip().lower())
            for ip, target in conn.execute(query)}


def _mark_paused(rows, column, paused):
    for row in rows:
        row["paused"] = (row[column].lower() if column == "domain" else row[column]) in paused


def _seconds(value):
    """UNIX seconds of a naive UTC ``time`` value (SQLite may hand back text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return int(value.replace(tzinfo=timezone.utc).timestamp())
