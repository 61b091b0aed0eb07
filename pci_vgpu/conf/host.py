"""``[host]``: which virt driver this host runs and where state lives."""

from __future__ import annotations

import os

from oslo_config import cfg

GROUP = cfg.OptGroup("host", title="The compute host")


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "pci-vgpu")


OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "driver",
        default="libvirt",
        help="Virt driver to load from the ``pci_vgpu.virt_drivers`` "
             "stevedore namespace: libvirt, xenserver or noop."),
    cfg.StrOpt(
        "hostname",
        default="localhost",
        help="Name of this compute node in the database."),
    cfg.StrOpt(
        "state_dir",
        default=_default_state_dir(),
        sample_default="$XDG_STATE_HOME/pci-vgpu",
        help="Directory for the embedded SQLite database and other state."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # A fresh OptGroup per ConfigOpts: oslo keeps overrides in the group
    # object, so sharing GROUP would leak set_override() between configs.
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title))
    conf.register_opts(OPTS, group=GROUP.name)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP.name, OPTS)]
