"""``[database]``: where the device tracker keeps its rows, and how long it waits.

oslo.db's own ``[database]`` options are registered (``connection`` among
them, ``secret=True`` so a URL with a password is masked whenever options
are logged), plus pci_vgpu's three timeouts.  Only the options listed by
:func:`list_opts` are honoured (and documented in the sample file); oslo.db's
other options are registered so that a Nova-style file still parses, but
pci_vgpu builds its own engine and ignores them.

When ``connection`` is unset the tracker uses an SQLite file in ``[host]
state_dir``: :func:`connection_url` resolves that.

How each timeout reaches each database (``pci_vgpu.db.engine``):

* ``connect_timeout``: PyMySQL's and libpq's ``connect_timeout`` (SQLite:
  a local file, nothing to wait for);
* ``statement_timeout``: MariaDB ``max_statement_time`` (MySQL
  ``max_execution_time``) plus PyMySQL's read timeout, PostgreSQL
  ``statement_timeout`` (SQLite: runs in-process, none);
* ``lock_wait_timeout``: MariaDB ``innodb_lock_wait_timeout`` and
  ``lock_wait_timeout`` and the migration ``GET_LOCK``, PostgreSQL
  ``lock_timeout`` (row locks and the migration advisory lock), SQLite
  ``busy_timeout`` (the database write lock, migrations included).
"""

from __future__ import annotations

import importlib
import os
import types

from oslo_config import cfg

GROUP = cfg.OptGroup("database", title="Device tracker database")

SQLITE_FILE = "pci_vgpu.sqlite"

#: oslo.db options pci_vgpu honours (the rest are registered, not used).
_OSLO_DB_HONOURED = ("connection", "max_pool_size", "connection_debug")

TIMEOUT_OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "connect_timeout", default=10, min=1,
        help="Seconds to wait for a MariaDB or PostgreSQL server to accept "
             "a connection and finish its handshake (a server that accepts "
             "and never answers counts as unreachable after this long)."),
    cfg.IntOpt(
        "statement_timeout", default=60, min=0,
        help="Seconds one SQL statement may run before the server aborts "
             "it (MariaDB max_statement_time, PostgreSQL "
             "statement_timeout); 0 disables it.  Schema migrations run "
             "without it.  Not applicable to SQLite."),
    cfg.IntOpt(
        "lock_wait_timeout", default=30, min=1,
        help="Seconds to wait for a lock held by another process: a row "
             "or table lock (MariaDB innodb_lock_wait_timeout and "
             "lock_wait_timeout, PostgreSQL lock_timeout), SQLite's "
             "database write lock (busy_timeout), and the lock that "
             "serialises schema migrations."),
]


def _db_options() -> types.ModuleType | None:
    """``oslo_db.options``, or None in the lean core (no ``[db]`` extra)."""
    try:
        return importlib.import_module("oslo_db.options")
    except ImportError:
        return None


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register oslo.db's options (none without the ``[db]`` extra) and ours."""
    db_options = _db_options()
    if db_options is not None:
        db_options.set_defaults(conf)
    conf.register_opts(TIMEOUT_OPTS, group=GROUP.name)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    db_options = _db_options()
    honoured = [] if db_options is None else [
        o for o in db_options.database_opts if o.name in _OSLO_DB_HONOURED]
    return [(GROUP.name, honoured + TIMEOUT_OPTS)]


def connection_url(conf: cfg.ConfigOpts) -> str:
    """The database URL: ``[database] connection`` or the embedded default.

    The default is ``sqlite:///<[host] state_dir>/pci_vgpu.sqlite``; the
    state directory is created (mode 0700) when it does not exist yet.

    :raises: OSError when the directory cannot be created (the CLI names
        ``[host] state_dir``: ``pci_vgpu.cli.wiring``).
    """
    if conf.database.connection:
        return str(conf.database.connection)
    state_dir = conf.host.state_dir
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    return "sqlite:///%s" % os.path.join(state_dir, SQLITE_FILE)
