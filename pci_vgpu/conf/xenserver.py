"""``[xenserver]``: the XenServer / XCP-ng driver (XenAPI)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup("xenserver", title="XenServer virt driver")

OPTS = [
    cfg.StrOpt(
        "connection_url",
        default="",
        secret=True,
        help="URL of the XAPI endpoint, e.g. https://xenserver1.  Credentials "
             "in it (https://root:PASSWORD@xenserver1/) are used to log in, in "
             "place of connection_username/connection_password, and never "
             "shown.  Empty means the bundled XAPI simulator, started on "
             "127.0.0.1."),
    cfg.FloatOpt(
        "connect_timeout",
        default=10.0, min=0.1,
        help="Seconds to open the TCP/TLS connection to XAPI before the "
             "command fails naming the URL."),
    cfg.FloatOpt(
        "call_timeout",
        default=120.0, min=0.1,
        help="Seconds XAPI may stay silent during one call (VM.start included) "
             "before the command fails naming the URL: a listener that accepts "
             "and never answers cannot hang pci-vgpu."),
    cfg.StrOpt(
        "connection_username",
        default="root",
        help="XenAPI user name."),
    cfg.StrOpt(
        "connection_password",
        default="",
        secret=True,
        help="XenAPI password (never logged)."),
    cfg.StrOpt(
        "simulator_host",
        default="grid-k2",
        help="Host description the bundled simulator loads when "
             "``connection_url`` is empty (a shipped name or a file path)."),
    cfg.ListOpt(
        "pci_numa_nodes",
        default=[],
        help="NUMA node of GPUs as ``PCI_ADDRESS_PREFIX=NODE`` items, e.g. "
             "``0000:08=0,0000:85=1``: XAPI records no NUMA node for a PCI "
             "device.  The longest matching prefix wins; unmatched GPUs and "
             "their vGPUs have no NUMA affinity."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # A fresh OptGroup per ConfigOpts: oslo keeps overrides in the group
    # object, so sharing GROUP would leak set_override() between configs.
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title))
    conf.register_opts(OPTS, group=GROUP.name)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP.name, OPTS)]
