"""Build the ``pci_passthrough_devices`` list from libvirt node devices.

Shape: ``doc/contract.rst`` (Nova 34's ``_get_pcidev_info`` keys, then the
vGPU keys).  libvirt gives PCI identity, NUMA, IOMMU groups, SR-IOV links,
mdev types and mdevs; sysfs adds what libvirt does not carry: a type's
description, a GVT-g type's missing name, and NVIDIA vendor-VFIO VF types.
"""

from __future__ import annotations

import collections
import logging
import typing as ty

import libvirt

from pci_vgpu import sysfs as sysfs_mod
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import nvidia_vf
from pci_vgpu.virt.libvirt import sharing

LOG = logging.getLogger(__name__)

LIST_FLAGS = (libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
              | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV)

Device = dict[str, ty.Any]


class DeviceFilter(ty.Protocol):
    """What the inventory needs of ``pci_vgpu.devspec.Whitelist``."""

    def filter_device(self, dev: dict[str, ty.Any]) -> dict[str, ty.Any] | None: ...


def read_nodes(conn: ty.Any) -> list[nodedev.PciNode | nodedev.MdevNode]:
    """List PCI devices and mdevs; skip those that vanish meanwhile.

    A device removed between ``listAllDevices`` and the lookup (hot-unplug,
    an mdev removed by someone else) raises VIR_ERR_NO_NODE_DEVICE: it is
    logged and skipped, the rest of the inventory is still reported.  A
    defined but stopped mdev is no device yet (init_host starts the ones
    allocated devices need) and is skipped too.
    """
    nodes: list[nodedev.PciNode | nodedev.MdevNode] = []
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


def _base(node: nodedev.PciNode) -> Device:
    return {
        "dev_id": node.dev_id, "address": node.address,
        "vendor_id": node.vendor_id, "product_id": node.product_id,
        "numa_node": node.numa_node,
        "label": "label_%s_%s" % (node.vendor_id, node.product_id),
        "dev_type": node.dev_type, "parent_addr": node.parent_addr,
        "iommu_group": node.iommu_group,
    }


def _type_attr(root: sysfs_mod.SysfsRoot, address: str, type_id: str,
               attr: str) -> str | None:
    try:
        return root.read(root.pci_device(
            address, "mdev_supported_types", type_id, attr))
    except Exception:  # an odd type id from libvirt must not sink inventory
        LOG.debug("Cannot read %(attr)s of type %(type)s on %(addr)s",
                  {"attr": attr, "type": type_id, "addr": address})
        return None


def _mdev_parent_fields(node: nodedev.PciNode, existing: ty.Mapping[str, int],
                        root: sysfs_mod.SysfsRoot,
                        memory: sharing.MaxMemory) -> Device:
    available = {t.type_id: t.available for t in node.mdev_types}
    types: dict[str, dict[str, ty.Any]] = {}
    for mtype in node.mdev_types:
        description = _type_attr(root, node.address, mtype.type_id, "description")
        name = mtype.name or _type_attr(root, node.address, mtype.type_id, "name")
        types[mtype.type_id] = {
            "name": name or mtype.type_id,
            "description": description or "",
            "device_api": mtype.device_api,
            "available": mtype.available,
            "max": sharing.max_instances(
                node.vendor_id, node.address, mtype.type_id,
                available=mtype.available,
                existing_same=existing.get(mtype.type_id, 0),
                description=description, memory=memory),
            "identifier": None,
        }
    return {"vgpu_types": types,
            "vgpu_sharing": sharing.decide_sharing(node.vendor_id, available, existing),
            "vgpu_backend": "mdev"}


def _mdev_dict(mdev: nodedev.MdevNode, parent: nodedev.PciNode,
               owners: ty.Mapping[str, str]) -> Device:
    dev = _base(parent)
    dev.update({
        "dev_id": mdev.dev_id, "address": None, "dev_type": "mdev",
        "parent_addr": parent.address, "iommu_group": mdev.iommu_group,
        "mdev_uuid": mdev.mdev_uuid, "mdev_type": mdev.mdev_type,
        "instance_uuid": owners.get(mdev.mdev_uuid),
    })
    return dev


def build(nodes: ty.Sequence[nodedev.PciNode | nodedev.MdevNode],
          root: sysfs_mod.SysfsRoot, memory: sharing.MaxMemory,
          owners: ty.Mapping[str, str],
          dev_filter: DeviceFilter | None) -> list[Device]:
    """Turn parsed nodes into contract device dicts, filtered by device_spec.

    An mdev is reported when its parent GPU is (it has no address of its
    own for ``[pci] device_spec`` to match).
    """
    pcis = {n.dev_id: n for n in nodes if isinstance(n, nodedev.PciNode)}
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
    for node in sorted(pcis.values(), key=lambda n: n.address):
        dev = _base(node)
        if node.mdev_types:
            dev.update(_mdev_parent_fields(node, existing[node.dev_id], root, memory))
        elif (state := vf_states.get(node.address)) is not None:
            dev.update(nvidia_vf.vgpu_fields(state, vf_names))
        if dev_filter is not None:
            # The spec may add tags (managed, live_migratable) and narrow
            # the vGPU types it offers.
            filtered = dev_filter.filter_device(dev)
            if filtered is None:
                continue
            dev = filtered
        devices.append(dev)
        reported.add(node.dev_id)
    for mdev in sorted(mdevs, key=lambda m: m.mdev_uuid):
        if mdev.parent_dev_id in reported:
            devices.append(_mdev_dict(mdev, pcis[mdev.parent_dev_id], owners))
    return devices
