"""Parent/child rules of the device state machine (claim/allocate/free/remove).

Nova links SR-IOV VFs to their PF and forbids giving a PF whole while one of
its VFs is used, and the other way round.  pci_vgpu applies the same rule to
every parent/child link, which adds GPU -> mdev (vGPU):

* using a device (claim or allocate) requires that no *descendant* is in use
  (CLAIMED/ALLOCATED) and no *ancestor* is in use; descendants then become
  UNCLAIMABLE (claim) or UNAVAILABLE (allocate), and ancestors stop being
  AVAILABLE (claim: UNCLAIMABLE; allocate: UNAVAILABLE).  So a GPU given whole
  hides its vGPUs, and a GPU with one vGPU in use cannot be given whole while
  its other vGPUs stay claimable;
* freeing a device makes its descendants AVAILABLE again and walks up: each
  ancestor whose live children are all AVAILABLE becomes AVAILABLE;
* removing a device that is in use, or whose descendants are in use, is
  refused: the record must outlive its user.

REMOVED/DELETED children are ignored: an mdev destroyed on the host must not
pin its GPU.  How many vGPUs fit on a GPU is not decided here
(``pci_vgpu.capacity`` does it); this module only enforces status, ownership
and exclusivity.
"""

from __future__ import annotations

import copy
import typing as ty

from pci_vgpu import exception
from pci_vgpu.objects import fields

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice

Status = fields.PciDeviceStatus
DevType = fields.PciDeviceType

IN_USE = (Status.CLAIMED, Status.ALLOCATED)
GONE = (Status.REMOVED, Status.DELETED)
#: Statuses a parent may have when one of its children is used (Nova's).
PARENT_OK = (Status.AVAILABLE, Status.UNCLAIMABLE, Status.UNAVAILABLE)
_VF_TYPES = (DevType.SRIOV_VF, DevType.VDPA)


# -- tree ---------------------------------------------------------------------


def build_device_tree(devices: ty.Iterable[PciDevice]) -> None:
    """Link VFs/VDPAs to their PF and mdevs to their GPU, by ``parent_addr``.

    Replaces any previous links of these devices.  A VF links only to a
    type-PF device (Nova's rule); an mdev links to whichever device has its
    parent address (a GPU may be a type-PCI, type-PF or type-VF device).
    """
    devs = [d for d in devices if d.status not in GONE]
    for dev in devs:
        dev.parent_device = None
        dev.child_devices = []
    by_address = {d.address: d for d in devs
                  if d.address and d.dev_type != DevType.MDEV}
    for dev in devs:
        parent = by_address.get(dev.parent_addr) if dev.parent_addr else None
        if parent is not None and _may_link(parent, dev):
            link(parent, dev)


def _may_link(parent: PciDevice, child: PciDevice) -> bool:
    if child.dev_type == DevType.MDEV:
        return True
    return child.dev_type in _VF_TYPES and parent.dev_type == DevType.SRIOV_PF


def link(parent: PciDevice, child: PciDevice) -> None:
    """Make ``child`` a child of ``parent`` (e.g. a new mdev of a GPU)."""
    child.parent_device = parent
    if not any(c is child for c in parent.child_devices):
        parent.child_devices.append(child)


def live_children(dev: PciDevice) -> list[PciDevice]:
    return [c for c in dev.child_devices if c.status not in GONE]


def descendants(dev: PciDevice) -> list[PciDevice]:
    """Live children, grandchildren, ... (PF -> VF -> mdev on the VF)."""
    result: list[PciDevice] = []
    for child in live_children(dev):
        result.append(child)
        result.extend(descendants(child))
    return result


def ancestors(dev: PciDevice) -> list[PciDevice]:
    result: list[PciDevice] = []
    parent = dev.parent_device
    while parent is not None:
        result.append(parent)
        parent = parent.parent_device
    return result


# -- checks -------------------------------------------------------------------


def _node(dev: PciDevice) -> ty.Any:
    return dev.compute_node_id if dev.obj_attr_is_set("compute_node_id") \
        else None


def _words(statuses: ty.Iterable[str]) -> str:
    return " or ".join(statuses)


def _require_status(dev: PciDevice, allowed: tuple[str, ...]) -> None:
    if dev.status not in allowed:
        raise exception.PciDeviceInvalidStatus(
            device=dev.ident, compute_node_id=_node(dev), status=dev.status,
            hopestatus=_words(allowed))


def _require_descendants_free(dev: PciDevice) -> None:
    busy = [d for d in descendants(dev) if d.status in IN_USE]
    if not busy:
        return
    names = ", ".join("%s (%s)" % (d.ident, d.status) for d in busy)
    if any(d.dev_type == DevType.MDEV for d in busy):
        raise exception.PciDeviceVgpusInUse(
            device=dev.ident, compute_node_id=_node(dev), busy=names)
    raise exception.PciDeviceVFInvalidStatus(
        device=dev.ident, compute_node_id=_node(dev), busy=names)


def _require_ancestors_free(dev: PciDevice) -> None:
    for parent in ancestors(dev):
        if parent.status in PARENT_OK:
            continue
        cls = (exception.PciDeviceGpuInUse if dev.dev_type == DevType.MDEV
               else exception.PciDevicePFInvalidStatus)
        raise cls(device=dev.ident, compute_node_id=_node(dev),
                  parent=parent.ident, status=parent.status,
                  hopestatus=_words(PARENT_OK))


def _instance_uuid(instance: ty.Any) -> str:
    if isinstance(instance, str):
        return instance
    if isinstance(instance, dict):
        return str(instance["uuid"])
    return str(instance.uuid)


def _require_owner(dev: PciDevice, instance: ty.Any) -> None:
    owner = _instance_uuid(instance)
    if dev.instance_uuid != owner:
        raise exception.PciDeviceInvalidOwner(
            device=dev.ident, compute_node_id=_node(dev),
            owner=dev.instance_uuid, hopeowner=owner)


# -- transitions --------------------------------------------------------------


def claim(dev: PciDevice, instance_uuid: str) -> None:
    """AVAILABLE -> CLAIMED; see the module docstring for relatives."""
    _require_descendants_free(dev)
    _require_status(dev, (Status.AVAILABLE,))
    _require_ancestors_free(dev)
    for child in descendants(dev):
        child.status = Status.UNCLAIMABLE
    for parent in ancestors(dev):
        if parent.status == Status.AVAILABLE:
            parent.status = Status.UNCLAIMABLE
    dev.status = Status.CLAIMED
    dev.instance_uuid = instance_uuid


def allocate(dev: PciDevice, instance: ty.Any) -> None:
    """AVAILABLE/CLAIMED (same owner) -> ALLOCATED."""
    _require_descendants_free(dev)
    _require_status(dev, (Status.AVAILABLE, Status.CLAIMED))
    if dev.status == Status.CLAIMED:
        _require_owner(dev, instance)
    _require_ancestors_free(dev)
    for child in descendants(dev):
        child.status = Status.UNAVAILABLE
    for parent in ancestors(dev):
        parent.status = Status.UNAVAILABLE
    dev.status = Status.ALLOCATED
    dev.instance_uuid = _instance_uuid(instance)
    _add_to_instance(instance, dev)


def free(dev: PciDevice, instance: ty.Any = None) -> list[PciDevice]:
    """CLAIMED/ALLOCATED -> AVAILABLE; returns every device made AVAILABLE."""
    _require_status(dev, IN_USE)
    if instance is not None:
        _require_owner(dev, instance)
    freed: list[PciDevice] = []
    for child in descendants(dev):
        if child.status in (Status.UNCLAIMABLE, Status.UNAVAILABLE):
            child.status = Status.AVAILABLE
            freed.append(child)
    old_status = dev.status
    dev.status = Status.AVAILABLE
    dev.instance_uuid = None
    dev.request_id = None
    freed.extend(_release_ancestors(dev))
    freed.append(dev)
    if old_status == Status.ALLOCATED and instance is not None:
        _remove_from_instance(instance, dev)
    return freed


def _release_ancestors(dev: PciDevice) -> list[PciDevice]:
    released: list[PciDevice] = []
    parent = dev.parent_device
    while (parent is not None
           and parent.status in (Status.UNCLAIMABLE, Status.UNAVAILABLE)
           and all(c.is_available() for c in live_children(parent))):
        parent.status = Status.AVAILABLE
        released.append(parent)
        parent = parent.parent_device
    return released


def remove(dev: PciDevice) -> None:
    """AVAILABLE/UNCLAIMABLE/UNAVAILABLE -> REMOVED, refused while in use."""
    if dev.status in IN_USE:
        raise exception.PciDeviceRemoveInUse(
            device=dev.ident, compute_node_id=_node(dev), status=dev.status,
            instance_uuid=dev.instance_uuid)
    _require_status(dev, PARENT_OK)
    if dev.instance_uuid is not None:
        raise exception.PciDeviceInvalidOwner(
            device=dev.ident, compute_node_id=_node(dev),
            owner=dev.instance_uuid, hopeowner=None)
    busy = [d for d in descendants(dev) if d.status in IN_USE]
    if busy:
        raise exception.PciDeviceRemoveChildrenInUse(
            device=dev.ident, compute_node_id=_node(dev),
            busy=", ".join("%s (%s)" % (d.ident, d.status) for d in busy))
    dev.status = Status.REMOVED
    dev.instance_uuid = None
    dev.request_id = None


# -- instance bookkeeping (Nova appends a copy to instance.pci_devices) -------


def _device_list(instance: ty.Any) -> list[ty.Any] | None:
    if isinstance(instance, str):
        return None
    if isinstance(instance, dict):
        return ty.cast(list[ty.Any], instance.setdefault("pci_devices", []))
    devices = getattr(instance, "pci_devices", None)
    if devices is None:
        return None
    return ty.cast(list[ty.Any], getattr(devices, "objects", devices))


def _add_to_instance(instance: ty.Any, dev: PciDevice) -> None:
    devices = _device_list(instance)
    if devices is not None:
        devices.append(copy.copy(dev))


def _same_record(a: PciDevice, b: PciDevice) -> bool:
    for key in ("uuid", "id"):
        if a.obj_attr_is_set(key) and b.obj_attr_is_set(key):
            return bool(getattr(a, key) == getattr(b, key))
    return a is b


def _remove_from_instance(instance: ty.Any, dev: PciDevice) -> None:
    devices = _device_list(instance)
    if not devices:
        return
    for index, existing in enumerate(devices):
        if _same_record(existing, dev):
            del devices[index]
            return
