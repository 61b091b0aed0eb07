"""``[database]``: where the device tracker keeps its rows.

oslo.db's own ``[database]`` options are registered too (by
``pci_vgpu.db.api``); this module sets pci_vgpu's defaults: an SQLite file in
``[host] state_dir`` when ``connection`` is unset.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_db import options as db_options

GROUP = cfg.OptGroup("database", title="Device tracker database")


def register_opts(conf: cfg.ConfigOpts) -> None:
    # oslo.db's options include ``connection`` (secret=True), so a URL with a
    # password is masked whenever options are logged.
    db_options.set_defaults(conf)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP.name, [o for o in db_options.database_opts
                          if o.name in ("connection", "max_retries", "retry_interval",
                                        "connection_debug", "max_pool_size")])]
