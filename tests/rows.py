"""Table rows as the tests write them, numbered as the database would number them."""

from mailerq_gevent.db import load


def numbered(rows):
    """``{table: [row, ...]}`` with ids 1, 2, ... in list order (a row's own ``id`` kept)."""
    return {name: [dict(row, id=row.get("id", n)) for n, row in enumerate(items, 1)]
            for name, items in (rows or {}).items()}


def snapshot(rows=None, **options):
    """A settings snapshot of ``rows`` (``load.build_snapshot`` options passed on)."""
    return load.build_snapshot(numbered(rows), **options)
