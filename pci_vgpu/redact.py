"""Keep secrets out of every message and log line.

Operators paste connection strings with credentials into options and
command lines (``http://root:PASSWORD@xenserver/``,
``mysql+pymysql://nova:pw@db/nova?password=...``); any error or log line
that quotes such a value must show it masked.  One module does the masking
so that every edge (CLI errors, driver errors, database errors, the log
handler) masks the same way:

* the password of a URL's userinfo becomes ``***`` (the user name stays:
  it helps to tell which account was refused);
* the value of a query parameter or a ``key=value`` pair whose key names a
  secret (``password``, ``passwd``, ``pwd``, ``secret``, ``token``,
  ``api_key`` ...) becomes ``***``.

Masking is idempotent and leaves text without secrets unchanged.  No
import of anything outside the standard library: Nova-side code and the
lean core may use it.
"""

from __future__ import annotations

import logging
import re
import typing as ty

MASK = "***"

#: Key names whose values are secrets: any key ending in one of these
#: (``connection_password``, ``sslpassword``, ``os-token``, ``api_key``)...
_SECRET_SUFFIXES = (r"password", r"passwd", r"secret", r"token",
                    r"api[_\-]?key", r"access[_\-]?key", r"auth[_\-]?key",
                    r"credentials?")
#: ...and short names that are secrets only on their own (``pwd=``, not
#: ``cwd=``).
_SECRET_WORDS = (r"pass", r"pwd", r"pw")

# scheme://user:password@host -- the password may hold anything but "@",
# "/" and whitespace; a URL without "user:" has nothing to mask.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s@/]*)@")
# key=value, key: value and "key": "value" (JSON), query-string pairs
# included.  Only secret keys match, so other pairs are never consumed.
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<key>(?:[A-Za-z0-9_.\-]*(?:%s))|(?:%s))"
    r"(?P<quote>[\"']?)(?P<sep>\s*[=:]\s*)"
    r"(?:(?P<q2>[\"'])(?P<qvalue>[^\"']*)|(?P<value>[^\s&;,\"'}\])]+))"
    % ("|".join(_SECRET_SUFFIXES), "|".join(_SECRET_WORDS)),
    re.IGNORECASE)


def _mask_pair(match: re.Match[str]) -> str:
    quote = match.group("q2") or ""
    value = match.group("qvalue") if quote else match.group("value")
    if not value or value == MASK:
        return match.group(0)
    return "%s%s%s%s%s" % (match.group("key"), match.group("quote"),
                           match.group("sep"), quote, MASK)


def mask(text: str) -> str:
    """``text`` with every URL password and secret-named value masked."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: "%s%s@" % (m.group("head"), MASK)
                         if m.group("pw") else m.group(0), text)
    return _PAIR.sub(_mask_pair, text)


def mask_url(url: str) -> str:
    """One URL or DSN, masked for display (same rules as :func:`mask`)."""
    return mask(url)


class SecretsFilter(logging.Filter):
    """Logging filter that masks the formatted message of every record.

    Installed on handlers (not loggers) so that records from any library
    (oslo.db, SQLAlchemy, XenAPI, libvirt) pass through it.  The record's
    ``args`` are folded into ``msg`` once masked, so a later formatter cannot
    re-insert a raw argument; exception text is masked at format time by
    :class:`SecretsFormatter`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it
            return True
        masked = mask(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True


class SecretsFormatter(logging.Formatter):
    """Formatter whose whole output, tracebacks included, is masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def protect_handler(handler: logging.Handler) -> logging.Handler:
    """Give ``handler`` the filter, and wrap its formatter so it masks."""
    if not any(isinstance(f, SecretsFilter) for f in handler.filters):
        handler.addFilter(SecretsFilter())
    current = handler.formatter
    if not isinstance(current, SecretsFormatter):
        wrapped = SecretsFormatter()
        if current is not None:
            wrapped._fmt = current._fmt
            wrapped._style = current._style
            wrapped.datefmt = current.datefmt
        handler.setFormatter(wrapped)
    return handler


def protect_root_logger(logger: ty.Optional[logging.Logger] = None) -> None:
    """Protect every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        protect_handler(handler)
