"""Driver errors an operator can act on, as one-line pci_vgpu errors.

A wrong password, a wrong port, a missing role, a corrupt or read-only
SQLite file, a lock or statement timeout: the driver's own exception says
it in the driver's words (``(1045, "Access denied ...")``), without the
option to fix, and oslo.db logs the ones it cannot classify with a full
traceback.  :func:`register` installs a ``handle_error`` listener that runs
*before* oslo.db's and raises a :mod:`pci_vgpu.db.exception` error naming
the ``[database]`` option, the masked URL and the fix.  Anything else goes
on to oslo.db (``DBDeadlock``, ``DBDuplicateEntry`` ... stay what the retry
decorators expect); :class:`DatabaseUnreachable` is itself a
``DBConnectionError``, so a dropped server is still retried.

Classification is by the driver's error code where it has one (MariaDB
error numbers, PostgreSQL SQLSTATE, SQLite result codes) and by the
message libpq gives for failures before a session exists (it has no code).
"""

from __future__ import annotations

import re
import typing as ty

import sqlalchemy as sa
from sqlalchemy import event

from pci_vgpu import redact
from pci_vgpu.db import exception as db_exc

if ty.TYPE_CHECKING:
    from pci_vgpu.db.engine import Settings

# MariaDB/MySQL client and server error numbers.
_MYSQL_ACCESS = {1044, 1045, 1698}
_MYSQL_NO_DB = {1049}
_MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_MYSQL_LOCK_WAIT = {1205}
_MYSQL_STATEMENT = {1969, 3024}
# PostgreSQL SQLSTATEs.
_PG_ACCESS = {"28000", "28P01", "42501"}
_PG_NO_DB = {"3D000"}
_PG_LOCK_WAIT = {"55P03"}
_PG_STATEMENT = {"57014"}
# libpq failures before a session exists carry no SQLSTATE.
_PG_MESSAGES: tuple[tuple[str, str], ...] = (
    (r"password authentication failed|role \".*\" does not exist|"
     r"no pg_hba\.conf entry|authentication failed", "access"),
    (r"database \".*\" does not exist", "no_db"),
    (r"connection refused|could not connect|could not translate host|"
     r"timeout expired|no route to host|network is unreachable|"
     r"server closed the connection|connection to server .* failed", "unreachable"),
)
# SQLite primary result codes (extended codes carry them in the low byte).
_SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_CORRUPT = 5, 8, 11
_SQLITE_CANTOPEN, _SQLITE_NOTADB = 14, 26


#: kind -> (error class, the Settings timeout its message names).
_KINDS: dict[str, tuple[type[db_exc.DatabaseError], str | None]] = {
    "access": (db_exc.DatabaseAccessDenied, None),
    "no_db": (db_exc.DatabaseNotFound, None),
    "unreachable": (db_exc.DatabaseUnreachable, "connect_timeout"),
    "lock_wait": (db_exc.LockWaitTimedOut, "lock_wait_timeout"),
    "statement": (db_exc.StatementTimedOut, "statement_timeout"),
    "corrupt": (db_exc.DatabaseFileCorrupt, None),
    "read_only": (db_exc.DatabaseReadOnly, None),
    "cant_open": (db_exc.DatabaseFileUnopenable, None),
    "unusable": (db_exc.DatabaseUnusable, None),
}


class Target:
    """The database errors are about: masked URL, file, timeouts."""

    def __init__(self, safe_url: str, path: str | None,
                 settings: Settings) -> None:
        self.safe_url = safe_url
        self.path = path
        self.settings = settings

    def make(self, kind: str, detail: str) -> db_exc.DatabaseError:
        """The pci_vgpu error of ``kind`` with the driver's ``detail``."""
        error, timeout = _KINDS[kind]
        return error(url=self.safe_url, path=self.path,
                     detail=redact.mask(detail),
                     timeout=getattr(self.settings, timeout) if timeout else None)


def register(engine: sa.Engine, safe_url: str, settings: Settings) -> None:
    """Translate ``engine``'s actionable driver errors (before oslo.db)."""
    from pci_vgpu.db import engine as db_engine
    target = Target(safe_url, db_engine.sqlite_path(engine.url), settings)

    def _on_error(context: sa.engine.ExceptionContext) -> None:
        friendly = translate(context.original_exception, target,
                             connecting=context.connection is None)
        if friendly is not None:
            # Raising skips the later listeners (oslo.db's) after
            # SQLAlchemy's own clean-up (a disconnect still invalidates).
            raise friendly from context.original_exception

    event.listen(engine, "handle_error", _on_error, insert=True)


def translate(exc: BaseException, target: Target,
              connecting: bool = False) -> db_exc.DatabaseError | None:
    """The pci_vgpu error for driver error ``exc``, or None to pass it on.

    ``connecting``: no session exists yet, so any failure means the
    database cannot be used at all (reported as :class:`DatabaseUnusable`
    when nothing more precise fits, never as oslo.db's traceback).
    """
    orig = getattr(exc, "orig", None) or exc
    kind = _kind(orig)
    if kind is None and connecting and isinstance(exc, Exception):
        kind = "unusable"
    if kind is None:
        return None
    return target.make(kind, _first_line(orig))


def _kind(orig: BaseException) -> str | None:
    module = type(orig).__module__.split(".")[0]
    if module == "pymysql":
        return _mysql_kind(orig)
    if module == "psycopg2":
        return _postgresql_kind(orig)
    if module == "sqlite3":
        return _sqlite_kind(orig)
    return None


def _mysql_kind(orig: BaseException) -> str | None:
    code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    for codes, kind in ((_MYSQL_ACCESS, "access"), (_MYSQL_NO_DB, "no_db"),
                        (_MYSQL_UNREACHABLE, "unreachable"),
                        (_MYSQL_LOCK_WAIT, "lock_wait"),
                        (_MYSQL_STATEMENT, "statement")):
        if code in codes:
            return kind
    return None


def _postgresql_kind(orig: BaseException) -> str | None:
    code = getattr(orig, "pgcode", None)
    for codes, kind in ((_PG_ACCESS, "access"), (_PG_NO_DB, "no_db"),
                        (_PG_LOCK_WAIT, "lock_wait"),
                        (_PG_STATEMENT, "statement")):
        if code in codes:
            return kind
    if code is None and type(orig).__name__ == "OperationalError":
        text = str(orig)
        for pattern, kind in _PG_MESSAGES:
            if re.search(pattern, text, re.IGNORECASE):
                return kind
    return None


def _sqlite_kind(orig: BaseException) -> str | None:
    code = getattr(orig, "sqlite_errorcode", None)
    if code is None:
        return None
    return {_SQLITE_BUSY: "lock_wait", _SQLITE_READONLY: "read_only",
            _SQLITE_CORRUPT: "corrupt", _SQLITE_NOTADB: "corrupt",
            _SQLITE_CANTOPEN: "cant_open"}.get(code & 0xFF)


def _first_line(orig: BaseException) -> str:
    """The driver's message on one line (libpq's runs over several)."""
    args = orig.args
    if (len(args) == 2 and isinstance(args[0], int)
            and isinstance(args[1], str)):
        text = "%s (error %d)" % (args[1], args[0])  # PyMySQL: (code, msg)
    else:
        text = str(orig)
    return " ".join(text.split()) or type(orig).__name__
