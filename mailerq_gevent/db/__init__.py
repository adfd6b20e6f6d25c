"""The SQL database (MailerQ's configuration database): SQLite, PostgreSQL or MySQL/MariaDB.

- ``tables``  the SQLAlchemy Core tables, column names as MailerQ's
- ``engine``  ``make_engine(url)``: the config's ``database`` URL -> an Engine
  that is cooperative under gevent and keeps no connection open between uses
- ``schema``  ``ensure_schema`` (create tables, add missing columns) and ``purge``
- ``load``    read the configuration tables into a ``settings.Settings``
  snapshot; ``record_ips`` for the ``ips`` table

Nothing here runs at import time; this package imports none of its modules so
that ``settings`` and ``db.load`` can refer to each other without a cycle.
"""
