"""mdev parents as sysfs shows them, PCI GPUs and virtual devices alike.

Every device that can host mdevs registers under ``/sys/class/mdev_bus``:
a GPU by its PCI address, a virtual parent such as the kernel's ``mtty``,
``mdpy`` and ``mbochs`` samples by its device name.  Only a parent whose
``subsystem`` is ``pci`` has a PCI address and a NUMA node; the others are
reported with None for both rather than an invented value::

    /sys/class/mdev_bus/0000:41:00.0 -> ../../devices/pci0000:40/.../0000:41:00.0
    /sys/class/mdev_bus/mtty         -> ../../devices/virtual/mtty/mtty
        subsystem -> ../../../../class/mtty      (pci for a GPU)
        numa_node                                 (PCI only)
        mdev_supported_types/<type>/{name,description,device_api,
                                     available_instances,devices/<uuid>}

:func:`gpu_state` turns a parent into the capacity model the pools use
(:mod:`pci_vgpu.capacity`), so a real kernel's ``available_instances`` can
be checked against the project's prediction.
"""

from __future__ import annotations

import dataclasses
import os
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import sysfs as sysfs_mod
from pci_vgpu import vgpu_sizes

PCI = "pci"

#: Sharing rule of the parents that have no PCI vendor, by subsystem.  The
#: kernel's samples all share one budget among their types: mbochs video
#: memory (``count`` MB), mdpy one instance count per parent (``count``),
#: mtty 24 serial ports.
SUBSYSTEM_SHARING: dict[str, str] = {
    "mbochs": capacity.BUDGET,
    "mdpy": capacity.BUDGET,
    "mtty": capacity.BUDGET,
}


@dataclasses.dataclass(frozen=True)
class MdevType:
    """One ``mdev_supported_types/<type_id>`` directory."""

    type_id: str
    #: The ``name`` file; None where the driver has none (GVT-g).
    name: str | None
    description: str
    device_api: str
    available: int


@dataclasses.dataclass(frozen=True)
class MdevParent:
    """One registered mdev parent and the mdevs it hosts now."""

    #: The name under /sys/class/mdev_bus (PCI address or device name).
    name: str
    #: Basename of the ``subsystem`` link: ``pci``, or e.g. ``mtty``.
    subsystem: str
    #: The PCI address; None for a parent that is not a PCI device.
    pci_address: str | None
    #: The NUMA node; None off PCI or where the kernel says -1.
    numa_node: int | None
    types: dict[str, MdevType]
    #: mdev UUID -> type id, of the mdevs on this parent.
    mdevs: dict[str, str]

    def existing(self) -> dict[str, int]:
        """Type id -> mdevs of that type on the parent."""
        counts = {t: 0 for t in self.types}
        for type_id in self.mdevs.values():
            counts[type_id] = counts.get(type_id, 0) + 1
        return counts


def _read_type(root: sysfs_mod.SysfsRoot, parent: str, type_id: str) -> MdevType | None:
    def attr(name: str) -> str | None:
        return root.read(root.mdev_parent(parent, "mdev_supported_types", type_id, name))

    available = root.read_int(root.mdev_parent(
        parent, "mdev_supported_types", type_id, "available_instances"))
    if available is None:  # the type vanished while being read
        return None
    return MdevType(type_id=type_id, name=attr("name"), description=attr("description") or "",
                    device_api=attr("device_api") or "", available=available)


def _read_mdevs(root: sysfs_mod.SysfsRoot, parent: str,
                type_ids: ty.Iterable[str]) -> dict[str, str]:
    found = {}
    for type_id in type_ids:
        devices = root.mdev_parent(parent, "mdev_supported_types", type_id, "devices")
        for mdev_uuid in root.listdir(devices):
            found[mdev_uuid.lower()] = type_id
    return found


def read_parent(root: sysfs_mod.SysfsRoot, name: str) -> MdevParent | None:
    """The parent ``name`` now; None when it is not (or no longer) there.

    :raises: SysfsPathInvalid for a name with ``/`` or ``..``;
        SysfsReadFailed for an I/O error other than a vanished file.
    """
    if not root.exists(root.mdev_parent(name)):
        return None
    subsystem = root.link_name(root.mdev_parent(name, "subsystem")) or ""
    is_pci = subsystem == PCI
    numa = root.read_int(root.mdev_parent(name, "numa_node")) if is_pci else None
    types = {}
    for type_id in root.listdir(root.mdev_parent(name, "mdev_supported_types")):
        entry = _read_type(root, name, type_id)
        if entry is not None:
            types[type_id] = entry
    return MdevParent(
        name=name, subsystem=subsystem,
        pci_address=os.path.basename(os.path.realpath(root.mdev_parent(name))) if is_pci
        else None,
        numa_node=numa if numa is not None and numa >= 0 else None,
        types=types, mdevs=_read_mdevs(root, name, types))


def read_all(root: sysfs_mod.SysfsRoot) -> list[MdevParent]:
    """Every registered mdev parent, sorted by name; vanished ones skipped."""
    parents = (read_parent(root, name) for name in root.mdev_parents())
    return [p for p in parents if p is not None]


def sharing_of(parent: MdevParent) -> str | None:
    """The parent's sharing rule when its subsystem says it; else None
    (a PCI GPU's rule is its vendor's, see ``virt.libvirt.sharing``)."""
    return SUBSYSTEM_SHARING.get(parent.subsystem)


def vgpu_types(parent: MdevParent) -> dict[str, dict[str, ty.Any]]:
    """The contract's ``vgpu_types`` entries of an *empty* parent.

    ``max`` is what the driver says is available now plus what exists, exact
    on an empty parent (a budget driver lowers every type's count as any
    type fills it, so a busy parent's max is remembered, not re-read).
    """
    existing = parent.existing()
    return {t.type_id: {"name": t.name or t.type_id, "description": t.description,
                        "device_api": t.device_api, "available": t.available,
                        "max": t.available + existing.get(t.type_id, 0)}
            for t in parent.types.values()}


def gpu_state(parent: MdevParent, sharing: str) -> capacity.GpuState:
    """The capacity model of ``parent``, built the way the pools build it
    (sizes from the type descriptions where the driver writes them, else
    the 1/max rule), with the parent's mdevs counted as existing.

    :raises: InvalidVgpuMaxInstances for a type with nothing available on
        the parent as read (read it empty), InvalidVgpuSize.
    """
    types = vgpu_types(parent)
    state = capacity.new_gpu_state(
        parent.name, sharing, {t: e["max"] for t, e in types.items()},
        sizes=vgpu_sizes.sizes_of(types))
    state.existing.update(parent.existing())
    return state
