"""SR-IOV physical and virtual functions through sysfs, and vfio-pci binding.

What a host shows of an SR-IOV device (a GPU with VFs such as AMD MxGPU, or
any PF), read through a :class:`~pci_vgpu.sysfs.SysfsRoot`::

    /sys/bus/pci/devices/0000:01:00.0/       the PF
        sriov_totalvfs  sriov_numvfs  virtfn0 -> ../0000:01:00.1  ...
    /sys/bus/pci/devices/0000:01:00.1/       a VF
        physfn -> ../0000:01:00.0   iommu_group -> .../iommu_groups/7
        driver -> .../drivers/nvme  driver_override

:func:`device_dict` gives the contract's PCI keys (``doc/contract.rst``) for
``[pci] device_spec`` matching.  :func:`bind_vfio` and :func:`release` do
what libvirt's ``managed='yes'`` does for a hostdev: move the function to
vfio-pci before a guest gets it and give it back to its driver afterwards.
Every kernel refusal becomes a typed error naming the function.
"""

from __future__ import annotations

import errno
import os
import typing as ty

from pci_vgpu import exception
from pci_vgpu import sysfs as sysfs_mod

VFIO_PCI = "vfio-pci"
TYPE_PF = "type-PF"
TYPE_VF = "type-VF"
TYPE_PCI = "type-PCI"


class SriovError(exception.PciVgpuException):
    msg_fmt = "SR-IOV operation on %(address)s failed: %(reason)s"


class VfsBusy(SriovError):
    msg_fmt = ("Cannot set %(value)d VFs on PF %(address)s: it has %(current)d "
               "enabled (EBUSY); set sriov_numvfs to 0 first")


class VfCountOutOfRange(SriovError):
    msg_fmt = ("Cannot set %(value)d VFs on PF %(address)s: allowed 0 to "
               "%(total)d (ERANGE)")


class NotAPhysicalFunction(SriovError):
    msg_fmt = "%(address)s is not an SR-IOV physical function (no sriov_totalvfs)"


class VfioBindFailed(SriovError):
    msg_fmt = ("Cannot bind %(address)s to vfio-pci (it was on %(driver)s): "
               "%(reason)s")


class VfioReleaseFailed(SriovError):
    msg_fmt = "Cannot give %(address)s back from vfio-pci: %(reason)s"


def _link_id(root: sysfs_mod.SysfsRoot, address: str, name: str) -> str | None:
    return root.link_name(root.pci_device(address, name))


def driver_of(root: sysfs_mod.SysfsRoot, address: str) -> str | None:
    """The driver the function is bound to now, or None."""
    return _link_id(root, address, "driver")


def virtual_functions(root: sysfs_mod.SysfsRoot, pf: str) -> list[str]:
    """Addresses of the PF's enabled VFs, in VF index order."""
    links = [e for e in root.listdir(root.pci_device(pf)) if e.startswith("virtfn")]
    links.sort(key=lambda e: int(e[len("virtfn"):]))
    return [ty.cast(str, _link_id(root, pf, e)) for e in links]


def device_dict(root: sysfs_mod.SysfsRoot, address: str) -> dict[str, ty.Any]:
    """The contract's PCI keys of one function, as sysfs shows them.

    :raises: SriovError when the function does not exist.
    """
    vendor = root.read(root.pci_device(address, "vendor"))
    product = root.read(root.pci_device(address, "device"))
    if vendor is None or product is None:
        raise SriovError(address=address, reason="no such PCI function")
    parent = _link_id(root, address, "physfn")
    if parent is not None:
        dev_type = TYPE_VF
    elif root.exists(root.pci_device(address, "sriov_totalvfs")):
        dev_type = TYPE_PF
    else:
        dev_type = TYPE_PCI
    numa = root.read_int(root.pci_device(address, "numa_node"))
    group = _link_id(root, address, "iommu_group")
    return {"address": address, "vendor_id": vendor.removeprefix("0x"),
            "product_id": product.removeprefix("0x"), "dev_type": dev_type,
            "parent_addr": parent, "numa_node": numa if numa is not None and numa >= 0
            else None, "iommu_group": int(group) if group is not None else None}


def set_num_vfs(root: sysfs_mod.SysfsRoot, pf: str, count: int) -> list[str]:
    """Enable ``count`` VFs on ``pf`` (0 disables them); return their addresses.

    :raises: NotAPhysicalFunction, VfsBusy (VFs enabled already: the kernel
        only goes from or to 0), VfCountOutOfRange (above sriov_totalvfs),
        SriovError for any other refusal.
    """
    total = root.read_int(root.pci_device(pf, "sriov_totalvfs"))
    if total is None:
        raise NotAPhysicalFunction(address=pf)
    try:
        root.write(root.pci_device(pf, "sriov_numvfs"), str(count))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            current = root.read_int(root.pci_device(pf, "sriov_numvfs")) or 0
            raise VfsBusy(address=pf, value=count, current=current)
        if exc.errno == errno.ERANGE:
            raise VfCountOutOfRange(address=pf, value=count, total=total)
        raise SriovError(address=pf, reason="writing %d to sriov_numvfs: %s"
                         % (count, exc.strerror or exc))
    return virtual_functions(root, pf)


def _unbind(root: sysfs_mod.SysfsRoot, address: str, driver: str) -> None:
    try:
        root.write(root.path("bus", "pci", "drivers", driver, "unbind"), address)
    except OSError as exc:
        # ENODEV: the driver let go of it meanwhile (an asynchronous probe
        # that failed); the function is unbound either way.
        if exc.errno != errno.ENODEV or driver_of(root, address) == driver:
            raise


def _probe(root: sysfs_mod.SysfsRoot, address: str, override: str) -> None:
    root.write(root.pci_device(address, "driver_override"), override)
    root.write(root.path("bus", "pci", "drivers_probe"), address)


def bind_vfio(root: sysfs_mod.SysfsRoot, address: str) -> str | None:
    """Move the function to vfio-pci (``managed``); return its old driver.

    ``driver_override`` first, so that its own driver cannot take it back
    between the unbind and the probe.  On failure the function is handed
    back to the driver it had, and the error says what happened.

    :raises: VfioBindFailed (no IOMMU group, vfio-pci refused, ...).
    """
    previous = driver_of(root, address)
    if previous == VFIO_PCI:
        return previous
    if _link_id(root, address, "iommu_group") is None:
        raise VfioBindFailed(address=address, driver=previous or "no driver",
                             reason="it has no IOMMU group (no IOMMU, or it is off)")
    try:
        root.write(root.pci_device(address, "driver_override"), VFIO_PCI)
        if previous is not None:
            _unbind(root, address, previous)
        root.write(root.path("bus", "pci", "drivers_probe"), address)
    except OSError as exc:
        _undo_bind(root, address)
        raise VfioBindFailed(address=address, driver=previous or "no driver",
                             reason=exc.strerror or str(exc))
    if driver_of(root, address) != VFIO_PCI:
        _undo_bind(root, address)
        raise VfioBindFailed(address=address, driver=previous or "no driver",
                             reason="vfio-pci did not take it (see dmesg)")
    return previous


def _undo_bind(root: sysfs_mod.SysfsRoot, address: str) -> None:
    try:
        current = driver_of(root, address)
        if current == VFIO_PCI:
            _unbind(root, address, VFIO_PCI)
        _probe(root, address, "\n")
    except OSError:  # the bind error is the one to report
        pass


def release(root: sysfs_mod.SysfsRoot, address: str) -> str | None:
    """Give the function back from vfio-pci to the driver the kernel picks
    for it (its own); return that driver, or None if none takes it.

    :raises: VfioReleaseFailed.
    """
    try:
        if driver_of(root, address) == VFIO_PCI:
            _unbind(root, address, VFIO_PCI)
        _probe(root, address, "\n")
    except OSError as exc:
        raise VfioReleaseFailed(address=address, reason=exc.strerror or str(exc))
    return driver_of(root, address)
