"""pci_vgpu's versioned objects (oslo.versionedobjects), Nova's PCI objects
extended for vGPUs.

Importing this package registers every object (``register_all``), after
which each class is also reachable as ``pci_vgpu.objects.<Name>``, as in
``nova.objects``.
"""

from __future__ import annotations

import importlib
import typing as ty

_MODULES = (
    "pci_vgpu.objects.pci_device",
    "pci_vgpu.objects.instance_pci_requests",
    "pci_vgpu.objects.pci_device_pool",
)

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.instance_pci_requests import InstancePCIRequest
    from pci_vgpu.objects.instance_pci_requests import InstancePCIRequests
    from pci_vgpu.objects.pci_device import PciDevice
    from pci_vgpu.objects.pci_device import PciDeviceList
    from pci_vgpu.objects.pci_device_pool import PciDevicePool
    from pci_vgpu.objects.pci_device_pool import PciDevicePoolList


def register_all() -> None:
    """Import every object module; registration happens on import."""
    for name in _MODULES:
        importlib.import_module(name)


register_all()

__all__ = (
    "InstancePCIRequest", "InstancePCIRequests", "PciDevice",
    "PciDeviceList", "PciDevicePool", "PciDevicePoolList", "register_all",
)
