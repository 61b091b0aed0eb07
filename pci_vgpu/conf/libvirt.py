"""``[libvirt]``: the libvirt driver (mdevs, NVIDIA vendor VFs, guests)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup("libvirt", title="libvirt virt driver")

OPTS = [
    cfg.StrOpt(
        "connection_uri",
        default="",
        help="libvirt URI.  Empty means the bundled test host "
             "(``test:///<package>/virt/libvirt/hosts/two-socket-t4-v100.xml``)."),
    cfg.StrOpt(
        "mdev_backend",
        default="nodedev",
        choices=[
            ("nodedev", "libvirt node-device API: nodeDeviceCreateXML + "
                        "nodeDeviceDefineXML + autostart (persistent mdevs)."),
            ("sysfs", "write the UUID to mdev_supported_types/<type>/create "
                      "through oslo.privsep (transient mdevs)."),
        ],
        help="How mediated devices are created and removed."),
    cfg.StrOpt(
        "sysfs_root",
        default="/",
        help="Root under which ``sys/bus/pci`` and ``sys/bus/mdev`` are read "
             "and written (tests point it at a fake tree)."),
    cfg.BoolOpt(
        "remove_orphan_mdevs",
        default=False,
        help="At start-up, remove mdevs that no allocated device owns "
             "(otherwise they are only reported)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # A fresh OptGroup per ConfigOpts: oslo keeps overrides in the group
    # object, so sharing GROUP would leak set_override() between configs.
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title))
    conf.register_opts(OPTS, group=GROUP.name)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP.name, OPTS)]
