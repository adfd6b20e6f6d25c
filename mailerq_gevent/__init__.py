"""mailerq-gevent: a gevent-based bulk-mail transfer agent in the spirit of MailerQ.

The package follows the way a message travels: ``smtpd`` receives, ``broker``
queues, ``delivery`` sends; ``config``, ``settings``/``db``, ``signing`` and
``authn`` sit beside them. ``app`` wires the parts together and ``__main__``
is the entry point (it monkeypatches before anything else is imported).
"""

__version__ = "0.1.0"
