"""Build the ``pci_passthrough_devices`` list from libvirt node devices.

Shape: ``doc/contract.rst`` (Nova 34's ``_get_pcidev_info`` keys, then the
vGPU keys).  libvirt gives PCI identity, NUMA, IOMMU groups, SR-IOV links,
mdev types and mdevs; sysfs adds what libvirt does not carry: a type's
description, a GVT-g type's missing name, and NVIDIA vendor-VFIO VF types.
"""

from __future__ import annotations

import collections
import logging
import re
import typing as ty

import libvirt

from pci_vgpu import mdev_parents
from pci_vgpu import sysfs as sysfs_mod
from pci_vgpu.virt import report
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import nvidia_vf
from pci_vgpu.virt.libvirt import sharing

LOG = logging.getLogger(__name__)

_FRAMEBUFFER_RE = re.compile(r"framebuffer=(\d+)M")
_NAME_SIZE_RE = re.compile(r"-(\d+)[A-Z]+$")

# MDEV_TYPES adds the parents that are no PCI device (mtty).
LIST_FLAGS = (libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
              | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV
              | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES)

Device = dict[str, ty.Any]


class DeviceFilter(ty.Protocol):
    """What the inventory needs of ``pci_vgpu.devspec.Whitelist``."""

    def filter_device(self, dev: dict[str, ty.Any]) -> dict[str, ty.Any] | None: ...


def read_nodes(conn: ty.Any) -> list[nodedev.Node]:
    """List PCI devices and mdevs; skip those that vanish meanwhile.

    A device removed between ``listAllDevices`` and the lookup (hot-unplug,
    an mdev removed by someone else) raises VIR_ERR_NO_NODE_DEVICE: it is
    logged and skipped, the rest of the inventory is still reported.  A
    defined but stopped mdev is no device yet (init_host starts the ones
    allocated devices need) and is skipped too.
    """
    nodes: list[nodedev.Node] = []
    for name in sorted(dev.name() for dev in conn.listAllDevices(LIST_FLAGS)):
        try:
            dev = conn.nodeDeviceLookupByName(name)
            xml = dev.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NODE_DEVICE:
                raise
            LOG.info("Node device %(name)s disappeared while it was being "
                     "read; skipping it", {"name": name})
            continue
        parsed = nodedev.parse(xml)
        if isinstance(parsed, nodedev.MdevNode) and not nodedev.is_active(dev):
            continue
        if parsed is None:
            LOG.info("Node device %(name)s is neither a PCI device nor an "
                     "mdev (e.g. an s390 ap_matrix or css parent); not "
                     "reporting it", {"name": name})
            continue
        nodes.append(parsed)
    return nodes


Parent = ty.Union[nodedev.PciNode, nodedev.VirtualParentNode]


#: vendor_id and product_id of a virtual mdev parent, which has neither.
#: 0xffff is what a PCI configuration read returns for an absent function;
#: the PCI-SIG never assigns it, so it cannot be mistaken for a real device's
#: id, and it keeps the tracker's records (vendor and product NOT NULL, as
#: in Nova) and pools (keyed by them) valid without a schema change.
NO_PCI_ID = "ffff"


def _base(node: Parent) -> Device:
    if isinstance(node, nodedev.VirtualParentNode):
        # Named, not addressed: the kernel name stands where the PCI address
        # of a GPU goes (the mdevs' parent_addr names it); no NUMA node or
        # IOMMU group.  Only ``mdev_parent`` in device_spec admits it.
        return {"dev_id": node.dev_id, "address": node.name, "vendor_id": NO_PCI_ID,
                "product_id": NO_PCI_ID, "numa_node": None,
                "label": "label_%s_%s" % (NO_PCI_ID, NO_PCI_ID),
                "dev_type": "type-PCI", "parent_addr": None, "iommu_group": None,
                "virtual_parent": True}
    return {
        "dev_id": node.dev_id, "address": node.address,
        "vendor_id": node.vendor_id, "product_id": node.product_id,
        "numa_node": node.numa_node,
        "label": "label_%s_%s" % (node.vendor_id, node.product_id),
        "dev_type": node.dev_type, "parent_addr": node.parent_addr,
        "iommu_group": node.iommu_group,
    }


def _type_attr(root: sysfs_mod.SysfsRoot, node: Parent, type_id: str,
               attr: str) -> str | None:
    # Every parent, PCI or not, is in /sys/class/mdev_bus under its kernel name.
    address = _base(node)["address"]
    try:
        return root.read(root.mdev_parent(
            address, "mdev_supported_types", type_id, attr))
    except Exception:  # an odd type id from libvirt must not sink inventory
        LOG.debug("Cannot read %(attr)s of type %(type)s on %(addr)s",
                  {"attr": attr, "type": type_id, "addr": address})
        return None


def _virtual_sharing(root: sysfs_mod.SysfsRoot, node: Parent) -> str | None:
    """A virtual parent's sharing rule, known by its sysfs subsystem.

    The kernel's samples share one budget among their types (mtty: 24
    ports); observing an empty mtty would call it one-type and lock its
    other type out as soon as one mdev exists.  None for a PCI GPU (its
    vendor's rule applies) or an unknown subsystem.
    """
    if not isinstance(node, nodedev.VirtualParentNode):
        return None
    try:
        subsystem = root.link_name(root.mdev_parent(node.name, "subsystem"))
    except (sysfs_mod.SysfsReadFailed, sysfs_mod.SysfsPathInvalid):
        # An unreadable link must not sink inventory: observe instead.
        LOG.debug("Cannot read the subsystem of mdev parent %(name)s", {"name": node.name})
        return None
    return mdev_parents.SUBSYSTEM_SHARING.get(subsystem or "")


def _mdev_parent_fields(node: Parent, existing: ty.Mapping[str, int],
                        root: sysfs_mod.SysfsRoot,
                        memory: sharing.MaxMemory) -> Device:
    available = {t.type_id: t.available for t in node.mdev_types}
    vendor_id = getattr(node, "vendor_id", "")
    address = _base(node)["address"]
    sharing_rule = (_virtual_sharing(root, node)
                    or sharing.decide_sharing(vendor_id, available, existing))
    types: dict[str, dict[str, ty.Any]] = {}
    for mtype in node.mdev_types:
        description = _type_attr(root, node, mtype.type_id, "description")
        name = mtype.name or _type_attr(root, node, mtype.type_id, "name")
        types[mtype.type_id] = {
            "name": name or mtype.type_id,
            "description": description or "",
            "device_api": mtype.device_api,
            "available": mtype.available,
            "max": sharing.max_instances(
                vendor_id, address, mtype.type_id, available=mtype.available,
                existing_same=existing.get(mtype.type_id, 0), description=description,
                memory=memory),
            "identifier": None,
        }
    if sharing_rule == sharing.ONE_TYPE:
        _scale_locked_out(address, types, existing, memory)
    for type_id in [t for t, e in types.items() if e["max"] < 1]:
        _log_unknown_max(node, type_id, existing)
        del types[type_id]
    return {"vgpu_types": types, "vgpu_sharing": sharing_rule, "vgpu_backend": "mdev"}


def _framebuffer_mib(entry: ty.Mapping[str, ty.Any]) -> int | None:
    """A type's framebuffer: NVIDIA's description, else its name's size.

    The NVIDIA host driver writes ``framebuffer=2048M`` into the type's sysfs
    description; its type names end in the size in GiB and a class letter
    (``GRID T4-2B``, ``NVIDIA L40S-8Q``).
    """
    found = _FRAMEBUFFER_RE.search(entry.get("description") or "")
    if found:
        return int(found.group(1))
    found = _NAME_SIZE_RE.search(entry.get("name") or "")
    return int(found.group(1)) * 1024 if found and int(found.group(1)) > 0 else None


def _scale_locked_out(address: str, types: dict[str, dict[str, ty.Any]],
                      existing: ty.Mapping[str, int], memory: sharing.MaxMemory) -> None:
    """Derive the maximum of types locked out of a one-type GPU.

    While type A holds the GPU the others read 0 available, but A's maximum
    is exact (available + existing) and a time-sliced GPU splits its
    framebuffer evenly: max(T) = max(A) * framebuffer(A) / framebuffer(T).
    """
    anchors = [(e["max"], _framebuffer_mib(e)) for t, e in types.items()
               if existing.get(t, 0) > 0 and e["max"] >= 1]
    anchors = [(n, fb) for n, fb in anchors if fb]
    if not anchors:
        return
    total_mib = anchors[0][0] * ty.cast(int, anchors[0][1])
    for type_id, entry in types.items():
        size = _framebuffer_mib(entry)
        if entry["max"] < 1 and size:
            entry["max"] = memory.remember(address, type_id, total_mib // size)


def _log_unknown_max(node: Parent, type_id: str,
                     existing: ty.Mapping[str, int]) -> None:
    """Say why a type is not offered: nothing tells its maximum right now.

    A GPU that had vGPUs before this process first read it reports 0
    available for the types its current type locks out; without a
    ``max_instance`` or a framebuffer size (:func:`_scale_locked_out`) the
    maximum of those types is unknown.  They cannot be created while the
    lock holds anyway; the first inventory after the GPU empties offers
    them again.
    """
    holders = sorted(t for t, n in existing.items() if n > 0)
    LOG.info("GPU %(gpu)s: not offering vGPU type %(type)s while %(holders)s hold the GPU "
             "(its maximum is unknown: no max_instance or framebuffer size in its "
             "description or name); it is offered again once the GPU is empty",
             {"gpu": _base(node)["address"], "type": type_id,
              "holders": ", ".join(holders) or "other vGPUs"})


def _mdev_dict(mdev: nodedev.MdevNode, parent: Parent,
               owners: ty.Mapping[str, str]) -> Device:
    dev = _base(parent)
    dev.update({
        "dev_id": mdev.dev_id, "address": None, "dev_type": "mdev",
        "parent_addr": _base(parent)["address"], "iommu_group": mdev.iommu_group,
        "mdev_uuid": mdev.mdev_uuid, "mdev_type": mdev.mdev_type,
        "instance_uuid": owners.get(mdev.mdev_uuid),
    })
    return dev


def build(nodes: ty.Sequence[nodedev.Node],
          root: sysfs_mod.SysfsRoot, memory: sharing.MaxMemory,
          owners: ty.Mapping[str, str],
          dev_filter: DeviceFilter | None) -> list[Device]:
    """Turn parsed nodes into contract device dicts, filtered by device_spec.

    An mdev is reported when its parent GPU is (it has no address of its
    own for ``[pci] device_spec`` to match); an mdev whose parent libvirt
    does not know is logged.  Entries the tracker must not store are left
    out with a warning (:mod:`pci_vgpu.virt.report`).
    """
    pcis = {n.dev_id: n for n in nodes if isinstance(n, nodedev.PciNode)}
    virtuals = {n.dev_id: n for n in nodes if isinstance(n, nodedev.VirtualParentNode)}
    mdevs = [n for n in nodes if isinstance(n, nodedev.MdevNode)]
    existing: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for mdev in mdevs:
        existing[mdev.parent_dev_id][mdev.mdev_type] += 1
    vf_states = {n.address: nvidia_vf.read_vf(root, n.address)
                 for n in pcis.values() if n.dev_type == "type-VF"}
    vf_names: dict[str, str] = {}
    for state in vf_states.values():
        vf_names.update(state.creatable if state else {})
    devices: list[Device] = []
    reported: set[str] = set()

    def keep(dev: Device, dev_id: str) -> None:
        if dev_filter is not None:
            # The spec may add tags (managed, live_migratable) and narrow
            # the vGPU types it offers.
            filtered = dev_filter.filter_device(dev)
            if filtered is None:
                return
            dev = filtered
        devices.append(dev)
        reported.add(dev_id)

    for node in sorted(pcis.values(), key=lambda n: n.address):
        dev = _base(node)
        if node.mdev_types:
            dev.update(_mdev_parent_fields(node, existing[node.dev_id], root, memory))
        elif (state := vf_states.get(node.address)) is not None:
            dev.update(nvidia_vf.vgpu_fields(state, vf_names))
        keep(dev, node.dev_id)
    for virtual in sorted(virtuals.values(), key=lambda n: n.name):
        dev = _base(virtual)
        dev.update(_mdev_parent_fields(virtual, existing[virtual.dev_id], root, memory))
        keep(dev, virtual.dev_id)
    parents: dict[str, Parent] = {**pcis, **virtuals}
    for mdev in sorted(mdevs, key=lambda m: m.mdev_uuid):
        if mdev.parent_dev_id in reported:
            devices.append(_mdev_dict(mdev, parents[mdev.parent_dev_id], owners))
        elif mdev.parent_dev_id not in parents:
            LOG.warning("mdev %(uuid)s (type %(type)s) names parent %(parent)s, which libvirt "
                        "does not report; not using it", {"uuid": mdev.mdev_uuid,
                                                          "type": mdev.mdev_type,
                                                          "parent": mdev.parent_dev_id})
    return report.checked("libvirt", devices)
