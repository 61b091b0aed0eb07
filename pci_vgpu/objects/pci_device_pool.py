"""``PciDevicePool(List)``: the summary of a compute node's free devices.

Nova's objects unchanged: only vendor, product, NUMA node and count are
fields; every other pool key (dev_type, parent address, devspec tags and, for
vGPU pools, ``vgpu_type``) travels in ``tags``.  This is the boundary shape
``pci_vgpu.stats`` converts its typed pools to.
"""

from __future__ import annotations

import typing as ty

from oslo_serialization import jsonutils
from oslo_utils import versionutils

from pci_vgpu.objects import base
from pci_vgpu.objects import fields

_FIELD_KEYS = ("vendor_id", "product_id", "numa_node", "count")


@base.PciVgpuObjectRegistry.register
class PciDevicePool(base.PciVgpuObject):
    """``count`` interchangeable free devices."""

    # Version 1.0: Initial version
    # Version 1.1: Add numa_node field
    VERSION = "1.1"

    fields = {
        "product_id": fields.StringField(),
        "vendor_id": fields.StringField(),
        "numa_node": fields.IntegerField(nullable=True),
        #: Every other pool key, e.g. dev_type, address, vgpu_type.
        "tags": fields.DictOfNullableStringsField(),
        "count": fields.IntegerField(),
    }

    def obj_make_compatible(self, primitive: dict[str, ty.Any],
                            target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        target = versionutils.convert_version_to_tuple(target_version)
        if target < (1, 1):
            primitive.pop("numa_node", None)

    @classmethod
    def from_dict(cls, value: dict[str, ty.Any]) -> PciDevicePool:
        """Build from a flat pool dict; non-field keys become tags."""
        pool_dict = dict(value)
        pool = cls()
        pool.vendor_id = pool_dict.pop("vendor_id")
        pool.product_id = pool_dict.pop("product_id")
        pool.numa_node = pool_dict.pop("numa_node", None)
        pool.count = pool_dict.pop("count")
        pool.tags = pool_dict
        return pool

    def to_dict(self) -> dict[str, ty.Any]:
        """Flatten back to the pool dict :meth:`from_dict` reads."""
        result: dict[str, ty.Any] = {
            key: getattr(self, key) for key in _FIELD_KEYS
            if self.obj_attr_is_set(key)}
        result.update(self.tags if self.obj_attr_is_set("tags") else {})
        return result


@base.PciVgpuObjectRegistry.register
class PciDevicePoolList(base.ObjectListBase, base.PciVgpuObject):
    """The pools of one compute node (``ComputeNode.pci_device_pools``)."""

    # Version 1.0: Initial version
    # Version 1.1: PciDevicePool version 1.1
    VERSION = "1.1"

    fields = {
        "objects": fields.ListOfObjectsField("PciDevicePool"),
    }

    obj_relationships = {
        "objects": [("1.0", "1.0"), ("1.1", "1.1")],
    }


def from_pci_stats(pci_stats: ty.Any) -> PciDevicePoolList:
    """Read what the database keeps in ``compute_nodes.pci_stats``.

    Accepts the serialized object, or (as before the objects existed) a pool
    dict or a list of them, each possibly as a JSON string; anything that
    does not parse gives an empty list, as Nova does.
    """
    if isinstance(pci_stats, str):
        try:
            pci_stats = jsonutils.loads(pci_stats)
        except (ValueError, TypeError):
            pci_stats = None
    if not pci_stats:
        return PciDevicePoolList(objects=[])
    if isinstance(pci_stats, dict) and \
            "pci_vgpu_object.namespace" in pci_stats:
        return PciDevicePoolList.obj_from_primitive(pci_stats)
    stats = pci_stats if isinstance(pci_stats, list) else [pci_stats]
    return PciDevicePoolList(
        objects=[PciDevicePool.from_dict(stat) for stat in stats])
