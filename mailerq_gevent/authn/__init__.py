"""Authentication schemes shared by SMTP AUTH (``smtp-auth``) and the web
console (``www-auth``): the schemes of MailerQ's ``smtp-auth`` and ``www-auth``.

Usage::

    auth = authn.from_spec(config.smtp_auth)   # None when not configured
    if auth is not None and auth.check(user, password): ...

A spec is a URL whose scheme picks the module that checks it. The registry
below maps each scheme to ``"module:factory"`` inside this package; a factory
takes the whole spec and returns an :class:`Authenticator` or raises
:class:`AuthConfigError`. Modules are imported on first use, so a scheme's
dependencies (ldap3 for ``ldap://``) load only when it is configured. A new
scheme is one module with a ``from_spec(spec)`` and one line here.

Schemes MailerQ documents but not built yet are known by name
(``config_values.AUTH_SCHEMES``) and refused with "... is not supported yet
by this build", so the daemon stops at start rather than accept everyone.
"""

import importlib

from mailerq_gevent.authn.base import AuthConfigError, Authenticator, split_spec
from mailerq_gevent.config_values import AUTH_SCHEMES

__all__ = ["AuthConfigError", "Authenticator", "IMPLEMENTED", "from_spec"]

_FACTORIES = {
    "hardcoded": "hardcoded:from_spec",
    "file": "passwd_file:from_spec",
}
IMPLEMENTED = tuple(_FACTORIES)


def from_spec(spec):
    """Build the authenticator for ``spec``; ``''`` -> None (no auth configured).

    Raises :class:`AuthConfigError` for a malformed spec or an unknown or
    not yet implemented scheme. May block: ``file://`` reads its file here.
    """
    if spec == "":
        return None
    scheme, _rest = split_spec(spec)
    target = _FACTORIES.get(scheme)
    if target is None:
        raise AuthConfigError(_unavailable(scheme))
    module_name, _colon, factory = target.partition(":")
    module = importlib.import_module("%s.%s" % (__name__, module_name))
    return getattr(module, factory)(spec)


def _unavailable(scheme):
    built = ", ".join(name + "://" for name in IMPLEMENTED)
    if scheme in AUTH_SCHEMES:
        return "%s:// is not supported yet by this build (available: %s)" % (scheme, built)
    return "%r is not an authentication scheme (known: %s; available in this build: %s)" % (
        scheme, ", ".join(name + "://" for name in AUTH_SCHEMES), built)
