"""Exceptions of the pools and capacity rules (``capacity``, ``pool*``, ``stats``).

They live beside the pools rather than in :mod:`pci_vgpu.exception` so that
the pure capacity rules can be imported by Nova's own ``PciDeviceStats``
without pulling the rest of pci_vgpu's exception families; every class still
derives from :class:`pci_vgpu.exception.PciVgpuException` and names the
offending value and what is allowed.
"""

from __future__ import annotations

from pci_vgpu import exception


class PoolError(exception.PciVgpuException):
    """Base of the pool family."""

    msg_fmt = "PCI device pool error: %(reason)s"


class InvalidVgpuSharing(PoolError, exception.Invalid):
    msg_fmt = ("GPU %(address)s reports vgpu_sharing %(value)r; allowed: "
               "%(allowed)s")


class InvalidVgpuMaxInstances(PoolError, exception.Invalid):
    msg_fmt = ("GPU %(address)s reports max %(value)r instances of vGPU type "
               "%(vgpu_type)s; allowed: an integer >= 1")


class InvalidVgpuSize(PoolError, exception.Invalid):
    msg_fmt = ("GPU %(address)s reports size %(value)r for vGPU type "
               "%(vgpu_type)s: %(reason)s")


class InvalidVgpuTypes(PoolError, exception.Invalid):
    msg_fmt = ("GPU %(address)s reports vgpu_types %(value)r: %(reason)s; "
               "expected a JSON object {type_id: {\"max\": int, ...}}")


class InvalidPlacementPolicy(PoolError, exception.Invalid):
    msg_fmt = ("vGPU placement policy %(value)r is not known; allowed: "
               "%(allowed)s")


class InvalidPoolTag(PoolError, exception.Invalid):
    msg_fmt = ("PCI device pool %(pool)s has tag %(tag)s=%(value)r: "
               "%(reason)s")


class VgpuTypeNotSupported(PoolError):
    msg_fmt = ("vGPU type %(vgpu_type)s is not supported by GPU "
               "%(address)s; supported: %(supported)s")


class VgpuCapacityExceeded(PoolError):
    msg_fmt = ("GPU %(address)s has no free instance of vGPU type "
               "%(vgpu_type)s (%(reason)s)")


class VgpuReleaseUnderflow(PoolError):
    msg_fmt = ("GPU %(address)s has no vGPU of type %(vgpu_type)s in use to "
               "release")


class PciDeviceRequestFailed(PoolError):
    """Nova's name: the host cannot satisfy the PCI requests."""

    msg_fmt = "PCI device request %(requests)s failed: %(reason)s"


class PciDevicePoolEmpty(PoolError):
    """Nova's name: a device to remove is in no pool."""

    msg_fmt = ("Attempt to remove device %(device)s from the PCI device "
               "pools, but it is not tracked by them")


class InvalidPciRequest(PoolError, exception.Invalid):
    msg_fmt = ("Invalid PCI request %(request_id)s: %(field)s=%(value)r; "
               "%(reason)s")
