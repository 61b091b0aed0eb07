"""What the kernel of an embedded libvirt test host decides: mdev capacity.

On a real host the vendor's mdev driver says how many instances of a type
are still available; the libvirt test driver only repeats the numbers of
its host file.  :class:`Kernel` plays the driver's part for the seam
(:mod:`.testseam`): it starts from the host file as first opened (the
hardware and the mdevs it already had) and applies :mod:`.sharing`'s rules
to the mdevs that exist now.  A GPU of the host file that was already
locked to one type reports 0 for the others, and this kernel cannot know
more: their instances reappear only as far as the file said.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import typing as ty

import libvirt
from lxml import etree

from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import sharing

#: IOMMU groups of mdevs created on the embedded host start here.
FIRST_MDEV_GROUP = 1000


@dataclasses.dataclass
class MdevState:
    """One mdev as the seam holds it: started and/or defined."""

    mdev_uuid: str
    mdev_type: str
    parent_dev_id: str
    active: bool = True
    persistent: bool = False
    autostart: bool = False
    #: Node-device name from the host file; None: libvirt's naming.
    dev_id: str | None = None
    iommu_group: int | None = None

    def name(self) -> str:
        if self.dev_id:
            return self.dev_id
        # libvirt >= 7.7 names mdevs mdev_<uuid>_<parent address>.
        parent = self.parent_dev_id.removeprefix("pci_")
        return "mdev_%s_%s" % (self.mdev_uuid.replace("-", "_"), parent)


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError carrying ``code`` the way libvirt-python fills it."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_NODEDEV, message, libvirt.VIR_ERR_ERROR,
               None, None, None, -1, -1)
    return exc


Node = ty.Union[nodedev.PciNode, nodedev.MdevNode]


def baseline_nodes(conn: ty.Any, source_xml: str | None) -> list[Node]:
    """The nodes of the host file as first opened.

    ``source_xml`` is that file when the host is stored; otherwise the
    connection was just opened on it and shows it.
    """
    if source_xml is None:
        texts = [d.XMLDesc(0) for d in conn.listAllDevices(0)]
    else:
        root = etree.fromstring(source_xml.encode("utf-8"))
        texts = [etree.tostring(e, encoding="unicode") for e in root.iterfind("device")]
    # The test driver's host files have no parent that is not a PCI device.
    return [n for n in (nodedev.parse(t) for t in texts)
            if isinstance(n, (nodedev.PciNode, nodedev.MdevNode))]


class Kernel:
    """Capacity of the host's GPUs given the mdevs that exist."""

    def __init__(self, nodes: ty.Sequence[Node]) -> None:
        self.parents = {n.dev_id: n for n in nodes if isinstance(n, nodedev.PciNode)}
        self.baseline: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        for node in nodes:
            if isinstance(node, nodedev.MdevNode):
                self.baseline[node.parent_dev_id][node.mdev_type] += 1

    def address_of(self, dev_id: str) -> str:
        parent = self.parents.get(dev_id)
        return parent.address if parent is not None else dev_id

    def dev_id_of(self, address: str) -> str | None:
        for dev_id, parent in self.parents.items():
            if parent.address == address:
                return dev_id
        return None

    def available(self, mdevs: ty.Mapping[str, MdevState], dev_id: str) -> dict[str, int]:
        """availableInstances per type of GPU ``dev_id`` with ``mdevs``."""
        parent = self.parents[dev_id]
        base = {t.type_id: t.available for t in parent.mdev_types}
        present: collections.Counter[str] = collections.Counter(
            s.mdev_type for s in mdevs.values() if s.active and s.parent_dev_id == dev_id)
        delta = collections.Counter(present)
        delta.subtract(self.baseline[dev_id])
        rule = sharing.rule_for(parent.vendor_id)
        if rule.sharing == sharing.BUDGET:
            def size(t: str) -> float:
                return 1.0 / (rule.explicit_max(t, None) or 1)
            used = sum(d * size(u) for u, d in delta.items())
            return {t: max(0, math.floor(n - used / size(t) + 1e-9)) for t, n in base.items()}
        return {t: 0 if any(present[u] for u in present if u != t) else max(0, n - delta[t])
                for t, n in base.items()}

    def all_available(self, mdevs: ty.Mapping[str, MdevState]) -> dict[str, dict[str, int]]:
        return {dev_id: self.available(mdevs, dev_id)
                for dev_id, parent in self.parents.items() if parent.mdev_types}

    def reserve(self, mdevs: ty.Mapping[str, MdevState], parent_dev_id: str,
                mdev_type: str, mdev_uuid: str) -> None:
        """Check that one more ``mdev_type`` fits, as the vendor driver would.

        :raises: libvirtError (no such parent, UUID in use, no capacity).
        """
        if parent_dev_id not in self.parents:
            raise libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                         "Node device not found: no node device with matching name '%s'"
                         % parent_dev_id)
        existing = mdevs.get(mdev_uuid)
        if existing is not None and existing.active:
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED,
                         "operation failed: mediated device %s already exists" % mdev_uuid)
        if self.available(mdevs, parent_dev_id).get(mdev_type, 0) < 1:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR,
                         "internal error: Unable to create mediated device %s of type %s on "
                         "%s: no available instances" % (mdev_uuid, mdev_type, parent_dev_id))

    def adjust_parent_xml(self, mdevs: ty.Mapping[str, MdevState], xml: str) -> str:
        """A PCI node device's XML with today's availableInstances."""
        parsed = nodedev.parse(xml)
        if not isinstance(parsed, nodedev.PciNode) or parsed.dev_id not in self.parents \
                or not parsed.mdev_types:
            return xml
        available = self.available(mdevs, parsed.dev_id)
        root = etree.fromstring(xml.encode("utf-8"))
        for elem in root.iterfind(".//capability[@type='mdev_types']/type"):
            count = elem.find("availableInstances")
            if count is not None and elem.get("id", "") in available:
                count.text = str(available[elem.get("id", "")])
        return str(etree.tostring(root, encoding="unicode"))

    def place(self, mdevs: ty.Mapping[str, MdevState], state: MdevState) -> int:
        """The mdev's IOMMU group, given a free one the first time."""
        if state.iommu_group is None:
            taken = {s.iommu_group for s in mdevs.values()}
            group = FIRST_MDEV_GROUP
            while group in taken:
                group += 1
            state.iommu_group = group
        return state.iommu_group

    def mdev_xml(self, state: MdevState) -> str:
        """The mdev's node-device XML, as libvirt reports it."""
        root = etree.Element("device")
        etree.SubElement(root, "name").text = state.name()
        etree.SubElement(root, "parent").text = state.parent_dev_id
        cap = etree.SubElement(root, "capability", type="mdev")
        etree.SubElement(cap, "type", id=state.mdev_type)
        etree.SubElement(cap, "uuid").text = state.mdev_uuid
        group = state.iommu_group if state.iommu_group is not None else FIRST_MDEV_GROUP
        etree.SubElement(cap, "iommuGroup", number=str(group))
        return str(etree.tostring(root, pretty_print=True, encoding="unicode"))
