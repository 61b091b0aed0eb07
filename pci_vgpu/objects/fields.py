"""Enums and field types of the PCI objects, named and ordered as Nova's.

The order of ``ALL`` matters: it is part of each object's fingerprint, and
keeping Nova's order lets the unchanged objects (``InstancePCIRequest``,
``PciDevicePool``) hash exactly as Nova's do.
"""

from __future__ import annotations

import typing as ty

from oslo_versionedobjects import fields

# Re-exported so object modules import every field from one place, as Nova's.
BooleanField = fields.BooleanField
DateTimeField = fields.DateTimeField
DictOfNullableStringsField = fields.DictOfNullableStringsField
DictOfStringsField = fields.DictOfStringsField
IntegerField = fields.IntegerField
ListOfDictOfNullableStringsField = fields.ListOfDictOfNullableStringsField
ListOfObjectsField = fields.ListOfObjectsField
ObjectField = fields.ObjectField
StringField = fields.StringField
UUIDField = fields.UUIDField


class PciDeviceStatus(fields.Enum):
    """Life of a device record, Nova's values."""

    AVAILABLE = "available"
    CLAIMED = "claimed"
    ALLOCATED = "allocated"
    #: Gone from the hypervisor, row not yet deleted.
    REMOVED = "removed"
    DELETED = "deleted"
    #: A relative (PF/VF, GPU/vGPU) is claimed: cannot be claimed now.
    UNCLAIMABLE = "unclaimable"
    #: A relative is allocated: cannot be used now.
    UNAVAILABLE = "unavailable"

    ALL = (AVAILABLE, CLAIMED, ALLOCATED, REMOVED, DELETED, UNAVAILABLE,
           UNCLAIMABLE)

    def __init__(self) -> None:
        super().__init__(valid_values=PciDeviceStatus.ALL)


class PciDeviceType(fields.Enum):
    """Kind of device; every value fits Nova's ``dev_type`` String(8)."""

    STANDARD = "type-PCI"
    SRIOV_PF = "type-PF"
    SRIOV_VF = "type-VF"
    VDPA = "vdpa"
    #: A mediated device (vGPU) without a PCI address of its own.
    MDEV = "mdev"

    ALL = (STANDARD, SRIOV_PF, SRIOV_VF, VDPA, MDEV)

    def __init__(self) -> None:
        super().__init__(valid_values=PciDeviceType.ALL)


class PCINUMAAffinityPolicy(fields.Enum):
    """How strictly a request's devices must share the guest's NUMA node."""

    REQUIRED = "required"
    LEGACY = "legacy"
    PREFERRED = "preferred"
    SOCKET = "socket"

    ALL = (REQUIRED, LEGACY, PREFERRED, SOCKET)

    def __init__(self) -> None:
        super().__init__(valid_values=PCINUMAAffinityPolicy.ALL)


class VgpuBackend:
    """How a vGPU is realised (``extra_info['vgpu_backend']``)."""

    MDEV = "mdev"
    NVIDIA_VF = "nvidia-vf"
    XENAPI = "xenapi"

    ALL: ty.ClassVar[tuple[str, ...]] = (MDEV, NVIDIA_VF, XENAPI)


class VgpuSharing:
    """How vGPU types share a GPU (``extra_info['vgpu_sharing']``)."""

    #: Time-sliced: one type at a time on a GPU.
    ONE_TYPE = "one-type"
    #: Types mix; each instance of type T uses 1/max(T) of the GPU.
    BUDGET = "budget"

    ALL: ty.ClassVar[tuple[str, ...]] = (ONE_TYPE, BUDGET)


class PciDeviceStatusField(fields.BaseEnumField):
    AUTO_TYPE = PciDeviceStatus()


class PciDeviceTypeField(fields.BaseEnumField):
    AUTO_TYPE = PciDeviceType()


class PCINUMAAffinityPolicyField(fields.BaseEnumField):
    AUTO_TYPE = PCINUMAAffinityPolicy()
