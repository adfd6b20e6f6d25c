"""The result of one delivery attempt: a value, made by one factory, ``make``.

``kind`` is what the result means for the message: ``success``, ``transient``
(try again later) or ``permanent`` (give up). A reply decides by its code
(RFC 5321 §4.2.1: 2xx success, 5xx permanent, anything else transient). An
attempt without a reply (a network error, a timeout, DNS, our own checks)
has code 0 and decides by its enhanced status (RFC 3463), chosen on purpose
where the result is made: class 5 permanent, anything else transient.

``state`` is the step that ended the attempt: ``connect``, ``greeting``,
``ehlo``, ``starttls``, ``mail``, ``rcpt``, ``data`` (the SMTP steps), ``dns``
or ``local`` (ours). ``status`` is the reply's own enhanced code, else the
generic one of its class (``4.0.0`` for no reply); ``description`` is the
reply text (its enhanced code included) or our own words, on one line.

``stamped(now, local_ip, remote)`` adds when and between which addresses;
``as_dict()`` is the object appended to the message's ``results``:
``{"state", "result" ("ok" or "error"), "time", "from", "to", "code",
"status", "description"}``.
"""

from dataclasses import dataclass

from mailerq_gevent.mail import status as enhanced

SUCCESS, TRANSIENT, PERMANENT = "success", "transient", "permanent"


@dataclass(frozen=True)
class Result:
    """One attempt's outcome (see the module docstring); make it with ``make``."""

    kind: str
    state: str
    code: int
    status: str
    description: str
    time: int = 0
    local_ip: str = ""
    remote: str = ""

    @property
    def ok(self):
        return self.kind == SUCCESS

    def stamped(self, now, local_ip="", remote=""):
        """This result at UNIX time ``now`` from ``local_ip`` to ``remote``."""
        return Result(self.kind, self.state, self.code, self.status, self.description,
                      int(now), local_ip or "", remote or "")

    def described(self, description):
        """This result with another description (the code and status kept)."""
        return Result(self.kind, self.state, self.code, self.status, description,
                      self.time, self.local_ip, self.remote)

    def as_dict(self):
        """The JSON form appended to the message's ``results``."""
        return {"state": self.state, "result": "ok" if self.ok else "error",
                "time": self.time, "from": self.local_ip, "to": self.remote,
                "code": self.code, "status": self.status, "description": self.description}


def make(state, code=0, text="", status=""):
    """The Result of a reply (``code`` and its ``text``, bytes or str) or,
    with ``code`` 0, of an attempt without one, whose ``status`` says its kind."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    code = int(code or 0)
    status = status or enhanced.leading(text) or enhanced.for_code(code)
    return Result(kind_of(code, status), state, code, status, text)


def kind_of(code, status):
    """``success``, ``transient`` or ``permanent`` for a reply code, or for
    the enhanced status of a result without one."""
    if code:
        if 200 <= code < 300:
            return SUCCESS
        return PERMANENT if 500 <= code < 600 else TRANSIENT
    return PERMANENT if status[:1] == "5" else TRANSIENT
