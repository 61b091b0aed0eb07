"""``[pci]``: device specs, aliases and the vGPU placement policy.

``alias`` and ``device_spec`` keep Nova's names, types and deprecated names so
that a nova.conf ``[pci]`` section can be used unchanged.
"""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup("pci", title="PCI and vGPU passthrough")

OPTS = [
    cfg.MultiStrOpt(
        "alias",
        default=[],
        deprecated_name="pci_alias",
        deprecated_group="DEFAULT",
        help="""
An alias for a PCI device or vGPU request, referenced by flavors with
the extra spec ``pci_passthrough:alias=<name>:<count>``.  Each value is
a JSON object with Nova's keys (``name``, ``vendor_id``,
``product_id``, ``device_type``, ``numa_policy``, ...) plus
``vgpu_types``: one vGPU type or a list of types, any of which
satisfies the request.  The same thing may be written as
``"capabilities": {"vgpu_types": [...]}``.  Example::

  alias = {"name": "t4-small", "vendor_id": "10de",
           "product_id": "1eb8", "numa_policy": "preferred",
           "vgpu_types": ["nvidia-222", "nvidia-223"]}
"""),
    cfg.MultiStrOpt(
        "device_spec",
        default=[],
        deprecated_opts=[
            cfg.DeprecatedOpt("passthrough_whitelist", group="pci"),
            cfg.DeprecatedOpt("pci_passthrough_whitelist", group="DEFAULT"),
        ],
        help="""
Which host devices may be given to guests.  Each value is a JSON object (or a
list of them) with Nova's keys: ``vendor_id``, ``product_id``, ``address``
(glob string or regex dict), ``devname`` and tags.  An mdev has no PCI
address: it matches through its parent GPU's address, and a spec may narrow
it with ``"vgpu_types": [...]``.  An mdev parent that is no PCI device (the
kernel's mtty sample) is named by its kernel name, alone:
``{"mdev_parent": "mtty"}``.
"""),
    cfg.StrOpt(
        "placement_policy",
        default="pack",
        choices=[
            ("pack", "Fill the fullest GPU first (XenServer depth_first)."),
            ("spread", "Use the emptiest GPU first (XenServer breadth_first)."),
            ("fragmentation",
             "Use the GPU where the new vGPU leaves the least free share "
             "unusable for the vGPU types the GPU offers and whole-GPU "
             "requests (ties: the fuller GPU); see "
             "pci_vgpu.fragmentation."),
        ],
        help="How vGPUs are placed among GPUs that can all host them."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # A fresh OptGroup per ConfigOpts: oslo keeps overrides in the group
    # object, so sharing GROUP would leak set_override() between configs.
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title))
    conf.register_opts(OPTS, group=GROUP.name)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP.name, OPTS)]
