"""NVIDIA vendor-specific VFIO: vGPU types on SR-IOV VFs, without mdevs.

On Ada/Hopper/Blackwell (and Ampere on recent kernels) each enabled VF has
``<sysfs>/bus/pci/devices/<VF>/nvidia/`` with:

* ``creatable_vgpu_types``: a header line then ``<id> : <name>`` lines, the
  types this VF can take *now* (the list shrinks as the GPU fills up);
* ``current_vgpu_type``: ``0`` when untyped; writing an id types the VF,
  writing ``0`` releases it (the kernel answers EPERM while a guest uses it).

The typed VF is then given to the guest as a plain PCI hostdev with
``managed='no'``.

Type ids are reported as ``nvidia-<id>`` (``nvidia-1155``): the legacy mdev
model names the same NVIDIA vGPU types ``nvidia-<id>`` too, so one alias
serves both host models.  Only the sysfs write uses the bare number.  Types reset to 0 at every host reboot;
:meth:`LibvirtDriver.init_host` re-applies the types of allocated VFs.
"""

from __future__ import annotations

import dataclasses
import errno

from pci_vgpu import sysfs as sysfs_mod
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import names

BACKEND = "nvidia-vf"


PREFIX = "nvidia-"


def type_key(number: str) -> str:
    """``"1155"`` -> ``"nvidia-1155"``, the type id pci_vgpu reports."""
    return PREFIX + number


def type_number(vgpu_type: str) -> str:
    """``"nvidia-1155"`` (or ``"1155"``) -> ``"1155"``, validated.

    :raises: InvalidVgpuName unless it is a positive decimal id.
    """
    return names.vf_type_id(vgpu_type.removeprefix(PREFIX)
                            if isinstance(vgpu_type, str) else vgpu_type)


@dataclasses.dataclass(frozen=True)
class VfState:
    """What sysfs says about one vendor-VFIO VF."""

    address: str
    #: type key (``nvidia-<id>``) -> name, from creatable_vgpu_types.
    creatable: dict[str, str]
    #: The current type key, None when untyped (0).
    current: str | None


def parse_creatable(text: str) -> dict[str, str]:
    """Parse ``creatable_vgpu_types``; header and junk lines are skipped."""
    types: dict[str, str] = {}
    for line in text.splitlines():
        type_id, sep, name = line.partition(":")
        type_id = type_id.strip()
        if sep and type_id.isdigit() and int(type_id) > 0:
            types[type_key(type_id)] = name.strip()
    return types


def read_vf(root: sysfs_mod.SysfsRoot, address: str) -> VfState | None:
    """Return the VF's state; None if it is not an NVIDIA vendor-VFIO VF."""
    current = root.read(root.pci_device(address, "nvidia", "current_vgpu_type"))
    if current is None:
        return None
    creatable = root.read(root.pci_device(address, "nvidia", "creatable_vgpu_types"))
    current = current.strip()
    return VfState(address=address, creatable=parse_creatable(creatable or ""),
                   current=None if current in ("", "0") else type_key(current))


def set_type(root: sysfs_mod.SysfsRoot, address: str, vgpu_type: str) -> None:
    """Type the VF ``address`` with ``vgpu_type`` (idempotent).

    :raises: VgpuCreateFailed if the VF cannot take the type now;
        InvalidVgpuName for a malformed type or address.
    """
    names.pci_address(address)
    number = type_number(vgpu_type)
    type_id = type_key(number)
    state = read_vf(root, address)
    if state is not None and state.current == type_id:
        return
    if state is None or state.current is not None or type_id not in state.creatable:
        allowed = ", ".join(sorted(state.creatable)) if state else "none"
        raise exception.VgpuCreateFailed(
            mdev_uuid=address, vgpu_type=type_id, parent_addr=address,
            reason="the VF is %s; creatable types now: %s" % (
                "not an NVIDIA vendor-VFIO VF" if state is None else
                "typed %s" % state.current if state.current else "untyped",
                allowed))
    try:
        root.write(root.pci_device(address, "nvidia", "current_vgpu_type"), number)
    except OSError as exc:
        raise exception.VgpuCreateFailed(
            mdev_uuid=address, vgpu_type=type_id, parent_addr=address,
            reason="writing current_vgpu_type failed: %s" % (exc.strerror or exc))


def release(root: sysfs_mod.SysfsRoot, address: str) -> None:
    """Write 0 to the VF's current_vgpu_type; untyped already is fine.

    :raises: VgpuRemoveFailed (EPERM while a guest still uses the VF).
    """
    names.pci_address(address)
    state = read_vf(root, address)
    if state is None or state.current is None:
        return
    try:
        root.write(root.pci_device(address, "nvidia", "current_vgpu_type"), "0")
    except OSError as exc:
        reason = ("the VF is still in use by a guest" if exc.errno == errno.EPERM
                  else exc.strerror or str(exc))
        raise exception.VgpuRemoveFailed(mdev_uuid=address, parent_addr=address,
                                         reason=reason)


def vgpu_fields(state: VfState, type_names: dict[str, str]) -> dict[str, object]:
    """The contract's vGPU keys for a VF dict.

    A VF hosts one vGPU: every type it can take (or holds) has max 1;
    ``available`` is 1 for a creatable type on an untyped VF and for the
    VF's own type (a typed VF is reusable for its type; whether a guest
    holds it is the tracker's knowledge, not sysfs').
    """
    types: dict[str, dict[str, object]] = {}
    offered = dict(state.creatable)
    if state.current is not None:
        offered = {state.current: type_names.get(state.current, state.current)}
    for type_id, name in sorted(offered.items()):
        types[type_id] = {"name": name or type_id, "description": "",
                          "device_api": "vfio-pci", "available": 1, "max": 1,
                          "identifier": None}
    return {"vgpu_types": types, "vgpu_sharing": "one-type",
            "vgpu_backend": BACKEND, "vgpu_current_type": state.current}
