"""The config file: parse, validate, defaults, and the frozen ``Config`` value.

MailerQ's config file syntax: one ``name: value`` a line, ``#`` starts a comment
line, blank lines are ignored. Every key is listed in ``KEYS`` with its parser
(``config_values``) and its default; ``conf/mailerq.conf.example`` documents
each one (a test checks that the example parses to exactly these defaults).

An unknown key, a malformed value, a key given twice or an unreadable file
raises :class:`ConfigError`, whose text is ``FILE:LINE: key: what is wrong``;
the command line prints it and exits with status 2 before anything starts.
"""

from types import MappingProxyType

from mailerq_gevent import config_values as v

DEFAULT_PATH = "conf/mailerq.conf"

# name -> (parser, default text). The default is written as it would be in the
# file and parsed like any other value, so defaults and the example agree.
KEYS = {
    # database (MailerQ's configuration database)
    "database": (v.url(v.DATABASE_SCHEMES), "sqlite:///var/mailerq.sqlite"),
    "database-ttl": (v.duration, "600"),
    # SMTP server (MailerQ's built-in SMTP server settings)
    "smtp-port": (v.port_list, "25"),
    "smtp-secure-port": (v.port_list, ""),
    "smtp-ip": (v.ip_address, ""),
    "smtp-certificate": (v.text, ""),
    "smtp-key": (v.text, ""),
    "smtp-ciphers": (v.text, ""),
    "smtp-range": (v.cidr_list, "127.0.0.0/8;::1"),
    "smtp-auth": (v.auth_spec, ""),
    "smtp-auth-plaintext": (v.boolean, "false"),
    "smtp-check": (v.subset_of("spf", "dkim", "dmarc", "spam"), ""),
    "smtp-auth-results": (v.subset_of("local", "nonlocal"), ""),
    "spamassassin-host": (v.text, "localhost"),
    "spamassassin-port": (v.port, "783"),
    "smtp-proxy": (v.cidr_list, ""),
    "smtp-validate-address": (v.one_of("strict", "loose"), "strict"),
    "smtp-connections": (v.count, "1000"),
    "smtp-connections-in": (v.count, "500"),
    "smtp-connections-out": (v.count, "500"),
    "smtp-maxsize": (v.size, "100MB"),
    "smtp-threads": (v.processes, "auto"),
    "smtp-timeout": (v.duration, "300"),
    "smtp-protection": (v.boolean, "true"),
    "smtp-extract": (v.boolean, "true"),
    "smtp-defaultips": (v.ip_list, ""),
    "smtp-mappable-ips": (v.cidr_list, ""),
    "smtp-unmappable-ips": (v.cidr_list, "127.0.0.0/8;::1"),
    "smtp-hostname": (v.hostname, ""),
    # management console (MailerQ's www-* settings)
    "www-port": (v.port, "8485"),
    "www-ip": (v.ip_address, ""),
    "www-dir": (v.text, ""),
    "www-connections": (v.count, "20"),
    "www-auth": (v.auth_spec, ""),
    "www-api-token": (v.text, ""),
    "www-secure-port": (v.port, ""),
    "www-certificate": (v.text, ""),
    "www-privatekey": (v.text, ""),
    "www-ciphers": (v.text, ""),
    "www-host": (v.hostname, ""),
    "www-url": (v.url(("http", "https"), optional=True), ""),
    "www-cache-control": (v.text, "max-age=3600, must-revalidate"),
    "render-useragent": (v.text, ""),
    # queues (MailerQ's rabbitmq-* settings; an empty name disables one)
    "rabbitmq-address": (v.url(v.QUEUE_SCHEMES), "sqlite:///var/queue.sqlite"),
    "rabbitmq-exchange": (v.text, ""),
    "rabbitmq-inbox": (v.text, "inbox"),
    "rabbitmq-outbox": (v.text, "outbox"),
    "rabbitmq-local": (v.text, "local"),
    "rabbitmq-reports": (v.text, "reports"),
    "rabbitmq-results": (v.text, "results"),
    "rabbitmq-success": (v.text, "success"),
    "rabbitmq-failure": (v.text, "failure"),
    "rabbitmq-retry": (v.text, "retry"),
    "rabbitmq-dsn": (v.text, "dsn"),
    # ours, in the same style
    "relay": (v.host_port(25), ""),
    "dns-server": (v.host_port(53), ""),
    "log-level": (v.one_of("debug", "info", "warning", "error", "critical"), "info"),
}

QUEUE_KEYS = tuple(key for key in KEYS if key.startswith("rabbitmq-")
                   and key not in ("rabbitmq-address", "rabbitmq-exchange"))


class ConfigError(Exception):
    """A problem with the config file; ``str()`` is ``FILE:LINE: key: problem``."""

    def __init__(self, path, line, key, problem):
        self.path, self.line, self.key, self.problem = path, line, key, problem
        where = "%s:%d" % (path, line) if line else str(path)
        super().__init__("%s: %s%s" % (where, key + ": " if key else "", problem))


class Config:
    """The parsed config: a frozen mapping of key -> typed value.

    Read a value as ``config["smtp-port"]`` or ``config.smtp_port``. ``path``
    is the file it came from (``None`` for pure defaults).
    """

    __slots__ = ("_values", "path")

    def __init__(self, values, path=None):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "path", path)

    def __getitem__(self, key):
        return self._values[key]

    def __getattr__(self, name):
        try:
            return self._values[name.replace("_", "-")]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is frozen")

    def __eq__(self, other):
        return isinstance(other, Config) and self._values == other._values

    __hash__ = None

    def items(self):
        return self._values.items()

    def replace(self, **changes):
        """A copy with some values changed (``smtp_port=(2525,)``); for tests and tools."""
        values = dict(self._values)
        for name, value in changes.items():
            key = name.replace("_", "-")
            if key not in values:
                raise KeyError(key)
            values[key] = value
        return Config(values, self.path)

    def queue(self, key):
        """The queue name for ``inbox``/``outbox``/... ('' when disabled)."""
        return self._values["rabbitmq-" + key]


def defaults():
    """The config with every key at its default."""
    return Config({key: parser(raw) for key, (parser, raw) in KEYS.items()})


def parse_text(text, path="<config>"):
    """Parse the text of a config file; raises ConfigError."""
    values = defaults()._values.copy()
    seen = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, value = _split_line(path, number, stripped)
        if key in seen:
            raise ConfigError(path, number, key, "given twice (first on line %d)" % seen[key])
        seen[key] = number
        values[key] = _parse_value(path, number, key, value)
    return Config(values, path)


def load(path=DEFAULT_PATH):
    """Read and parse the config file at ``path``; raises ConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, 0, "", "cannot read the file: %s" % _reason(exc)) from None
    return parse_text(text, path)


def _split_line(path, number, line):
    key, colon, value = line.partition(":")
    key = key.strip().lower()
    if not colon or not key or " " in key:
        raise ConfigError(path, number, "", 'expected "name: value", got %r' % line[:60])
    if key not in KEYS:
        raise ConfigError(path, number, key, "unknown setting%s" % _suggest(key))
    return key, value.strip()


def _parse_value(path, number, key, raw):
    parser = KEYS[key][0]
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(path, number, key, str(exc)) from None


def _suggest(key):
    import difflib
    close = difflib.get_close_matches(key, KEYS, n=1)
    return " (did you mean %s?)" % close[0] if close else ""


def _reason(exc):
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
