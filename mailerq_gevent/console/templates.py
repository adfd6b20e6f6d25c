"""What every console route is given and how it renders a page.

``Context`` holds the daemon's parts the routes use (config, database,
settings reloader, broker, live recorder, ...), the console's sessions,
login throttle and ``security.Guard``, and the absolute paths of the views
and static files: ``views/`` and ``static/`` beside the package, or under
``www-dir`` (never Bottle's path relative to the working directory).
``template(context, name, **values)`` renders ``views/<name>.tpl``.
"""

import os
from dataclasses import dataclass, field

import bottle

from mailerq_gevent.console import security
from mailerq_gevent.console.sessions import LoginThrottle, Sessions

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Context:
    """What the routes use; built by ``app.App`` from the daemon's parts."""

    conf: object
    database: object = None             # SQLAlchemy engine
    reloader: object = None             # settings.Reloader
    broker: object = None
    authenticator: object = None
    recorder: object = None             # console.live.Recorder
    status: object = None               # callable: {"inbound": n, "outbound": n, "idle": n}
    secure: bool = False
    sessions: Sessions = field(default_factory=Sessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    guard: object = None
    views: str = ""
    static: str = ""

    def __post_init__(self):
        base = os.path.abspath(self.conf.www_dir) if self.conf.www_dir else PACKAGE_ROOT
        self.views = self.views or os.path.join(base, "views")
        self.static = self.static or os.path.join(base, "static")
        self.guard = self.guard or security.Guard(self.sessions, self.conf.www_api_token,
                                                  secure=self.secure)


def template(context, name, **values):
    """Render ``views/<name>.tpl`` (auto-escaped ``{{ }}``) with the common values."""
    request = bottle.request
    session = request.environ.get("mq.session")
    values.setdefault("user", request.environ.get("mq.user"))
    values.setdefault("csrf", session.csrf if session else "")
    values.setdefault("title", "MailerQ-gevent")
    return bottle.template(name, template_lookup=[context.views], **values)
