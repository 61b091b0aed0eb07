"""Errors raised by virt drivers, one class per failed operation."""

from __future__ import annotations

from pci_vgpu import exception


class VirtDriverError(exception.PciVgpuException):
    msg_fmt = "Virt driver %(driver)s failed: %(reason)s"


class HypervisorUnavailable(VirtDriverError):
    msg_fmt = "Cannot reach the hypervisor at %(connection)s: %(reason)s"


class VgpuCreateFailed(VirtDriverError):
    msg_fmt = ("Could not create vGPU %(mdev_uuid)s of type %(vgpu_type)s on "
               "GPU %(parent_addr)s: %(reason)s")


class MdevUuidInUse(VgpuCreateFailed):
    """The kernel said EEXIST: an mdev with that UUID exists already."""


class MdevNoCapacity(VgpuCreateFailed):
    """The kernel said ENOSPC or EUSERS: the parent has no room for it."""


class MdevParentGone(VgpuCreateFailed):
    """The parent or its type vanished (driver unloaded, GPU unplugged)."""


class VgpuRemoveFailed(VirtDriverError):
    msg_fmt = "Could not remove vGPU %(mdev_uuid)s on GPU %(parent_addr)s: %(reason)s"


class MdevRemoveFailed(VgpuRemoveFailed):
    msg_fmt = ("Could not remove vGPU %(mdev_uuid)s of type %(vgpu_type)s on "
               "GPU %(parent_addr)s: %(reason)s")


class GuestSpawnFailed(VirtDriverError):
    msg_fmt = "Could not start guest %(guest)s: %(reason)s"


class DeviceAttachFailed(VirtDriverError):
    msg_fmt = "Could not attach %(device)s to guest %(guest)s: %(reason)s"


class DeviceDetachFailed(VirtDriverError):
    msg_fmt = "Could not detach %(device)s from guest %(guest)s: %(reason)s"


class HotPlugNotSupported(VirtDriverError):
    msg_fmt = "Driver %(driver)s cannot hot-plug %(device)s into guest %(guest)s: %(reason)s"


class InvalidVgpuName(VirtDriverError):
    msg_fmt = "Refusing %(kind)s %(value)r: %(reason)s"
