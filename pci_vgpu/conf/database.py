"""``[database]``: where the device tracker keeps its rows.

oslo.db's own ``[database]`` options are registered (``connection`` among
them, ``secret=True`` so a URL with a password is masked whenever options
are logged).  When ``connection`` is unset the tracker uses an SQLite file
in ``[host] state_dir``: :func:`connection_url` resolves that.
"""

from __future__ import annotations

import importlib
import os
import types

from oslo_config import cfg

GROUP = cfg.OptGroup("database", title="Device tracker database")

SQLITE_FILE = "pci_vgpu.sqlite"


def _db_options() -> types.ModuleType | None:
    """``oslo_db.options``, or None in the lean core (no ``[db]`` extra)."""
    try:
        return importlib.import_module("oslo_db.options")
    except ImportError:
        return None


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register oslo.db's options; none without the ``[db]`` extra."""
    db_options = _db_options()
    if db_options is not None:
        db_options.set_defaults(conf)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    db_options = _db_options()
    if db_options is None:
        return []
    return [(GROUP.name, [o for o in db_options.database_opts
                          if o.name in ("connection", "max_retries", "retry_interval",
                                        "connection_debug", "max_pool_size")])]


def connection_url(conf: cfg.ConfigOpts) -> str:
    """The database URL: ``[database] connection`` or the embedded default.

    The default is ``sqlite:///<[host] state_dir>/pci_vgpu.sqlite``; the
    state directory is created (mode 0700) when it does not exist yet.
    """
    if conf.database.connection:
        return str(conf.database.connection)
    state_dir = conf.host.state_dir
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    return "sqlite:///%s" % os.path.join(state_dir, SQLITE_FILE)
