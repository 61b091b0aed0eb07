"""Parse libvirt node-device XML into small typed records.

Only what the inventory needs is read: PCI identity, NUMA node, IOMMU group,
SR-IOV links and mdev types of a PCI device; type, UUID, parent and IOMMU
group of an mdev.  Every value comes from the XML (never from the node-device
*name*, whose format changed in libvirt 7.7).
"""

from __future__ import annotations

import dataclasses
import typing as ty

import libvirt
from lxml import etree


@dataclasses.dataclass(frozen=True)
class MdevType:
    """One ``<type>`` of a parent's ``mdev_types`` capability."""

    type_id: str
    name: str | None
    device_api: str
    available: int


@dataclasses.dataclass(frozen=True)
class PciNode:
    """A PCI node device."""

    dev_id: str
    address: str
    vendor_id: str
    product_id: str
    numa_node: int | None
    iommu_group: int | None
    #: ``type-PCI``, ``type-PF`` (has virt_functions) or ``type-VF``.
    dev_type: str
    #: The PF's address for a VF.
    parent_addr: str | None
    mdev_types: tuple[MdevType, ...] = ()
    #: Addresses of the VFs a PF currently has enabled.
    vf_addresses: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class VirtualParentNode:
    """An mdev parent that is no PCI device: the kernel's sample ``mtty``.

    libvirt lists mdev types on such a device as a top-level capability
    (``mtty_mtty``, no ``pci`` capability); Nova's ``_is_virtual_mdev``
    names it by that node-device name.  pci_vgpu names it as the kernel
    does, by its entry in ``/sys/class/mdev_bus`` (``mtty``), read from the
    XML's ``<path>``; it has no PCI address, vendor or NUMA node.
    """

    dev_id: str
    #: The parent's kernel device name, as in /sys/class/mdev_bus/<name>.
    name: str
    mdev_types: tuple[MdevType, ...] = ()


@dataclasses.dataclass(frozen=True)
class MdevNode:
    """A mediated device node."""

    dev_id: str
    mdev_uuid: str
    mdev_type: str
    #: libvirt node-device name of the parent (resolved to an address later).
    parent_dev_id: str
    iommu_group: int | None


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _address(elem: etree._Element) -> str:
    """``<address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/>``."""
    values = [int(elem.get(key, "0"), 16)
              for key in ("domain", "bus", "slot", "function")]
    return "%04x:%02x:%02x.%1x" % tuple(values)


def _numa(cap: etree._Element) -> int | None:
    # libvirt omits <numa> when sysfs says -1: both mean "no affinity".
    elem = cap.find("numa")
    node = _int(elem.get("node")) if elem is not None else None
    return node if node is not None and node >= 0 else None


def _mdev_types(cap: etree._Element) -> tuple[MdevType, ...]:
    types = []
    for elem in cap.findall("capability[@type='mdev_types']/type"):
        types.append(MdevType(
            type_id=elem.get("id", ""),
            name=elem.findtext("name"),
            device_api=elem.findtext("deviceAPI") or "vfio-pci",
            available=_int(elem.findtext("availableInstances")) or 0,
        ))
    return tuple(types)


def _parse_pci(name: str, cap: etree._Element) -> PciNode:
    address = "%04x:%02x:%02x.%1x" % tuple(
        _int(cap.findtext(key)) or 0
        for key in ("domain", "bus", "slot", "function"))
    pf = cap.find("capability[@type='phys_function']/address")
    vfs_cap = cap.find("capability[@type='virt_functions']")
    if pf is not None:
        dev_type, parent = "type-VF", _address(pf)
    elif vfs_cap is not None:
        dev_type, parent = "type-PF", None
    else:
        dev_type, parent = "type-PCI", None
    vfs = tuple(_address(a) for a in vfs_cap.findall("address")) if vfs_cap is not None else ()
    group = cap.find("iommuGroup")
    return PciNode(
        dev_id=name, address=address,
        vendor_id="%04x" % (_int(cap.find("vendor").get("id"), 16) or 0),
        product_id="%04x" % (_int(cap.find("product").get("id"), 16) or 0),
        numa_node=_numa(cap),
        iommu_group=_int(group.get("number")) if group is not None else None,
        dev_type=dev_type, parent_addr=parent,
        mdev_types=_mdev_types(cap), vf_addresses=vfs,
    )


def _parse_mdev(name: str, parent: str, cap: etree._Element) -> MdevNode | None:
    type_elem = cap.find("type")
    mdev_uuid = cap.findtext("uuid")
    if type_elem is None or not mdev_uuid:
        return None
    group = cap.find("iommuGroup")
    return MdevNode(
        dev_id=name, mdev_uuid=mdev_uuid.strip().lower(),
        mdev_type=type_elem.get("id", ""), parent_dev_id=parent,
        iommu_group=_int(group.get("number")) if group is not None else None,
    )


def is_active(dev: ty.Any) -> bool:
    """Whether a node device is started; drivers that cannot tell (the test
    driver) only list started devices."""
    try:
        return bool(dev.isActive())
    except libvirt.libvirtError:
        return True


Node = ty.Union[PciNode, VirtualParentNode, MdevNode]


def parse(xml: str) -> Node | None:
    """Parse one node device's ``XMLDesc``; None for other device kinds."""
    root = etree.fromstring(xml.encode("utf-8"))
    name = root.findtext("name") or ""
    pci = root.find("capability[@type='pci']")
    if pci is not None:
        return _parse_pci(name, pci)
    mdev = root.find("capability[@type='mdev']")
    if mdev is not None:
        return _parse_mdev(name, root.findtext("parent") or "", mdev)
    # libvirt 9.0 nests the types of a non-PCI parent one level deeper:
    # <capability type='mdev_types'><capability type='mdev_types'><type>.
    outer = root.find("capability[@type='mdev_types']")
    if outer is not None:
        types = _mdev_types(outer) or _mdev_types(root)
        path = (root.findtext("path") or "").rstrip("/")
        return VirtualParentNode(dev_id=name, name=path.rpartition("/")[2] or name,
                                 mdev_types=types)
    return None
