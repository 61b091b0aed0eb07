"""Engines for the device tracker: URL checks, per-dialect settings, timeouts.

Built here rather than by oslo.db's enginefacade, which gives SQLite file
databases a NullPool (a new connection, and its pragmas, per transaction)
and pings every connection at checkout (one more round trip per
transaction on MariaDB/PostgreSQL).

Every database call is bounded by :class:`Settings` (``[database]``
``connect_timeout``, ``statement_timeout``, ``lock_wait_timeout``; see
``pci_vgpu.conf.database`` for what each one sets on each dialect).
Driver errors go through :mod:`pci_vgpu.db.errors` first (one-line errors
that name the option and the masked URL), then through oslo.db's filters
(``DBDeadlock``, ``DBDuplicateEntry``, ``DBConnectionError`` ...).
"""

from __future__ import annotations

import dataclasses
import functools
import logging as std_logging
import os
import sqlite3
import time
import typing as ty
import urllib.parse

from oslo_db.sqlalchemy import exc_filters
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import event

from pci_vgpu import redact
from pci_vgpu.db import errors
from pci_vgpu.db import exception as db_exc

LOG = logging.getLogger(__name__)

SUPPORTED_BACKENDS = ("sqlite", "mysql", "postgresql")
#: Execution option marking a read-only transaction (a deferred BEGIN on
#: SQLite, so readers never take the write lock).
READ_ONLY = "pci_vgpu_read_only"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What bounds and sizes every connection (``[database]`` options)."""

    connect_timeout: int = 10
    #: Seconds; 0 = no limit.
    statement_timeout: int = 60
    lock_wait_timeout: int = 30
    #: Connections kept open per engine (MariaDB/PostgreSQL); 0 = no limit.
    max_pool_size: int = 5
    connection_debug: int = 0

    @classmethod
    def from_conf(cls, conf: ty.Any) -> Settings:
        db = conf.database
        return cls(connect_timeout=db.connect_timeout,
                   statement_timeout=db.statement_timeout,
                   lock_wait_timeout=db.lock_wait_timeout,
                   max_pool_size=(5 if db.max_pool_size is None
                                  else db.max_pool_size),
                   connection_debug=db.connection_debug)

    def for_migration(self) -> Settings:
        """The same, without a statement limit: a DDL may take long."""
        return dataclasses.replace(self, statement_timeout=0)


def safe_url(url: str | sa.URL) -> str:
    """``url`` for messages and logs: passwords masked, query ones too."""
    if isinstance(url, sa.URL):
        url = url.render_as_string(hide_password=True)
    return redact.mask_url(url)


def parse_url(connection: str) -> sa.URL:
    """:raises: InvalidConnectionUrl naming the (masked) URL and the fix."""
    try:
        url = sa.make_url(connection)
    except sa.exc.ArgumentError as exc:
        raise db_exc.InvalidConnectionUrl(url=safe_url(connection),
                                          reason=str(exc)) from exc
    except ValueError as exc:
        # SQLAlchemy parses the port with int(): "invalid literal ...".
        raise db_exc.InvalidConnectionUrl(
            url=safe_url(connection),
            reason="the port is not a number (%s)" % exc) from exc
    backend = url.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise db_exc.InvalidConnectionUrl(
            url=safe_url(url), reason="backend %r is not supported" % backend)
    if url.port is not None and not 0 < url.port < 65536:
        raise db_exc.InvalidConnectionUrl(
            url=safe_url(url),
            reason="port %d is out of range (1-65535)" % url.port)
    return url


def create_engine(url: sa.URL, settings: Settings) -> sa.Engine:
    """An engine with error translation, timeouts and per-backend settings."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(url, settings)
    elif backend == "mysql":
        engine = _mysql_engine(url, settings)
    else:
        engine = _postgresql_engine(url, settings)
    _add_fork_guard(engine)
    errors.register(engine, safe_url(url), settings)
    exc_filters.register_engine(engine)
    _set_debug(settings.connection_debug)
    return engine


def _set_debug(level: int) -> None:
    """oslo.db's ``connection_debug``: >= 50 logs SQL, 100 also results."""
    if level >= 100:
        std_logging.getLogger("sqlalchemy.engine").setLevel(std_logging.DEBUG)
    elif level >= 50:
        std_logging.getLogger("sqlalchemy.engine").setLevel(std_logging.INFO)


def _server_pool(settings: Settings) -> dict[str, ty.Any]:
    return {"pool_recycle": 3600, "pool_size": settings.max_pool_size,
            "max_overflow": 10}


# --- MariaDB / MySQL ---------------------------------------------------------

def _mysql_engine(url: sa.URL, settings: Settings) -> sa.Engine:
    # PyMySQL's connect_timeout covers only the TCP connect: the handshake
    # is read with read_timeout, so that one starts as connect_timeout (a
    # listener that accepts and never answers fails then) and becomes the
    # session's read timeout once connected.
    connect_args: dict[str, ty.Any] = {
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.connect_timeout}
    if "charset" not in url.query:
        connect_args["charset"] = "utf8"
    # Client side: a server that stops answering mid-statement (a network
    # partition) fails after this instead of never.
    read_timeout = (settings.statement_timeout + settings.lock_wait_timeout
                    + 5) if settings.statement_timeout else None
    engine = sa.create_engine(url, connect_args=connect_args,
                              **_server_pool(settings))
    session_sql = _mysql_session_sql(settings)

    @event.listens_for(engine, "connect")
    def _session(dbapi_con: ty.Any, _record: ty.Any) -> None:
        mariadb = "mariadb" in str(dbapi_con.get_server_info()).lower()
        with dbapi_con.cursor() as cursor:
            cursor.execute(session_sql(mariadb))
        # PyMySQL reads this attribute before every socket read.
        dbapi_con._read_timeout = read_timeout

    return engine


def _mysql_session_sql(settings: Settings) -> ty.Callable[[bool], str]:
    """``SET SESSION`` of strict mode and the timeouts, per server flavour."""
    lock = settings.lock_wait_timeout
    # Strict mode: a too-long value is an error, never truncated.
    common = ("SET SESSION sql_mode = 'TRADITIONAL', "
              "innodb_lock_wait_timeout = %d, lock_wait_timeout = %d"
              % (lock, lock))

    def sql(mariadb: bool) -> str:
        statement = settings.statement_timeout
        if mariadb:
            return common + ", max_statement_time = %d" % statement
        return common + ", max_execution_time = %d" % (statement * 1000)

    return sql


# --- PostgreSQL --------------------------------------------------------------

def _postgresql_engine(url: sa.URL, settings: Settings) -> sa.Engine:
    # Server-side limits as startup options: unlike a SET they cannot be
    # undone by the rollback SQLAlchemy issues when a connection returns.
    options = [str(url.query.get("options") or "").strip(),
               "-c lock_timeout=%ds" % settings.lock_wait_timeout,
               "-c statement_timeout=%ds" % settings.statement_timeout]
    connect_args = {"connect_timeout": settings.connect_timeout,
                    "options": " ".join(o for o in options if o)}
    return sa.create_engine(url, client_encoding="utf8",
                            connect_args=connect_args,
                            **_server_pool(settings))


# --- SQLite ------------------------------------------------------------------

def sqlite_path(url: sa.URL) -> str | None:
    """The file of an SQLite URL, None for an in-memory database."""
    if url.database in (None, "", ":memory:"):
        return None
    return str(url.database)


def _read_only_file(path: str | None) -> bool:
    """An existing database file this process may read but not write."""
    return (path is not None and os.path.exists(path)
            and os.access(path, os.R_OK) and not os.access(path, os.W_OK))


def _sqlite_engine(url: sa.URL, settings: Settings) -> sa.Engine:
    """One pooled connection per thread, WAL, BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling is switched off
    (``isolation_level = None``) and the BEGIN emitted here: a deferred
    BEGIN that later writes fails at once with "database is locked" when
    another process committed in between; IMMEDIATE takes the write lock up
    front and waits for it (``busy_timeout`` = ``lock_wait_timeout``)
    instead.  ``synchronous = NORMAL`` in WAL mode keeps the database
    consistent after a crash; a power cut may lose the last transactions
    (acceptable for an embedded, single-host default; production
    deployments use MariaDB/PostgreSQL).

    A file this user cannot write is opened read-only (SQLite's
    ``mode=ro``): commands that only read work, a write fails with
    :class:`DatabaseReadOnly` naming the file.
    """
    path = sqlite_path(url)
    read_only = _read_only_file(path)
    pool: dict[str, ty.Any] = (
        {"poolclass": sa.pool.StaticPool} if path is None
        else {"poolclass": sa.pool.QueuePool, "pool_size": 2,
              "max_overflow": 8})
    if read_only:
        LOG.info("Database file %s is read-only for this user: opened "
                 "read-only", path)
        pool["creator"] = functools.partial(
            sqlite3.connect, "file:%s?mode=ro" % urllib.parse.quote(str(path)),
            uri=True, check_same_thread=False)
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False}, **pool)
    busy_ms = settings.lock_wait_timeout * 1000

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_con: ty.Any, _record: ty.Any) -> None:
        dbapi_con.isolation_level = None
        dbapi_con.execute("PRAGMA busy_timeout = %d" % busy_ms)
        dbapi_con.execute("PRAGMA foreign_keys = ON")
        if path is not None and not read_only:
            _use_wal(dbapi_con, settings.lock_wait_timeout)
            dbapi_con.execute("PRAGMA synchronous = NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        read_only_tx = conn.get_execution_options().get(READ_ONLY)
        sql = "BEGIN" if read_only_tx else "BEGIN IMMEDIATE"
        try:
            # Straight to the driver: this runs once per transaction.
            conn.connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]
        except Exception as exc:
            conn._handle_dbapi_exception(exc, sql, None, None, None)

    return engine


def _use_wal(dbapi_con: ty.Any, timeout: int) -> None:
    """Switch the file to WAL once (the mode is stored in the file).

    Switching needs the database's exclusive lock and SQLite reports a
    busy database at once there, without its busy handler: processes
    opening a fresh file together would fail.  So: nothing to do when
    the file is in WAL already, else retry until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = dbapi_con.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                dbapi_con.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _add_fork_guard(engine: sa.Engine) -> None:
    """Never hand a parent process's pooled connection to a forked child."""

    @event.listens_for(engine, "connect")
    def _connect(_dbapi_con: ty.Any, record: ty.Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi_con: ty.Any, record: ty.Any, proxy: ty.Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa.exc.DisconnectionError(
                "connection belongs to process %s, not %s"
                % (record.info.get("pid"), os.getpid()))
